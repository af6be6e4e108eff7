import { systemClock, type Clock } from '../util/time.ts'
import {
  DEFAULT_FAIL_TIMEOUT_MS, DEFAULT_MAX_FAILS, DEFAULT_MAX_INFLIGHT_PER_SLOT, DEFAULT_SLOW_START_MS, MEASURE_HALF_LIFE_MS,
  MEASURE_MAX_AGE_MS, MEASURE_MIN_ANSWERS, NORMALIZED_MAX_WEIGHT, NORMALIZED_MIN_WEIGHT,
  SLOW_START_INITIAL_FRACTION, SLOW_START_STEP_MS
} from './constants.ts'
import { DecayingMean } from './decaying-mean.ts'
import { Swrr } from './swrr.ts'
import { capacityOf, measuredWeight, slotsOf, type NodeLoad, type WeightFunction } from './weight.ts'

export interface BalancerOptions {
  /**
   * From a node's heartbeat (plus what this Balancer measured) to its weight. articleWeight is
   * the article's formula; it herds in simulation (docs/routing.md). @default measuredWeight
   */
  weight?: WeightFunction
  clock?: Clock
  /** Failures (each within failTimeoutMs of the previous) that eject a node; 0 = never. @default 1 (nginx) */
  maxFails?: number
  /** Window for counting failures and length of an ejection. @default 10000 (nginx) */
  failTimeoutMs?: number
  /** A node new to the set, or back from an ejection, ramps to its weight over this long; 0 = off. @default 0 (nginx) */
  slowStartMs?: number
  /**
   * This router's requests in flight on a node (the caller counts them). Given, a node with
   * maxInflightPerSlot × its slots in flight is passed over (nginx `max_conns`).
   */
  inflight?: (id: string) => number
  /** In-flight limit per slot (GPU, else core) of a node; 0 = none. @default 2 with `inflight`, else 0 */
  maxInflightPerSlot?: number
}

export interface Endpoint {
  id: string
  load: NodeLoad
}

export interface EndpointState {
  id: string
  /** The weight function's value × the slow-start fraction (in the function's own unit). */
  weight: number
  /** Out of routing after failures, until the ejection ends. */
  ejected: boolean
  /** Still ramping up (slow start). */
  starting: boolean
  /** Failures counted towards the next ejection. */
  fails: number
}

interface Entry {
  id: string
  /** The weight function's value for the last load seen. */
  raw: number
  /** When slow start began (join or end of an ejection); undefined = at full weight. */
  rampFrom?: number
  fails: number
  lastFailAt: number
  /** End of the present ejection (0 = not ejected). */
  ejectedUntil: number
  /** Back from an ejection and not yet succeeded: one more failure ejects again (nginx). */
  probing: boolean
  /** In-flight limit (maxInflightPerSlot × the node's slots). */
  limit: number
  /** Compute times of recent answers (success(id, ms)). */
  compute: DecayingMean
  /** Capacity and mean compute time measured in the last complete window, and when. */
  measured?: number
  measuredComputeMs?: number
  measuredAt?: number
}

function checkNonNegative (name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a finite number ≥ 0, got ${v}`)
  return v
}

/**
 * The router of one app: smooth weighted round-robin (Swrr, nginx's exact order in O(log n))
 * over the nodes that hold a ready replica, weighted from their heartbeats, with nginx's passive
 * health checks and slow start:
 *
 * - **Weights** come from the weight function at every update() (the caller refreshes every 3 s
 *   and at once on state changes) and are scaled so the largest is NORMALIZED_MAX_WEIGHT; the
 *   SWRR current weights of nodes that stay are kept across updates. The loads are completed
 *   with what this Balancer measured (NodeLoad.measuredCapacity / measuredComputeMs, from the
 *   compute times given to success()); measuredWeight, the default, uses them.
 * - **In-flight limit** (nginx `max_conns`): with the caller's in-flight counts, a node with
 *   maxInflightPerSlot × its slots in flight is passed over; all at the limit, it is ignored.
 * - **Ejection** (nginx `max_fails` / `fail_timeout`): maxFails failures, each within
 *   failTimeoutMs of the one before, take the node out for failTimeoutMs (it is marked down in
 *   the SWRR: no current weight gained). Then it is tried again: a success clears its failures,
 *   a failure ejects it again at once. A failure reported while ejected extends the ejection.
 *   When every node left is ejected, pick() still answers with the one whose ejection ends first
 *   (nginx would answer "no live upstreams"; here a single flaky node, or a short outage of all,
 *   must not turn into 10 s of errors: the caller's retry budget bounds the cost).
 * - **Slow start** (nginx `slow_start`): a node that joins a non-empty set, or comes back from an
 *   ejection, starts at 1 % of its weight and ramps linearly to full over slowStartMs, raised in
 *   steps of SLOW_START_STEP_MS as picks happen. The first set is taken at full weight.
 */
export class Balancer {
  private readonly weightOf: WeightFunction
  private readonly clock: Clock
  private readonly maxFails: number
  private readonly failTimeoutMs: number
  private readonly slowStartMs: number
  private readonly accept?: (id: string) => boolean
  private readonly maxInflightPerSlot: number
  private readonly swrr = new Swrr()
  private readonly entries = new Map<string, Entry>()
  private readonly ejected = new Set<string>()
  private readonly ramping = new Set<string>()
  private nextRampAt = 0
  /** Factor from raw weights to the SWRR's range (the largest raw weight → NORMALIZED_MAX_WEIGHT). */
  private scale = 1
  /** A set has been seen: later joiners get slow start. */
  private seeded = false

  constructor (options: BalancerOptions = {}) {
    this.weightOf = options.weight ?? measuredWeight
    this.clock = options.clock ?? systemClock
    this.maxFails = Math.floor(checkNonNegative('maxFails', options.maxFails ?? DEFAULT_MAX_FAILS))
    this.failTimeoutMs = checkNonNegative('failTimeoutMs', options.failTimeoutMs ?? DEFAULT_FAIL_TIMEOUT_MS)
    this.slowStartMs = checkNonNegative('slowStartMs', options.slowStartMs ?? DEFAULT_SLOW_START_MS)
    const inflight = options.inflight
    this.maxInflightPerSlot = checkNonNegative('maxInflightPerSlot', options.maxInflightPerSlot ?? (inflight != null ? DEFAULT_MAX_INFLIGHT_PER_SLOT : 0))
    if (inflight != null && this.maxInflightPerSlot > 0) {
      this.accept = (id) => {
        const entry = this.entries.get(id)
        return entry == null || inflight(id) < entry.limit
      }
    }
  }

  get size (): number { return this.entries.size }

  /**
   * Replaces the set of nodes and recomputes every weight. Nodes that stay keep their SWRR
   * position, failure count and ejection; new ones start slow; missing ones are forgotten.
   */
  update (endpoints: ReadonlyArray<Endpoint>): void {
    const now = this.clock.now()
    const loads = new Map<string, NodeLoad>()
    for (const e of endpoints) loads.set(e.id, e.load)
    for (const id of [...this.entries.keys()]) {
      if (loads.has(id)) continue
      this.entries.delete(id)
      this.ejected.delete(id)
      this.ramping.delete(id)
      this.swrr.delete(id)
    }
    this.measure(loads, now)
    let max = 0
    for (const [id, load] of loads) {
      let entry = this.entries.get(id)
      if (entry == null) {
        entry = { id, raw: 0, fails: 0, lastFailAt: -Infinity, ejectedUntil: 0, probing: false, limit: 1, compute: new DecayingMean(MEASURE_HALF_LIFE_MS) }
        if (this.seeded && this.slowStartMs > 0) this.startRamp(entry, now)
        this.entries.set(id, entry)
      }
      entry.limit = Math.max(1, Math.ceil(this.maxInflightPerSlot * slotsOf(load)))
      entry.raw = this.safeWeight(entry.measured == null ? load : { ...load, measuredCapacity: entry.measured, measuredComputeMs: entry.measuredComputeMs })
      if (entry.raw > max) max = entry.raw
    }
    if (loads.size > 0) this.seeded = true
    this.scale = max > 0 ? NORMALIZED_MAX_WEIGHT / max : 1
    for (const entry of this.entries.values()) this.apply(entry, now)
    this.nextRampAt = now + SLOW_START_STEP_MS
  }

  /**
   * The next node for a request, leaving out `exclude` (the nodes this request already failed
   * on) and ejected nodes; undefined when no node is left.
   */
  pick (exclude?: ReadonlySet<string>): string | undefined {
    const now = this.clock.now()
    if (this.ejected.size > 0) this.endEjections(now)
    if (this.ramping.size > 0 && now >= this.nextRampAt) {
      for (const id of this.ramping) {
        const entry = this.entries.get(id)
        if (entry != null) this.apply(entry, now)
      }
      this.nextRampAt = now + SLOW_START_STEP_MS
    }
    let id = this.swrr.pick(exclude, this.accept)
    // Every node at its in-flight limit: queue on one anyway rather than refuse (nginx: 502).
    if (id == null && this.accept != null) id = this.swrr.pick(exclude)
    if (id != null || this.ejected.size === 0) return id
    // Everything left is ejected: fail open to the node whose ejection ends first.
    let best: Entry | undefined
    for (const e of this.ejected) {
      const entry = this.entries.get(e)
      if (entry == null || exclude?.has(e) === true) continue
      if (best == null || entry.ejectedUntil < best.ejectedUntil) best = entry
    }
    return best?.id
  }

  /**
   * The node answered a request. With the time the node spent computing it (ms, the answer's
   * InferResult.computeMs), the answer also measures the node's capacity
   * (NodeLoad.measuredCapacity, which measuredWeight uses).
   */
  success (id: string, computeMs?: number): void {
    const entry = this.entries.get(id)
    if (entry == null) return
    if (computeMs != null && Number.isFinite(computeMs) && computeMs >= 0) {
      entry.compute.add(computeMs, this.clock.now())
    }
    if (entry.ejectedUntil > 0) return
    const now = this.clock.now()
    if (entry.probing || now - entry.lastFailAt > this.failTimeoutMs) {
      entry.probing = false
      entry.fails = 0
    }
  }

  /** The node failed a request (unreachable, reset, crashed): counts towards its ejection. */
  failure (id: string): void {
    const entry = this.entries.get(id)
    if (entry == null || this.maxFails === 0) return
    const now = this.clock.now()
    if (entry.ejectedUntil > 0) {
      entry.ejectedUntil = Math.max(entry.ejectedUntil, now + this.failTimeoutMs)
      entry.lastFailAt = now
      return
    }
    if (now - entry.lastFailAt > this.failTimeoutMs) entry.fails = 0
    entry.fails++
    entry.lastFailAt = now
    if (entry.probing || entry.fails >= this.maxFails) this.eject(entry, now)
  }

  states (): EndpointState[] {
    const now = this.clock.now()
    return [...this.entries.values()].map(e => ({
      id: e.id,
      weight: e.raw * this.rampFactor(e, now),
      ejected: e.ejectedUntil > now,
      starting: e.rampFrom != null && this.rampFactor(e, now) < 1,
      fails: e.fails
    }))
  }

  /**
   * Measures each node's capacity from the compute times of the answers it gave in the window:
   * slots ÷ mean compute time is the rate it sustains with every slot busy. Scaled by the
   * fleet's Σ rate ÷ Σ capacityOf so it is in capacityOf()'s unit: a node that keeps the pace
   * its reported capacity promises measures its reported capacity, a node that is preempted or
   * slower than it says measures less. Compute time depends neither on the node's queue (a
   * load-dependent measure feeds back into the weights and herds) nor on this router's share of
   * the node's traffic (answers per second would, and many routers would drift apart).
   * Nodes with too few answers in the window keep no measurement.
   */
  private measure (loads: ReadonlyMap<string, NodeLoad>, now: number): void {
    const samples: Array<{ entry: Entry, rate: number }> = []
    let rates = 0
    let capacities = 0
    for (const [id, load] of loads) {
      const entry = this.entries.get(id)
      if (entry == null) continue
      const computeMs = entry.compute.mean(now)
      if (entry.compute.weight(now) < MEASURE_MIN_ANSWERS || !(computeMs > 0)) {
        // Too few recent answers: the last measurement stands until it is too old to say anything.
        if (entry.measuredAt != null && now - entry.measuredAt > MEASURE_MAX_AGE_MS) entry.measured = entry.measuredComputeMs = entry.measuredAt = undefined
        continue
      }
      const rate = slotsOf(load) * 1000 / computeMs
      entry.measuredComputeMs = computeMs
      entry.measuredAt = now
      rates += rate
      capacities += capacityOf(load)
      samples.push({ entry, rate })
    }
    if (rates <= 0 || capacities <= 0) return
    const perCapacity = rates / capacities
    for (const s of samples) s.entry.measured = s.rate / perCapacity
  }

  private safeWeight (load: NodeLoad): number {
    const w = this.weightOf(load)
    // A weight function must answer a positive finite number; a broken one must not stop routing.
    return w > 0 && Number.isFinite(w) ? w : Number.MIN_VALUE
  }

  private startRamp (entry: Entry, now: number): void {
    entry.rampFrom = now
    this.ramping.add(entry.id)
  }

  private rampFactor (entry: Entry, now: number): number {
    if (entry.rampFrom == null || this.slowStartMs === 0) return 1
    return Math.min(1, Math.max(SLOW_START_INITIAL_FRACTION, (now - entry.rampFrom) / this.slowStartMs))
  }

  /** Puts the entry's present weight into the SWRR; ends its ramp when full. */
  private apply (entry: Entry, now: number): void {
    const factor = this.rampFactor(entry, now)
    if (factor >= 1 && entry.rampFrom != null) {
      entry.rampFrom = undefined
      this.ramping.delete(entry.id)
    }
    const w = entry.raw * factor * this.scale
    // A down (ejected) node stays down: set() only changes its weight.
    this.swrr.set(entry.id, Math.min(NORMALIZED_MAX_WEIGHT, Math.max(NORMALIZED_MIN_WEIGHT, Number.isFinite(w) ? w : NORMALIZED_MIN_WEIGHT)))
  }

  private eject (entry: Entry, now: number): void {
    entry.ejectedUntil = now + this.failTimeoutMs
    entry.probing = false
    entry.rampFrom = undefined
    this.ramping.delete(entry.id)
    this.ejected.add(entry.id)
    this.swrr.setDown(entry.id, true)
  }

  private endEjections (now: number): void {
    for (const id of this.ejected) {
      const entry = this.entries.get(id)
      if (entry == null || entry.ejectedUntil > now) continue
      this.ejected.delete(id)
      entry.ejectedUntil = 0
      entry.probing = true
      this.swrr.setDown(id, false)
      if (this.slowStartMs > 0 && this.entries.size > 1) {
        this.startRamp(entry, now)
        this.apply(entry, now)
      }
    }
  }
}
