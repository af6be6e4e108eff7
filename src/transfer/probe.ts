import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { PeerId, Stream } from '@libp2p/interface'
import type { Host } from '../p2p/host.ts'
import { ProtocolPeers } from '../p2p/protocol-peers.ts'
import type { Logger } from '../util/logger.ts'
import { AstradError, DecodeError, RequestError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { backoffDelay, sleep } from '../util/time.ts'
import { StreamReader, STATUS_ERROR, STATUS_OK, errorFrame, readErrorFrame, send } from './stream-io.ts'
import type { TransferLimits } from './limiter.ts'
import {
  PROBE_PROTOCOL, PROBE_DURATION_MS, PROBE_MAX_BYTES, PROBE_CHUNK_BYTES, PROBE_MAX_CONCURRENT,
  PROBE_MAX_PER_PEER, PROBE_MAX_INBOUND_STREAMS, PROBE_GRACE_MS, PROBE_MIN_BYTES, PROBE_RETRY_BASE_MS,
  PROBE_RETRY_MAX_MS, PROBE_GIVE_UP_MS
} from './constants.ts'

export { PROBE_PROTOCOL }

/**
 * The automatic per-node limit (the article's: measure a node's speed when it joins and set a
 * threshold so P2P never starves the real service).
 *
 * `/astra/probe/1.0.0`, served by resources, one stream per direction:
 *
 *   request  = u8 version(1) · u8 direction (0 = down: server → client, 1 = up) · u32 durationMs · u32 maxBytes
 *   answer   = u8 0 · u32 granted durationMs · u32 granted maxBytes      (the server clamps both)
 *            | u8 1 · u16 n · n bytes JSON {code, message, retryAfterMs?}  (ERR_BUSY, ERR_BAD_REQUEST)
 *   down: the server sends raw bytes until the granted bytes or time are used, then closes.
 *   up:   the client sends raw bytes likewise and closes its write side; the server answers
 *         u8 0 · u32 bytes · u32 µs, counted from its `go` answer to its last received byte.
 *
 * The receiving side measures (a sender's buffers would flatter it), from the moment it told
 * the sender to go (request or `go` answer) to the last byte: dial and handshake are not
 * counted, one round trip is (conservative, and negligible against ~1 s). The server
 * caps concurrent probes (all peers, and per peer), bytes and time; refusals carry a retry
 * hint that grows with recent demand, so a thousand joining nodes spread out instead of
 * hammering. The node's capacity = min(probe, link speed of the default-route NIC) where known.
 */

const VERSION = 1
const REQUEST_BYTES = 10
const DIR_DOWN = 0
const DIR_UP = 1
/** Refusals remembered for the retry hint: the last 10 s, at most this many. */
const REFUSAL_WINDOW_MS = 10_000
const MAX_REFUSALS_KEPT = 4096

/** Random bytes, sent over and over (nothing along the way can compress them). */
let payload: Uint8Array | undefined
function chunkOf (n: number): Uint8Array {
  payload ??= new Uint8Array(randomBytes(PROBE_CHUNK_BYTES))
  return n >= payload.length ? payload : payload.subarray(0, n)
}

/** A probe failed or was refused. `retryAfterMs` is the server's hint when it was busy. */
export class ProbeError extends RequestError {
  readonly retryAfterMs?: number
  constructor (message: string, code: string, options: ErrorOptions & { retryAfterMs?: number } = {}) {
    super(message, code, options)
    this.name = 'ProbeError'
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs
  }
}

export type ProbeDirection = 'download' | 'upload'

interface ProbeRequest { direction: number, durationMs: number, maxBytes: number }

export function encodeProbeRequest (r: ProbeRequest): Uint8Array {
  const out = new Uint8Array(REQUEST_BYTES)
  const view = new DataView(out.buffer)
  out[0] = VERSION
  out[1] = r.direction
  view.setUint32(2, r.durationMs)
  view.setUint32(6, r.maxBytes)
  return out
}

export function decodeProbeRequest (bytes: Uint8Array): ProbeRequest {
  if (bytes.length !== REQUEST_BYTES) throw new DecodeError(`probe request of ${bytes.length} bytes, expected ${REQUEST_BYTES}`)
  if (bytes[0] !== VERSION) throw new DecodeError(`unsupported probe version ${String(bytes[0])}`)
  const direction = bytes[1]!
  if (direction !== DIR_DOWN && direction !== DIR_UP) throw new DecodeError(`unknown probe direction ${direction}`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const durationMs = view.getUint32(2)
  const maxBytes = view.getUint32(6)
  if (durationMs === 0 || maxBytes === 0) throw new DecodeError('probe duration and size must be positive')
  return { direction, durationMs, maxBytes }
}

/**
 * Bytes received and the time from `start` (the moment the sender was told to go) to the last
 * arrival. Counting from the go rather than from the first arrival adds one round trip (tiny
 * against a probe of ~1 s) but cannot be flattered by a late first message followed by a
 * buffered burst.
 */
class Arrivals {
  private readonly start: number
  private last: number
  bytes = 0

  constructor (start = performance.now()) {
    this.start = this.last = start
  }

  add (n: number): void {
    this.bytes += n
    this.last = performance.now()
  }

  get micros (): number {
    return Math.round((this.last - this.start) * 1000)
  }
}

function rateOf (bytes: number, micros: number, what: string): number {
  if (bytes < PROBE_MIN_BYTES || micros <= 0) {
    throw new ProbeError(`${what} moved too little to measure (${bytes} bytes in ${micros} µs; need ${PROBE_MIN_BYTES})`, 'ERR_PROBE_SHORT')
  }
  return bytes * 1e6 / micros
}

/** Sends raw bytes until `maxBytes` are out or `durationMs` have passed. */
async function pump (stream: Stream, durationMs: number, maxBytes: number, signal: AbortSignal): Promise<number> {
  const start = performance.now()
  let sent = 0
  while (sent < maxBytes && performance.now() - start < durationMs) {
    const chunk = chunkOf(Math.min(PROBE_CHUNK_BYTES, maxBytes - sent))
    await send(stream, chunk, signal)
    sent += chunk.length
  }
  return sent
}

export interface ProbeServerOptions {
  /** Probes served at once, all peers. @default PROBE_MAX_CONCURRENT (4) */
  maxConcurrent?: number
  /** Probes one peer may run at once. @default PROBE_MAX_PER_PEER (1) */
  maxPerPeer?: number
  /** Longest granted probe. @default PROBE_DURATION_MS (2 s) */
  maxDurationMs?: number
  /** Most bytes granted per probe. @default PROBE_MAX_BYTES (64 MiB) */
  maxBytes?: number
  logger?: Logger
}

export interface ProbeServerStats {
  active: number
  served: number
  bytes: number
  refused: Record<string, number>
}

/** The server side of the probe (resource role). */
export class ProbeServer {
  private readonly libp2p: Host
  private readonly maxConcurrent: number
  private readonly maxPerPeer: number
  private readonly maxDurationMs: number
  private readonly maxBytes: number
  private readonly logger?: Logger
  private readonly perPeer = new Map<string, number>()
  private readonly streams = new Set<Stream>()
  /** Times of recent refusals (demand beyond capacity), for the retry hint. */
  private readonly refusals: number[] = []
  private started = false
  readonly stats: ProbeServerStats = { active: 0, served: 0, bytes: 0, refused: {} }

  constructor (libp2p: Host, options: ProbeServerOptions = {}) {
    this.libp2p = libp2p
    this.maxConcurrent = options.maxConcurrent ?? PROBE_MAX_CONCURRENT
    this.maxPerPeer = options.maxPerPeer ?? PROBE_MAX_PER_PEER
    this.maxDurationMs = Math.min(options.maxDurationMs ?? PROBE_DURATION_MS, 0xffffffff)
    this.maxBytes = Math.min(options.maxBytes ?? PROBE_MAX_BYTES, 0xffffffff)
    this.logger = options.logger
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.libp2p.handle(PROBE_PROTOCOL, (stream, connection) => {
      void this.serve(stream, connection.remotePeer)
    }, { maxInboundStreams: PROBE_MAX_INBOUND_STREAMS })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.libp2p.unhandle(PROBE_PROTOCOL).catch(() => {})
    for (const s of this.streams) s.abort(new Error('probe server stopping'))
    this.streams.clear()
  }

  private noteRefusal (): void {
    const now = performance.now()
    while (this.refusals.length > 0 && (this.refusals[0]! < now - REFUSAL_WINDOW_MS || this.refusals.length >= MAX_REFUSALS_KEPT)) this.refusals.shift()
    this.refusals.push(now)
  }

  /**
   * How long a refused client should wait: about one probe's duration per round of waiting
   * clients (refusals in the last 10 s ÷ slots), jittered ±50 %, at most PROBE_RETRY_MAX_MS.
   */
  private retryHint (): number {
    const rounds = 1 + this.refusals.length / this.maxConcurrent
    return Math.round(Math.min(PROBE_RETRY_MAX_MS, this.maxDurationMs * rounds * (0.5 + Math.random())))
  }

  private async serve (stream: Stream, peer: PeerId): Promise<void> {
    const key = peer.toString()
    this.streams.add(stream)
    const reader = new StreamReader(stream, 4 * PROBE_CHUNK_BYTES)
    let signal = AbortSignal.timeout(PROBE_GRACE_MS)
    let acquired = false
    let answered = false
    try {
      let req: ProbeRequest
      try {
        req = decodeProbeRequest(await reader.exactly(REQUEST_BYTES, signal))
      } catch (err) {
        if (signal.aborted) throw err
        throw new AstradError(`bad probe request: ${errorMessage(err)}`, 'ERR_BAD_REQUEST')
      }
      await Trust.of(this.libp2p).require(peer, 'member', PROBE_PROTOCOL)
      if (this.stats.active >= this.maxConcurrent || (this.perPeer.get(key) ?? 0) >= this.maxPerPeer) {
        this.noteRefusal()
        throw new ProbeError('probe server busy; retry later', 'ERR_BUSY', { retryAfterMs: this.retryHint() })
      }
      acquired = true
      this.stats.active++
      this.perPeer.set(key, (this.perPeer.get(key) ?? 0) + 1)
      const durationMs = Math.min(req.durationMs, this.maxDurationMs)
      const maxBytes = Math.min(req.maxBytes, this.maxBytes)
      signal = AbortSignal.timeout(durationMs + PROBE_GRACE_MS)
      const ok = new Uint8Array(9)
      ok[0] = STATUS_OK
      new DataView(ok.buffer).setUint32(1, durationMs)
      new DataView(ok.buffer).setUint32(5, maxBytes)
      await send(stream, ok, signal)
      answered = true
      const go = performance.now()
      if (req.direction === DIR_DOWN) {
        reader.close()
        this.stats.bytes += await pump(stream, durationMs, maxBytes, signal)
      } else {
        const arrivals = new Arrivals(go)
        for (;;) {
          const chunk = await reader.next(PROBE_CHUNK_BYTES, signal)
          if (chunk == null) break
          arrivals.add(chunk.length)
          if (arrivals.bytes > maxBytes) throw new AstradError(`client sent more than the ${maxBytes} bytes granted`, 'ERR_BAD_REQUEST')
        }
        this.stats.bytes += arrivals.bytes
        const result = new Uint8Array(9)
        result[0] = STATUS_OK
        new DataView(result.buffer).setUint32(1, arrivals.bytes)
        new DataView(result.buffer).setUint32(5, Math.min(arrivals.micros, 0xffffffff))
        await send(stream, result, signal)
      }
      await stream.close({ signal })
      this.stats.served++
    } catch (err) {
      const code = err instanceof AstradError ? err.code : signal.aborted ? 'ERR_TIMEOUT' : 'ERR_STREAM'
      this.stats.refused[code] = (this.stats.refused[code] ?? 0) + 1
      if (!answered && stream.writeStatus === 'writable') {
        // Nothing sent yet: say why (and when to come back), so the client can act on it.
        try {
          await send(stream, errorFrame(code, errorMessage(err), err instanceof ProbeError && err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}), AbortSignal.timeout(1000))
          await stream.close({ signal: AbortSignal.timeout(1000) })
        } catch {
          stream.abort(err instanceof Error ? err : new Error(String(err)))
        }
      } else {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
      if (code !== 'ERR_BUSY') this.logger?.debug({ peer: key, code, err: errorMessage(err) }, 'probe failed')
    } finally {
      if (acquired) {
        this.stats.active--
        const n = (this.perPeer.get(key) ?? 1) - 1
        if (n <= 0) this.perPeer.delete(key)
        else this.perPeer.set(key, n)
      }
      reader.close()
      this.streams.delete(stream)
    }
  }
}

export interface ProbeOptions {
  /** Per direction; the server may grant less. @default PROBE_DURATION_MS (2 s) */
  durationMs?: number
  /** Per direction; the server may grant less. @default PROBE_MAX_BYTES (64 MiB) */
  maxBytes?: number
  signal?: AbortSignal
}

/**
 * Measures one direction against `peer` (bytes/s). Throws ProbeError: ERR_BUSY (with
 * retryAfterMs), ERR_BAD_REQUEST, ERR_UNREACHABLE, ERR_TIMEOUT, ERR_BAD_RESPONSE, ERR_PROBE_SHORT.
 */
export async function probeDirection (libp2p: Host, peer: PeerId, direction: ProbeDirection, options: ProbeOptions = {}): Promise<number> {
  const durationMs = options.durationMs ?? PROBE_DURATION_MS
  const maxBytes = options.maxBytes ?? PROBE_MAX_BYTES
  if (!(durationMs >= 1 && durationMs <= 0xffffffff)) throw new RangeError(`durationMs must be between 1 and 2^32-1, got ${durationMs}`)
  if (!(maxBytes >= 1 && maxBytes <= 0xffffffff)) throw new RangeError(`maxBytes must be between 1 and 2^32-1, got ${maxBytes}`)
  const timeout = AbortSignal.timeout(durationMs + 2 * PROBE_GRACE_MS)
  const signal = options.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
  const what = `${direction} probe with ${peer.toString()}`
  let stream: Stream
  try {
    stream = await libp2p.dialProtocol(peer, PROBE_PROTOCOL, { signal })
  } catch (err) {
    if (options.signal?.aborted === true) throw options.signal.reason
    throw new ProbeError(`cannot open ${PROBE_PROTOCOL} to ${peer.toString()}: ${errorMessage(err)}`, timeout.aborted ? 'ERR_TIMEOUT' : 'ERR_UNREACHABLE', { cause: err })
  }
  const reader = new StreamReader(stream, 4 * PROBE_CHUNK_BYTES)
  try {
    const go = performance.now()
    await send(stream, encodeProbeRequest({ direction: direction === 'download' ? DIR_DOWN : DIR_UP, durationMs, maxBytes }), signal)
    const status = (await reader.exactly(1, signal))[0]
    if (status === STATUS_ERROR) {
      const remote = await readErrorFrame(reader, signal)
      const retryAfterMs = typeof remote.retryAfterMs === 'number' && Number.isFinite(remote.retryAfterMs) && remote.retryAfterMs >= 0
        ? Math.min(remote.retryAfterMs, PROBE_RETRY_MAX_MS)
        : undefined
      throw new ProbeError(`${what} refused: ${typeof remote.message === 'string' ? remote.message : 'unknown error'}`, typeof remote.code === 'string' ? remote.code : 'ERR_REMOTE', { retryAfterMs })
    }
    if (status !== STATUS_OK) throw new ProbeError(`${what}: bad status ${String(status)}`, 'ERR_BAD_RESPONSE')
    const granted = new DataView((await reader.exactly(8, signal)).buffer)
    const grantedMs = granted.getUint32(0)
    const grantedBytes = granted.getUint32(4)
    if (grantedMs > durationMs || grantedBytes > maxBytes) throw new ProbeError(`${what}: server granted more than asked`, 'ERR_BAD_RESPONSE')
    let bps: number
    if (direction === 'download') {
      const arrivals = new Arrivals(go)
      for (;;) {
        const chunk = await reader.next(PROBE_CHUNK_BYTES, signal)
        if (chunk == null) break
        arrivals.add(chunk.length)
        if (arrivals.bytes > grantedBytes) throw new ProbeError(`${what}: server sent more than the ${grantedBytes} bytes granted`, 'ERR_BAD_RESPONSE')
      }
      await stream.close({ signal })
      bps = rateOf(arrivals.bytes, arrivals.micros, what)
    } else {
      await pump(stream, grantedMs, grantedBytes, signal)
      await stream.close({ signal })
      const result = await reader.exactly(9, signal)
      if (result[0] !== STATUS_OK) throw new ProbeError(`${what}: bad result status ${String(result[0])}`, 'ERR_BAD_RESPONSE')
      const view = new DataView(result.buffer)
      bps = rateOf(view.getUint32(1), view.getUint32(5), what)
    }
    if (!Number.isFinite(bps) || bps <= 0) throw new ProbeError(`${what}: no rate`, 'ERR_BAD_RESPONSE')
    return bps
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    if (err instanceof ProbeError) throw err
    if (options.signal?.aborted === true) throw options.signal.reason
    if (err instanceof RequestError) throw new ProbeError(`${what}: ${err.message}`, err.code, { cause: err })
    throw new ProbeError(`${what} failed: ${errorMessage(err)}`, timeout.aborted ? 'ERR_TIMEOUT' : 'ERR_STREAM', { cause: err })
  } finally {
    reader.close()
  }
}

/** Measures download (peer → us), then upload (us → peer), in bytes/s. */
export async function probeLink (libp2p: Host, peer: PeerId, options: ProbeOptions = {}): Promise<{ downloadBps: number, uploadBps: number }> {
  const downloadBps = await probeDirection(libp2p, peer, 'download', options)
  const uploadBps = await probeDirection(libp2p, peer, 'upload', options)
  return { downloadBps, uploadBps }
}

const RTF_UP = 0x1
const RTF_REJECT = 0x200

/** The interface carrying the default route (IPv4 first, lowest metric; then IPv6). */
export function defaultRouteInterface (procDir = '/proc'): string | undefined {
  const best = (rows: Array<{ iface: string, metric: number }>): string | undefined =>
    rows.sort((a, b) => a.metric - b.metric)[0]?.iface
  try {
    const rows: Array<{ iface: string, metric: number }> = []
    for (const line of fs.readFileSync(path.join(procDir, 'net/route'), 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 8) continue
      const [iface, dest, , flags, , , metric, mask] = f as [string, string, string, string, string, string, string, string]
      if (dest !== '00000000' || mask !== '00000000') continue
      const fl = Number.parseInt(flags, 16)
      if ((fl & RTF_UP) === 0 || (fl & RTF_REJECT) !== 0) continue
      rows.push({ iface, metric: Number.parseInt(metric, 10) || 0 })
    }
    const v4 = best(rows)
    if (v4 != null) return v4
  } catch {}
  try {
    const rows: Array<{ iface: string, metric: number }> = []
    for (const line of fs.readFileSync(path.join(procDir, 'net/ipv6_route'), 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10) continue
      const [dest, plen, , , , metric, , , flags, iface] = f as [string, string, string, string, string, string, string, string, string, string]
      if (!/^0{32}$/.test(dest) || plen !== '00' || iface === 'lo') continue
      const fl = Number.parseInt(flags, 16)
      if ((fl & RTF_UP) === 0 || (fl & RTF_REJECT) !== 0) continue
      rows.push({ iface, metric: Number.parseInt(metric, 16) || 0 })
    }
    return best(rows)
  } catch {}
  return undefined
}

/**
 * Link speed of the default-route interface in bytes/s, from /sys/class/net/<if>/speed (Mb/s).
 * undefined where unknown: no default route, virtual NICs and loopback (-1 or EINVAL).
 */
export function linkSpeedBps (options: { procDir?: string, sysDir?: string } = {}): number | undefined {
  const iface = defaultRouteInterface(options.procDir)
  if (iface == null || !/^[\w.:@-]+$/.test(iface) || iface === '..' || iface === '.') return undefined
  let text: string
  try {
    text = fs.readFileSync(path.join(options.sysDir ?? '/sys', 'class/net', iface, 'speed'), 'utf8')
  } catch {
    return undefined
  }
  const mbps = Number(text.trim())
  // -1 = unknown (virtual NICs); 2^32-1 on some drivers for the same; > 1 Tb/s is no NIC.
  if (!Number.isInteger(mbps) || mbps <= 0 || mbps > 1_000_000) return undefined
  return mbps * 1_000_000 / 8
}

export interface AutoLimiterOptions {
  /** Per direction. @default PROBE_DURATION_MS */
  durationMs?: number
  /** Per direction. @default PROBE_MAX_BYTES */
  maxBytes?: number
  /** Link speed source (tests replace it). @default linkSpeedBps */
  linkSpeed?: () => number | undefined
  retryBaseMs?: number
  retryMaxMs?: number
  /** Give up after this long without a measurement (then the link speed, if known). @default PROBE_GIVE_UP_MS */
  giveUpMs?: number
  /** Probe peers tried per round before backing off. @default 3 */
  peersPerRound?: number
}

type Direction = 'upload' | 'download'

/**
 * Measures this node at join and sets the `auto` limits: waits for a connected peer that
 * speaks PROBE_PROTOCOL (a resource), probes each `auto` direction once (retrying other
 * resources and backing off, honouring busy hints), then calls `limits.setMeasured` with
 * min(probe, link speed). Gives up after `giveUpMs` (then uses the link speed if known, and
 * tries again when a new probe peer connects). Does nothing when no direction is `auto`.
 */
export class AutoLimiter {
  private readonly libp2p: Host
  private readonly logger: Logger
  private readonly limits: TransferLimits
  private readonly options: AutoLimiterOptions
  private peers?: ProtocolPeers
  private controller?: AbortController
  private running = false
  private done = false
  private readonly probed: Partial<Record<Direction, number>> = {}
  private peerArrived?: PromiseWithResolvers<void>

  constructor (components: { libp2p: Host, logger: Logger }, limits: TransferLimits, options: AutoLimiterOptions = {}) {
    this.libp2p = components.libp2p
    this.logger = components.logger
    this.limits = limits
    this.options = options
  }

  /** True once every `auto` direction has a measurement. */
  get measured (): boolean { return this.done }

  start (): void {
    if (this.controller != null) return
    if (this.limits.autoDirections().length === 0 || this.done) return
    const controller = this.controller = new AbortController()
    const peers = this.peers = new ProtocolPeers(this.libp2p, PROBE_PROTOCOL)
    peers.onConnect(() => {
      this.peerArrived?.resolve()
      if (!this.running && !this.done && !controller.signal.aborted) void this.run(controller.signal)
    })
    peers.start().then(() => {
      if (!controller.signal.aborted) void this.run(controller.signal)
    }, (err: unknown) => {
      this.logger.warn({ err: errorMessage(err) }, 'speed probe: cannot watch for probe peers')
    })
  }

  stop (): void {
    this.controller?.abort(new Error('auto limiter stopping'))
    this.controller = undefined
    this.peers?.stop()
    this.peers = undefined
  }

  private needed (): Direction[] {
    return this.limits.autoDirections().filter(d => this.probed[d] === undefined)
  }

  /** Probe peers: those identify reported, plus already-connected peers known to speak it. */
  private async candidates (): Promise<PeerId[]> {
    const out = new Map<string, PeerId>()
    for (const p of this.peers?.shuffled() ?? []) out.set(p.toString(), p)
    for (const conn of this.libp2p.getConnections()) {
      const id = conn.remotePeer
      if (out.has(id.toString()) || conn.limits != null) continue
      try {
        if ((await this.libp2p.peerStore.get(id)).protocols.includes(PROBE_PROTOCOL)) out.set(id.toString(), id)
      } catch {}
    }
    return [...out.values()]
  }

  private async waitForPeer (ms: number, signal: AbortSignal): Promise<boolean> {
    if (ms <= 0) return false
    this.peerArrived = Promise.withResolvers<void>()
    const timer = setTimeout(() => { this.peerArrived?.reject(new Error('timeout')) }, ms)
    const onAbort = (): void => { this.peerArrived?.reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      await this.peerArrived.promise
      return true
    } catch {
      return false
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      this.peerArrived = undefined
    }
  }

  private async run (signal: AbortSignal): Promise<void> {
    if (this.running || this.done) return
    this.running = true
    const giveUpAt = performance.now() + (this.options.giveUpMs ?? PROBE_GIVE_UP_MS)
    let attempt = 0
    try {
      while (!signal.aborted) {
        const need = this.needed()
        if (need.length === 0) {
          this.apply('probe')
          return
        }
        const peers = (await this.candidates()).slice(0, this.options.peersPerRound ?? 3)
        this.limits.setNoPeer(peers.length === 0)
        if (peers.length === 0) {
          if (!await this.waitForPeer(giveUpAt - performance.now(), signal)) break
          continue
        }
        let hint = 0
        for (const peer of peers) {
          try {
            for (const d of this.needed()) {
              this.probed[d] = await probeDirection(this.libp2p, peer, d, { durationMs: this.options.durationMs, maxBytes: this.options.maxBytes, signal })
              this.logger.debug({ peer: peer.toString(), direction: d, bps: Math.round(this.probed[d]) }, 'speed probe measured')
            }
            break
          } catch (err) {
            if (signal.aborted) return
            if (err instanceof ProbeError && err.retryAfterMs !== undefined) hint = Math.max(hint, err.retryAfterMs)
            this.logger.debug({ peer: peer.toString(), code: (err as { code?: string }).code, err: errorMessage(err) }, 'speed probe failed')
          }
        }
        if (this.needed().length === 0) continue
        const delay = Math.max(hint, backoffDelay(attempt++, this.options.retryBaseMs ?? PROBE_RETRY_BASE_MS, this.options.retryMaxMs ?? PROBE_RETRY_MAX_MS))
        if (performance.now() + delay > giveUpAt) break
        await sleep(delay, signal)
      }
      if (!signal.aborted) this.giveUp()
    } catch (err) {
      if (!signal.aborted) this.logger.warn({ err: errorMessage(err) }, 'speed probe stopped')
    } finally {
      this.running = false
    }
  }

  /** capacity = min(probe, link) where known; sets the limits. */
  private apply (how: 'probe' | 'fallback'): void {
    const link = (this.options.linkSpeed ?? linkSpeedBps)()
    const m: { upload?: number, download?: number } = {}
    for (const d of this.limits.autoDirections()) {
      const probe = this.probed[d]
      const known = [probe, link].filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0)
      if (known.length > 0) m[d] = Math.min(...known)
    }
    if (how === 'probe') this.done = true
    if (Object.keys(m).length === 0) return
    this.limits.setMeasured(m)
    const s = this.limits.state()
    this.logger.info({
      how,
      linkBps: link ?? null,
      probeUploadBps: this.probed.upload != null ? Math.round(this.probed.upload) : null,
      probeDownloadBps: this.probed.download != null ? Math.round(this.probed.download) : null,
      upload: s.upload.limit,
      download: s.download.limit
    }, 'automatic transfer limits set')
  }

  private giveUp (): void {
    const link = (this.options.linkSpeed ?? linkSpeedBps)()
    if (link == null && this.needed().every(d => this.limits.state()[d].source === 'no-peer')) {
      // A one-host cluster: nothing to measure against and nothing to move; not a fault.
      this.logger.info({ missing: this.needed() }, 'speed probe: no peer to measure against; auto limit off until one connects')
      return
    }
    this.logger.warn({ missing: this.needed(), linkBps: link ?? null }, link != null
      ? 'speed probe did not finish; auto limit from the link speed until a probe succeeds (set --upload-limit/--download-limit to choose)'
      : 'speed probe did not finish and the link speed is unknown; auto limit stays at the interim rate (set --upload-limit/--download-limit to choose)')
    this.apply('fallback')
  }
}
