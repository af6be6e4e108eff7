import type { PeerId, Stream } from '@libp2p/interface'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { AstradError, DecodeError, RequestError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { pieceLength, type Manifest } from './manifest.ts'
import { StreamReader, STATUS_ERROR, STATUS_OK, errorFrame, readErrorFrame, send } from './stream-io.ts'
import {
  PIECE_PROTOCOL, PIECE_CHUNK_BYTES, PIECE_READ_HIGH_WATER, MAX_CONCURRENT_UPLOADS, MAX_INBOUND_PIECE_STREAMS,
  PIECE_STALL_MS, MAX_QUEUED_UPLOADS, UPLOAD_QUEUE_WAIT_MS, REQUESTER_MEMORY_MS, MAX_REQUESTERS_PER_MODEL
} from './constants.ts'
import { UploadSlots } from './upload-slots.ts'

/**
 * `/astra/piece/1.0.0`: one stream per piece request.
 *
 *   request  = u8 version(1) · 32 B model id · u32 piece · u32 offset · u32 length
 *   response = u8 0 · u32 length · `length` raw bytes      (then the server closes)
 *            | u8 1 · u16 n · n bytes JSON {code, message}
 *
 * Raw bytes after a fixed header keep the per-byte cost at yamux framing only. The server
 * reads from disk in PIECE_CHUNK_BYTES chunks, takes upload tokens per chunk and waits for the
 * stream to drain; the client pauses the stream above PIECE_READ_HIGH_WATER (backpressure
 * all the way to the sender's disk reads) and takes download tokens per chunk. Either side
 * abandons a transfer that moves nothing for PIECE_STALL_MS.
 */

const VERSION = 1
const REQUEST_BYTES = 1 + 32 + 4 + 4 + 4

export interface PieceRequest {
  id: string
  index: number
  offset: number
  length: number
}

export function encodePieceRequest (r: PieceRequest): Uint8Array {
  const id = Buffer.from(r.id, 'hex')
  if (id.length !== 32) throw new RangeError('model id must be 32 bytes of hex')
  const out = new Uint8Array(REQUEST_BYTES)
  out[0] = VERSION
  out.set(id, 1)
  const view = new DataView(out.buffer)
  view.setUint32(33, r.index)
  view.setUint32(37, r.offset)
  view.setUint32(41, r.length)
  return out
}

export function decodePieceRequest (bytes: Uint8Array): PieceRequest {
  if (bytes.length !== REQUEST_BYTES) throw new DecodeError(`piece request of ${bytes.length} bytes, expected ${REQUEST_BYTES}`)
  const version = bytes[0]
  if (version !== VERSION) throw new DecodeError(`unsupported piece request version ${version}`)
  const id = Buffer.from(bytes.subarray(1, 33)).toString('hex')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return { id, index: view.getUint32(33), offset: view.getUint32(37), length: view.getUint32(41) }
}

/** What the piece server needs from the store. */
export interface PieceSource {
  manifest: (id: string) => Manifest | undefined
  has: (id: string, index: number) => boolean
  readPiece: (id: string, index: number, offset?: number, length?: number) => AsyncIterable<Uint8Array>
}

/** A token bucket and a meter (the node's upload or download limit). */
export interface Throttle {
  take: (n: number, signal?: AbortSignal) => Promise<void>
  record: (n: number) => void
}

export interface PieceServerComponents {
  libp2p: Host
  source: PieceSource
  upload?: Throttle
  logger: Logger
}

export interface PieceServerStats {
  active: number
  /** Requests waiting for an upload slot. */
  queued: number
  served: number
  /** Requests not served, by code (bad request, busy, no piece, timeout …). */
  refused: Record<string, number>
}

/** Serves pieces this node holds. Caps concurrent uploads, streams per connection and stalls. */
export class PieceServer {
  private readonly components: PieceServerComponents
  private readonly streams = new Set<Stream>()
  private started = false
  private readonly slots = new UploadSlots({ slots: MAX_CONCURRENT_UPLOADS, maxQueued: MAX_QUEUED_UPLOADS, maxWaitMs: UPLOAD_QUEUE_WAIT_MS })
  /** Per model, the peers that asked for its pieces lately (they are downloading it), with when. */
  private readonly requesters = new Map<string, Map<string, { peer: PeerId, at: number }>>()
  readonly stats: PieceServerStats = { active: 0, queued: 0, served: 0, refused: {} }

  constructor (components: PieceServerComponents) {
    this.components = components
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.components.libp2p.handle(PIECE_PROTOCOL, (stream, connection) => {
      void this.serve(stream, connection.remotePeer)
    }, {
      maxInboundStreams: MAX_INBOUND_PIECE_STREAMS,
      // Nodes behind NAT are reached through a relay; its connections are marked limited.
      runOnLimitedConnection: true
    })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.libp2p.unhandle(PIECE_PROTOCOL).catch(() => {})
    for (const s of this.streams) s.abort(new Error('piece server stopping'))
    this.streams.clear()
  }

  /** Peers that asked for pieces of model `id` in the last REQUESTER_MEMORY_MS: its downloaders. */
  recentRequesters (id: string): PeerId[] {
    const m = this.requesters.get(id)
    if (m == null) return []
    const cutoff = Date.now() - REQUESTER_MEMORY_MS
    const out: PeerId[] = []
    for (const [key, r] of m) {
      if (r.at < cutoff) m.delete(key)
      else out.push(r.peer)
    }
    if (m.size === 0) this.requesters.delete(id)
    return out
  }

  private noteRequester (id: string, peer: PeerId): void {
    let m = this.requesters.get(id)
    if (m == null) {
      // Bounded: models asked for within the memory window (old ones pruned on the way).
      for (const key of [...this.requesters.keys()]) this.recentRequesters(key)
      this.requesters.set(id, m = new Map())
    }
    const key = peer.toString()
    m.delete(key)
    m.set(key, { peer, at: Date.now() })
    if (m.size > MAX_REQUESTERS_PER_MODEL) m.delete(m.keys().next().value!)
  }

  private refuse (reason: string): void {
    this.stats.refused[reason] = (this.stats.refused[reason] ?? 0) + 1
  }

  private async serve (stream: Stream, peer: PeerId): Promise<void> {
    const { source, upload, logger } = this.components
    this.streams.add(stream)
    const reader = new StreamReader(stream, 4096)
    const stall = new StallTimer(PIECE_STALL_MS)
    let counted = false
    let release: (() => void) | undefined
    try {
      const req = decodePieceRequest(await reader.exactly(REQUEST_BYTES, stall.signal))
      reader.close()
      await Trust.of(this.components.libp2p).require(peer, 'member', PIECE_PROTOCOL)
      const manifest = source.manifest(req.id)
      if (manifest == null) throw new AstradError(`no model ${req.id}`, 'ERR_NOT_FOUND')
      let plen: number
      try {
        plen = pieceLength(manifest, req.index)
      } catch {
        throw new AstradError(`piece ${req.index} out of range`, 'ERR_BAD_REQUEST')
      }
      if (req.length === 0 || req.offset + req.length > plen) throw new AstradError(`range ${req.offset}+${req.length} outside piece of ${plen} bytes`, 'ERR_BAD_REQUEST')
      this.noteRequester(req.id, peer)
      if (!source.has(req.id, req.index)) throw new AstradError(`piece ${req.index} not held`, 'ERR_NO_PIECE')
      // Wait for one of the few upload slots (fair queue); ERR_BUSY when it is long.
      this.stats.queued++
      try {
        release = await this.slots.acquire(peer.toString(), stall.signal)
      } finally {
        this.stats.queued--
      }
      // It may have been dropped (rotten) or evicted while we waited.
      if (!source.has(req.id, req.index)) throw new AstradError(`piece ${req.index} not held`, 'ERR_NO_PIECE')
      // The first chunk before the answer: a piece file that changed since it was verified is
      // re-hashed here, and one that fails is refused (ERR_NO_PIECE: the peer goes elsewhere
      // without counting it against us), not cut off after a status OK.
      const chunks = source.readPiece(req.id, req.index, req.offset, req.length)[Symbol.asyncIterator]()
      try {
        let next = await chunks.next()
        this.stats.active++
        counted = true

        const header = new Uint8Array(5)
        header[0] = STATUS_OK
        new DataView(header.buffer).setUint32(1, req.length)
        await send(stream, header, stall.signal)
        let sent = 0
        // The store reads in chunks of PIECE_CHUNK_BYTES: one token take and one message each.
        while (next.done !== true) {
          const chunk = next.value
          await upload?.take(chunk.length, stall.signal)
          await send(stream, chunk, stall.signal)
          upload?.record(chunk.length)
          sent += chunk.length
          stall.reset()
          next = await chunks.next()
        }
        if (sent !== req.length) throw new AstradError(`piece read ${sent} of ${req.length} bytes`, 'ERR_INTERNAL')
      } finally {
        // Closes the piece file when we stop early (an error, a stall); a no-op after the end.
        await chunks.return?.()
      }
      await stream.close({ signal: stall.signal })
      this.stats.served++
    } catch (err) {
      // A DecodeError is an AstradError too: test it first, the peer sent a bad request.
      const code = err instanceof DecodeError ? 'ERR_BAD_REQUEST' : err instanceof AstradError ? err.code : stall.signal.aborted ? 'ERR_TIMEOUT' : 'ERR_STREAM'
      this.refuse(code)
      if (!counted && stream.writeStatus === 'writable') {
        // Nothing sent yet: tell the peer why, so it can go elsewhere at once.
        try {
          await send(stream, errorFrame(code, errorMessage(err)), AbortSignal.timeout(1000))
          await stream.close({ signal: AbortSignal.timeout(1000) })
        } catch {
          stream.abort(err instanceof Error ? err : new Error(String(err)))
        }
      } else {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
      if (code !== 'ERR_NO_PIECE' && code !== 'ERR_BUSY') logger.debug({ peer: peer.toString(), code, err: errorMessage(err) }, 'piece request failed')
    } finally {
      if (counted) this.stats.active--
      release?.()
      stall.clear()
      reader.close()
      this.streams.delete(stream)
    }
  }
}

/** An AbortSignal that fires when `reset()` has not been called for `ms`. */
export class StallTimer {
  private readonly controller = new AbortController()
  private timer: NodeJS.Timeout
  private readonly ms: number

  constructor (ms: number) {
    this.ms = ms
    this.timer = setTimeout(() => { this.fire() }, ms)
  }

  get signal (): AbortSignal { return this.controller.signal }

  private fire (): void {
    this.controller.abort(new RequestError(`no progress for ${this.ms} ms`, 'ERR_TIMEOUT'))
  }

  reset (): void {
    this.timer.refresh()
  }

  clear (): void {
    clearTimeout(this.timer)
  }
}

export interface FetchOptions {
  signal?: AbortSignal
  download?: Throttle
  /** Called with each chunk's size as it arrives (progress, rates). */
  onBytes?: (n: number) => void
  stallMs?: number
}

/**
 * Fetches one piece range from a peer into `sink`. Throws RequestError with the server's code
 * (ERR_NO_PIECE, ERR_BUSY, ERR_NOT_FOUND …), ERR_TIMEOUT on a stall, ERR_UNREACHABLE when the
 * peer cannot be dialled, ERR_BAD_RESPONSE on a protocol violation.
 */
export async function fetchPiece (libp2p: Host, peer: PeerId, req: PieceRequest, sink: (chunk: Uint8Array) => Promise<void>, options: FetchOptions = {}): Promise<void> {
  const stall = new StallTimer(options.stallMs ?? PIECE_STALL_MS)
  const signal = options.signal != null ? AbortSignal.any([options.signal, stall.signal]) : stall.signal
  let stream: Stream
  try {
    stream = await libp2p.dialProtocol(peer, PIECE_PROTOCOL, { signal, runOnLimitedConnection: true })
  } catch (err) {
    stall.clear()
    throw new RequestError(`cannot open ${PIECE_PROTOCOL} to ${peer.toString()}: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_UNREACHABLE', { cause: err })
  }
  const reader = new StreamReader(stream, PIECE_READ_HIGH_WATER)
  let sinkError: unknown
  try {
    await send(stream, encodePieceRequest(req), signal)
    const status = (await reader.exactly(1, signal))[0]
    if (status === STATUS_ERROR) {
      const remote = await readErrorFrame(reader, signal)
      throw new RequestError(`${peer.toString()} refused piece ${req.index}: ${typeof remote.message === 'string' ? remote.message : 'unknown error'}`, typeof remote.code === 'string' ? remote.code : 'ERR_REMOTE')
    }
    if (status !== STATUS_OK) throw new RequestError(`bad piece response status ${String(status)}`, 'ERR_BAD_RESPONSE')
    const length = new DataView((await reader.exactly(4, signal)).buffer).getUint32(0)
    if (length !== req.length) throw new RequestError(`peer announced ${length} bytes, asked for ${req.length}`, 'ERR_BAD_RESPONSE')
    let received = 0
    while (received < length) {
      const chunk = await reader.next(length - received, signal)
      if (chunk == null) throw new RequestError(`stream ended after ${received} of ${length} bytes`, 'ERR_BAD_RESPONSE')
      stall.reset()
      await options.download?.take(chunk.length, signal)
      try {
        await sink(chunk)
      } catch (err) {
        sinkError = err
        throw err
      }
      options.download?.record(chunk.length)
      options.onBytes?.(chunk.length)
      received += chunk.length
      stall.reset()
    }
    await stream.close({ signal }).catch(() => {})
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    // The local store refused the bytes (disk full, read-only): its error, not the peer's.
    if (err === sinkError) throw err
    if (err instanceof RequestError) throw err
    if (stall.signal.aborted) throw new RequestError(`piece ${req.index} from ${peer.toString()} stalled`, 'ERR_TIMEOUT', { cause: err })
    if (options.signal?.aborted === true) throw err
    throw new RequestError(`piece ${req.index} from ${peer.toString()} failed: ${errorMessage(err)}`, 'ERR_STREAM', { cause: err })
  } finally {
    stall.clear()
    reader.close()
  }
}
