import { AstradError, DecodeError } from '../util/errors.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { MAX_CLOCK_DRIFT_MS, MAX_HLC_COUNTER, MAX_HLC_WALL } from './constants.ts'

/**
 * Hybrid logical clock (Kulkarni et al., 2014): versions that follow wall time where clocks
 * agree and still order every write after everything its writer had seen. A version is
 * (wall ms, counter, origin); the origin (a unique writer id) breaks ties, so two writes never
 * share a version and last-writer-wins has one answer everywhere.
 *
 * Versions travel and are stored as fixed-width strings `WWWWWWWWWWWWW-CCCCC-origin` whose
 * plain string order is the version order.
 */
export interface Timestamp {
  wall: number
  counter: number
  origin: string
}

/**
 * A writer id: the peer id of a resource plus a random epoch created with its database, so a
 * resource that lost its disk starts a fresh sequence instead of reusing numbers others hold.
 */
export const ORIGIN_PATTERN = /^[A-Za-z0-9]{16,128}:[0-9a-f]{8}$/
const VERSION_PATTERN = /^(\d{13})-(\d{5})-([A-Za-z0-9]{16,128}:[0-9a-f]{8})$/

/** A remote timestamp is too far ahead of our clock: refused as bad input. */
export class ClockSkewError extends AstradError {
  readonly aheadMs: number
  constructor (aheadMs: number, maxMs: number) {
    super(`remote clock is ${aheadMs} ms ahead of ours (at most ${maxMs} ms accepted)`, 'ERR_CLOCK_SKEW')
    this.name = 'ClockSkewError'
    this.aheadMs = aheadMs
  }
}

export function formatVersion (t: Timestamp): string {
  return `${String(t.wall).padStart(13, '0')}-${String(t.counter).padStart(5, '0')}-${t.origin}`
}

export function parseVersion (version: string): Timestamp {
  const m = VERSION_PATTERN.exec(version)
  if (m == null) throw new DecodeError(`not a version: ${JSON.stringify(version.slice(0, 40))}`)
  const counter = Number(m[2])
  if (counter > MAX_HLC_COUNTER) throw new DecodeError(`version counter ${counter} out of range`)
  return { wall: Number(m[1]), counter, origin: m[3] as string }
}

export function isVersion (version: string): boolean {
  const m = VERSION_PATTERN.exec(version)
  return m != null && Number(m[2]) <= MAX_HLC_COUNTER
}

/** Version order (negative, 0, positive); the string order of formatted versions. */
export function compareVersions (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export function compareTimestamps (a: Timestamp, b: Timestamp): number {
  return (a.wall - b.wall) || (a.counter - b.counter) || (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0)
}

export interface HybridClockInit {
  /** Physical clock; tests pass a FakeClock. @default the system clock */
  physical?: Clock
  /** @default MAX_CLOCK_DRIFT_MS */
  maxDriftMs?: number
}

export class HybridClock {
  readonly origin: string
  private readonly physical: Clock
  private readonly maxDriftMs: number
  private wall = 0
  private counter = 0

  constructor (origin: string, init: HybridClockInit = {}) {
    this.origin = origin
    this.physical = init.physical ?? systemClock
    this.maxDriftMs = init.maxDriftMs ?? MAX_CLOCK_DRIFT_MS
  }

  /** The latest timestamp issued or observed. */
  get last (): Timestamp {
    return { wall: this.wall, counter: this.counter, origin: this.origin }
  }

  /** Send/local event: a timestamp greater than every one issued or observed so far. */
  now (): Timestamp {
    const pt = this.physicalNow()
    if (pt > this.wall) {
      this.wall = pt
      this.counter = 0
    } else {
      this.tick(this.counter + 1)
    }
    return this.last
  }

  /**
   * Receive event: a remote timestamp moves our clock past it. One further ahead than
   * maxDriftMs of our physical clock is refused (ClockSkewError) and leaves the clock alone.
   */
  receive (remote: Timestamp): void {
    const pt = this.physicalNow()
    if (remote.wall > pt + this.maxDriftMs) throw new ClockSkewError(remote.wall - pt, this.maxDriftMs)
    this.merge(remote, pt)
  }

  /** Like receive, without the drift check: our own history read back from disk at start. */
  observe (past: Timestamp): void {
    this.merge(past, this.physicalNow())
  }

  private merge (remote: Timestamp, pt: number): void {
    const wall = Math.max(this.wall, remote.wall, pt)
    let counter: number
    if (wall === this.wall && wall === remote.wall) counter = Math.max(this.counter, remote.counter) + 1
    else if (wall === this.wall) counter = this.counter + 1
    else if (wall === remote.wall) counter = remote.counter + 1
    else counter = 0
    this.wall = wall
    this.tick(counter)
  }

  /** Sets the counter; on overflow the wall part moves 1 ms ahead (monotonic, never wraps). */
  private tick (counter: number): void {
    if (counter > MAX_HLC_COUNTER) {
      this.wall++
      this.counter = 0
    } else {
      this.counter = counter
    }
  }

  private physicalNow (): number {
    const pt = Math.trunc(this.physical.now())
    return Math.min(Math.max(pt, 0), MAX_HLC_WALL)
  }
}
