// bench:scale, goal 3 of issue 14 (docs/scale.md, docs/bench-scale.md "Model to a million"):
// the written scale model (model-formulas.ts) against an in-process simulation of the real
// membership code (model-sim.ts) at 10,000 and 100,000 nodes, with the model's unit costs
// measured apart on a small list first (model-calibrate.ts). Baseline in the same run: today's
// code, where every resource subscribes to every heartbeat shard, so each does the work of a
// single resource facing all N (the simulation with R = 1).

import { summarize, round } from '../lib/stats.ts'
import type { ScalePartOptions, ScaleRow } from './row.ts'
import { calibrate, costsAt, type UnitCosts } from './model-calibrate.ts'
import { simulate, DEFAULT_SIM, type SimParams, type SimResult } from './model-sim.ts'
import {
  type Cluster, digestBytesPerResourcePerS, digestBytesInPerS, pullBytesPerSchedulerPerS, bytesPerPull, antiEntropyBytesPerResourcePerS,
  resourceCpu, schedulerCpu, stalenessMs, heartbeatsPerResource, resourcesNeeded, shardSnapshotBytes, changesPerS,
  TODAY_US_PER_HEARTBEAT, GOAL1_US_PER_HEARTBEAT, TODAY_BYTES_PER_CONNECTED_NODE, GOAL1_BYTES_PER_CONNECTED_NODE, type Design, type Costs
} from './model-formulas.ts'
import { MAX_SNAPSHOT_BYTES } from '../../src/membership/constants.ts'

/**
 * Tolerances (docs/scale.md, "How the model is checked"): bytes, heartbeat rates and staleness
 * follow from the code's constants and record sizes, so the model must hit them closely; the
 * remaining spread is the simulation's random phases and churn (a few % at 100 k nodes). CPU is
 * extrapolated 20× from a small list measured on a shared 2-core machine where one run's
 * figures swing by 2× or more, so it is checked within a factor of 1.5 either way.
 */
export const TOLERANCE = { bytes: 0.15, staleness: 0.15, cpu: 0.5 }

interface Check { quantity: string, kind: keyof typeof TOLERANCE, model: number, sim: number, ratio: number, ok: boolean }

function check (quantity: string, kind: keyof typeof TOLERANCE, model: number, sim: number): Check {
  const ratio = sim === 0 ? (model === 0 ? 1 : Infinity) : model / sim
  return { quantity, kind, model, sim, ratio, ok: Math.abs(ratio - 1) <= TOLERANCE[kind] }
}

/** The model's predictions for the simulated cluster, set beside what the simulation measured. */
export function compare (sim: SimResult, cost: Costs): Check[] {
  const u = cost(sim.params.nodes)
  const p = sim.params
  const s = p.windowMs / 1000
  // The churn the model is fed is the simulation's realized rate of leave events (the
  // assumption's randomness is not what is being checked; the formulas are).
  const leaves = sim.events.crashes + sim.events.drains
  const c: Cluster = { nodes: p.nodes, resources: p.resources, schedulers: p.schedulers, churnPerNodePerS: leaves / p.nodes / s }
  const b = u.recordBytes
  const st = stalenessMs(p.transitMs)
  const mean = (xs: number[]): number => summarize(xs)?.mean ?? NaN
  const rc = resourceCpu(c, cost)
  const checks = [
    check('heartbeats/s per resource', 'bytes', heartbeatsPerResource(c), sim.heartbeatsPerResource / s),
    check('record changes/s, cluster', 'bytes', changesPerS(c), sim.changes / s),
    check('digest B/s published per resource', 'bytes', digestBytesPerResourcePerS(c, b), sim.digestBytesPerResourcePerS),
    check('digest B/s into each scheduler', 'bytes', digestBytesInPerS(c, b), sim.digestBytesInPerS),
    // Per pull, not per second: a window holds a whole number of pulls (P = 3 s, A = 5 s), so
    // a rate over it is off by up to one pull; the rate is bytes per pull ÷ the fixed period.
    check('pull B per scheduler pull (all shards)', 'bytes', bytesPerPull(c, b), sim.bytesPerPull),
    check('staleness, drain → every view (ms, mean)', 'staleness', st.announced, mean(sim.staleness.drainDraining)),
    check('staleness, return → every view (ms, mean)', 'staleness', st.announced, mean(sim.staleness.rejoinAlive)),
    check('crash → dead in every view (ms, mean)', 'staleness', st.crashMean, mean(sim.staleness.crashDead)),
    check('resource CPU, astrad code (µs/s)', 'cpu', rc.total, sim.resourceCpuUsPerS.total),
    check('scheduler CPU, astrad code (µs/s)', 'cpu', schedulerCpu(c, cost).total, sim.schedulerCpuUsPerS.total)
  ]
  if (p.resources > 1) checks.splice(5, 0, check('anti-entropy B per pull (one shard)', 'bytes', shardSnapshotBytes(c, b), sim.bytesPerAntiEntropyPull))
  return checks
}

function fmt (x: number): string {
  if (!Number.isFinite(x)) return String(x)
  const a = Math.abs(x)
  return a >= 1e9 ? `${round(x / 1e9, 2)} G` : a >= 1e6 ? `${round(x / 1e6, 2)} M` : a >= 1e4 ? `${round(x / 1e3, 1)} k` : `${round(x, 1)}`
}

function logChecks (log: (line: string) => void, title: string, checks: Check[]): void {
  log(`${title}`)
  log('| quantity | model | simulation | model ÷ sim | within |')
  log('|---|---|---|---|---|')
  for (const c of checks) log(`| ${c.quantity} | ${fmt(c.model)} | ${fmt(c.sim)} | ${round(c.ratio, 3)} | ${c.ok ? 'yes' : 'NO'} (±${TOLERANCE[c.kind] * 100} %) |`)
}

function logSim (log: (line: string) => void, r: SimResult): void {
  const p = r.params
  const crash = summarize(r.staleness.crashDead)
  log(`  N=${p.nodes} R=${p.resources} K=${p.schedulers}: ${fmt(r.resourceCpuUsPerS.total)} µs/s per resource (ingest ${fmt(r.resourceCpuUsPerS.ingest)}, tick ${fmt(r.resourceCpuUsPerS.tick)}, snapshots served ${fmt(r.resourceCpuUsPerS.snapshotServe)}, anti-entropy ${fmt(r.resourceCpuUsPerS.antiEntropy)}), ` +
    `${round(r.resourceCpuUsPerS.ingest / Math.max(1, r.heartbeatsPerResource / (p.windowMs / 1000)), 2)} µs per heartbeat ingested, scheduler ${fmt(r.schedulerCpuUsPerS.total)} µs/s; ` +
    `crash→dead n=${crash?.n ?? 0} median ${crash?.median ?? '-'} max ${crash?.max ?? '-'} ms; ${r.falseSuspects} false suspects, ${r.missing} missing from views; largest snapshot ${fmt(r.largestSnapshotBytes)}B; wall ${round(r.wallMs / 1000, 1)} s`)
}

/** The model's table at 10 k, 100 k and 1 M nodes for three per-heartbeat costs. */
export function modelTable (cost: Costs, schedulers: number, churn: number): Array<Record<string, number | string>> {
  const u = cost(10_000)
  const designs: Design[] = [
    { name: `today (${TODAY_US_PER_HEARTBEAT} µs, ${round(TODAY_BYTES_PER_CONNECTED_NODE / 1024, 0)} KiB per node)`, usPerHeartbeat: () => TODAY_US_PER_HEARTBEAT, bytesPerConnectedNode: TODAY_BYTES_PER_CONNECTED_NODE },
    { name: `goal 1 (${GOAL1_US_PER_HEARTBEAT} µs, 200 KiB)`, usPerHeartbeat: () => GOAL1_US_PER_HEARTBEAT, bytesPerConnectedNode: GOAL1_BYTES_PER_CONNECTED_NODE },
    { name: `floor (astrad code + 1 Ed25519 verify ≈ ${round(u.ingest + u.ed25519VerifyUs, 0)} µs, 0 per connection)`, usPerHeartbeat: (x: UnitCosts) => x.ingest + x.ed25519VerifyUs, bytesPerConnectedNode: 0 }
  ]
  const rows: Array<Record<string, number | string>> = []
  for (const nodes of [10_000, 100_000, 1_000_000]) {
    const row: Record<string, number | string> = { nodes }
    for (const d of designs) row[`resources: ${d.name}`] = resourcesNeeded(nodes, schedulers, churn, cost, d)
    const rGoal = row[`resources: ${designs[1]!.name}`] as number
    const c: Cluster = { nodes, resources: Number.isFinite(rGoal) ? rGoal : 1, schedulers, churnPerNodePerS: churn }
    row['digest B/s per resource'] = digestBytesPerResourcePerS(c, u.recordBytes)
    row['digest B/s into each scheduler'] = digestBytesInPerS(c, u.recordBytes)
    row['pull B/s into each scheduler'] = pullBytesPerSchedulerPerS(c, u.recordBytes)
    row['anti-entropy B/s per resource'] = antiEntropyBytesPerResourcePerS(c, u.recordBytes)
    row['scheduler CPU (cores)'] = schedulerCpu(c, cost).total / 1e6
    row['shard snapshot B (cap 8 MiB)'] = shardSnapshotBytes(c, u.recordBytes)
    row['whole list per resource (MiB)'] = nodes * u.listBytesPerRecord / 1024 ** 2
    rows.push(row)
  }
  return rows
}

function simParams (quick: boolean, nodes: number, resources: number): SimParams {
  // Steady churn needs warm-up > drain + restart time; --quick shortens the restart and window.
  return quick
    ? { ...DEFAULT_SIM, nodes, resources, warmupMs: 8_000, windowMs: nodes > 10_000 ? 6_000 : 8_000, restartAfterMs: 5_000 }
    : { ...DEFAULT_SIM, nodes, resources, warmupMs: 15_000, windowMs: 30_000 }
}

export async function run (opts: ScalePartOptions): Promise<ScaleRow[]> {
  const { quick, log } = opts
  const sizes = [5_000, 50_000]
  log(`model: calibrating unit costs on lists of ${sizes.join(' and ')} nodes`)
  const small = calibrate(sizes[0])
  const large = calibrate(sizes[1])
  const cost: Costs = n => costsAt(small, large, n)
  for (const u of [small, large]) {
    log(`  ${u.calibrationNodes} nodes, per op (µs): encode heartbeat ${round(u.encodeHeartbeat, 2)}, decode+ingest ${round(u.ingest, 2)}, tick per record ${round(u.tickPerRecord, 3)}, encode per record ${round(u.encodePerRecord, 2)}, decode+merge per record ${round(u.mergePerRecord, 2)}; ` +
      `Ed25519 verify ${round(u.ed25519VerifyUs, 1)} (key object per message: ${round(u.ed25519VerifyNewKeyUs, 1)}); record ${round(u.recordBytes, 1)} B, heartbeat ${u.heartbeatBytes} B, ${round(u.listBytesPerRecord, 0)} B per list record`)
  }

  const plan: Array<{ nodes: number, resources: number, baseline: boolean }> = [
    { nodes: 10_000, resources: 2, baseline: true },
    { nodes: 100_000, resources: 4, baseline: !quick }
  ]
  const rows: ScaleRow[] = []
  for (const step of plan) {
    await new Promise(resolve => setImmediate(resolve))
    log(`model: simulating ${step.nodes} nodes, ${step.resources} resources (sharded)`)
    const sim = simulate(simParams(quick, step.nodes, step.resources))
    logSim(log, sim)
    let base: SimResult | undefined
    if (step.baseline) {
      log(`model: baseline, today's subscription (every resource hears all ${step.nodes} nodes: R = 1)`)
      base = simulate(simParams(quick, step.nodes, 1))
      logSim(log, base)
    }
    const checks = compare(sim, cost)
    logChecks(log, `model vs simulation, ${step.nodes} nodes, ${step.resources} resources, ${sim.params.schedulers} schedulers`, checks)
    const worst = checks.reduce((a, c) => Math.abs(c.ratio - 1) > Math.abs(a.ratio - 1) ? c : a)
    const sound = sim.missing === 0 && sim.falseSuspects === 0 && sim.snapshotsOverCap === 0
    const ok = checks.every(c => c.ok) && sound
    const perRes = sim.resourceCpuUsPerS.total
    rows.push({
      goal: `goal 3: simulated ${step.nodes.toLocaleString('en')} nodes (${step.resources} resources), model vs simulation`,
      figure: `${checks.filter(c => c.ok).length}/${checks.length} within; worst ${worst.quantity} model÷sim ${round(worst.ratio, 2)}; crash→dead mean ${round(summarize(sim.staleness.crashDead)?.mean ?? NaN, 0)} ms; ${fmt(sim.digestBytesInPerS)}B/s digests + ${fmt(sim.pullBytesPerSchedulerPerS)}B/s pulls per scheduler` +
        (sound ? '' : `; ${sim.missing} missing, ${sim.falseSuspects} false suspects, ${sim.snapshotsOverCap} snapshots over cap`),
      target: `bytes and staleness ±${TOLERANCE.bytes * 100} %, CPU ±${TOLERANCE.cpu * 100} %${step.nodes >= 100_000 ? ' at ≥ 100,000 nodes' : ''}`,
      today: base == null
        ? `not run in --quick (R = 1 at ${step.nodes.toLocaleString('en')})`
        : `one resource hears all: ${fmt(base.resourceCpuUsPerS.total)} µs/s astrad code vs ${fmt(perRes)} sharded (${round(base.resourceCpuUsPerS.total / perRes, 2)}×)` +
          (base.snapshotsOverCap > 0 ? `; its whole-list pulls (${fmt(base.largestSnapshotBytes)}B) refused over the 8 MiB cap, ${base.snapshotsOverCap} times` : ''),
      met: ok,
      detail: { checks, sim: { ...sim, staleness: { crashDead: summarize(sim.staleness.crashDead), drainDraining: summarize(sim.staleness.drainDraining), rejoinAlive: summarize(sim.staleness.rejoinAlive) } }, baseline: base == null ? null : { resourceCpuUsPerS: base.resourceCpuUsPerS, heartbeatsPerResource: base.heartbeatsPerResource, largestSnapshotBytes: base.largestSnapshotBytes, snapshotsOverCap: base.snapshotsOverCap } }
    })
  }

  const churn = DEFAULT_SIM.churnPerNodePerS
  const table = modelTable(cost, DEFAULT_SIM.schedulers, churn)
  log(`model table (churn ${round(churn * 60 * 100, 2)} % of nodes per minute, ${DEFAULT_SIM.schedulers} schedulers; digest and pull figures at goal 1's resource count):`)
  const keys = Object.keys(table[0]!)
  log(`| ${keys.join(' | ')} |`)
  log(`|${keys.map(() => '---').join('|')}|`)
  for (const r of table) log(`| ${keys.map(k => typeof r[k] === 'number' ? fmt(r[k]) : String(r[k])).join(' | ')} |`)
  const over = table.filter(r => (r['shard snapshot B (cap 8 MiB)'] as number) > MAX_SNAPSHOT_BYTES).map(r => r.nodes)
  if (over.length > 0) log(`  a shard's snapshot passes the ${MAX_SNAPSHOT_BYTES} B pull cap at ${over.join(', ')} nodes`)
  const last = rows[rows.length - 1]
  if (last?.detail != null) last.detail.modelTable = table
  if (last?.detail != null) last.detail.unitCosts = { small, large }
  return rows
}
