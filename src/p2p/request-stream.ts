import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { errorEnvelope, openEnvelope, request } from './request.ts'
import { AstradError, RequestError, errorMessage } from '../util/errors.ts'

/**
 * Requests on a long-lived stream (the mailbox's `/astra/mailbox-pull/1.1.0`, placement's
 * `/astra/reserve/1.1.0`): a client keeps a stream open to a peer and sends its requests on it,
 * each a length-prefixed request answered by one length-prefixed envelope (status byte + body, as
 * one-shot requests are answered: src/p2p/request.ts), in order. One stream per request cost the
 * server ~210 µs of CPU (docs/bench-mailbox.md: stream open/close frames, peer-store merge, a
 * logger per stream, Noise writes); a long-lived stream leaves the request and its answer.
 *
 * Bounds on the server (a StreamSpec's): maxStreamsPerPeer open streams per peer, requests of at
 * most maxRequestBytes (a larger one is answered with an error and the stream closed), a stream
 * idle for idleMs is closed, and back-pressure: at most maxPipelined requests are taken before
 * they are answered, and the stream is paused while answers wait on a full send buffer (a client
 * that does not read stalls its own stream, not the server; the idle timer closes it). Who may
 * ask is checked for every request. Requests that arrive in one chunk are answered in one write.
 */

/** One protocol served on long-lived streams, and the one-shot protocol it falls back to. */
export interface StreamSpec {
  protocol: string
  /** The one-shot protocol (src/p2p/request.ts) a peer that lacks `protocol` answers. */
  oneShot: string
  maxRequestBytes: number
  maxResponseBytes: number
  /** Deadline of one request (and of closing a stream). */
  timeoutMs: number
  maxStreamsPerPeer: number
  idleMs: number
  maxPipelined: number
  /**
   * A request whose stream ended under it (peer restarted, idle close, reset) is sent once more
   * on a new stream: for reads only. Writes (a reservation) are not repeated: the caller learns
   * the request failed and decides.
   */
  retryGone: boolean
}

const STATUS_OK = 0

/** Unsigned varint of `n` (the length prefix, as lpStream writes it). */
function varintLength (n: number): number {
  let len = 1
  while (n >= 0x80) { n = Math.floor(n / 128); len++ }
  return len
}

/** One length-prefixed frame: varint(1 + body) · status · body. */
function frame (status: number, body: Uint8Array): Uint8Array {
  let n = body.length + 1
  const out = new Uint8Array(varintLength(n) + n)
  let i = 0
  while (n >= 0x80) { out[i++] = (n & 0x7f) | 0x80; n = Math.floor(n / 128) }
  out[i++] = n
  out[i++] = status
  out.set(body, i)
  return out
}

/** A request as a length-prefixed frame (no status byte). */
export function requestFrame (payload: Uint8Array): Uint8Array {
  let n = payload.length
  const out = new Uint8Array(varintLength(n) + n)
  let i = 0
  while (n >= 0x80) { out[i++] = (n & 0x7f) | 0x80; n = Math.floor(n / 128) }
  out[i++] = n
  out.set(payload, i)
  return out
}

/** An error answer as a frame: the same envelope as one-shot requests (src/p2p/request.ts). */
function errorFrame (err: unknown): Uint8Array {
  return requestFrame(errorEnvelope(err))
}

/**
 * Splits length-prefixed frames out of a stream's chunks. Chunks are flattened to one buffer and
 * the varint read in place (libp2p's LengthPrefixedDecoder reads it through Uint8ArrayList.get,
 * a linear search per byte: ~9 % of the resource's CPU in a profile of bench:mailbox).
 */
export class FrameDecoder {
  private rest: Uint8Array | undefined
  private readonly max: number

  constructor (maxFrameBytes: number) { this.max = maxFrameBytes }

  /** The complete frames in `chunk` (plus what was left over); throws FrameTooLarge. */
  decode (chunk: Uint8Array | { subarray: () => Uint8Array }): Uint8Array[] {
    const data = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    let buf = this.rest != null ? Buffer.concat([this.rest, data]) : data
    const frames: Uint8Array[] = []
    let at = 0
    for (;;) {
      let len = 0
      let shift = 1
      let i = at
      let complete = false
      while (i < buf.length && i - at < 4) {
        const b = buf[i++] as number
        len += (b & 0x7f) * shift
        shift *= 128
        if (b < 0x80) { complete = true; break }
      }
      if (!complete) {
        if (i - at >= 4) throw new FrameTooLarge(`length prefix longer than 4 bytes (frames are at most ${this.max} bytes)`)
        break
      }
      if (len > this.max) throw new FrameTooLarge(`frame of ${len} bytes exceeds ${this.max}`)
      if (buf.length - i < len) break
      frames.push(buf.subarray(i, i + len))
      at = i + len
    }
    if (at < buf.length) {
      buf = buf.subarray(at)
      if (buf.length > this.max + 8) throw new FrameTooLarge(`frame exceeds ${this.max} bytes`)
      this.rest = buf
    } else {
      this.rest = undefined
    }
    return frames
  }
}

class FrameTooLarge extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidDataLengthError'
  }
}

const concat = (parts: Uint8Array[]): Uint8Array => parts.length === 1 ? parts[0] as Uint8Array : Buffer.concat(parts)

export interface RequestStreamServerOptions {
  /** Who may ask (Trust.guard): checked for every request; a refusal is answered and the stream closed. */
  authorize?: (peer: PeerId) => Promise<void> | void
  /** Every request or stream refused (bad input, oversize, too many streams, timeouts): for counting. */
  onError?: (err: unknown, peer: PeerId) => void
  idleMs?: number
  maxStreamsPerPeer?: number
}

/**
 * Serves `spec.protocol` on `libp2p`: `serve` answers one request (its errors are answered, and
 * the stream keeps serving).
 */
export async function handleRequestStreams (libp2p: Libp2p, spec: StreamSpec, serve: (req: Uint8Array) => Uint8Array, options: RequestStreamServerOptions = {}): Promise<void> {
  const maxPerPeer = options.maxStreamsPerPeer ?? spec.maxStreamsPerPeer
  const open = new Map<string, number>()
  await libp2p.handle(spec.protocol, async (stream, connection) => {
    const peer = connection.remotePeer
    const key = peer.toString()
    const count = open.get(key) ?? 0
    if (count >= maxPerPeer) {
      const err = new AstradError(`too many streams from ${key}: ${maxPerPeer} allowed`, 'ERR_TOO_MANY_STREAMS')
      options.onError?.(err, peer)
      try {
        stream.send(errorFrame(err))
        await stream.close({ signal: AbortSignal.timeout(spec.timeoutMs) })
      } catch (e) {
        stream.abort(e instanceof Error ? e : new Error(String(e)))
      }
      return
    }
    open.set(key, count + 1)
    try {
      await new StreamServer(stream, peer, spec, serve, options).done
    } finally {
      const left = (open.get(key) ?? 1) - 1
      if (left <= 0) open.delete(key)
      else open.set(key, left)
    }
  }, {
    // Our own per-peer count refuses (with an answer) first; libp2p's cap is the backstop.
    maxInboundStreams: maxPerPeer + 1
  })
}

/**
 * One pull stream on the resource. Requests are decoded as they arrive; the requests that came
 * in one turn of the event loop are answered together in one write (a node's pipelined pulls cost one yamux frame
 * and one Noise record, not one each). While answers wait on a full send buffer the stream is
 * paused, so a node that does not read stops its own requests.
 */
class StreamServer {
  readonly done: Promise<void>
  private readonly stream: Stream
  private readonly peer: PeerId
  private readonly serve: (req: Uint8Array) => Uint8Array
  private readonly options: RequestStreamServerOptions
  private readonly spec: StreamSpec
  private readonly decoder: FrameDecoder
  private readonly queue: Uint8Array[] = []
  private readonly idle: NodeJS.Timeout
  private busy = false
  private scheduled = false
  private ending = false
  private resolve!: () => void
  private readonly drainSoon = (): void => {
    this.scheduled = false
    void this.drain()
  }

  constructor (stream: Stream, peer: PeerId, spec: StreamSpec, serve: (req: Uint8Array) => Uint8Array, options: RequestStreamServerOptions) {
    this.stream = stream
    this.spec = spec
    this.decoder = new FrameDecoder(spec.maxRequestBytes)
    this.peer = peer
    this.serve = serve
    this.options = options
    this.done = new Promise(resolve => { this.resolve = resolve })
    const idleMs = options.idleMs ?? this.spec.idleMs
    // Idle or stalled (a write blocked on a node that does not read): closed.
    this.idle = setTimeout(() => { void this.end() }, idleMs)
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('remoteCloseWrite', () => { this.ending = true; if (!this.busy) void this.end() })
    stream.addEventListener('close', () => {
      clearTimeout(this.idle)
      this.resolve()
    })
  }

  private readonly onMessage = (evt: { data: Uint8Array | { subarray: () => Uint8Array } }): void => {
    if (this.ending) return
    try {
      for (const req of this.decoder.decode(evt.data)) this.queue.push(req)
    } catch (err) {
      // The rest of the oversized frame is still on the stream: answer, then close.
      this.options.onError?.(new AstradError(`request exceeds ${this.spec.maxRequestBytes} bytes`, 'ERR_TOO_LARGE', { cause: err }), this.peer)
      this.ending = true
      this.stream.pause()
      void this.answerThenEnd(errorFrame(new AstradError(`request exceeds ${this.spec.maxRequestBytes} bytes`, 'ERR_TOO_LARGE')))
      return
    }
    this.idle.refresh()
    // A node may pipeline up to this.spec.maxPipelined pulls; more waits in libp2p's read
    // buffer (bounded: overflowing it resets the stream) until these are answered.
    if (this.queue.length >= this.spec.maxPipelined) this.stream.pause()
    // Answered on the next turn of the event loop: the requests of every chunk read in this one
    // go out in one write (one yamux frame, one Noise record, one socket write).
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.drainSoon)
    }
  }

  private async drain (): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      while (this.queue.length > 0 && !this.ending) {
        const batch = this.queue.splice(0)
        const out: Uint8Array[] = []
        for (const req of batch) {
          try {
            await this.options.authorize?.(this.peer)
          } catch (err) {
            // Not (or no longer) a member: refused and closed. The trust layer counts and logs it.
            out.push(errorFrame(err))
            this.ending = true
            await this.answerThenEnd(concat(out))
            return
          }
          let body: Uint8Array
          try {
            body = this.serve(req)
            if (body.length > this.spec.maxResponseBytes) throw new AstradError(`answer of ${body.length} bytes exceeds ${this.spec.maxResponseBytes}`, 'ERR_TOO_LARGE')
          } catch (err) {
            this.options.onError?.(err, this.peer)
            out.push(errorFrame(err))
            continue
          }
          out.push(frame(STATUS_OK, body))
        }
        if (!this.stream.send(concat(out))) {
          this.stream.pause()
          await this.stream.onDrain()
        }
        this.stream.resume()
      }
    } catch (err) {
      this.stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      this.busy = false
    }
    if (this.ending) await this.end()
  }

  private async answerThenEnd (bytes: Uint8Array): Promise<void> {
    try {
      this.stream.send(bytes)
    } catch {}
    await this.end()
  }

  /** Closes our side (the node then closes its own and reopens on its next pull). */
  private async end (): Promise<void> {
    this.ending = true
    try {
      await this.stream.close({ signal: AbortSignal.timeout(this.spec.timeoutMs) })
    } catch (err) {
      this.stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

export interface RequestStreamOptions {
  signal?: AbortSignal
  timeoutMs?: number
}

interface Pending {
  resolve: (envelope: Uint8Array) => void
  reject: (err: Error) => void
}

/**
 * One open pull stream on the node: requests written in order (those made in one turn of the
 * event loop in one write), answers matched to them in order.
 */
class StreamConn {
  readonly stream: Stream
  private readonly spec: StreamSpec
  private readonly decoder: FrameDecoder
  readonly pending: Pending[] = []
  private outgoing: Uint8Array[] = []
  closed = false

  constructor (stream: Stream, spec: StreamSpec) {
    this.stream = stream
    this.spec = spec
    this.decoder = new FrameDecoder(spec.maxResponseBytes + 1)
    stream.addEventListener('message', evt => {
      try {
        for (const envelope of this.decoder.decode(evt.data)) {
          const next = this.pending.shift()
          if (next == null) throw new RequestError(`${this.spec.protocol}: an answer nobody asked for`, 'ERR_BAD_RESPONSE')
          next.resolve(envelope)
        }
      } catch (err) {
        this.fail(err instanceof RequestError ? err : new RequestError(`${this.spec.protocol}: bad answer: ${errorMessage(err)}`, 'ERR_BAD_RESPONSE', { cause: err }))
      }
    })
    // The resource closed its side (idle, refusal, restart) or the stream went: what is pending is retried.
    stream.addEventListener('remoteCloseWrite', () => { this.fail(new StreamGone(`${this.spec.protocol} stream closed by the peer`)) })
    stream.addEventListener('close', evt => { this.fail(new StreamGone(`${this.spec.protocol} stream closed${(evt as { error?: Error }).error != null ? `: ${errorMessage((evt as { error?: Error }).error)}` : ''}`)) })
  }

  async send (payload: Uint8Array, timeoutMs: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.closed) throw new StreamGone(`${this.spec.protocol} stream already closed`)
    const answer = new Promise<Uint8Array>((resolve, reject) => { this.pending.push({ resolve, reject }) })
    // Requests made in this turn of the event loop go out in one write.
    if (this.outgoing.push(requestFrame(payload)) === 1) setImmediate(this.flush)
    const onAbort = (): void => {
      // Answers come in order: a request given up leaves the stream unusable.
      this.fail(new RequestError(`${this.spec.protocol}: no answer in time`, 'ERR_TIMEOUT'))
    }
    const timer = setTimeout(onAbort, timeoutMs)
    signal?.addEventListener('abort', onAbort, { once: true })
    if (signal?.aborted === true) onAbort()
    try {
      return await answer
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  private readonly flush = (): void => {
    const parts = this.outgoing
    this.outgoing = []
    if (this.closed || parts.length === 0) return
    try {
      // A full send buffer is bounded by the pipelining limit: at most this.spec.maxPipelined small requests wait.
      this.stream.send(concat(parts))
    } catch (err) {
      this.fail(new StreamGone(`${this.spec.protocol}: write failed: ${errorMessage(err)}`, { cause: err }))
    }
  }

  fail (err: Error): void {
    if (!this.closed) {
      this.closed = true
      if (err instanceof StreamGone) void this.stream.close({ signal: AbortSignal.timeout(1_000) }).catch(() => { this.stream.abort(err) })
      else this.stream.abort(err)
    }
    for (const p of this.pending.splice(0)) p.reject(err)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const p of this.pending.splice(0)) p.reject(new StreamGone('pull stream closed'))
    await this.stream.close({ signal: AbortSignal.timeout(1_000) }).catch(() => { this.stream.abort(new Error('closed')) })
  }
}

/** The stream ended under a request (resource restarted, idle close, reset): retried once on a new stream. */
class StreamGone extends RequestError {
  constructor (message: string, options?: ErrorOptions) { super(message, 'ERR_REQUEST', options) }
}

interface PeerStreams {
  conns: StreamConn[]
  opening?: Promise<StreamConn | 'legacy'>
  /** Connection ids on which the peer answered only `/astra/mailbox/1.0.0`. */
  legacy: Set<string>
}

export interface RequestStreamsInit {
  /** Streams kept open per resource (1 for a node; the bench's shared hosts use more). */
  streamsPerPeer?: number
  maxPipelined?: number
}

/**
 * The client side: `request(peer, payload)` sends on the stream kept open to `peer`, opening it
 * when there is none (closed on idle or error: reopened transparently; with `spec.retryGone` a
 * request whose stream ended under it is sent once more on a new one). A peer that answers only
 * `spec.oneShot` on a connection is asked one stream per request on that connection.
 */
export class RequestStreams {
  private readonly libp2p: Libp2p
  private readonly spec: StreamSpec
  private readonly perPeer: number
  private readonly maxPipelined: number
  private readonly peers = new Map<string, PeerStreams>()
  private closed = false

  constructor (libp2p: Libp2p, spec: StreamSpec, init: RequestStreamsInit = {}) {
    this.libp2p = libp2p
    this.spec = spec
    this.perPeer = Math.max(1, init.streamsPerPeer ?? 1)
    this.maxPipelined = Math.max(1, init.maxPipelined ?? this.spec.maxPipelined)
  }

  /** Protocol the last pull to `peer` used on its current connection. */
  protocolFor (peer: PeerId): string {
    const ps = this.peers.get(peer.toString())
    return ps != null && this.isLegacy(peer, ps) ? this.spec.oneShot : this.spec.protocol
  }

  async request (peer: PeerId, payload: Uint8Array, options: RequestStreamOptions = {}): Promise<Uint8Array> {
    // A timer per pull, not AbortSignal.timeout/any (which cost more than the rest of a pull on
    // an open stream); a signal is built only to open a stream.
    const deadline = performance.now() + (options.timeoutMs ?? this.spec.timeoutMs)
    const left = (): number => Math.max(0, deadline - performance.now())
    const stopped = (): boolean => options.signal?.aborted === true || left() === 0
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new RequestError('pull streams closed', 'ERR_REQUEST')
      const conn = await this.conn(peer, options.signal, deadline)
      if (conn === 'legacy') {
        return await request(this.libp2p, peer, this.spec.oneShot, payload, { signal: options.signal, timeoutMs: Math.max(1, Math.ceil(left())), maxResponseBytes: this.spec.maxResponseBytes })
      }
      try {
        return openEnvelope(this.spec.protocol, await conn.send(payload, left(), options.signal), peer)
      } catch (err) {
        if (err instanceof StreamGone && attempt === 0 && this.spec.retryGone && !stopped()) continue
        if (err instanceof RequestError) throw err
        throw new RequestError(`${this.spec.protocol} to ${peer.toString()} failed: ${errorMessage(err)}`, stopped() ? 'ERR_TIMEOUT' : 'ERR_REQUEST', { cause: err })
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
  private async conn (peer: PeerId, signal: AbortSignal | undefined, deadline: number): Promise<StreamConn | 'legacy'> {
    const key = peer.toString()
    let ps = this.peers.get(key)
    if (ps == null) this.peers.set(key, ps = { conns: [], legacy: new Set() })
    if (this.isLegacy(peer, ps)) return 'legacy'
    for (;;) {
      ps.conns = ps.conns.filter(c => !c.closed)
      let best: StreamConn | undefined
      for (const c of ps.conns) if (best == null || c.pending.length < best.pending.length) best = c
      if (best != null && best.pending.length === 0) return best
      if (ps.conns.length < this.perPeer) {
        const timeout = AbortSignal.timeout(Math.max(1, Math.ceil(deadline - performance.now())))
        ps.opening ??= this.open(peer, ps, signal != null ? AbortSignal.any([signal, timeout]) : timeout).finally(() => { if (ps != null) ps.opening = undefined })
        if (await ps.opening === 'legacy') return 'legacy'
        continue
      }
      if (best != null && best.pending.length < this.maxPipelined) return best
      // Every stream is full: wait for a slot (the caller's timeout bounds this).
      await new Promise(resolve => setTimeout(resolve, 1))
      if (signal?.aborted === true || performance.now() >= deadline) throw new RequestError(`${this.spec.protocol}: no free pull stream in time`, 'ERR_TIMEOUT')
    }
  }

  private async open (peer: PeerId, ps: PeerStreams, signal: AbortSignal): Promise<StreamConn | 'legacy'> {
    let stream: Stream
    try {
      stream = await this.libp2p.dialProtocol(peer, [this.spec.protocol, this.spec.oneShot], { signal })
    } catch (err) {
      throw new RequestError(`cannot open a ${this.spec.protocol} stream to ${peer.toString()}: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_UNREACHABLE', { cause: err })
    }
    if (stream.protocol === this.spec.protocol) {
      const conn = new StreamConn(stream, this.spec)
      ps.conns.push(conn)
      return conn
    }
    // An older resource: one-shot pulls on this connection from now on.
    stream.abort(new Error('older mailbox protocol: pulled one stream per request'))
    for (const c of this.libp2p.getConnections(peer)) ps.legacy.add(c.id)
    return 'legacy'
  }
}
