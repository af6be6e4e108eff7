// Issue 14 goal 5: placement throughput. Simulated nodes (bench/lib/ledger-sim.ts: a real libp2p
// host, certificate and `/astra/reserve/1.0.0` handler per node, many per process) and
// schedulers in their own processes (bench/lib/placer-sim.ts: the daemon's Placer, LedgerView
// and ReserveClient). Each phase deploys apps of 1-core replicas (PLACEMENT.demand of the
// cluster's cores) to every scheduler at once and counts the replicas placed in a fixed window;
// 1 scheduler (the baseline) and 8 run side by side in the same run, on the same nodes (emptied
// between the two).

import path from 'node:path'
import { encodeClusterSecret, newClusterSecret, writeSecretFile } from '../../src/trust/index.ts'
import { forkTs, makeTempRoot, now, sleep, stop, type Managed } from '../lib/procs.ts'
import { round, summarize } from '../lib/stats.ts'
import type { LedgerSimConfig, LedgerSimStats, SimNode } from '../lib/ledger-sim.ts'
import type { AppsSpec, PlacerSimConfig, PlacerSimStats } from '../lib/placer-sim.ts'
import type { ScalePartOptions, ScaleRow } from './row.ts'
import { PLACEMENT } from './constants.ts'

const here = path.dirname(new URL(import.meta.url).pathname)
const LEDGER_SIM = path.join(here, '..', 'lib', 'ledger-sim.ts')
const PLACER_SIM = path.join(here, '..', 'lib', 'placer-sim.ts')

interface Child<T> { m: Managed, next: (type: string, timeoutMs: number) => Promise<T> }

/** A forked simulator and its next IPC message of a given type (an 'error' message or an exit fails it). */
function child<T = any> (name: string, module: string, config: unknown): Child<T> {
  // ASTRAD_BENCH_PROF=DIR: the first node process and the first scheduler write V8 CPU profiles there.
  const prof = process.env.ASTRAD_BENCH_PROF
  const execArgv = prof != null && prof !== '' && /-0$/.test(name) ? ['--cpu-prof', '--cpu-prof-dir', prof] : []
  const m = forkTs(name, module, [JSON.stringify(config)], execArgv)
  const queue: Array<{ type: string } & Record<string, unknown>> = []
  let wake: (() => void) | undefined
  m.child.on('message', (msg: { type: string }) => { queue.push(msg as never); wake?.() })
  void m.exited.then(() => { wake?.() })
  const next = async (type: string, timeoutMs: number): Promise<T> => {
    const deadline = now() + timeoutMs
    for (;;) {
      const i = queue.findIndex(q => q.type === type || q.type === 'error')
      if (i >= 0) {
        const msg = queue.splice(i, 1)[0]!
        if (msg.type === 'error') throw new Error(`${name}: ${String(msg.message)}`)
        return msg as T
      }
      if (m.child.exitCode != null || m.child.signalCode != null) throw new Error(`${name} exited (${m.child.exitCode ?? m.child.signalCode}) waiting for '${type}'; last output: ${m.tail.slice(-5).join(' | ')}`)
      if (now() > deadline) throw new Error(`${name}: no '${type}' within ${timeoutMs} ms; last output: ${m.tail.slice(-5).join(' | ') || 'none'}`)
      await new Promise<void>(resolve => { wake = resolve; setTimeout(resolve, 200) })
      wake = undefined
    }
  }
  return { m, next }
}

/** Asks simulators to stop and waits for them to exit on their own (profiles are written then), SIGTERM after 10 s. */
async function stopAll (sims: Array<Child<unknown>>): Promise<void> {
  for (const s of sims) tell(s, { cmd: 'stop' })
  await Promise.all(sims.map(async s => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([s.m.exited, new Promise(resolve => { timer = setTimeout(resolve, 10_000) })])
    clearTimeout(timer)
    await stop(s.m, 'SIGTERM', 10_000)
  }))
}

/** Sends to a simulator unless it is gone (its exit is reported by next()). */
function tell (c: Child<unknown>, msg: unknown): void {
  if (c.m.child.connected) c.m.child.send(msg as never)
}

async function allStats (sims: Array<Child<any>>): Promise<LedgerSimStats[]> {
  for (const s of sims) tell(s, { cmd: 'stats' })
  return await Promise.all(sims.map(async s => (await s.next('stats', 30_000)).stats as LedgerSimStats))
}

export interface PhaseResult {
  schedulers: number
  nodes: number
  windowS: number
  /** Replicas placed in the window, and per second of the time it took (the window, or less when all were placed). */
  placed: number
  perSec: number
  /** Reservations the nodes accepted and refused (conflicts: another scheduler got there first, or the node was full). */
  accepted: number
  conflicts: number
  failed: number
  retried: number
  conflictsPerPlacement: number
  latencyMs: { p50: number, p99: number, max: number }
  rttMs: { p50: number, p99: number }
  /** Where a placement's time goes: round trips of its reservations, and the rest (the pick, the placer's own work, waiting for the event loop). */
  rttShareOfLatency: number
  schedulerCpuUsPerPlacement: number
  nodeCpuUsPerReservation: number
  /** CPU of all node (scheduler) processes connected and idle, % of one core; and the CPU per placement (reservation) above that. */
  nodeIdleCpuPct: number
  schedulerIdleCpuPct: number
  schedulerCpuUsPerPlacementNet: number
  nodeCpuUsPerReservationNet: number
  allPlaced: boolean
  warmS: number
  maxOvercommit: number
  nodeBadRequests: number
}

function pct (values: number[], q: number): number {
  if (values.length === 0) return NaN
  const v = [...values].sort((a, b) => a - b)
  return v[Math.min(v.length - 1, Math.ceil(q * v.length) - 1)]!
}

async function phase (k: number, nodes: SimNode[], ledgerSims: Array<Child<any>>, clusterKey: string, o: { windowS: number, apps: AppsSpec }, log: (l: string) => void): Promise<PhaseResult> {
  const scheds: Array<Child<any>> = []
  try {
    for (let i = 0; i < k; i++) scheds.push(child(`scheduler-${i}`, PLACER_SIM, { index: i, clusterKey } satisfies PlacerSimConfig))
    const ids = await Promise.all(scheds.map(async s => (await s.next('id', 60_000)).peerId as string))
    const t0 = now()
    for (const s of scheds) tell(s, { cmd: 'setup', nodes, schedulers: ids })
    await Promise.all(scheds.map(async s => await s.next('warm', 600_000)))
    const warmS = (now() - t0) / 1000
    log(`${k} scheduler${k === 1 ? '' : 's'}: connected to ${nodes.length} nodes and read their ledgers in ${warmS.toFixed(1)} s; placing for ${o.windowS} s`)
    // Connected and idle: what libp2p's upkeep costs the processes with nothing placed.
    for (const s of ledgerSims) tell(s, { cmd: 'mark' })
    await Promise.all(ledgerSims.map(async s => await s.next('mark', 30_000)))
    await sleep(PLACEMENT.idleS * 1000)
    const idle = await allStats(ledgerSims)
    const nodeIdleCpuMsPerSec = idle.reduce((a, s) => a + s.cpuMs / (s.wallMs / 1000), 0)
    for (const s of ledgerSims) tell(s, { cmd: 'mark' })
    await Promise.all(ledgerSims.map(async s => await s.next('mark', 30_000)))
    for (const s of scheds) tell(s, { cmd: 'go', apps: o.apps })
    await sleep(o.windowS * 1000)
    for (const s of scheds) tell(s, { cmd: 'halt' })
    // The nodes' counters at the window's end (a scheduler's halt lets its round run out first).
    const nodeStats = await allStats(ledgerSims)
    const stats = await Promise.all(scheds.map(async s => (await s.next('stats', 300_000)).stats as PlacerSimStats))
    const placed = stats.reduce((a, s) => a + s.placed, 0)
    const allPlaced = stats.every(s => s.done)
    const activeMs = allPlaced ? Math.max(...stats.map(s => s.lastPlacedMs)) : o.windowS * 1000
    const latency = stats.flatMap(s => s.latencyMs)
    const rtt = stats.flatMap(s => s.rttMs)
    const conflicts = stats.reduce((a, s) => a + s.rejected, 0)
    const nodeCpu = nodeStats.reduce((a, s) => a + s.cpuMs, 0)
    const nodeWallS = Math.max(...nodeStats.map(s => s.wallMs)) / 1000
    const schedIdleMs = stats.reduce((a, s) => a + s.idleCpuMsPerSec * s.wallMs / 1000, 0)
    const nodeReq = nodeStats.reduce((a, s) => a + s.accepted + s.rejected, 0)
    const rttSum = rtt.reduce((a, b) => a + b, 0)
    const latSum = latency.reduce((a, b) => a + b, 0)
    return {
      schedulers: k,
      nodes: nodes.length,
      windowS: o.windowS,
      placed,
      perSec: placed / (activeMs / 1000),
      accepted: stats.reduce((a, s) => a + s.accepted, 0),
      conflicts,
      failed: stats.reduce((a, s) => a + s.failed, 0),
      retried: stats.reduce((a, s) => a + s.retried, 0),
      conflictsPerPlacement: placed > 0 ? conflicts / placed : NaN,
      latencyMs: { p50: pct(latency, 0.5), p99: pct(latency, 0.99), max: summarize(latency)?.max ?? NaN },
      rttMs: { p50: pct(rtt, 0.5), p99: pct(rtt, 0.99) },
      rttShareOfLatency: latSum > 0 ? rttSum / latSum : NaN,
      schedulerCpuUsPerPlacement: placed > 0 ? stats.reduce((a, s) => a + s.cpuMs, 0) * 1000 / placed : NaN,
      nodeCpuUsPerReservation: nodeReq > 0 ? nodeCpu * 1000 / nodeReq : NaN,
      nodeIdleCpuPct: nodeIdleCpuMsPerSec / 10,
      schedulerIdleCpuPct: stats.reduce((a, s) => a + s.idleCpuMsPerSec, 0) / 10,
      schedulerCpuUsPerPlacementNet: placed > 0 ? Math.max(0, stats.reduce((a, s) => a + s.cpuMs, 0) - schedIdleMs) * 1000 / placed : NaN,
      nodeCpuUsPerReservationNet: nodeReq > 0 ? Math.max(0, nodeCpu - nodeIdleCpuMsPerSec * nodeWallS) * 1000 / nodeReq : NaN,
      allPlaced,
      warmS,
      maxOvercommit: Math.max(...nodeStats.map(s => s.maxOvercommit)),
      nodeBadRequests: nodeStats.reduce((a, s) => a + s.badRequests, 0)
    }
  } finally {
    await stopAll(scheds)
  }
}

function line (r: PhaseResult): string {
  return `| ${r.schedulers} | ${r.nodes} | ${r.placed} | ${r.perSec.toFixed(0)} | ${r.conflicts} (${r.conflictsPerPlacement.toFixed(2)}/placement) | ${r.retried} | ${r.failed} | ${r.latencyMs.p50.toFixed(1)} / ${r.latencyMs.p99.toFixed(1)} | ${r.rttMs.p50.toFixed(1)} / ${r.rttMs.p99.toFixed(1)} | ${(r.rttShareOfLatency * 100).toFixed(0)} % | ${r.schedulerCpuUsPerPlacement.toFixed(0)} (${r.schedulerCpuUsPerPlacementNet.toFixed(0)}) | ${r.nodeCpuUsPerReservation.toFixed(0)} (${r.nodeCpuUsPerReservationNet.toFixed(0)}) | ${r.schedulerIdleCpuPct.toFixed(0)} % / ${r.nodeIdleCpuPct.toFixed(0)} % |`
}

export async function run (opts: ScalePartOptions): Promise<ScaleRow[]> {
  const { log } = opts
  const p = opts.quick ? PLACEMENT.quick : PLACEMENT.full
  const dir = makeTempRoot('astrad-scale-placement-')
  const clusterKey = path.join(dir, 'cluster.key')
  writeSecretFile(clusterKey, encodeClusterSecret(await newClusterSecret()))
  const ledgerSims: Array<Child<any>> = []
  try {
    const t0 = now()
    const per = Math.ceil(p.nodes / p.nodeProcesses)
    for (let i = 0; i < p.nodeProcesses; i++) {
      const count = Math.min(per, p.nodes - i * per)
      ledgerSims.push(child(`ledgers-${i}`, LEDGER_SIM, { sim: i, count, cores: PLACEMENT.cores, clusterKey } satisfies LedgerSimConfig))
    }
    const nodes = (await Promise.all(ledgerSims.map(async s => (await s.next('ready', 600_000)).nodes as SimNode[]))).flat()
    log(`${nodes.length} simulated nodes (${PLACEMENT.cores} cores each, one libp2p host each) in ${p.nodeProcesses} processes, up in ${((now() - t0) / 1000).toFixed(1)} s`)
    const capacity = nodes.length * PLACEMENT.cores
    const replicas = Math.round(capacity * PLACEMENT.demand)
    const apps = (prefix: string): AppsSpec => ({ prefix, count: Math.ceil(replicas / PLACEMENT.replicasPerApp), replicas: PLACEMENT.replicasPerApp, cpu: 1 })
    const results: PhaseResult[] = []
    for (const [i, k] of [1, PLACEMENT.schedulers].entries()) {
      if (i > 0) {
        for (const s of ledgerSims) tell(s, { cmd: 'reset' })
        await Promise.all(ledgerSims.map(async s => await s.next('reset', 30_000)))
      }
      const r = await phase(k, nodes, ledgerSims, clusterKey, { windowS: p.windowS, apps: apps(`s${k}`) }, log)
      results.push(r)
      log(`${k} scheduler${k === 1 ? '' : 's'}: ${r.placed} placed, ${r.perSec.toFixed(0)}/s${r.allPlaced ? ' (all placed before the window ended)' : ''}, ${r.conflicts} conflicts, p50/p99 ${r.latencyMs.p50.toFixed(1)}/${r.latencyMs.p99.toFixed(1)} ms`)
      if (r.maxOvercommit > 1e-9) throw new Error(`a node ledger committed ${r.maxOvercommit} cpu beyond its capacity with ${k} schedulers`)
    }
    const [one, many] = results as [PhaseResult, PhaseResult]
    log('')
    log(`Placement: apps of ${PLACEMENT.replicasPerApp} replicas × 1 core, ${Math.round(PLACEMENT.demand * 100)} % of the cluster's cores deployed at once, ${p.windowS} s window`)
    log('| schedulers | nodes | placed | placements/s | conflicts | retried placements | failed reservations | latency p50 / p99 ms | reserve RTT p50 / p99 ms | RTT share of latency | scheduler CPU µs/placement (above idle) | node CPU µs/reservation (above idle) | idle CPU, schedulers / nodes (% of a core) |')
    log('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    log(line(one))
    log(line(many))
    const scale = many.perSec / one.perSec
    log(`${PLACEMENT.schedulers} ÷ 1 scheduler: placements/s ×${scale.toFixed(2)}, conflicts per placement ${one.conflictsPerPlacement.toFixed(2)} → ${many.conflictsPerPlacement.toFixed(2)}, latency p50 ×${(many.latencyMs.p50 / one.latencyMs.p50).toFixed(2)}`)
    return [{
      goal: '5 placement throughput',
      figure: `${many.perSec.toFixed(0)} placements/s, ${PLACEMENT.schedulers} schedulers × ${many.nodes} node ledgers; ${many.conflicts} conflicts (${many.conflictsPerPlacement.toFixed(2)}/placement), p50/p99 ${many.latencyMs.p50.toFixed(1)}/${many.latencyMs.p99.toFixed(1)} ms`,
      target: `≥ ${PLACEMENT.goalPerSec.toLocaleString('en-US')} placements/s, 8 schedulers, 1,000 ledgers`,
      today: `1 scheduler: ${one.perSec.toFixed(0)}/s, ${one.conflicts} conflicts (${PLACEMENT.schedulers} ÷ 1: ×${scale.toFixed(2)})`,
      met: many.perSec >= PLACEMENT.goalPerSec,
      detail: { quick: opts.quick, nodes: many.nodes, cores: PLACEMENT.cores, replicasPerApp: PLACEMENT.replicasPerApp, demand: PLACEMENT.demand, baseline: one, schedulers: many, scale }
    }]
  } finally {
    await stopAll(ledgerSims)
  }
}
