import { lpStream } from '@libp2p/utils'
import type { PeerId } from '@libp2p/interface'
import { z } from 'zod'
import type { Host } from '../p2p/index.ts'
import { AstradError, DecodeError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import {
  DATATYPES, DATATYPE_SIZE, DeadlineError, InferTransportError, InvalidInferRequestError, ServingError, UnavailableError, servingErrorFromCode,
  type InferRequest, type InferResult, type Tensor
} from './types.ts'
import {
  CHAIN_PROTOCOL, INFER_DIAL_TIMEOUT_MS, INFER_PROTOCOL, INFER_READ_TIMEOUT_MS, MAX_CHAIN_STEPS, MAX_INFER_HEADER_BYTES, MAX_INFER_STREAMS,
  MAX_INFER_TENSORS, MAX_INFER_TENSOR_BYTES
} from './constants.ts'

/**
 * `/astra/infer/1.0.0`, one stream per request, length-prefixed messages:
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
}

/**
 * Node side: decodes requests, runs them on a local replica, answers. Only schedulers are
 * served (routers run there; a node never forwards): anyone else is answered ERR_FORBIDDEN before
 * the request is read.
 */
export async function serveInference (libp2p: Host, infer: LocalInfer, options: InferServerOptions = {}): Promise<void> {
  await serve(libp2p, INFER_PROTOCOL, requestHeader, async (header, req, signal) => await infer(header.app, req, signal), options)
  await serve(libp2p, CHAIN_PROTOCOL, chainRequestHeader, async (header, req, signal) => await runChain({ steps: header.chain, returns: header.returns }, req, infer, signal), options)
}

type BaseHeader = { id?: string, timeoutMs: number, outputs?: string[], inputs: Array<z.infer<typeof tensorHeader>> }

async function serve<H extends BaseHeader> (libp2p: Host, protocol: string, schema: z.ZodType<H>, run: (header: H, req: InferRequest, signal: AbortSignal) => Promise<InferResult>, options: InferServerOptions): Promise<void> {
  await libp2p.handle(protocol, async (stream, connection) => {
    // Reading the request gets a fixed allowance; the run itself is bounded by its deadline.
    const readSignal = AbortSignal.timeout(options.readTimeoutMs ?? INFER_READ_TIMEOUT_MS)
    const lp = lpStream(stream, { maxDataLength: MAX_INFER_TENSOR_BYTES })
    let answer: Uint8Array[]
    let signal = readSignal
    try {
      await Trust.of(libp2p).require(connection.remotePeer, 'scheduler', protocol)
      let req: InferRequest
      let header: H
      try {
        header = parse(schema, (await lp.read({ signal: readSignal })).subarray(), 'infer request')
        if (header.inputs.some(i => i.size > MAX_INFER_TENSOR_BYTES)) throw new DecodeError('tensor too large')
        checkTotal(header.inputs)
        const inputs: Tensor[] = []
        for (const h of header.inputs) {
          const data = (await lp.read({ signal: readSignal })).subarray()
          if (data.byteLength !== h.size) throw new DecodeError(`input ${h.name}: ${data.byteLength} bytes, header says ${h.size}`)
          inputs.push({ name: h.name, datatype: h.datatype, shape: h.shape, data })
        }
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
        options.onBadRequest?.(err, connection.remotePeer)
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
      answer = [concat([STATUS_OK], head), ...result.outputs.map(t => t.data)]
    } catch (err) {
      answer = [errorAnswer(err)]
    }
    try {
      for (const part of answer) await lp.write(part, { signal })
      await stream.close({ signal })
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

async function callRemote (libp2p: Host, peer: PeerId, protocol: string, app: string, extra: Record<string, unknown>, req: InferRequest, signal?: AbortSignal, options: InferRemoteOptions = {}): Promise<InferResult> {
  const left = req.deadline - Date.now()
  if (left <= 0) throw new DeadlineError('deadline passed before the request was sent')
  const deadline = AbortSignal.timeout(left)
  const all = signal != null ? AbortSignal.any([signal, deadline]) : deadline
  let stream
  try {
    stream = await libp2p.dialProtocol(peer, protocol, { signal: AbortSignal.any([all, AbortSignal.timeout(INFER_DIAL_TIMEOUT_MS)]) })
  } catch (err) {
    if (deadline.aborted) throw new DeadlineError('deadline passed while connecting to a replica')
    throw new RemoteInferError(new UnavailableError(`cannot reach ${peer.toString()}: ${errorMessage(err)}`, 'ERR_UNREACHABLE'), 'unsent')
  }
  let sent = false
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_INFER_TENSOR_BYTES })
    const header: Record<string, unknown> = { ...extra, timeoutMs: Math.max(1, Math.floor(left)), inputs: headersOf(req.inputs) }
    if (req.id != null) header.id = req.id
    if (req.outputs != null && protocol === INFER_PROTOCOL) header.outputs = req.outputs
    await lp.write(encoder.encode(JSON.stringify(header)), { signal: all })
    for (const t of req.inputs) await lp.write(t.data, { signal: all })
    sent = true
    const first = (await lp.read({ signal: all })).subarray()
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
    await stream.close({ signal: all }).catch(() => {})
    const result: InferResult = { model: app, outputs, queueMs: head.queueMs, computeMs: head.computeMs }
    if (head.version != null) result.version = head.version
    if (head.compute != null) result.compute = head.compute
    if (req.id != null) result.id = req.id
    return result
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    if (err instanceof RemoteInferError) throw err
    if (deadline.aborted) throw new DeadlineError(`no answer from the replica within the deadline`)
    // Timeouts, resets, aborted reads, undecodable answers: the transport failed, not the model.
    throw new RemoteInferError(new InferTransportError(`replica on ${peer.toString()} failed: ${errorMessage(err)}`), sent ? 'lost' : 'unsent')
  }
}
