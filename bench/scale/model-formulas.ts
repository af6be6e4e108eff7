// The written scale model of docs/scale.md as code: each function is one formula there, with
// the same term names, so bench/scale/model.ts can set its predictions beside the simulation's
// measurements. Times in ms, CPU in µs per second (1e6 = one core), bytes per second.

import {
  HEARTBEAT_INTERVAL_MS, TICK_INTERVAL_MS, DIGEST_COALESCE_MS, VIEW_PULL_INTERVAL_MS, ANTI_ENTROPY_INTERVAL_MS,
  DEAD_AFTER_MS, MAX_RECORDS_PER_DIGEST
} from '../../src/membership/constants.ts'
import type { UnitCosts } from './model-calibrate.ts'
import type { ResourceCpu } from './model-sim.ts'

export interface Cluster {
  /** N: nodes. */
  nodes: number
  /** R: resources, one heartbeat shard each. */
  resources: number
  /** K: schedulers not colocated with a resource. */
  schedulers: number
  /** γ: leave events per node per second; each brings m record changes (below). */
  churnPerNodePerS: number
}

/**
 * m: record changes one leave event publishes: a crash is `suspect` then `dead`, a drain
 * `draining` then `left`, and the node's return (new incarnation) one more.
 */
export const CHANGES_PER_EVENT = 3
/** h: bytes of a digest's or snapshot's header (u8 version, u32 count; records.ts). */
export const RECORDS_HEADER_BYTES = 5

/** f_hb: heartbeats per second at one resource (the nodes of its shard). */
export function heartbeatsPerResource (c: Cluster): number {
  return c.nodes / c.resources * 1000 / HEARTBEAT_INTERVAL_MS
}

/** λ: record changes per second in the whole cluster, and λ_r at one resource. */
export function changesPerS (c: Cluster): number { return c.churnPerNodePerS * c.nodes * CHANGES_PER_EVENT }
export function changesPerResourcePerS (c: Cluster): number { return changesPerS(c) / c.resources }

/**
 * f_d: digests one resource publishes per second. A flush follows the first change after the
 * last one by τ = DIGEST_COALESCE_MS, so the mean cycle is 1/λ_r + τ; a digest holds at most
 * MAX_RECORDS_PER_DIGEST records.
 */
export function digestsPerResourcePerS (c: Cluster): number {
  const l = changesPerResourcePerS(c)
  if (l === 0) return 0
  const flushes = 1 / (1 / l + DIGEST_COALESCE_MS / 1000)
  return Math.max(flushes, l / MAX_RECORDS_PER_DIGEST)
}

/** B_d: digest payload bytes one resource publishes per second: λ_r·b + f_d·h. */
export function digestBytesPerResourcePerS (c: Cluster, recordBytes: number): number {
  return changesPerResourcePerS(c) * recordBytes + digestsPerResourcePerS(c) * RECORDS_HEADER_BYTES
}

/** Digest payload bytes each scheduler (and, less its own, each resource) receives: R·B_d. */
export function digestBytesInPerS (c: Cluster, recordBytes: number): number {
  return c.resources * digestBytesPerResourcePerS(c, recordBytes)
}

/** Bytes of one scheduler pull: every shard's snapshot once, N·b + R·h. */
export function bytesPerPull (c: Cluster, recordBytes: number): number {
  return c.nodes * recordBytes + c.resources * RECORDS_HEADER_BYTES
}

/** B_p: snapshot bytes one scheduler pulls per second: every shard every P = VIEW_PULL_INTERVAL_MS. */
export function pullBytesPerSchedulerPerS (c: Cluster, recordBytes: number): number {
  return (c.nodes * recordBytes + c.resources * RECORDS_HEADER_BYTES) * 1000 / VIEW_PULL_INTERVAL_MS
}

/** B_ae: anti-entropy bytes one resource pulls per second: one peer's shard every A = 5 s. */
export function antiEntropyBytesPerResourcePerS (c: Cluster, recordBytes: number): number {
  if (c.resources < 2) return 0
  return (c.nodes / c.resources * recordBytes + RECORDS_HEADER_BYTES) * 1000 / ANTI_ENTROPY_INTERVAL_MS
}

/** Bytes of one shard's snapshot (must stay under MAX_SNAPSHOT_BYTES to be pulled at all). */
export function shardSnapshotBytes (c: Cluster, recordBytes: number): number {
  return c.nodes / c.resources * recordBytes + RECORDS_HEADER_BYTES
}

/** Unit costs for work on a list of n records (bench/scale/model-calibrate.ts costsAt). */
export type Costs = (n: number) => UnitCosts

/** The simulation's CPU parts (model-sim.ts ResourceCpu), predicted, and their sum. */
export type ResourceCpuModel = ResourceCpu & { total: number }

/**
 * C_r: CPU µs per second of astrad's own membership code at one resource, from the unit costs:
 * f_hb·c_ingest + (N/R)·(1000/T_tick)·c_tick + λ_r·c_enc + (R−1)·λ_r·c_merge
 * + (K/P + 1/A)·(N/R)·c_enc (serving pulls) + (N/R)/A·c_merge (its own anti-entropy pull).
 */
export function resourceCpu (c: Cluster, cost: Costs): ResourceCpuModel {
  const u = cost(c.nodes / c.resources)
  const shard = c.nodes / c.resources
  const lr = changesPerResourcePerS(c)
  const ae = c.resources > 1 ? 1000 / ANTI_ENTROPY_INTERVAL_MS : 0
  const m: ResourceCpu = {
    ingest: heartbeatsPerResource(c) * u.ingest,
    tick: shard * (1000 / TICK_INTERVAL_MS) * u.tickPerRecord,
    digestEncode: lr * u.encodePerRecord,
    digestMerge: (c.resources - 1) * lr * u.mergePerRecord,
    snapshotServe: (c.schedulers * 1000 / VIEW_PULL_INTERVAL_MS + ae) * shard * u.encodePerRecord,
    antiEntropy: ae * shard * u.mergePerRecord
  }
  return { ...m, total: Object.values(m).reduce((a, b) => a + b, 0) }
}

/** C_s: CPU µs per second at one scheduler: N/P·c_merge (pulls) + λ·c_merge (digests). */
export function schedulerCpu (c: Cluster, cost: Costs): { digests: number, pulls: number, total: number } {
  const u = cost(c.nodes)
  const digests = changesPerS(c) * u.mergePerRecord
  const pulls = c.nodes * 1000 / VIEW_PULL_INTERVAL_MS * u.mergePerRecord
  return { digests, pulls, total: digests + pulls }
}

/**
 * Staleness, ms from a node's change to every scheduler's view holding it (L: one-way transit):
 * an announced change (drain, return) waits τ to be flushed, then L;
 * a crash is judged from silence: the last beat left U(0, T_hb) before the crash, `dead` is
 * concluded at the first tick (period T_tick) after D = DEAD_AFTER_MS of silence, then τ + L.
 * Mean D − T_hb/2 + T_tick/2 + τ + L; worst D + T_tick + τ + L.
 */
export function stalenessMs (transitMs = 0): { announced: number, crashMean: number, crashMax: number } {
  return {
    announced: DIGEST_COALESCE_MS + transitMs,
    crashMean: DEAD_AFTER_MS - HEARTBEAT_INTERVAL_MS / 2 + TICK_INTERVAL_MS / 2 + DIGEST_COALESCE_MS + transitMs,
    crashMax: DEAD_AFTER_MS + TICK_INTERVAL_MS + DIGEST_COALESCE_MS + transitMs
  }
}

/**
 * What a real deployment adds per heartbeat at the resource beyond astrad's code (µs), by
 * design: `today` is the whole measured cost of docs/bench-membership.md (439 µs per heartbeat,
 * libp2p-dominated); `goal1` is issue 14 goal 1's budget (≤ 100 µs all in); `floor` is astrad's
 * code plus one Ed25519 check (as if transport were free).
 */
export const TODAY_US_PER_HEARTBEAT = 439
export const GOAL1_US_PER_HEARTBEAT = 100
/** Resource memory per connected node today: 610 MiB at 1,000 nodes (docs/bench-membership.md). */
export const TODAY_BYTES_PER_CONNECTED_NODE = 610 * 1024 * 1024 / 1000
/** Goal 1's memory budget: ≤ 200 KiB per node. */
export const GOAL1_BYTES_PER_CONNECTED_NODE = 200 * 1024

/** A per-heartbeat cost at the resource, all in (from the unit costs at the shard's size), and memory per connected node. */
export interface Design { name: string, usPerHeartbeat: (u: UnitCosts) => number, bytesPerConnectedNode: number }

/**
 * Resources needed at ≤ 1 core and ≤ 2 GiB each: the least R for which one resource's CPU,
 * f_hb·(c_hb,design) + the rest of C_r (tick, digests, pulls served), fits in one core, and its
 * memory, (N/R)·bytes per connection + N·bytes per list record (every resource holds the whole
 * cluster's list), fits in 2 GiB. Infinity when no R does (the whole list alone is over 2 GiB).
 */
export function resourcesNeeded (nodes: number, schedulers: number, churn: number, cost: Costs, d: Design, maxR = 100_000): number {
  const memCap = 2 * 1024 ** 3
  const u = cost(nodes)
  if (nodes * u.listBytesPerRecord >= memCap) return Infinity
  for (let r = 1; r <= maxR; r = r < 16 ? r + 1 : Math.ceil(r * 1.05)) {
    const c: Cluster = { nodes, resources: r, schedulers, churnPerNodePerS: churn }
    const cpu = resourceCpu(c, cost)
    const total = cpu.total - cpu.ingest + heartbeatsPerResource(c) * d.usPerHeartbeat(cost(nodes / r))
    const mem = nodes / r * d.bytesPerConnectedNode + nodes * u.listBytesPerRecord
    if (total <= 1e6 && mem <= memCap) return r
  }
  return Infinity
}
