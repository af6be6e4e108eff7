import { lpStream } from '@libp2p/utils'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { z } from 'zod'
import type { Host } from '../p2p/index.ts'
import { AstradError, DecodeError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import {
  DATATYPES, DATATYPE_SIZE, DeadlineError, InferTransportError, InvalidInferRequestError, ServingError, UnavailableError, servingErrorFromCode,
  type InferRequest, type InferResult, type Tensor
} from './types.ts'
import {
  CHAIN_PROTOCOL, INFER_DIAL_TIMEOUT_MS, INFER_KEEPALIVE_PROTOCOL, INFER_PROTOCOL, INFER_STREAM_IDLE_MS, INFER_CLIENT_IDLE_MS, MAX_IDLE_INFER_STREAMS, INFER_READ_TIMEOUT_MS, MAX_CHAIN_STEPS, MAX_INFER_HEADER_BYTES, MAX_INFER_STREAMS,
  MAX_INFER_TENSORS, MAX_INFER_TENSOR_BYTES
} from './constants.ts'

/**
 * `/astra/infer/1.0.0`, one stream per request, and `/astra/infer/1.1.0` (INFER_KEEPALIVE_PROTOCOL),
 * the same exchange repeated on a kept-alive stream (one request at a time; the router reuses
 * idle streams; the node closes after an error answer or INFER_STREAM_IDLE_MS idle).
 * Length-prefixed messages, each side's sent in one write:
 *   request:  JSON header {app, id?, timeoutMs, outputs?, inputs: [{name, datatype, shape, size}]}
 *             then one message per input with its raw bytes
 *   answer:   [0] + JSON {outputs: [{name, datatype, shape, size}], version?, queueMs, computeMs,
 *             compute?: {inputMs, inferMs, outputMs}} then one message per output; or [1] + JSON {code, message, retryAfter?}
 * The deadline travels as the time left (clocks need not agree). Headers are capped at 64 KiB,
 * tensors at 64 MiB in total, 64 of them.
 */

const STATUS_OK = 0
const STATUS_ERROR = 1

const tensorHeader = z.object({
  name: z.string().min(1).max(256),
  datatype: z.enum(DATATYPES),
  shape: z.array(z.number().int().min(0).max(2 ** 31)).max(16),
  size: z.number().int().min(0).max(MAX_INFER_TENSOR_BYTES)
}).strict()

const requestHeader = z.object({
  app: z.string().min(1).max(63),
  id: z.string().max(256).optional(),
  timeoutMs: z.number().int().min(1).max(24 * 3600_000),
  outputs: z.array(z.string().max(256)).max(MAX_INFER_TENSORS).optional(),
  inputs: z.array(tensorHeader).max(MAX_INFER_TENSORS)
}).strict()

/**
 * `/astra/infer-chain/1.0.0` (CHAIN_PROTOCOL): the same framing; the header names the apps to run
 * one after another on this node instead of one `app`. Each step's inputs are
 * `[input, source, tensor]`: source -1 is the request, i an earlier step. The answer carries the
 * outputs of the steps in `returns`, each named `STEP/TENSOR` (STEP its index); an error answer
 * adds `step`, the index of the step that failed.
 */
const chainStep = z.object({
  app: z.string().min(1).max(63),
  inputs: z.array(z.tuple([z.string().min(1).max(256), z.number().int().min(-1).max(MAX_CHAIN_STEPS), z.string().min(1).max(256)])).max(MAX_INFER_TENSORS),
  outputs: z.array(z.string().max(256)).max(MAX_INFER_TENSORS).optional()
}).strict()

const chainRequestHeader = z.object({
  id: z.string().max(256).optional(),
  timeoutMs: z.number().int().min(1).max(24 * 3600_000),
  inputs: z.array(tensorHeader).max(MAX_INFER_TENSORS),
  chain: z.array(chainStep).min(1).max(MAX_CHAIN_STEPS),
  returns: z.array(z.number().int().min(0).max(MAX_CHAIN_STEPS)).max(MAX_CHAIN_STEPS)
}).strict()

/** The stages of a chained call: what the scheduler sends, what the node runs. */
export interface Chain {
  steps: Array<z.infer<typeof chainStep>>
  /** Steps whose outputs come back. */
  returns: number[]
}

/** A step of a chained call failed: the index says which; the cause is the stage's own error. */
export class ChainStepError extends ServingError {
  readonly step: number
  constructor (step: number, cause: ServingError) {
    super(cause.message, cause.code, cause.status, cause.retryAfter)
    this.name = 'ChainStepError'
    this.step = step
    this.cause = cause
  }
}

/**
 * Runs a chain with `infer` (this node's replicas): each step once its source tensors are there,
 * in order, under the request's deadline. Returns the outputs of the `returns` steps named
 * `STEP/TENSOR`.
 */
export async function runChain (chain: Chain, req: InferRequest, infer: LocalInfer, signal: AbortSignal): Promise<InferResult> {
  const request = new Map(req.inputs.map(t => [t.name, t]))
  const values: Array<Map<string, Tensor>> = []
  let queueMs = 0
  let computeMs = 0
  for (let i = 0; i < chain.steps.length; i++) {
    const step = chain.steps[i]!
    let result: InferResult
    try {
      const inputs = step.inputs.map(([name, source, tensor]) => {
        if (source >= i) throw new InvalidInferRequestError(`chain step ${i} reads step ${source}, which has not run`)
        const t = (source < 0 ? request : values[source])?.get(tensor)
        if (t == null) throw new InvalidInferRequestError(`chain step ${i} input '${name}': ${source < 0 ? 'the request' : `step ${source}`} has no tensor '${tensor}'`)
        return t.name === name ? t : { ...t, name }
      })
      const stepReq: InferRequest = { inputs, deadline: req.deadline }
      if (req.id != null) stepReq.id = req.id
      if (step.outputs != null) stepReq.outputs = step.outputs
      result = await infer(step.app, stepReq, signal)
    } catch (err) {
      throw new ChainStepError(i, err instanceof ServingError ? err : new ServingError(errorMessage(err), err instanceof AstradError ? err.code : 'ERR_INFERENCE', 500))
    }
    queueMs += result.queueMs
    computeMs += result.computeMs
    values.push(new Map(result.outputs.map(t => [t.name, t])))
  }
  const outputs: Tensor[] = []
  for (const i of chain.returns) {
    for (const t of values[i]?.values() ?? []) outputs.push({ ...t, name: `${i}/${t.name}` })
  }
  return { model: chain.steps.at(-1)!.app, outputs, queueMs, computeMs }
}

/**
 * Not strict: fields a newer node adds are ignored, not refused. (Routers before `version` was
 * added parse strictly and refuse answers that carry it: upgrade schedulers before nodes.)
 */
const answerHeader = z.object({
  outputs: z.array(tensorHeader).max(MAX_INFER_TENSORS),
  /** The version (app generation) of the replica that ran it: the KServe answer's model_version. */
  version: z.string().max(64).optional(),
  queueMs: z.number().min(0),
  computeMs: z.number().min(0),
  compute: z.object({ inputMs: z.number().min(0), inferMs: z.number().min(0), outputMs: z.number().min(0) }).optional()
})

const encoder = new TextEncoder()
const decoder = new TextDecoder()

function parse<T> (schema: z.ZodType<T>, bytes: Uint8Array, what: string): T {
  let value: unknown
  try { value = JSON.parse(decoder.decode(bytes)) } catch (err) { throw new DecodeError(`${what} is not JSON: ${errorMessage(err)}`) }
  const parsed = schema.safeParse(value)
  if (!parsed.success) throw new DecodeError(`bad ${what}: ${parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return parsed.data
}

function headersOf (tensors: Tensor[]): Array<z.infer<typeof tensorHeader>> {
  return tensors.map(t => ({ name: t.name, datatype: t.datatype, shape: t.shape, size: t.data.byteLength }))
}

function checkTotal (tensors: Array<{ size: number }>): void {
  const total = tensors.reduce((a, t) => a + t.size, 0)
  if (total > MAX_INFER_TENSOR_BYTES) throw new InvalidInferRequestError(`tensors of ${total} bytes exceed ${MAX_INFER_TENSOR_BYTES}`)
}

/** Runs one request for an app on this node (the replica host). */
export type LocalInfer = (app: string, req: InferRequest, signal: AbortSignal) => Promise<InferResult>

export interface InferServerOptions {
  /** Counts requests refused as malformed. */
  onBadRequest?: (err: unknown, peer: PeerId) => void
  /** Allowance for reading a request's messages; @default INFER_READ_TIMEOUT_MS */
  readTimeoutMs?: number
  /** How long a kept-alive stream waits for its next request; @default INFER_STREAM_IDLE_MS */
  idleTimeoutMs?: number
}

/**
 * Node side: decodes requests, runs them on a local replica, answers. Only schedulers are
 * served (routers run there; a node never forwards): anyone else is answered ERR_FORBIDDEN before
 * the request is read.
 */
export async function serveInference (libp2p: Host, infer: LocalInfer, options: InferServerOptions = {}): Promise<void> {
  const one = async (header: z.infer<typeof requestHeader>, req: InferRequest, signal: AbortSignal): Promise<InferResult> => await infer(header.app, req, signal)
  await serve(libp2p, INFER_PROTOCOL, requestHeader, one, options)
  await serve(libp2p, INFER_KEEPALIVE_PROTOCOL, requestHeader, one, options, true)
  await serve(libp2p, CHAIN_PROTOCOL, chainRequestHeader, async (header, req, signal) => await runChain({ steps: header.chain, returns: header.returns }, req, infer, signal), options)
}

type BaseHeader = { id?: string, timeoutMs: number, outputs?: string[], inputs: Array<z.infer<typeof tensorHeader>> }
type Lp = ReturnType<typeof lpStream>

/**
 * One request read from `lp` and answered: the answer's messages, and whether the request was
 * read whole (so the stream's framing still holds and, on the keep-alive protocol, the next
 * request may follow on it). `header` is the request's first message, already read.
 */
async function exchange<H extends BaseHeader> (schema: z.ZodType<H>, run: (header: H, req: InferRequest, signal: AbortSignal) => Promise<InferResult>, options: InferServerOptions, lp: Lp, remotePeer: PeerId, headerBytes: Uint8Array): Promise<{ answer: Uint8Array[], whole: boolean, signal: AbortSignal }> {
  // Reading the request gets a fixed allowance; the run itself is bounded by its deadline.
  const readSignal = AbortSignal.timeout(options.readTimeoutMs ?? INFER_READ_TIMEOUT_MS)
  let signal = readSignal
  let whole = false
  try {
    let req: InferRequest
    let header: H
    try {
      header = parse(schema, headerBytes, 'infer request')
      if (header.inputs.some(i => i.size > MAX_INFER_TENSOR_BYTES)) throw new DecodeError('tensor too large')
      checkTotal(header.inputs)
      const inputs: Tensor[] = []
      for (const h of header.inputs) {
        const data = (await lp.read({ signal: readSignal })).subarray()
        if (data.byteLength !== h.size) throw new DecodeError(`input ${h.name}: ${data.byteLength} bytes, header says ${h.size}`)
        inputs.push({ name: h.name, datatype: h.datatype, shape: h.shape, data })
      }
      whole = true
      req = { inputs, deadline: Date.now() + header.timeoutMs }
      if (header.id != null) req.id = header.id
      if (header.outputs != null) req.outputs = header.outputs
      signal = AbortSignal.timeout(header.timeoutMs + 1_000)
    } catch (err) {
      // A request that did not arrive whole (read allowance ran out, e.g. this node was frozen
      // and woke up past it; stream reset) is a transport failure: the router retries it on
      // another node. Only bytes that arrived and do not decode are the client's fault.
      if (!(err instanceof DecodeError) && !(err instanceof AstradError)) {
        throw new InferTransportError(`request not read: ${errorMessage(err)}`)
      }
      options.onBadRequest?.(err, remotePeer)
      throw err instanceof DecodeError ? new InvalidInferRequestError(err.message) : err
    }
    let result: InferResult
    try {
      result = await run(header, req, signal)
    } catch (err) {
      // The run's own timer (its deadline, e.g. after this node was frozen past it) is a
      // deadline, not a model error.
      if (signal.aborted && !(err instanceof AstradError)) throw new DeadlineError(`deadline passed on the node: ${errorMessage(err)}`)
      throw err
    }
    checkTotal(headersOf(result.outputs))
    const answerHead: z.infer<typeof answerHeader> = { outputs: headersOf(result.outputs), queueMs: result.queueMs, computeMs: result.computeMs }
    if (result.version != null) answerHead.version = result.version
    if (result.compute != null) answerHead.compute = result.compute
    const head = encoder.encode(JSON.stringify(answerHead))
    return { answer: [concat([STATUS_OK], head), ...result.outputs.map(t => t.data)], whole, signal }
  } catch (err) {
    return { answer: [errorAnswer(err)], whole, signal }
  }
}

async function serve<H extends BaseHeader> (libp2p: Host, protocol: string, schema: z.ZodType<H>, run: (header: H, req: InferRequest, signal: AbortSignal) => Promise<InferResult>, options: InferServerOptions, keepAlive = false): Promise<void> {
  await libp2p.handle(protocol, async (stream, connection) => {
    const lp = lpStream(stream, { maxDataLength: MAX_INFER_TENSOR_BYTES })
    let first = true
    try {
      while (true) {
        // The first request comes with the stream (read allowance); a kept-alive stream waits
        // for the next one at most INFER_STREAM_IDLE_MS, and a client that is done closes it.
        // Checked before every request is read, not once per stream: a kept-alive stream
        // outlives no revocation of the scheduler's role.
        try {
          await Trust.of(libp2p).require(connection.remotePeer, 'scheduler', protocol)
        } catch (err) {
          await lp.write(errorAnswer(err), { signal: AbortSignal.timeout(INFER_READ_TIMEOUT_MS) })
          break
        }
        let headerBytes: Uint8Array
        try {
          headerBytes = (await lp.read({ signal: AbortSignal.timeout(first ? (options.readTimeoutMs ?? INFER_READ_TIMEOUT_MS) : (options.idleTimeoutMs ?? INFER_STREAM_IDLE_MS)) })).subarray()
        } catch (err) {
          if (first) {
            // As before: a request that never came is answered as a transport failure.
            const answer = errorAnswer(new InferTransportError(`request not read: ${errorMessage(err)}`))
            await lp.write(answer, { signal: AbortSignal.timeout(INFER_READ_TIMEOUT_MS) }).catch(() => {})
          }
          break
        }
        first = false
        const { answer, whole, signal } = await exchange(schema, run, options, lp, connection.remotePeer, headerBytes)
        // All of the answer's messages in one write: one muxer frame, one encryption.
        await lp.writeV(answer, { signal })
        // One request per stream (1.0.0), or the framing is lost (a request not read whole), or
        // the node refused it (the client closes its side after an error answer).
        if (!keepAlive || !whole || answer[0]?.[0] !== STATUS_OK) break
      }
      await stream.close({ signal: AbortSignal.timeout(INFER_READ_TIMEOUT_MS) })
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }, { maxInboundStreams: MAX_INFER_STREAMS })
}

function errorAnswer (err: unknown): Uint8Array {
  const code = err instanceof AstradError ? err.code : 'ERR_INFERENCE'
  const retryAfter = err instanceof ServingError ? err.retryAfter : undefined
  const step = err instanceof ChainStepError ? err.step : undefined
  return concat([STATUS_ERROR], encoder.encode(JSON.stringify({ code, message: errorMessage(err).slice(0, 1024), retryAfter, step })))
}

function concat (prefix: number[], body: Uint8Array): Uint8Array {
  const out = new Uint8Array(prefix.length + body.length)
  out.set(prefix, 0)
  out.set(body, prefix.length)
  return out
}

/**
 * Why a remote call failed, for the router's retry decision: `unsent` (the node never got the
 * request: unreachable, draining, queue full) is always safe to retry; `lost` (stream cut after
 * sending: the node may have run it) is retried because inference is idempotent, and counted.
 */
export class RemoteInferError extends ServingError {
  readonly phase: 'unsent' | 'lost' | 'answered'
  /** A chained call's answer: the index of the step that failed. */
  readonly step?: number
  constructor (cause: ServingError, phase: 'unsent' | 'lost' | 'answered', step?: number) {
    super(cause.message, cause.code, cause.status, cause.retryAfter)
    this.name = 'RemoteInferError'
    this.phase = phase
    this.cause = cause
    if (step != null) this.step = step
  }
}

export interface InferRemoteOptions {
  /** Allowance between the answer's messages once its header came; @default INFER_READ_TIMEOUT_MS */
  readTimeoutMs?: number
}

/** Router side: sends a request to a node and returns its answer. */
export async function inferRemote (libp2p: Host, peer: PeerId, app: string, req: InferRequest, signal?: AbortSignal, options: InferRemoteOptions = {}): Promise<InferResult> {
  return await callRemote(libp2p, peer, INFER_PROTOCOL, app, { app }, req, signal, options)
}

/** Router side: runs a chain of apps on one node (CHAIN_PROTOCOL); outputs named `STEP/TENSOR`. */
export async function inferChainRemote (libp2p: Host, peer: PeerId, chain: Chain, req: InferRequest, signal?: AbortSignal, options: InferRemoteOptions = {}): Promise<InferResult> {
  return await callRemote(libp2p, peer, CHAIN_PROTOCOL, chain.steps.at(-1)!.app, { chain: chain.steps, returns: chain.returns }, req, signal, options)
}

/** A kept-alive stream of INFER_KEEPALIVE_PROTOCOL waiting for its next request, with its one reader. */
interface IdleStream {
  stream: Stream
  lp: Lp
  since: number
}

/**
 * The router's idle keep-alive streams, per node: a request takes one (the most recently used)
 * or opens a new one, and gives it back after a clean answer. Streams idle longer than
 * INFER_CLIENT_IDLE_MS (shorter than the node's INFER_STREAM_IDLE_MS, so the node seldom closes
 * one the router is about to use) are closed; at most MAX_IDLE_INFER_STREAMS are kept per node.
 */
class StreamPool {
  private readonly idle = new Map<string, IdleStream[]>()
  /**
   * Connections whose node answered the keep-alive protocol with "not supported" (older): one
   * stream per call on them. Kept per connection, not per node: a node upgraded and restarted
   * (schedulers are upgraded first) comes back on a new connection and is asked again.
   */
  private readonly legacyConns = new WeakSet<Connection>()

  /** Whether the node's current connection is known to lack the keep-alive protocol. */
  legacy (libp2p: Host, peer: PeerId): boolean {
    const conns = libp2p.getConnections(peer)
    return conns.length > 0 && conns.every(c => this.legacyConns.has(c))
  }

  /** Remembers that `stream`'s connection lacks the keep-alive protocol. */
  markLegacy (libp2p: Host, peer: PeerId, stream: Stream): void {
    const conn = libp2p.getConnections(peer).find(c => c.streams.includes(stream))
    if (conn != null) this.legacyConns.add(conn)
  }

  take (peer: string): IdleStream | undefined {
    const list = this.idle.get(peer)
    if (list == null) return undefined
    const now = Date.now()
    while (list.length > 0) {
      const s = list.pop()!
      if (now - s.since < INFER_CLIENT_IDLE_MS && usable(s.stream)) {
        if (list.length === 0) this.idle.delete(peer)
        return s
      }
      s.stream.close().catch(() => {})
    }
    this.idle.delete(peer)
    return undefined
  }

  give (peer: string, s: IdleStream): void {
    let list = this.idle.get(peer)
    if (list == null) this.idle.set(peer, list = [])
    // The oldest idle streams go first: they are the likeliest to time out.
    const now = Date.now()
    while (list.length > 0 && (list.length >= MAX_IDLE_INFER_STREAMS || now - list[0]!.since >= INFER_CLIENT_IDLE_MS)) list.shift()!.stream.close().catch(() => {})
    s.since = now
    list.push(s)
  }

  /** Idle streams held now (tests). */
  size (peer: string): number {
    return this.idle.get(peer)?.length ?? 0
  }
}

function usable (stream: Stream): boolean {
  return stream.status === 'open' && stream.writeStatus === 'writable' && stream.remoteWriteStatus === 'writable' && stream.readBufferLength === 0
}

const pools = new WeakMap<Host, StreamPool>()

/** The keep-alive stream pool of a libp2p host (the router's side). */
export function inferStreamPool (libp2p: Host): StreamPool {
  let pool = pools.get(libp2p)
  if (pool == null) pools.set(libp2p, pool = new StreamPool())
  return pool
}

async function callRemote (libp2p: Host, peer: PeerId, protocol: string, app: string, extra: Record<string, unknown>, req: InferRequest, signal?: AbortSignal, options: InferRemoteOptions = {}): Promise<InferResult> {
  const left = req.deadline - Date.now()
  if (left <= 0) throw new DeadlineError('deadline passed before the request was sent')
  const deadline = AbortSignal.timeout(left)
  const all = signal != null ? AbortSignal.any([signal, deadline]) : deadline
  const header: Record<string, unknown> = { ...extra, timeoutMs: Math.max(1, Math.floor(left)), inputs: headersOf(req.inputs) }
  if (req.id != null) header.id = req.id
  if (req.outputs != null && protocol === INFER_PROTOCOL) header.outputs = req.outputs
  const request = [encoder.encode(JSON.stringify(header)), ...req.inputs.map(t => t.data)]
  const id = peer.toString()
  // Plain requests go over a kept-alive stream where the node has the protocol; chained ones
  // (rare, long) keep one stream per call.
  const pool = protocol === INFER_PROTOCOL ? inferStreamPool(libp2p) : undefined
  const reused = pool?.take(id)
  if (reused != null) {
    try {
      return await onStream(reused, true)
    } catch (err) {
      // A kept-alive stream the node closed or reset as it was taken (its idle timeout, a
      // restart), before any answer came: the request goes once more on a fresh stream.
      if (!(err instanceof StaleStreamError) || all.aborted) throw unwrap(err)
    }
  }
  let stream: Stream
  try {
    const protocols = pool != null && !pool.legacy(libp2p, peer) ? [INFER_KEEPALIVE_PROTOCOL, INFER_PROTOCOL] : [protocol]
    stream = await libp2p.dialProtocol(peer, protocols, { signal: AbortSignal.any([all, AbortSignal.timeout(INFER_DIAL_TIMEOUT_MS)]) })
    if (pool != null && stream.protocol === INFER_PROTOCOL) pool.markLegacy(libp2p, peer, stream)
  } catch (err) {
    if (deadline.aborted) throw new DeadlineError('deadline passed while connecting to a replica')
    throw new RemoteInferError(new UnavailableError(`cannot reach ${id}: ${errorMessage(err)}`, 'ERR_UNREACHABLE'), 'unsent')
  }
  try {
    return await onStream({ stream, lp: lpStream(stream, { maxDataLength: MAX_INFER_TENSOR_BYTES }), since: 0 }, false)
  } catch (err) {
    throw unwrap(err)
  }

  async function onStream (s: IdleStream, wasIdle: boolean): Promise<InferResult> {
    const { stream, lp } = s
    let sent = false
    let received = false
    try {
      // The header and every input in one write: one muxer frame, one encryption.
      await lp.writeV(request, { signal: all })
      sent = true
      const first = (await lp.read({ signal: all })).subarray()
      received = true
      if (first[0] === STATUS_ERROR) {
        let remote: { code?: string, message?: string, retryAfter?: number, step?: number } = {}
        try { remote = JSON.parse(decoder.decode(first.subarray(1))) } catch {}
        const err = servingErrorFromCode(remote.code ?? 'ERR_REMOTE', remote.message ?? 'remote error', remote.retryAfter)
        await stream.close().catch(() => {})
        // A node that refused before running (draining, full, no replica, or one that could not
        // check this scheduler's certificate) never ran it: another node may take it.
        const refused = err.status === 503 || err.status === 429 || remote.code === 'ERR_FORBIDDEN'
        throw new RemoteInferError(err, refused ? 'unsent' : 'answered', typeof remote.step === 'number' ? remote.step : undefined)
      }
      if (first[0] !== STATUS_OK) throw new DecodeError('bad answer status')
      const head = parse(answerHeader, first.subarray(1), 'infer answer')
      const outputs: Tensor[] = []
      for (const h of head.outputs) {
        // The replica has answered: its tensors follow at once, a stall here is the transport's.
        const data = (await lp.read({ signal: AbortSignal.any([all, AbortSignal.timeout(options.readTimeoutMs ?? INFER_READ_TIMEOUT_MS)]) })).subarray()
        if (data.byteLength !== h.size) throw new DecodeError(`output ${h.name}: ${data.byteLength} bytes, header says ${h.size}`)
        if (DATATYPE_SIZE[h.datatype] != null && h.size !== h.shape.reduce((a, b) => a * b, 1) * DATATYPE_SIZE[h.datatype]!) throw new DecodeError(`output ${h.name}: size does not match its shape`)
        outputs.push({ name: h.name, datatype: h.datatype, shape: h.shape, data })
      }
      // A kept-alive stream goes back to the pool for the next request; others are done.
      if (stream.protocol === INFER_KEEPALIVE_PROTOCOL && pool != null) pool.give(id, s)
      else await stream.close({ signal: all }).catch(() => {})
      const result: InferResult = { model: app, outputs, queueMs: head.queueMs, computeMs: head.computeMs }
      if (head.version != null) result.version = head.version
      if (head.compute != null) result.compute = head.compute
      if (req.id != null) result.id = req.id
      return result
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      if (err instanceof RemoteInferError) throw err
      if (deadline.aborted) throw new DeadlineError('no answer from the replica within the deadline')
      if (wasIdle && !received) throw new StaleStreamError(err, sent)
      // Timeouts, resets, aborted reads, undecodable answers: the transport failed, not the model.
      throw new RemoteInferError(new InferTransportError(`replica on ${id} failed: ${errorMessage(err)}`), sent ? 'lost' : 'unsent')
    }
  }

  function unwrap (err: unknown): unknown {
    if (!(err instanceof StaleStreamError)) return err
    return new RemoteInferError(new InferTransportError(`replica on ${id} failed: ${errorMessage(err.cause)}`), err.sent ? 'lost' : 'unsent')
  }
}

/** A kept-alive stream failed before any answer came (internal: the call is tried on a fresh stream). */
class StaleStreamError extends Error {
  readonly sent: boolean
  constructor (cause: unknown, sent: boolean) {
    super(errorMessage(cause), { cause })
    this.name = 'StaleStreamError'
    this.sent = sent
  }
}
