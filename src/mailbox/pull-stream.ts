import { lpStream } from '@libp2p/utils'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { request } from '../p2p/index.ts'
import { AstradError, RequestError, errorMessage } from '../util/errors.ts'
import {
  MAILBOX_MAX_STREAMS_PER_PEER, MAILBOX_PROTOCOL, MAILBOX_STREAM_IDLE_MS, MAILBOX_STREAM_MAX_PIPELINED, MAILBOX_STREAM_PROTOCOL,
  MAX_PULL_REQUEST_BYTES, MAX_PULL_RESPONSE_BYTES, PULL_TIMEOUT_MS
} from './constants.ts'

/**
 * `/astra/mailbox-pull/1.1.0`: a node keeps one pull stream open to its resource and sends its
 * pull requests on it, each a length-prefixed request answered by one length-prefixed envelope
 * (status byte + body, as `/astra/mailbox/1.0.0` answers), in order. One stream per pull cost the
 * resource ~210 µs of CPU (docs/bench-mailbox.md: stream open/close frames, peer-store merge, a
 * logger per stream, Noise writes); a long-lived stream leaves the request and its answer.
 *
 * Bounds on the resource: MAILBOX_MAX_STREAMS_PER_PEER open streams per peer, requests of at most
 * MAX_PULL_REQUEST_BYTES (a larger one is answered with an error and the stream closed), a stream
 * idle for MAILBOX_STREAM_IDLE_MS is closed, and a request is read only after the previous answer
 * was written (a client that does not read stalls its own stream, not the resource: the idle
 * timer also bounds a blocked write). Who may pull is checked for every request.
 */

const STATUS_OK = 0
const STATUS_ERROR = 1

function okEnvelope (body: Uint8Array): Uint8Array {
  const envelope = new Uint8Array(body.length + 1)
  envelope[0] = STATUS_OK
  envelope.set(body, 1)
  return envelope
}

function errorEnvelope (err: unknown): Uint8Array {
  const code = err instanceof AstradError ? err.code : 'ERR_INTERNAL'
  const json = new TextEncoder().encode(JSON.stringify({ code, message: errorMessage(err) }))
  const envelope = new Uint8Array(json.length + 1)
  envelope[0] = STATUS_ERROR
  envelope.set(json, 1)
  return envelope
}

/** The body of an OK envelope, or the remote error as a RequestError (its code kept). */
function openEnvelope (envelope: Uint8Array, peer: PeerId): Uint8Array {
  if (envelope.length === 0) throw new RequestError(`${MAILBOX_STREAM_PROTOCOL}: empty answer`, 'ERR_BAD_RESPONSE')
  const body = envelope.subarray(1)
  if (envelope[0] === STATUS_OK) return body
  let remote: { code?: string, message?: string } = {}
  try { remote = JSON.parse(new TextDecoder().decode(body)) } catch {}
  throw new RequestError(`${MAILBOX_STREAM_PROTOCOL} refused by ${peer.toString()}: ${remote.message ?? 'unknown error'}`, remote.code ?? 'ERR_REMOTE')
}

const isEof = (err: unknown): boolean => err instanceof Error && (err.name === 'UnexpectedEOFError' || err.name === 'StreamClosedError' || err.name === 'StreamResetError' || err.name === 'StreamStateError')

export interface PullStreamServerOptions {
  /** Who may pull (Trust.guard): checked for every request; a refusal is answered and the stream closed. */
  authorize?: (peer: PeerId) => Promise<void> | void
  /** Every request or stream refused (bad input, oversize, too many streams, timeouts): for counting. */
  onError?: (err: unknown, peer: PeerId) => void
  idleMs?: number
  maxStreamsPerPeer?: number
}

/**
 * Serves `/astra/mailbox-pull/1.1.0` on `libp2p`: `serve` answers one request (its errors are
 * answered, and the stream keeps serving).
 */
export async function handlePullStreams (libp2p: Libp2p, serve: (req: Uint8Array) => Uint8Array, options: PullStreamServerOptions = {}): Promise<void> {
  const maxPerPeer = options.maxStreamsPerPeer ?? MAILBOX_MAX_STREAMS_PER_PEER
  const idleMs = options.idleMs ?? MAILBOX_STREAM_IDLE_MS
  const open = new Map<string, number>()
  await libp2p.handle(MAILBOX_STREAM_PROTOCOL, async (stream, connection) => {
    const peer = connection.remotePeer
    const key = peer.toString()
    const lp = lpStream(stream, { maxDataLength: MAX_PULL_REQUEST_BYTES })
    const idle = new AbortController()
    const timer = setTimeout(() => { idle.abort(new AstradError(`pull stream idle for ${idleMs} ms`, 'ERR_IDLE')) }, idleMs)
    const count = open.get(key) ?? 0
    try {
      if (count >= maxPerPeer) {
        const err = new AstradError(`too many pull streams from ${key}: ${maxPerPeer} allowed`, 'ERR_TOO_MANY_STREAMS')
        options.onError?.(err, peer)
        await lp.write(errorEnvelope(err), { signal: idle.signal })
        await stream.close({ signal: idle.signal })
        return
      }
      open.set(key, count + 1)
      try {
        await serveStream(stream, lp, peer, idle, timer, serve, options)
      } finally {
        const left = (open.get(key) ?? 1) - 1
        if (left <= 0) open.delete(key)
        else open.set(key, left)
      }
    } catch (err) {
      if (!isEof(err)) options.onError?.(err, peer)
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      clearTimeout(timer)
    }
  }, {
    // Our own per-peer count refuses (with an answer) first; libp2p's cap is the backstop.
    maxInboundStreams: maxPerPeer + 1
  })
}

async function serveStream (stream: Stream, lp: ReturnType<typeof lpStream>, peer: PeerId, idle: AbortController, timer: NodeJS.Timeout,
  serve: (req: Uint8Array) => Uint8Array, options: PullStreamServerOptions): Promise<void> {
  for (;;) {
    let req: Uint8Array
    try {
      req = (await lp.read({ signal: idle.signal })).subarray()
    } catch (err) {
      if (idle.signal.aborted || isEof(err)) {
        // Idle or closed by the node: end our side quietly (the node reopens when it pulls again).
        await stream.close({ signal: AbortSignal.timeout(PULL_TIMEOUT_MS) }).catch(() => { stream.abort(new Error('pull stream closed')) })
        return
      }
      if (err instanceof Error && /DataLength/.test(err.name)) {
        // The rest of the oversized frame is still on the stream: answer, then close.
        options.onError?.(err, peer)
        await lp.write(errorEnvelope(new AstradError(`pull request exceeds ${MAX_PULL_REQUEST_BYTES} bytes`, 'ERR_TOO_LARGE')), { signal: idle.signal })
        await stream.close({ signal: idle.signal })
        return
      }
      throw err
    }
    timer.refresh()
    try {
      await options.authorize?.(peer)
    } catch (err) {
      // Not (or no longer) a member: refused and closed. The trust layer counts and logs it.
      await lp.write(errorEnvelope(err), { signal: idle.signal })
      await stream.close({ signal: idle.signal })
      return
    }
    let envelope: Uint8Array
    try {
      const body = serve(req)
      if (body.length > MAX_PULL_RESPONSE_BYTES) throw new AstradError(`answer of ${body.length} bytes exceeds ${MAX_PULL_RESPONSE_BYTES}`, 'ERR_TOO_LARGE')
      envelope = okEnvelope(body)
    } catch (err) {
      options.onError?.(err, peer)
      envelope = errorEnvelope(err)
    }
    await lp.write(envelope, { signal: idle.signal })
  }
}

export interface PullRequestOptions {
  signal?: AbortSignal
  timeoutMs?: number
}

interface Pending {
  resolve: (envelope: Uint8Array) => void
  reject: (err: Error) => void
}

/** One open pull stream: requests written in order, answers matched to them in order. */
class PullConn {
  readonly stream: Stream
  private readonly lp: ReturnType<typeof lpStream>
  readonly pending: Pending[] = []
  closed = false

  constructor (stream: Stream) {
    this.stream = stream
    this.lp = lpStream(stream, { maxDataLength: MAX_PULL_RESPONSE_BYTES + 1 })
    void this.readLoop()
  }

  private async readLoop (): Promise<void> {
    try {
      for (;;) {
        const envelope = (await this.lp.read()).subarray()
        const next = this.pending.shift()
        if (next == null) throw new RequestError(`${MAILBOX_STREAM_PROTOCOL}: an answer nobody asked for`, 'ERR_BAD_RESPONSE')
        next.resolve(envelope)
      }
    } catch (err) {
      this.fail(isEof(err) ? new StreamGone(`${MAILBOX_STREAM_PROTOCOL} stream closed by the resource`, { cause: err }) : err instanceof Error ? err : new Error(String(err)))
    }
  }

  async send (payload: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    if (this.closed) throw new StreamGone(`${MAILBOX_STREAM_PROTOCOL} stream already closed`)
    const answer = new Promise<Uint8Array>((resolve, reject) => { this.pending.push({ resolve, reject }) })
    const onAbort = (): void => {
      // Answers come in order: a request given up leaves the stream unusable.
      this.fail(new RequestError(`${MAILBOX_STREAM_PROTOCOL}: no answer in time`, 'ERR_TIMEOUT'))
    }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      try {
        await this.lp.write(payload, { signal })
      } catch (err) {
        this.fail(signal.aborted ? new RequestError(`${MAILBOX_STREAM_PROTOCOL}: no answer in time`, 'ERR_TIMEOUT') : new StreamGone(`${MAILBOX_STREAM_PROTOCOL}: write failed: ${errorMessage(err)}`, { cause: err }))
      }
      return await answer
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  fail (err: Error): void {
    if (!this.closed) {
      this.closed = true
      this.stream.abort(err)
    }
    for (const p of this.pending.splice(0)) p.reject(err)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.stream.close({ signal: AbortSignal.timeout(1_000) }).catch(() => { this.stream.abort(new Error('closed')) })
    for (const p of this.pending.splice(0)) p.reject(new StreamGone('pull stream closed'))
  }
}

/** The stream ended under a request (resource restarted, idle close, reset): retried once on a new stream. */
class StreamGone extends RequestError {
  constructor (message: string, options?: ErrorOptions) { super(message, 'ERR_REQUEST', options) }
}

interface PeerStreams {
  conns: PullConn[]
  opening?: Promise<PullConn | 'legacy'>
  /** Connection ids on which the peer answered only `/astra/mailbox/1.0.0`. */
  legacy: Set<string>
}

export interface PullStreamsInit {
  /** Streams kept open per resource (1 for a node; the bench's shared hosts use more). */
  streamsPerPeer?: number
  maxPipelined?: number
}

/**
 * The node side: `pull(peer, request)` sends on the pull stream kept open to `peer`, opening it
 * when there is none (closed on idle or error: reopened transparently, and a request whose stream
 * ended under it is sent once more on a new one; pulls are reads, so a repeat is harmless). A
 * peer that answers only `/astra/mailbox/1.0.0` on a connection is pulled one stream per request
 * on that connection.
 */
export class PullStreams {
  private readonly libp2p: Libp2p
  private readonly perPeer: number
  private readonly maxPipelined: number
  private readonly peers = new Map<string, PeerStreams>()
  private closed = false

  constructor (libp2p: Libp2p, init: PullStreamsInit = {}) {
    this.libp2p = libp2p
    this.perPeer = Math.max(1, init.streamsPerPeer ?? 1)
    this.maxPipelined = Math.max(1, init.maxPipelined ?? MAILBOX_STREAM_MAX_PIPELINED)
  }

  /** Protocol the last pull to `peer` used on its current connection. */
  protocolFor (peer: PeerId): string {
    const ps = this.peers.get(peer.toString())
    return ps != null && this.isLegacy(peer, ps) ? MAILBOX_PROTOCOL : MAILBOX_STREAM_PROTOCOL
  }

  async pull (peer: PeerId, payload: Uint8Array, options: PullRequestOptions = {}): Promise<Uint8Array> {
    const timeout = AbortSignal.timeout(options.timeoutMs ?? PULL_TIMEOUT_MS)
    const signal = options.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new RequestError('pull streams closed', 'ERR_REQUEST')
      const conn = await this.conn(peer, signal)
      if (conn === 'legacy') {
        return await request(this.libp2p, peer, MAILBOX_PROTOCOL, payload, { signal, maxResponseBytes: MAX_PULL_RESPONSE_BYTES })
      }
      try {
        return openEnvelope(await conn.send(payload, signal), peer)
      } catch (err) {
        if (err instanceof StreamGone && attempt === 0 && !signal.aborted) continue
        if (err instanceof RequestError) throw err
        throw new RequestError(`${MAILBOX_STREAM_PROTOCOL} to ${peer.toString()} failed: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_REQUEST', { cause: err })
      }
    }
  }

  /** Closes every stream (the daemon stops). */
  async close (): Promise<void> {
    this.closed = true
    const conns = [...this.peers.values()].flatMap(ps => ps.conns)
    this.peers.clear()
    await Promise.allSettled(conns.map(async c => { await c.close() }))
  }

  private isLegacy (peer: PeerId, ps: PeerStreams): boolean {
    if (ps.legacy.size === 0) return false
    return this.libp2p.getConnections(peer).some(c => ps.legacy.has(c.id))
  }

  /** A stream with room for one more request, or 'legacy'. */
  private async conn (peer: PeerId, signal: AbortSignal): Promise<PullConn | 'legacy'> {
    const key = peer.toString()
    let ps = this.peers.get(key)
    if (ps == null) this.peers.set(key, ps = { conns: [], legacy: new Set() })
    if (this.isLegacy(peer, ps)) return 'legacy'
    for (;;) {
      ps.conns = ps.conns.filter(c => !c.closed)
      let best: PullConn | undefined
      for (const c of ps.conns) if (best == null || c.pending.length < best.pending.length) best = c
      if (best != null && best.pending.length === 0) return best
      if (ps.conns.length < this.perPeer) {
        ps.opening ??= this.open(peer, ps, signal).finally(() => { if (ps != null) ps.opening = undefined })
        if (await ps.opening === 'legacy') return 'legacy'
        continue
      }
      if (best != null && best.pending.length < this.maxPipelined) return best
      // Every stream is full: wait for a slot (the caller's timeout bounds this).
      await new Promise(resolve => setTimeout(resolve, 1))
      if (signal.aborted) throw new RequestError(`${MAILBOX_STREAM_PROTOCOL}: no free pull stream in time`, 'ERR_TIMEOUT')
    }
  }

  private async open (peer: PeerId, ps: PeerStreams, signal: AbortSignal): Promise<PullConn | 'legacy'> {
    let stream: Stream
    try {
      stream = await this.libp2p.dialProtocol(peer, [MAILBOX_STREAM_PROTOCOL, MAILBOX_PROTOCOL], { signal })
    } catch (err) {
      throw new RequestError(`cannot open a mailbox pull stream to ${peer.toString()}: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_UNREACHABLE', { cause: err })
    }
    if (stream.protocol === MAILBOX_STREAM_PROTOCOL) {
      const conn = new PullConn(stream)
      ps.conns.push(conn)
      return conn
    }
    // An older resource: one-shot pulls on this connection from now on.
    stream.abort(new Error('older mailbox protocol: pulled one stream per request'))
    for (const c of this.libp2p.getConnections(peer)) ps.legacy.add(c.id)
    return 'legacy'
  }
}
