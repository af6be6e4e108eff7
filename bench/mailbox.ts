// Public mailbox benchmark (npm run bench:mailbox; docs/bench-mailbox.md).
//
// One resource process (real libp2p host, real cluster log on sqlite, MailboxServer) and
// 1,000 simulated nodes in one or more simulator processes (each node its own peer id, cell and
// MailboxState; the nodes multiplexed over a few real libp2p client hosts), all on 127.0.0.1:
//   1. public: ONE `message` notice for everyone (1 write) → time until 99 % / 100 % of the
//      nodes have applied it.
//   2. write fan-out baseline: one private copy per node (1,000 awaited writes) → same times.
//      1. and 2. alternate, 3 trials each; the table shows medians and the worst trial.
//   3. pull throughput: caught-up nodes pull back to back with a fixed number in flight:
//      pulls/s one resource answers, latency p50/p99, resource CPU per pull; plus the
//      in-memory answer alone in a loop.
//
// Usage: node bench/mailbox.ts --help

import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, phaseRunner, installCleanupHooks, makeTempRoot, cleanup, setKeepTemp, now, sleep, forkTs, stop, waitFor, type Managed } from './lib/procs.ts'
import { round, ratio } from './lib/stats.ts'
import { machineCpu } from './lib/transfer-common.ts'
import { call, percentile } from './mailbox-ipc.ts'
import type { Head, InMemoryResult, ResourceInfo, ResourceUsage, WriteResult } from './mailbox-resource.ts'
import type { AppliedResult, SimConfig, SimUsage, ThroughputResult } from './mailbox-sim.ts'
import { newNoticeId, type Notice } from '../src/mailbox/notice.ts'
import { DIGEST_DEBOUNCE_MS, DIGEST_JITTER_MS, MAILBOX_MAX_INBOUND_STREAMS, MAILBOX_MAX_STREAMS_PER_PEER, PULL_INTERVAL_MS, PULL_TIMEOUT_MS } from '../src/mailbox/constants.ts'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const RESOURCE_MODULE = path.join(HERE, 'mailbox-resource.ts')
const SIM_MODULE = path.join(HERE, 'mailbox-sim.ts')

/** The issue's goals (issue 5, "Benchmark"). */
const GOAL_P99_MS = 3_000
const GOAL_PULLS_PER_SEC = 5_000
/** Issue 14, goal 4: pulls per second per resource with long-lived pull streams. */
const GOAL_STREAM_PULLS_PER_SEC = 20_000
const PROTOCOLS = ['oneshot', 'stream'] as const
type PullProtocol = typeof PROTOCOLS[number]
const PROTOCOL_NAME: Record<PullProtocol, string> = { oneshot: 'one-shot 1.0.0', stream: 'stream 1.1.0' }

interface Options {
  nodes: number
  sims: number
  hosts: number
  perHostInflight: number
  inflight: number[]
  protocols: PullProtocol[]
  /** Long-lived pull streams per client host (each carries ~125 simulated nodes; a real node keeps one). */
  streamsPerHost: number
  windowSec: number
  applyTimeoutSec: number
  trials: number
  quick: boolean
  out: string
  keepTemp: boolean
}

const USAGE = `usage: node bench/mailbox.ts [options]
  --nodes N          simulated nodes (default 1000)
  --sims N           simulator processes (default 1)
  --hosts N          libp2p client hosts (connections) carrying the nodes, over all simulators (default 8)
  --host-inflight N  pulls one client host has open at once (default 32; libp2p allows 64 streams
                     of a protocol per connection)
  --inflight LIST    pulls in flight in the throughput phase, one 'window' each (default 64,128,256;
                     --quick: 256)
  --protocols LIST   pull protocols measured at each setting (default oneshot,stream: the baseline
                     and long-lived streams side by side)
  --streams-per-host N  long-lived pull streams per client host (default 1, as a node keeps; at most
                     ${MAILBOX_MAX_STREAMS_PER_PEER}). With N ≥ --host-inflight every pull has a stream to itself
                     (no two pulls share a write, as with real nodes)
  --window SEC       throughput window per setting (default 10; --quick: 3)
  --trials N         public / fan-out deliveries, alternating (default 3; --quick: 1)
  --apply-timeout S  give up waiting for 100 % applied after S seconds (default 30)
  --quick            smoke run: 1 trial, one throughput setting, 3 s window
  --out FILE         JSON results (default bench/results/mailbox.json)
  --keep-temp        keep the temp dir (the resource's cluster log) for inspection
`

function protocolFlag (x: string): PullProtocol {
  if (!(PROTOCOLS as readonly string[]).includes(x)) throw new UsageError(`--protocols: '${x}' is not one of ${PROTOCOLS.join(', ')}`)
  return x as PullProtocol
}

function parseOptions (argv: string[]): Options {
  const v = parseFlags(argv, {
    nodes: { type: 'string' },
    sims: { type: 'string' },
    hosts: { type: 'string' },
    'host-inflight': { type: 'string' },
    inflight: { type: 'string' },
    protocols: { type: 'string' },
    'streams-per-host': { type: 'string' },
    window: { type: 'string' },
    'apply-timeout': { type: 'string' },
    trials: { type: 'string' },
    quick: { type: 'boolean' },
    out: { type: 'string' },
    'keep-temp': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const quick = v.quick === true
  const o: Options = {
    nodes: v.nodes !== undefined ? intFlag('--nodes', v.nodes, 1, 10_000) : 1000,
    sims: v.sims !== undefined ? intFlag('--sims', v.sims, 1, 8) : 1,
    hosts: v.hosts !== undefined ? intFlag('--hosts', v.hosts, 1, 64) : 8,
    perHostInflight: v['host-inflight'] !== undefined ? intFlag('--host-inflight', v['host-inflight'], 1, MAILBOX_MAX_INBOUND_STREAMS) : 32,
    inflight: v.inflight !== undefined ? v.inflight.split(',').map(x => intFlag('--inflight', x.trim(), 1, 4096)) : quick ? [256] : [64, 128, 256],
    protocols: v.protocols !== undefined ? v.protocols.split(',').map(x => protocolFlag(x.trim())) : [...PROTOCOLS],
    streamsPerHost: v['streams-per-host'] !== undefined ? intFlag('--streams-per-host', v['streams-per-host'], 1, MAILBOX_MAX_STREAMS_PER_PEER) : 1,
    windowSec: v.window !== undefined ? intFlag('--window', v.window, 1, 120) : quick ? 3 : 10,
    applyTimeoutSec: v['apply-timeout'] !== undefined ? intFlag('--apply-timeout', v['apply-timeout'], 1, 600) : 30,
    trials: v.trials !== undefined ? intFlag('--trials', v.trials, 1, 20) : quick ? 1 : 3,
    quick,
    out: v.out !== undefined ? path.resolve(v.out) : path.join(ROOT, 'bench/results/mailbox.json'),
    keepTemp: v['keep-temp'] === true
  }
  if (o.hosts < o.sims) throw new UsageError(`--hosts (${o.hosts}) must be at least --sims (${o.sims})`)
  if (o.nodes < o.sims) throw new UsageError(`--nodes (${o.nodes}) must be at least --sims (${o.sims})`)
  for (const k of o.inflight) {
    if (k > o.nodes) throw new UsageError(`--inflight ${k} exceeds --nodes ${o.nodes} (a node has one pull at a time)`)
  }
  return o
}

function simulationNotes (o: Options): string[] {
  return [
    `Everything runs on one ${os.availableParallelism()}-core machine over loopback: no latency, loss or bandwidth limits. The resource is one process (one event loop, at most one core); the simulated nodes' own work (opening streams, Noise, decoding and merging every answer) runs in ${o.sims} other process${o.sims > 1 ? 'es' : ''} on the same cores. What the resource could answer on a core of its own is printed as 1 s ÷ its CPU time per pull.`,
    `${o.nodes} simulated nodes share ${o.hosts} libp2p connections to the resource (${Math.ceil(o.nodes / o.hosts)} per connection), not one each: fewer TCP+Noise sessions and gossipsub peers on the resource than a real fleet, and a digest is received once per connection, then handed to its nodes. The pull requests still name each node (peer id, cell, cursor), and the resource answers each from its own private feed and the public one.`,
    `At most ${o.perHostInflight} pulls are open per connection (a bench limit: libp2p refuses more than ${MAILBOX_MAX_INBOUND_STREAMS} streams of a protocol per connection; a real node has one connection and one pull at a time), so a burst of pulls can wait on the client before it reaches the resource; that wait is inside the measured times.`,
    'Nodes keep their MailboxState in memory and do not write mailbox.json: a real node fsyncs its state file after every page before it acts, which adds one fsync (~1–10 ms on ordinary disks) to each node\'s apply time, on its own disk.',
    `Nodes behave as MailboxPuller: one pull session at a time, a pull every ${PULL_INTERVAL_MS / 1000} s (random phase), and on a digest showing a newer head a pull after a random delay in [0, ${DIGEST_JITTER_MS}) ms. "Applied" is when MailboxState.receive returned the notice's \`message\` action; effects are not run. Times are wall-clock across processes (performance.timeOrigin + now(), sub-ms).`,
    `The publish is timed from the start of the cluster-log put in the resource: it includes the fsynced sqlite write, the change feed into the in-memory index, the digest debounce (${DIGEST_DEBOUNCE_MS} ms), gossipsub delivery, the jitter and the pull. The fan-out baseline's ${o.nodes} puts are awaited one after the other; node:sqlite writes are synchronous (one fsync each; ~0.2 ms on this machine's disk, 1–10 ms on many others), so the resource answers no pull and sends no gossip until the last one is on disk.`,
    'Throughput phase: periodic and digest pulls are paused; each worker pulls for the next caught-up node that is not pulling (a no-op delta page), back to back. Latency is the node\'s whole pull: gate wait, stream open, request, answer, decoding and merge.',
    `Pull streams: a real node keeps one /astra/mailbox-pull/1.1.0 stream open to its resource and has one pull at a time on it; here each connection (≈${Math.ceil(o.nodes / o.hosts)} nodes) keeps ${o.streamsPerHost} stream${o.streamsPerHost === 1 ? '' : 's'} and pipelines its nodes' pulls on ${o.streamsPerHost === 1 ? 'it' : 'them'} (answers in order, the requests of one event-loop turn in one write), so the resource holds ${o.hosts * o.streamsPerHost} pull streams instead of ${o.nodes} and answers several pulls per write, which a fleet of real nodes, each with one pull at a time, would not give it (--streams-per-host N with N ≥ --host-inflight gives every pull its own stream: no shared writes). Per pull the resource reads a request, checks membership and answers either way; it holds fewer idle streams and connections than a real fleet. Deliveries (public, fan-out) use the streams, as MailboxPuller does; the throughput phase runs one-shot and stream side by side at each setting.`
  ]
}

// ---- processes -----------------------------------------------------------------------------

interface Sim {
  proc: Managed
  nodes: number
  peerIds: string[]
  cells: string[]
}

async function usageOfSims (sims: Sim[]): Promise<SimUsage[]> {
  return await Promise.all(sims.map(async s => await call<SimUsage>(s.proc, 'usage', null, 10_000)))
}

/** Waits until every node's cursor is at the resource's head and no node is pulling. */
async function waitCaughtUp (res: Managed, sims: Sim[], total: number, what: string, timeoutMs: number): Promise<{ ms: number, head: Head }> {
  const t0 = now()
  const head = await waitFor(what, async () => {
    const h = await call<Head>(res, 'head', null, 10_000)
    const counts = await Promise.all(sims.map(async s => await call<number>(s.proc, 'caughtUp', { source: h.source, rev: h.rev }, 10_000)))
    return counts.reduce((a, b) => a + b, 0) === total ? h : undefined
  }, timeoutMs, 50)
  return { ms: now() - t0, head }
}

function message (text: string, node: string | null): Notice {
  const at = Date.now()
  return {
    id: newNoticeId(),
    kind: 'message',
    data: { text, level: 'info' },
    audience: { cells: null, canary: null, node },
    state: 'published',
    revision: 1,
    createdAt: at,
    updatedAt: at,
    expiresAt: null,
    by: 'bench'
  }
}

// ---- phases --------------------------------------------------------------------------------

interface DeliveryResult {
  mode: 'public' | 'fanout'
  nodes: number
  applied: number
  missing: number
  /** ms from the first put's start; null when that share of nodes was not reached. */
  p50Ms: number | null
  p99Ms: number | null
  allMs: number | null
  firstMs: number | null
  /** ms from the first put's start until the last put resolved (the log acknowledged it). */
  writeMs: number
  writes: number
  valueBytes: number
  keyBytes: number
  /** Growth of the sqlite database + WAL files over the phase. */
  sqliteGrowthBytes: number
  /** Bytes the resource process wrote to storage (/proc/self/io) over the phase. */
  diskWriteBytes: number | null
  /** Pulls the resource answered from the publish until the last node applied. */
  pullsAnswered: number
  resourceCpuMs: number
  duplicates: number
  pullErrors: number
}

async function delivery (mode: 'public' | 'fanout', res: Managed, sims: Sim[], o: Options, log: (m: string) => void): Promise<DeliveryResult> {
  const caught = await waitCaughtUp(res, sims, o.nodes, 'all nodes caught up', 60_000)
  log(`${mode}: all ${o.nodes} nodes caught up at rev ${caught.head.rev} (${caught.ms.toFixed(0)} ms); 1 s quiet`)
  // Pulls of the catch-up and the last digest are over.
  await sleep(1_000)
  const [before, simsBefore] = await Promise.all([call<ResourceUsage>(res, 'usage', null, 10_000), usageOfSims(sims)])
  const peerIds = sims.flatMap(s => s.peerIds)
  const notice = message(mode === 'public' ? 'bench: public notice for every node' : 'bench: private copy for one node', null)
  const write = mode === 'public'
    ? await call<WriteResult>(res, 'publish', { notice }, 30_000)
    : await call<WriteResult>(res, 'fanout', { notice, peerIds }, 600_000)
  log(`${mode}: ${write.writes} write${write.writes > 1 ? 's' : ''} acknowledged after ${(write.endAt - write.startAt).toFixed(1)} ms; waiting for the nodes`)
  const results = await Promise.all(sims.map(async s => await call<AppliedResult>(s.proc, 'applied', { id: notice.id, timeoutMs: o.applyTimeoutSec * 1000 }, o.applyTimeoutSec * 1000 + 15_000)))
  const [after, simsAfter] = await Promise.all([call<ResourceUsage>(res, 'usage', null, 10_000), usageOfSims(sims)])
  const lat = results.flatMap(r => r.times).map(t => t - write.startAt).sort((a, b) => a - b)
  const missing = results.reduce((a, r) => a + r.missing, 0)
  // Nearest rank over ALL nodes: a share not reached (nodes missing) has no time.
  const reach = (q: number): number | null => {
    const k = Math.ceil(q * o.nodes)
    return lat.length >= k ? (lat[k - 1] as number) : null
  }
  const sumErrors = (u: SimUsage[]): number => u.reduce((a, x) => a + Object.values(x.errors).reduce((b, c) => b + c, 0), 0)
  return {
    mode,
    nodes: o.nodes,
    applied: lat.length,
    missing,
    p50Ms: reach(0.5),
    p99Ms: reach(0.99),
    allMs: missing === 0 ? reach(1) : null,
    firstMs: lat[0] ?? null,
    writeMs: write.endAt - write.startAt,
    writes: write.writes,
    valueBytes: write.valueBytes,
    keyBytes: write.keyBytes,
    sqliteGrowthBytes: after.dbBytes + after.walBytes - before.dbBytes - before.walBytes,
    diskWriteBytes: after.diskWriteBytes != null && before.diskWriteBytes != null ? after.diskWriteBytes - before.diskWriteBytes : null,
    pullsAnswered: after.pulls - before.pulls,
    resourceCpuMs: (after.cpuUs - before.cpuUs) / 1000,
    duplicates: simsAfter.reduce((a, u) => a + u.duplicates, 0) - simsBefore.reduce((a, u) => a + u.duplicates, 0),
    pullErrors: sumErrors(simsAfter) - sumErrors(simsBefore)
  }
}

/** Per field: the median over trials (null if any trial has none); duplicates and errors summed. */
function medianTrial (trials: DeliveryResult[]): DeliveryResult | undefined {
  const first = trials[0]
  if (first == null) return undefined
  const med = (f: (d: DeliveryResult) => number | null): number | null => {
    const v = trials.map(f)
    if (v.some(x => x == null)) return null
    const sorted = (v as number[]).sort((a, b) => a - b)
    const n = sorted.length
    return n % 2 === 1 ? sorted[(n - 1) / 2] as number : ((sorted[n / 2 - 1] as number) + (sorted[n / 2] as number)) / 2
  }
  const sum = (f: (d: DeliveryResult) => number): number => trials.reduce((a, d) => a + f(d), 0)
  return {
    mode: first.mode,
    nodes: first.nodes,
    applied: med(d => d.applied) ?? 0,
    missing: med(d => d.missing) ?? 0,
    p50Ms: med(d => d.p50Ms),
    p99Ms: med(d => d.p99Ms),
    allMs: med(d => d.allMs),
    firstMs: med(d => d.firstMs),
    writeMs: med(d => d.writeMs) ?? NaN,
    writes: first.writes,
    valueBytes: first.valueBytes,
    keyBytes: first.keyBytes,
    sqliteGrowthBytes: med(d => d.sqliteGrowthBytes) ?? NaN,
    diskWriteBytes: med(d => d.diskWriteBytes),
    pullsAnswered: med(d => d.pullsAnswered) ?? NaN,
    resourceCpuMs: med(d => d.resourceCpuMs) ?? NaN,
    duplicates: sum(d => d.duplicates),
    pullErrors: sum(d => d.pullErrors)
  }
}

/** Worst trial's value (null if any trial never reached it). */
function worst (trials: DeliveryResult[], f: (d: DeliveryResult) => number | null): number | null {
  const v = trials.map(f)
  return v.length === 0 || v.some(x => x == null) ? null : Math.max(...(v as number[]))
}

export interface ThroughputRow {
  protocol: PullProtocol
  inflight: number
  pulls: number
  errors: number
  seconds: number
  pullsPerSec: number
  /** From the resource's own counter (astrad_mailbox_pulls_total). */
  resourcePullsPerSec: number
  latencyMs: { p50: number, p90: number, p99: number, max: number, mean: number }
  resourceCpuUsPerPull: number
  /** 1 s ÷ CPU per pull: what the resource would answer on a core of its own. */
  resourceCpuBoundPullsPerSec: number
  resourceCpuPctOfOneCore: number
  simCpuPctOfOneCore: number
  /** Whole machine, % of one core (100 × cores = all busy). */
  machineBusyPct: number
  /** Machine busy minus the resource, the simulators and this process: other work on the machine. */
  otherCpuPctOfOneCore: number
}

async function throughput (inflight: number, protocol: PullProtocol, res: Managed, sims: Sim[], o: Options, log: (m: string) => void): Promise<ThroughputRow> {
  await waitCaughtUp(res, sims, o.nodes, 'all nodes caught up', 60_000)
  // The in-flight pulls are shared out by node count; every simulator gets at least one.
  const shares = sims.map(s => Math.max(1, Math.round(inflight * s.nodes / o.nodes)))
  const [before, simsBefore] = await Promise.all([call<ResourceUsage>(res, 'usage', null, 10_000), usageOfSims(sims)])
  const m0 = machineCpu()
  const self0 = process.cpuUsage()
  const t0 = now()
  const results = await Promise.all(sims.map(async (s, i) => await call<ThroughputResult>(s.proc, 'throughput', { inflight: shares[i], ms: o.windowSec * 1000, protocol }, o.windowSec * 1000 + 30_000)))
  const wallMs = now() - t0
  const m1 = machineCpu()
  const self = process.cpuUsage(self0)
  const [after, simsAfter] = await Promise.all([call<ResourceUsage>(res, 'usage', null, 10_000), usageOfSims(sims)])
  const latencies = results.flatMap(r => r.latencies).sort((a, b) => a - b)
  const pulls = latencies.length
  const seconds = Math.max(...results.map(r => r.elapsedMs)) / 1000
  const resourcePulls = after.pulls - before.pulls
  const cpuUs = after.cpuUs - before.cpuUs
  const simCpuUs = simsAfter.reduce((a, u) => a + u.cpuUs, 0) - simsBefore.reduce((a, u) => a + u.cpuUs, 0)
  const row: ThroughputRow = {
    protocol,
    inflight: shares.reduce((a, b) => a + b, 0),
    pulls,
    errors: results.reduce((a, r) => a + r.errors, 0),
    seconds,
    pullsPerSec: pulls / seconds,
    resourcePullsPerSec: resourcePulls / (wallMs / 1000),
    latencyMs: {
      p50: percentile(latencies, 0.5),
      p90: percentile(latencies, 0.9),
      p99: percentile(latencies, 0.99),
      max: latencies.at(-1) ?? NaN,
      mean: latencies.reduce((a, b) => a + b, 0) / Math.max(1, pulls)
    },
    resourceCpuUsPerPull: cpuUs / Math.max(1, resourcePulls),
    resourceCpuBoundPullsPerSec: resourcePulls > 0 ? 1e6 / (cpuUs / resourcePulls) : 0,
    resourceCpuPctOfOneCore: cpuUs / 1000 / wallMs * 100,
    simCpuPctOfOneCore: simCpuUs / 1000 / wallMs * 100,
    machineBusyPct: (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total) * 100 * os.availableParallelism(),
    otherCpuPctOfOneCore: 0
  }
  row.otherCpuPctOfOneCore = Math.max(0, row.machineBusyPct - row.resourceCpuPctOfOneCore - row.simCpuPctOfOneCore - (self.user + self.system) / 1000 / wallMs * 100)
  log(`throughput, ${PROTOCOL_NAME[protocol]}, ${row.inflight} in flight: ${row.pullsPerSec.toFixed(0)} pulls/s, p50 ${row.latencyMs.p50.toFixed(1)} ms, p99 ${row.latencyMs.p99.toFixed(1)} ms, resource ${row.resourceCpuUsPerPull.toFixed(0)} µs CPU/pull (${row.resourceCpuPctOfOneCore.toFixed(0)} % of a core), simulators ${row.simCpuPctOfOneCore.toFixed(0)} %, ${row.errors} errors`)
  return row
}

// ---- output --------------------------------------------------------------------------------

function ms (x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return '-'
  return x >= 100 ? x.toFixed(0) : x.toFixed(1)
}

function bytes (x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return '-'
  if (Math.abs(x) >= 2 ** 20) return `${(x / 2 ** 20).toFixed(1)} MiB`
  if (Math.abs(x) >= 10 * 1024) return `${(x / 1024).toFixed(0)} KiB`
  return `${x} B`
}

function fx (x: number | null | undefined, d = 1): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

function mark (ok: boolean | null): string {
  return ok == null ? '? (not measured)' : ok ? '✓' : '✗'
}

interface Results {
  busyBeforePct: number
  resource?: ResourceInfo
  rampMs?: number
  pubTrials: DeliveryResult[]
  fanTrials: DeliveryResult[]
  /** Median of the trials (duplicates and errors: summed). */
  pub?: DeliveryResult
  fan?: DeliveryResult
  throughput: ThroughputRow[]
  inmem?: InMemoryResult
}

function bestOf (rows: ThroughputRow[]): ThroughputRow | undefined {
  return rows.length > 0 ? rows.reduce((a, b) => b.pullsPerSec > a.pullsPerSec ? b : a) : undefined
}

/** Long-lived stream ÷ one-shot at each in-flight setting measured with both. */
function streamRatios (rows: ThroughputRow[]): Array<{ inflight: number, pullsPerSec: number | null, cpuPerPull: number | null }> {
  const out = []
  for (const s of rows.filter(t => t.protocol === 'stream')) {
    const one = rows.find(t => t.protocol === 'oneshot' && t.inflight === s.inflight)
    if (one == null) continue
    out.push({ inflight: s.inflight, pullsPerSec: ratio(s.pullsPerSec, one.pullsPerSec), cpuPerPull: ratio(s.resourceCpuUsPerPull, one.resourceCpuUsPerPull) })
  }
  return out
}

function summaryOf (r: Results) {
  const best = bestOf(r.throughput)
  const bestOneShot = bestOf(r.throughput.filter(t => t.protocol === 'oneshot'))
  const bestStream = bestOf(r.throughput.filter(t => t.protocol === 'stream'))
  return {
    trials: r.pubTrials.length,
    publicP99Ms: r.pub?.p99Ms ?? null,
    publicP99WorstMs: worst(r.pubTrials, d => d.p99Ms),
    publicAllMs: r.pub?.allMs ?? null,
    publicAllWorstMs: worst(r.pubTrials, d => d.allMs),
    fanoutP99WorstMs: worst(r.fanTrials, d => d.p99Ms),
    fanoutAllWorstMs: worst(r.fanTrials, d => d.allMs),
    fanoutP99Ms: r.fan?.p99Ms ?? null,
    fanoutAllMs: r.fan?.allMs ?? null,
    /** fan-out ÷ public. */
    ratioP99: ratio(r.fan?.p99Ms ?? undefined, r.pub?.p99Ms ?? undefined),
    ratioAll: ratio(r.fan?.allMs ?? undefined, r.pub?.allMs ?? undefined),
    ratioWrites: ratio(r.fan?.writes, r.pub?.writes),
    ratioValueBytes: ratio(r.fan?.valueBytes, r.pub?.valueBytes),
    ratioDiskBytes: ratio(r.fan?.diskWriteBytes ?? undefined, r.pub?.diskWriteBytes ?? undefined),
    bestThroughput: best ?? null,
    bestOneShot: bestOneShot ?? null,
    bestStream: bestStream ?? null,
    /** stream ÷ one-shot per in-flight setting: pulls/s and resource CPU per pull. */
    streamVsOneShot: streamRatios(r.throughput),
    inMemoryAnswerPerSec: r.inmem?.answerPerSec ?? null,
    goals: {
      // Every trial, not only the median one.
      publishTo99AppliedAtMost3s: r.pubTrials.length === 0 ? null : r.pubTrials.every(d => d.p99Ms != null && d.p99Ms <= GOAL_P99_MS),
      atLeast5000PullsPerSec: best != null ? best.pullsPerSec >= GOAL_PULLS_PER_SEC : null,
      atLeast20000PullsPerSecStreams: bestStream != null ? bestStream.pullsPerSec >= GOAL_STREAM_PULLS_PER_SEC : null,
      oneWriteInsteadOfN: r.pub != null && r.fan != null ? r.pub.writes === 1 && r.fan.writes === r.fan.nodes : null,
      exactlyOnce: r.pub != null || r.fan != null ? (r.pub?.duplicates ?? 0) + (r.fan?.duplicates ?? 0) === 0 : null
    }
  }
}

function printTable (o: Options, r: Results, s: ReturnType<typeof summaryOf>, errors: string[], out: (l: string) => void): void {
  const w = [40, 16, 18, 12]
  const row = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] ?? 12)).join('  ')
  out('')
  out(`Public mailbox: ${o.nodes} simulated nodes (${o.hosts} libp2p connections, ${o.sims} simulator process${o.sims > 1 ? 'es' : ''}) against 1 resource, ${os.availableParallelism()} cores`)
  out(`  other work on the machine before the run: ${r.busyBeforePct.toFixed(0)} % of one core${r.busyBeforePct > 25 ? ' (BUSY: numbers skewed)' : ''}`)
  if (r.rampMs != null) out(`  start: every node pulled its first snapshot ${ms(r.rampMs)} ms after the simulator had its hosts up`)
  out(`  median of ${r.pubTrials.length} trial${r.pubTrials.length === 1 ? '' : 's'} each (public and fan-out alternate); worst trial in brackets`)
  out(row(['', 'public (1 notice)', `fan-out (${o.nodes} copies)`, 'fan-out ÷ pub']))
  const p = r.pub
  const f = r.fan
  const both = (label: string, a: string, b: string, q: number | null): void => { out(row([label, a, b, q == null ? '' : fx(q, q >= 10 ? 0 : 2)])) }
  both('publish → first node applied (ms)', ms(p?.firstMs), ms(f?.firstMs), ratio(f?.firstMs ?? undefined, p?.firstMs ?? undefined))
  both('publish → 50 % applied (ms)', ms(p?.p50Ms), ms(f?.p50Ms), ratio(f?.p50Ms ?? undefined, p?.p50Ms ?? undefined))
  const withWorst = (x: number | null | undefined, w: number | null): string => `${ms(x)} (${ms(w)})`
  both('publish → 99 % applied (ms)', withWorst(p?.p99Ms, s.publicP99WorstMs), withWorst(f?.p99Ms, s.fanoutP99WorstMs), s.ratioP99)
  both('publish → 100 % applied (ms)', withWorst(p?.allMs, s.publicAllWorstMs), withWorst(f?.allMs, s.fanoutAllWorstMs), s.ratioAll)
  both('  nodes applied / missing', p != null ? `${p.applied} / ${p.missing}` : '-', f != null ? `${f.applied} / ${f.missing}` : '-', null)
  both('last write acknowledged (ms)', ms(p?.writeMs), ms(f?.writeMs), ratio(f?.writeMs, p?.writeMs))
  both('writes to the cluster log', String(p?.writes ?? '-'), String(f?.writes ?? '-'), s.ratioWrites)
  both('bytes stored (key + JSON value)', bytes(p != null ? p.valueBytes + p.keyBytes : null), bytes(f != null ? f.valueBytes + f.keyBytes : null), ratio(f != null ? f.valueBytes + f.keyBytes : undefined, p != null ? p.valueBytes + p.keyBytes : undefined))
  both('sqlite files grew (db + WAL, coarse)', bytes(p?.sqliteGrowthBytes), bytes(f?.sqliteGrowthBytes), null)
  both('bytes written to disk (/proc io)', bytes(p?.diskWriteBytes), bytes(f?.diskWriteBytes), s.ratioDiskBytes)
  both('pulls answered until 100 %', String(p?.pullsAnswered ?? '-'), String(f?.pullsAnswered ?? '-'), ratio(f?.pullsAnswered, p?.pullsAnswered))
  both('resource CPU until 100 % (ms)', ms(p?.resourceCpuMs), ms(f?.resourceCpuMs), ratio(f?.resourceCpuMs, p?.resourceCpuMs))
  both('applied twice (must be 0) / pull errors', p != null ? `${p.duplicates} / ${p.pullErrors}` : '-', f != null ? `${f.duplicates} / ${f.pullErrors}` : '-', null)

  if (r.throughput.length > 0) {
    out('')
    out(`Pull throughput: caught-up nodes, no-op delta pulls, ${o.windowSec} s per setting; one-shot = one /astra/mailbox/1.0.0 stream per pull, stream = /astra/mailbox-pull/1.1.0 kept open (${o.streamsPerHost} per connection, its nodes' pulls pipelined)`)
    const tw = [15, 9, 9, 8, 8, 8, 12, 13, 10, 9, 11, 7]
    const trow = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(tw[0] as number) : c.padStart(tw[i] ?? 9)).join('  ')
    out(trow(['protocol', 'in flight', 'pulls/s', 'p50 ms', 'p99 ms', 'max ms', 'res µs/pull', 'res 1-core/s', 'res core%', 'sim core%', 'other core%', 'errors']))
    for (const t of r.throughput) {
      out(trow([PROTOCOL_NAME[t.protocol], String(t.inflight), t.pullsPerSec.toFixed(0), fx(t.latencyMs.p50), fx(t.latencyMs.p99), fx(t.latencyMs.max), t.resourceCpuUsPerPull.toFixed(0), t.resourceCpuBoundPullsPerSec.toFixed(0), t.resourceCpuPctOfOneCore.toFixed(0), t.simCpuPctOfOneCore.toFixed(0), t.otherCpuPctOfOneCore.toFixed(0), String(t.errors)]))
    }
    out('  res µs/pull = resource CPU time per answered pull; res 1-core/s = 1 s ÷ that, what the resource would answer with a core to itself;')
    out(`  core% = % of one core (the machine has ${os.availableParallelism() * 100} %); other = whole machine minus the resource, the simulators and the bench`)
    for (const q of s.streamVsOneShot) out(`  stream ÷ one-shot at ${q.inflight} in flight: pulls/s ×${fx(q.pullsPerSec, 2)}, resource CPU per pull ×${fx(q.cpuPerPull, 2)}`)
  }
  if (r.inmem != null) {
    out(`  in-memory answer alone (index.pull + encodePullResponse, one process, no libp2p): ${r.inmem.answerPerSec.toFixed(0)} answers/s; with decodePullRequest: ${r.inmem.servePerSec.toFixed(0)}/s`)
  }

  out('')
  out('Goals (issue 5; the streams row is issue 14 goal 4)')
  const g = s.goals
  const best = s.bestThroughput
  const goal = (label: string, value: string, ok: boolean | null, note: string): void => { out(`  ${label.padEnd(44)}${value.padStart(12)}  ${mark(ok)}${note !== '' ? `  ${note}` : ''}`) }
  goal(`publish → 99 % applied ≤ ${GOAL_P99_MS / 1000} s`, `${ms(s.publicP99WorstMs)} ms`, g.publishTo99AppliedAtMost3s, `worst of ${r.pubTrials.length} trial${r.pubTrials.length === 1 ? '' : 's'}; median ${ms(r.pub?.p99Ms)} ms`)
  goal(`≥ ${GOAL_PULLS_PER_SEC.toLocaleString('en-US')} pulls/s from one resource`, `${best != null ? best.pullsPerSec.toFixed(0) : '-'} /s`, g.atLeast5000PullsPerSec, best != null ? `best setting: ${best.inflight} in flight, p99 ${fx(best.latencyMs.p99)} ms; resource alone on a core ≈ ${best.resourceCpuBoundPullsPerSec.toFixed(0)}/s` : '')
  const bs = s.bestStream
  goal(`≥ ${GOAL_STREAM_PULLS_PER_SEC.toLocaleString('en-US')} pulls/s, long-lived streams (issue 14)`, `${bs != null ? bs.pullsPerSec.toFixed(0) : '-'} /s`, g.atLeast20000PullsPerSecStreams, bs != null ? `${bs.inflight} in flight, p99 ${fx(bs.latencyMs.p99)} ms; ${bs.resourceCpuUsPerPull.toFixed(0)} µs resource CPU/pull (one-shot best ${s.bestOneShot != null ? `${s.bestOneShot.pullsPerSec.toFixed(0)}/s, ${s.bestOneShot.resourceCpuUsPerPull.toFixed(0)} µs` : '-'})` : '')
  goal(`1 write instead of ${o.nodes.toLocaleString('en-US')}`, `${r.pub?.writes ?? '-'} vs ${r.fan?.writes ?? '-'}`, g.oneWriteInsteadOfN, '')
  goal('every node applied each notice exactly once', `${(r.pub?.duplicates ?? 0) + (r.fan?.duplicates ?? 0)} twice`, g.exactlyOnce, '')

  if (errors.length > 0) {
    out('')
    out('Phases that failed:')
    for (const e of errors) out(`  - ${e.split('\n')[0] ?? e}`)
  }
  out('')
  out('How this differs from a real deployment:')
  for (const n of simulationNotes(o)) out(`  - ${n}`)
}

/** Asks a child to stop its hosts and exit; kills it if it has not within 5 s. */
async function exitChild (m: Managed): Promise<void> {
  try { await call(m, 'exit', null, 5_000) } catch {}
  let timer: NodeJS.Timeout | undefined
  const exited = await Promise.race([m.exited.then(() => true), new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(false) }, 5_000) })])
  clearTimeout(timer)
  if (!exited) await stop(m, 'SIGKILL', 2_000)
}

// ---- main ----------------------------------------------------------------------------------

/** The resource and the simulated nodes, every node caught up with the mailbox (its first snapshot pull done). */
async function startCluster (o: Options, root: string, r: Results, log: (m: string) => void): Promise<{ res: Managed, sims: Sim[] }> {
  const sims: Sim[] = []
  const res = forkTs('mailbox-resource', RESOURCE_MODULE, [])
  r.resource = await call<ResourceInfo>(res, 'init', { dataDir: path.join(root, 'resource') }, 60_000)
  log(`resource ${r.resource.peerId} on ${r.resource.addr}, log origin ${r.resource.origin}`)
  const t0 = now()
  const per = Math.floor(o.nodes / o.sims)
  const hostsPer = Math.floor(o.hosts / o.sims)
  await Promise.all(Array.from({ length: o.sims }, async (_, i) => {
    const n = i === o.sims - 1 ? o.nodes - per * (o.sims - 1) : per
    const h = i === o.sims - 1 ? o.hosts - hostsPer * (o.sims - 1) : hostsPer
    // ~1,000 MailboxStates and their pulls: room to spare.
    const proc = forkTs(`mailbox-sim${i}`, SIM_MODULE, [], ['--max-old-space-size=2048'])
    const cfg: SimConfig = {
      sim: i, nodes: n, hosts: h, perHostInflight: o.perHostInflight, streamsPerHost: o.streamsPerHost, cells: 4,
      resourceAddr: (r.resource as ResourceInfo).addr, resourcePeer: (r.resource as ResourceInfo).peerId
    }
    const ids = await call<{ peerIds: string[], cells: string[] }>(proc, 'init', cfg, 120_000)
    sims[i] = { proc, nodes: n, peerIds: ids.peerIds, cells: ids.cells }
  }))
  log(`${o.nodes} simulated nodes on ${o.hosts} client hosts in ${o.sims} process${o.sims > 1 ? 'es' : ''} (${((now() - t0) / 1000).toFixed(1)} s)`)
  const caught = await waitCaughtUp(res, sims, o.nodes, 'first snapshot pull of every node', 60_000)
  r.rampMs = caught.ms
  return { res, sims }
}

/**
 * Pull throughput only (bench/scale/mailbox.ts, issue 14 goal 4): the resource and simulated
 * nodes of this bench, then each in-flight setting with the long-lived pull stream and the
 * one-shot pull side by side. `argv`: this bench's flags (e.g. --quick).
 */
export async function pullThroughput (argv: string[], log: (m: string) => void): Promise<{ rows: ThroughputRow[], bestStream: ThroughputRow | null, bestOneShot: ThroughputRow | null, streamVsOneShot: ReturnType<typeof streamRatios>, notes: string[], errors: string[] }> {
  const o = parseOptions(argv)
  const root = makeTempRoot('astrad-bench-mailbox-')
  const errors: string[] = []
  const phase = phaseRunner(errors, log)
  const r: Results = { busyBeforePct: 0, pubTrials: [], fanTrials: [], throughput: [] }
  const cluster = await phase('setup', async () => await startCluster(o, root, r, log))
  try {
    if (cluster != null) {
      for (const k of o.inflight) {
        for (const protocol of o.protocols) {
          const t = await phase(`pull throughput, ${PROTOCOL_NAME[protocol]}, ${k} in flight`, async () => await throughput(k, protocol, cluster.res, cluster.sims, o, log))
          if (t != null) r.throughput.push(t)
        }
      }
    }
  } finally {
    if (cluster != null) await Promise.all([cluster.res, ...cluster.sims.map(s => s.proc)].map(async m => { await exitChild(m) }))
  }
  const summary = summaryOf(r)
  return { rows: r.throughput, bestStream: summary.bestStream, bestOneShot: summary.bestOneShot, streamVsOneShot: summary.streamVsOneShot, notes: simulationNotes(o), errors }
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  const loadAtStart = os.loadavg().map(x => round(x, 2))
  // Load averages lag by minutes: one second of /proc/stat tells whether other work is running.
  const c0 = machineCpu()
  await sleep(1_000)
  const c1 = machineCpu()
  const busyBeforePct = (c1.busy - c0.busy) / Math.max(1, c1.total - c0.total) * 100 * os.availableParallelism()
  if (busyBeforePct > 25) log(`WARNING: other work keeps the machine ${busyBeforePct.toFixed(0)} % of one core busy before the run; the numbers will be skewed`)
  const root = makeTempRoot('astrad-bench-mailbox-')
  const errors: string[] = []
  const phase = phaseRunner(errors, log)
  const r: Results = { busyBeforePct, pubTrials: [], fanTrials: [], throughput: [] }
  let res: Managed | undefined
  const sims: Sim[] = []

  const setup = await phase('setup', async () => {
    const cluster = await startCluster(o, root, r, log)
    res = cluster.res
    sims.push(...cluster.sims)
    return true
  })
  if (setup === true && res != null) {
    const resource = res
    // Alternating, so slow moments of the machine fall on both.
    for (let trial = 1; trial <= o.trials; trial++) {
      const pub = await phase(`public notice, trial ${trial}`, async () => await delivery('public', resource, sims, o, log))
      if (pub != null) {
        r.pubTrials.push(pub)
        log(`public: 99 % applied after ${ms(pub.p99Ms)} ms, 100 % after ${ms(pub.allMs)} ms`)
      }
      const fan = await phase(`write fan-out baseline, trial ${trial}`, async () => await delivery('fanout', resource, sims, o, log))
      if (fan != null) {
        r.fanTrials.push(fan)
        log(`fan-out: 99 % applied after ${ms(fan.p99Ms)} ms, 100 % after ${ms(fan.allMs)} ms`)
      }
    }
    r.pub = medianTrial(r.pubTrials)
    r.fan = medianTrial(r.fanTrials)
    // Both protocols at each setting, side by side, against the same resource and nodes.
    for (const k of o.inflight) {
      for (const protocol of o.protocols) {
        const t = await phase(`pull throughput, ${PROTOCOL_NAME[protocol]}, ${k} in flight`, async () => await throughput(k, protocol, resource, sims, o, log))
        if (t != null) r.throughput.push(t)
      }
    }
    r.inmem = await phase('in-memory answer', async () => {
      // The loop holds the resource's event loop for seconds: nodes would time out meanwhile.
      await Promise.all(sims.map(async s => { await call(s.proc, 'auto', { on: false }, 10_000) }))
      await sleep(PULL_TIMEOUT_MS)
      try {
        return await call<InMemoryResult>(resource, 'inmem', { peerIds: sims.flatMap(s => s.peerIds), cells: sims.flatMap(s => s.cells), ms: 2_000 }, 30_000)
      } finally {
        await Promise.all(sims.map(async s => { await call(s.proc, 'auto', { on: true }, 10_000) }))
      }
    })
  }
  const simUsage = sims.length > 0 && errors.length === 0 ? await usageOfSims(sims).catch(() => null) : null

  const summary = summaryOf(r)
  const lines: string[] = []
  printTable(o, r, summary, errors, l => { lines.push(l) })
  process.stdout.write(lines.join('\n') + '\n')

  const doc = {
    benchmark: 'mailbox',
    date: new Date().toISOString(),
    options: {
      nodes: o.nodes, sims: o.sims, hosts: o.hosts, perHostInflight: o.perHostInflight, inflight: o.inflight, protocols: o.protocols, streamsPerHost: o.streamsPerHost,
      windowSec: o.windowSec, applyTimeoutSec: o.applyTimeoutSec, trials: o.trials, quick: o.quick
    },
    machine: {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      loadAvgAtStart: loadAtStart,
      busyBeforeRunPctOfOneCore: round(busyBeforePct, 1),
      node: process.version
    },
    units: 'ms, bytes, pulls/s unless named otherwise; percentiles nearest rank over all nodes (or all pulls)',
    goals: { publishTo99AppliedMs: GOAL_P99_MS, pullsPerSec: GOAL_PULLS_PER_SEC, streamPullsPerSec: GOAL_STREAM_PULLS_PER_SEC, writes: 1 },
    summary,
    resource: r.resource ?? null,
    rampMs: r.rampMs ?? null,
    public: r.pub ?? null,
    fanout: r.fan ?? null,
    publicTrials: r.pubTrials,
    fanoutTrials: r.fanTrials,
    throughput: r.throughput,
    inMemory: r.inmem ?? null,
    simulators: simUsage,
    simulationNotes: simulationNotes(o),
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  await Promise.all([res, ...sims.map(s => s.proc)].map(async m => { if (m != null) await exitChild(m) }))
  log(`total ${doc.durationSec} s`)
  await cleanup()
  logGoals(log, summary.goals)
  if (errors.length > 0) process.exitCode = 1
}

// Run as a program (not when bench/scale/mailbox.ts imports pullThroughput).
if (import.meta.main) runBench('bench:mailbox', main, err => err instanceof UsageError)
