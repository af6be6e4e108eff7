/**
 * Routing weight functions: from what a node reports in its heartbeat to a positive finite
 * weight. The Balancer takes any of them (or the caller's own); docs/routing.md compares them.
 */

import {
  BACKLOG_HALF_WEIGHT_S, HEADROOM_POINTS, MAX_FUNCTION_WEIGHT, MIN_FUNCTION_WEIGHT, MIN_HEADROOM
} from './constants.ts'

/** What the router knows of a node's load: the fields of its last heartbeat. */
export interface NodeLoad {
  cores: number
  gpus: number
  /** Per-device performance factor of the GPUs (1 = reference card). */
  gpuPerf: number
  /** Busy fraction 0..1 over the last heartbeat interval. */
  cpuUtil: number
  gpuUtil: number
  /** Requests being served (running or queued) on the node. */
  inflight: number
  /**
   * Not from the heartbeat: the node's capacity as the Balancer measured it, in capacityOf()'s
   * unit (slots ÷ mean compute time of its answers, scaled by the fleet's rate per capacity
   * unit). Undefined until measured; the Balancer fills it in.
   */
  measuredCapacity?: number
  /** Not from the heartbeat: mean compute time of the node's answers (ms), measured with the above. */
  measuredComputeMs?: number
}

/** Must return a positive finite number for any input, garbage included. */
export type WeightFunction = (load: NodeLoad) => number

function finiteAtLeast (v: number, min: number, fallback: number): number {
  return Number.isFinite(v) && v >= min ? v : fallback
}

function unit (v: number): number {
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0
}

function bounded (w: number): number {
  return w > MIN_FUNCTION_WEIGHT ? (w < MAX_FUNCTION_WEIGHT ? w : MAX_FUNCTION_WEIGHT) : MIN_FUNCTION_WEIGHT
}

/** Devices requests run on in parallel: GPUs when the node has any, else cores (≥ 1). */
export function slotsOf (load: NodeLoad): number {
  const gpus = finiteAtLeast(load.gpus, 0, 0)
  if (gpus > 0) return gpus
  return Math.max(1, finiteAtLeast(load.cores, 0, 1))
}

/**
 * The article's capacity term: GPUs × per-device performance factor on GPU nodes, else cores.
 * At least 1 (a node that reports 0 cores but holds a ready replica still serves).
 */
export function capacityOf (load: NodeLoad): number {
  const gpus = finiteAtLeast(load.gpus, 0, 0)
  if (gpus > 0) return Math.max(1, gpus) * finiteAtLeast(load.gpuPerf, Number.MIN_VALUE, 1)
  return Math.max(1, finiteAtLeast(load.cores, 0, 1))
}

/** Utilization of the devices requests run on (GPU util on GPU nodes), clamped to 0..1; NaN → 0. */
export function utilizationOf (load: NodeLoad): number {
  return unit(finiteAtLeast(load.gpus, 0, 0) > 0 ? load.gpuUtil : load.cpuUtil)
}

/** In-flight requests, ≥ 0; garbage → 0. */
export function inflightOf (load: NodeLoad): number {
  return finiteAtLeast(load.inflight, 0, 0)
}

/** ln(1 + 100 × (1 − u)), floored at 1 % of its idle value. */
export function headroomOf (u: number): number {
  return Math.max(MIN_HEADROOM, Math.log1p(HEADROOM_POINTS * (1 - u)))
}

/**
 * The article's weight: `capacity × log(remaining utilization) × (utilization / concurrency)`,
 * made positive and finite:
 * - log(remaining utilization) = headroomOf(u) (percentage points + 1, floored at 1 %);
 * - utilization / concurrency = (u + 1/slots) / (inflight + 1): one pseudo-request that uses one
 *   slot. It is finite at zero concurrency, it gives an idle node the value of a busy node that is
 *   not queueing (k requests on k of `slots` slots: (k/slots + 1/slots) / (k + 1) = 1/slots), and
 *   it tends to u / inflight as the concurrency grows.
 * Unqueued, the product is per-slot speed × headroom (gpuPerf on GPU nodes, 1 on CPU nodes):
 * capacity cancels out and only queueing or utilization moves the weight.
 */
export const articleWeight: WeightFunction = (load) => {
  const u = utilizationOf(load)
  const perf = (u + 1 / slotsOf(load)) / (inflightOf(load) + 1)
  return bounded(capacityOf(load) * headroomOf(u) * perf)
}

/** Capacity only (GPUs × performance factor, or cores): nginx's static weights. */
export const staticWeight: WeightFunction = (load) => bounded(capacityOf(load))

/**
 * The variant that wins in simulation (docs/routing.md): the capacity the Balancer measured
 * (NodeLoad.measuredCapacity, else the reported one), divided by 1 + the node's backlog in
 * seconds / BACKLOG_HALF_WEIGHT_S, the backlog being (inflight − slots) × measured compute
 * time ÷ slots. Measured capacity does not depend on how loaded the node is, only on how fast it
 * computes, so the weights do not chase the load reported 1–4 s ago (which makes load-based
 * weights, the article's included, herd); the backlog term is 0 while the node keeps up.
 * Without measurements (no compute times given to Balancer.success) it is staticWeight.
 */
export const measuredWeight: WeightFunction = (load) => {
  const m = load.measuredCapacity
  const capacity = m != null && Number.isFinite(m) && m > 0 ? m : capacityOf(load)
  const c = load.measuredComputeMs
  if (c == null || !Number.isFinite(c) || c <= 0) return bounded(capacity)
  const slots = slotsOf(load)
  const backlogS = Math.max(0, inflightOf(load) - slots) * c / slots / 1000
  return bounded(capacity / (1 + backlogS / BACKLOG_HALF_WEIGHT_S))
}
