import type { Clock } from '../util/time.ts'
import type { Logger } from '../util/logger.ts'
import type { RateSetting } from '../config/defaults.ts'
import { ConfigError } from '../util/errors.ts'
import {
  BUCKET_BURST_MS, BUCKET_MIN_BURST_BYTES, RATE_WINDOW_MS, AUTO_SHARE, AUTO_INTERIM_BPS
} from './constants.ts'

/**
 * Per-node P2P rate limits: a token bucket per direction, a rate meter per direction, and the
 * precedence of the node's own limit (flag or measured at join), the cluster-wide cap and the
 * interim limit while the probe runs.
 */

/**
 * Monotonic milliseconds: a rate limiter must not jump when NTP steps the wall clock, and
 * Date.now()'s whole milliseconds would round away a 64 KiB chunk's wait at 1 GB/s.
 */
export const monotonicClock: Clock = { now: () => performance.now() }

/** The default burst of a bucket at `rate`: max(64 KiB, 50 ms of rate); see constants.ts. */
export function defaultBurst (rate: number): number {
  return Math.max(BUCKET_MIN_BURST_BYTES, rate * BUCKET_BURST_MS / 1000)
}

function checkRate (rate: number): void {
  if (typeof rate !== 'number' || Number.isNaN(rate) || rate <= 0) {
    throw new RangeError(`rate must be a positive number of bytes/s or Infinity, got ${String(rate)}`)
  }
}

/** Float slack when comparing tokens, so a timer that fires on time is not re-armed for 1 ms. */
const EPSILON = 1e-6
const MAX_TIMER_MS = 2 ** 31 - 1

interface Waiter {
  n: number
  resolve: () => void
  reject: (reason: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/**
 * A token bucket with a FIFO queue. Tokens accrue at `rate` up to `burst` while nobody waits;
 * while someone waits they accrue without cap, so the head of the queue can take more than the
 * burst (it waits n / rate) and a late timer loses no throughput. The long-run rate is exact:
 * bytes granted ≤ burst + rate × elapsed.
 */
export class TokenBucket {
  private _rate: number
  private burst: number
  private readonly fixedBurst: boolean
  private tokens: number
  private last: number
  private readonly clock: Clock
  private readonly queue: Waiter[] = []
  private timer?: NodeJS.Timeout

  constructor (init: { rate: number, burst?: number, clock?: Clock }) {
    checkRate(init.rate)
    if (init.burst !== undefined && (!(init.burst > 0) || !Number.isFinite(init.burst))) {
      throw new RangeError(`burst must be a positive finite number of bytes, got ${String(init.burst)}`)
    }
    this._rate = init.rate
    this.fixedBurst = init.burst !== undefined
    this.burst = init.burst ?? defaultBurst(init.rate)
    this.clock = init.clock ?? monotonicClock
    this.tokens = this.burst
    this.last = this.clock.now()
  }

  /** Bytes per second; Infinity = unlimited. */
  get rate (): number { return this._rate }

  /** Waiters queued (for tests and status). */
  get waiting (): number { return this.queue.length }

  /** Changes the rate; queued takes are re-timed at once (Infinity releases them all). */
  setRate (rate: number): void {
    checkRate(rate)
    if (rate === this._rate) return
    this.refill()
    const wasUnlimited = this._rate === Infinity
    this._rate = rate
    if (!this.fixedBurst) this.burst = defaultBurst(rate)
    // Unlimited → limited: start with one full burst (nothing was counted while unlimited).
    if (wasUnlimited) this.tokens = this.burst
    else if (this.queue.length === 0) this.tokens = Math.min(this.tokens, this.burst)
    this.schedule()
  }

  /**
   * Resolves when `n` bytes may be moved. Waiters are served in order. An abort rejects with
   * the signal's reason and consumes nothing (tokens accrued while it waited pass to the next).
   */
  async take (n: number, signal?: AbortSignal): Promise<void> {
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw new RangeError(`take: n must be a finite number ≥ 0, got ${String(n)}`)
    signal?.throwIfAborted()
    if (this.queue.length === 0) {
      if (this._rate === Infinity) return
      this.refill()
      if (this.tokens >= n) {
        this.tokens -= n
        return
      }
    }
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const waiter: Waiter = { n, resolve, reject, signal }
    if (signal != null) {
      waiter.onAbort = () => { this.cancel(waiter) }
      signal.addEventListener('abort', waiter.onAbort, { once: true })
    }
    this.queue.push(waiter)
    if (this.queue.length === 1) this.schedule()
    return await promise
  }

  private cancel (waiter: Waiter): void {
    const i = this.queue.indexOf(waiter)
    if (i < 0) return
    this.queue.splice(i, 1)
    if (i === 0) {
      this.refill()
      // What accrued beyond the burst was for the aborted (large) take: not a burst for the next.
      this.tokens = Math.min(this.tokens, this.burst)
      this.schedule()
    }
    waiter.reject(waiter.signal?.reason)
  }

  private refill (): void {
    const now = this.clock.now()
    const dt = Math.max(0, now - this.last)
    this.last = now
    if (this._rate === Infinity) return
    this.tokens += this._rate * dt / 1000
    if (this.queue.length === 0) this.tokens = Math.min(this.tokens, this.burst)
  }

  /** Serves what can be served now and arms one timer for the new head of the queue. */
  private schedule (): void {
    if (this.timer != null) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    this.refill()
    while (this.queue.length > 0) {
      const head = this.queue[0]!
      if (this._rate !== Infinity) {
        if (this.tokens + EPSILON < head.n) break
        this.tokens -= head.n
      }
      this.queue.shift()
      if (head.onAbort != null) head.signal?.removeEventListener('abort', head.onAbort)
      head.resolve()
    }
    if (this.queue.length === 0) {
      this.tokens = Math.min(this.tokens, this.burst)
      return
    }
    const head = this.queue[0]!
    // setTimeout caps at 2^31-1 ms (beyond, Node fires after 1 ms); a longer wait re-arms.
    const ms = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil((head.n - this.tokens - EPSILON) * 1000 / this._rate)))
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.schedule()
    }, ms)
  }
}

/**
 * Bytes per second over a sliding window (default 10 s), kept in 100 slots; the oldest slot is
 * weighted by how much of it is still inside the window. A meter younger than its window
 * divides by its age.
 */
export class RateMeter {
  private readonly windowMs: number
  private readonly slotMs: number
  private readonly slots: number
  private readonly ids: number[]
  private readonly bytes: number[]
  private readonly clock: Clock
  private readonly created: number
  private _total = 0

  constructor (windowMs: number = RATE_WINDOW_MS, clock: Clock = monotonicClock) {
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) throw new RangeError(`windowMs must be a positive number, got ${String(windowMs)}`)
    this.windowMs = windowMs
    this.slots = 100
    this.slotMs = windowMs / this.slots
    this.ids = new Array<number>(this.slots + 1).fill(-Infinity)
    this.bytes = new Array<number>(this.slots + 1).fill(0)
    this.clock = clock
    this.created = clock.now()
  }

  add (n: number): void {
    if (!Number.isFinite(n) || n < 0) throw new RangeError(`add: n must be a finite number ≥ 0, got ${String(n)}`)
    const id = Math.floor(this.clock.now() / this.slotMs)
    const i = ((id % this.ids.length) + this.ids.length) % this.ids.length
    if (this.ids[i] !== id) {
      this.ids[i] = id
      this.bytes[i] = 0
    }
    this.bytes[i]! += n
    this._total += n
  }

  /** Bytes/s over the window ending now. */
  rate (): number {
    const now = this.clock.now()
    const cur = Math.floor(now / this.slotMs)
    const frac = (now - cur * this.slotMs) / this.slotMs
    let sum = 0
    for (let k = 0; k <= this.slots; k++) {
      const id = cur - k
      const i = ((id % this.ids.length) + this.ids.length) % this.ids.length
      if (this.ids[i] !== id) continue
      sum += k === this.slots ? this.bytes[i]! * (1 - frac) : this.bytes[i]!
    }
    const span = Math.min(this.windowMs, Math.max(now - this.created, this.slotMs))
    return sum * 1000 / span
  }

  /** Bytes added since creation. */
  get total (): number { return this._total }
}

/**
 * Where a limit in force comes from. `probing`: an `auto` direction waiting for its measurement
 * (AUTO_INTERIM_BPS meanwhile); `no-peer`: an `auto` direction with no peer to measure against
 * (a one-host cluster, or before the first resource connects): nothing to move, so no limit.
 */
export type LimitSource = 'flag' | 'auto' | 'probing' | 'no-peer' | 'cluster' | 'unlimited'

export interface LimitState {
  /** Bytes/s in force; null = none. */
  limit: number | null
  source: LimitSource
  /** The node's own limit (flag or auto); null while probing or unlimited. */
  node: number | null
  /** The cluster-wide cap; null = none. */
  cluster: number | null
  /** What the probe (and link speed) measured this node can move; null = not measured. */
  measured: number | null
}

type Direction = 'upload' | 'download'
const DIRECTIONS: Direction[] = ['upload', 'download']

export interface TransferLimitsInit {
  upload: RateSetting
  download: RateSetting
  /** Fraction of the measured capacity an `auto` limit uses. @default AUTO_SHARE (0.5) */
  autoShare?: number
}

function checkSetting (key: string, v: RateSetting): void {
  if (v === 'auto' || v === 'unlimited') return
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(key, `expected auto, unlimited or a positive rate in bytes/s, got ${String(v)}`)
}

function checkCap (what: string, v: number | null | undefined): number | null {
  if (v == null) return null
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new RangeError(`${what} must be a positive number of bytes/s or null, got ${String(v)}`)
  return v
}

/**
 * The limits of one node. In force per direction = min(own, cluster) where own is the flag's
 * rate, or `autoShare` × the measured capacity for `auto` (AUTO_INTERIM_BPS until measured),
 * or none for `unlimited`. The buckets follow every change at once.
 */
export class TransferLimits {
  readonly upload: TokenBucket
  readonly download: TokenBucket
  readonly uploaded: RateMeter
  readonly downloaded: RateMeter
  /** The configured settings (AutoLimiter probes the `auto` directions only). */
  readonly settings: { readonly upload: RateSetting, readonly download: RateSetting }
  private readonly autoShare: number
  private readonly logger?: Logger
  private readonly measured: Record<Direction, number | null> = { upload: null, download: null }
  private readonly cluster: Record<Direction, number | null> = { upload: null, download: null }
  private noPeer = false
  private current: { upload: LimitState, download: LimitState }
  private readonly listeners = new Set<() => void>()

  constructor (init: TransferLimitsInit, components: { clock?: Clock, logger?: Logger } = {}) {
    checkSetting('uploadLimit', init.upload)
    checkSetting('downloadLimit', init.download)
    const share = init.autoShare ?? AUTO_SHARE
    if (typeof share !== 'number' || !(share > 0 && share <= 1)) throw new RangeError(`autoShare must be in (0, 1], got ${String(share)}`)
    this.autoShare = share
    this.settings = { upload: init.upload, download: init.download }
    this.logger = components.logger
    this.current = { upload: this.compute('upload'), download: this.compute('download') }
    this.upload = new TokenBucket({ rate: this.current.upload.limit ?? Infinity, clock: components.clock })
    this.download = new TokenBucket({ rate: this.current.download.limit ?? Infinity, clock: components.clock })
    this.uploaded = new RateMeter(RATE_WINDOW_MS, components.clock)
    this.downloaded = new RateMeter(RATE_WINDOW_MS, components.clock)
  }

  /** Directions whose setting is `auto`. */
  autoDirections (): Direction[] {
    return DIRECTIONS.filter(d => this.settings[d] === 'auto')
  }

  /** The capacity measured at join (bytes/s). Ignored for directions not set to `auto`. */
  setMeasured (m: { upload?: number, download?: number }): void {
    const upload = m.upload !== undefined ? checkCap('measured upload', m.upload) : undefined
    const download = m.download !== undefined ? checkCap('measured download', m.download) : undefined
    if (upload != null && this.settings.upload === 'auto') this.measured.upload = upload
    if (download != null && this.settings.download === 'auto') this.measured.download = download
    this.update()
  }

  /**
   * Whether the `auto` directions not yet measured have no peer to measure against (AutoLimiter
   * sets it while it finds no probe peer): they show `no-peer` and run unlimited meanwhile.
   */
  setNoPeer (noPeer: boolean): void {
    this.noPeer = noPeer
    this.update()
  }

  /** The cluster-wide cap (from the cluster log); undefined or null fields = no cap. */
  setCluster (cap: { upload?: number | null, download?: number | null } | undefined): void {
    const upload = checkCap('cluster upload cap', cap?.upload)
    const download = checkCap('cluster download cap', cap?.download)
    this.cluster.upload = upload
    this.cluster.download = download
    this.update()
  }

  state (): { upload: LimitState, download: LimitState } {
    return { upload: { ...this.current.upload }, download: { ...this.current.download } }
  }

  /** Called after any change of a limit in force or of its inputs; returns an unsubscribe. */
  onChange (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private compute (d: Direction): LimitState {
    const setting = this.settings[d]
    const measured = this.measured[d]
    const cluster = this.cluster[d]
    let node: number | null = null
    let own: number | null = null
    let ownSource: LimitSource = 'unlimited'
    if (typeof setting === 'number') {
      node = own = setting
      ownSource = 'flag'
    } else if (setting === 'auto') {
      if (measured != null) {
        node = own = Math.max(1, Math.round(measured * this.autoShare))
        ownSource = 'auto'
      } else if (this.noPeer) {
        ownSource = 'no-peer'
      } else {
        own = AUTO_INTERIM_BPS
        ownSource = 'probing'
      }
    }
    if (cluster != null && (own == null || cluster < own)) return { limit: cluster, source: 'cluster', node, cluster, measured }
    return { limit: own, source: ownSource, node, cluster, measured }
  }

  private update (): void {
    let changed = false
    for (const d of DIRECTIONS) {
      const next = this.compute(d)
      const prev = this.current[d]
      if (next.limit === prev.limit && next.source === prev.source && next.node === prev.node && next.cluster === prev.cluster && next.measured === prev.measured) continue
      changed = true
      this.current[d] = next
      this[d].setRate(next.limit ?? Infinity)
      if (next.limit !== prev.limit || next.source !== prev.source) {
        this.logger?.info({ direction: d, limit: next.limit, source: next.source, node: next.node, cluster: next.cluster, measured: next.measured }, 'transfer limit changed')
      }
    }
    if (!changed) return
    for (const l of [...this.listeners]) {
      try {
        l()
      } catch (err) {
        this.logger?.warn({ err }, 'transfer limit listener failed')
      }
    }
  }
}
