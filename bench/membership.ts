// Membership benchmark (npm run bench:membership; docs/bench-membership.md).
//
//   1. astrad churn: 10 members (1 resource+scheduler, 9 nodes) + a separate scheduler as the
//      observer. Drain (SIGTERM) → observer shows draining/left; crash (SIGKILL) and freeze
//      (SIGSTOP: a host that vanishes without closing its sockets) → dead.
//   2. HashiCorp Serf, default LAN profile, 10 agents, same events: `serf leave` → left,
//      kill -9 / SIGSTOP → failed. Ratios astrad ÷ Serf.
//   3. CPU of one resource ingesting heartbeats from 1,000 simulated nodes at 1 Hz.
//
// Usage: node bench/membership.ts --help

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureBuilt, clockTicks } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, phaseRunner, installCleanupHooks, makeTempRoot, cleanup, setKeepTemp, run, now } from './lib/procs.ts'
import { summarize, ratio, round, type Summary } from './lib/stats.ts'
import { runAstradChurn, EVENTS, type AstradChurnResult, type ChurnEvent } from './lib/churn-astrad.ts'
import { runSerfChurn, type SerfChurnResult } from './lib/churn-serf.ts'
import { runIngest, type IngestResult } from './lib/ingest.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

interface Options {
  trials: number
  quick: boolean
  out: string
  simNodes: number
  sims: number
  windowSec: number
  skipAstrad: boolean
  skipSerf: boolean
  skipIngest: boolean
  keepTemp: boolean
  freshIdentity: boolean
  build: boolean
  bin: string
}

const USAGE = `usage: node bench/membership.ts [options]
  --trials N       trials per event and system (default 10; --quick: 3)
  --quick          smoke run: 3 trials, 10 s ingestion window
  --out FILE       JSON results (default bench/results/membership.json)
  --sim-nodes N    simulated nodes for the ingestion test (default 1000)
  --sims N         simulator processes (default 4)
  --window SEC     ingestion measurement window (default 30; --quick: 10)
  --skip-astrad | --skip-serf | --skip-ingest
  --keep-temp      keep the temp dir (daemon data) for inspection
  --fresh-identity astrad replacements get a new identity (default: restart on the same data dir)
  --no-build       do not rebuild dist/astrad when src/ is newer
  --astrad FILE    executable to test (default dist/astrad)
`

function parseOptions (argv: string[]): Options {
  const o: Options = {
    trials: 10,
    quick: false,
    out: path.join(ROOT, 'bench/results/membership.json'),
    simNodes: 1000,
    sims: 4,
    windowSec: 30,
    skipAstrad: false,
    skipSerf: false,
    skipIngest: false,
    keepTemp: false,
    freshIdentity: false,
    build: true,
    bin: path.join(ROOT, 'dist/astrad')
  }
  const v = parseFlags(argv, {
    trials: { type: 'string' },
    quick: { type: 'boolean' },
    out: { type: 'string' },
    'sim-nodes': { type: 'string' },
    sims: { type: 'string' },
    window: { type: 'string' },
    'skip-astrad': { type: 'boolean' },
    'skip-serf': { type: 'boolean' },
    'skip-ingest': { type: 'boolean' },
    'keep-temp': { type: 'boolean' },
    'fresh-identity': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    astrad: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const trials = v.trials !== undefined ? intFlag('--trials', v.trials, 1, 100) : undefined
  const windowSec = v.window !== undefined ? intFlag('--window', v.window, 1, 600) : undefined
  o.quick = v.quick === true
  if (v.out !== undefined) o.out = path.resolve(v.out)
  if (v['sim-nodes'] !== undefined) o.simNodes = intFlag('--sim-nodes', v['sim-nodes'], 1, 5000)
  if (v.sims !== undefined) o.sims = intFlag('--sims', v.sims, 1, 16)
  o.skipAstrad = v['skip-astrad'] === true
  o.skipSerf = v['skip-serf'] === true
  o.skipIngest = v['skip-ingest'] === true
  o.keepTemp = v['keep-temp'] === true
  o.freshIdentity = v['fresh-identity'] === true
  if (v['no-build'] === true) o.build = false
  if (v.astrad !== undefined) { o.bin = path.resolve(v.astrad); o.build = false }
  o.trials = trials ?? (o.quick ? 3 : 10)
  o.windowSec = windowSec ?? (o.quick ? 10 : 30)
  return o
}

const SIMULATION_NOTES = [
  'All daemons, agents and simulators run on one machine and talk over loopback: no network latency, loss or bandwidth limits; real links add their one-way delay to every drain and detection time (both systems).',
  'Churn tests: astrad and Serf run one after the other on the same idle machine (never at the same time). kill -9 kills the process, so the kernel closes its TCP connections at once and astrad declares the node dead 1.5 s after the connection loss. SIGSTOP freezes the process with its connections open, which is what a host that loses power or network looks like: astrad then relies on missed heartbeats alone (dead after 2.8 s of silence). Serf probes over UDP (TCP fallback) either way.',
  'Every astrad daemon connects to the resource from 127.0.0.1, as daemons behind one NAT would; a replacement daemon restarts on the killed one\'s data dir (same identity) unless --fresh-identity.',
  'astrad times are read by polling the observer\'s GET /v1/status (resolution = poll interval, reported); Serf times are the arrival of the observer agent\'s own "EventMemberLeave/Failed" log line (resolution ≈ 1 ms), cross-checked by polling `serf members` (a process spawn per poll).',
  'Serf drain starts when `serf leave` is spawned (includes ~10 ms of CLI start-up and RPC); astrad drain starts when SIGTERM is sent.',
  'Ingestion: simulated nodes are real libp2p hosts (own Ed25519 identity, Noise, Yamux, gossipsub with the daemon\'s options, signed heartbeats of real size), but several hundred share one Node.js process and event loop; they run no daemon logic besides heartbeats (no RPC port, no bootstrap loop, no CPU sampler), do not listen for inbound connections, and send synthetic load figures.',
  'Each simulated node dials from its own loopback source address (127.1.x.y), as real nodes have their own IPs.',
  'The simulators share the machine\'s cores with the resource (reported: simulator CPU and whole-machine CPU during the window); contention can add to the resource\'s measured CPU time (caches, context switches), not hide any of it.',
  'Heartbeats are spread evenly over each second with ±10 % jitter; real fleets are not synchronised either, but bursts (e.g. after a network blip) are not modelled.'
]

function fmtMs (x: number | undefined | null): string {
  if (x == null || !Number.isFinite(x)) return '-'
  return x >= 100 ? x.toFixed(0) : x.toFixed(1)
}

function fmtRatio (x: number | null): string {
  if (x == null) return '-'
  return x >= 0.1 ? x.toFixed(2) : x.toFixed(3)
}

interface EventSummary {
  astrad: Summary | null
  serf: Summary | null
  /** astrad ÷ Serf. */
  ratioMedian: number | null
  ratioMax: number | null
}

function summarizeEvents (a: AstradChurnResult | undefined, s: SerfChurnResult | undefined): Record<ChurnEvent, EventSummary> {
  const out = {} as Record<ChurnEvent, EventSummary>
  for (const ev of EVENTS) {
    const as = a != null ? summarize(a.trials.filter(t => t.event === ev).map(t => t.ms ?? NaN)) : null
    const ss = s != null ? summarize(s.trials.filter(t => t.event === ev).map(t => t.ms ?? NaN)) : null
    out[ev] = { astrad: as, serf: ss, ratioMedian: ratio(as?.median, ss?.median), ratioMax: ratio(as?.max, ss?.max) }
  }
  return out
}

const LABELS: Record<ChurnEvent, { astrad: string, astradExtra: string, serf: string, serfExtra?: string }> = {
  drain: { astrad: 'astrad SIGTERM → draining/left', astradExtra: '  same → left', serf: 'serf leave → left', serfExtra: '  same → leaving (poll)' },
  crash: { astrad: 'astrad kill -9 → dead', astradExtra: '  same → suspect (first change)', serf: 'serf kill -9 → failed' },
  freeze: { astrad: 'astrad SIGSTOP → dead', astradExtra: '  same → suspect (first change)', serf: 'serf SIGSTOP → failed' }
}

function printChurn (o: Options, a: AstradChurnResult | undefined, s: SerfChurnResult | undefined, sums: Record<ChurnEvent, EventSummary>, out: (l: string) => void): void {
  const w = [34, 8, 8, 8, 8, 4, 5]
  const row = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] as number)).join('  ')
  out('')
  out(`Membership churn: 10 members each, ${o.trials} trials per event; ms from the signal / command until the observer's view changes`)
  out(row(['event', 'min', 'median', 'p90', 'max', 'n', 'fail']))
  const line = (label: string, sum: Summary | null, fails: number): void => {
    out(row([label, fmtMs(sum?.min), fmtMs(sum?.median), fmtMs(sum?.p90), fmtMs(sum?.max), String(sum?.n ?? 0), String(fails)]))
  }
  for (const ev of EVENTS) {
    const at = a?.trials.filter(t => t.event === ev) ?? []
    const st = s?.trials.filter(t => t.event === ev) ?? []
    if (at.length === 0 && st.length === 0) continue
    const l = LABELS[ev]
    if (at.length > 0) {
      line(l.astrad, sums[ev].astrad, at.filter(t => t.ms == null).length)
      line(l.astradExtra, summarize(at.map(t => (ev === 'drain' ? t.finalMs : t.firstMs) ?? NaN)), 0)
    }
    if (st.length > 0) {
      line(l.serf, sums[ev].serf, st.filter(t => t.ms == null).length)
      if (l.serfExtra != null) line(l.serfExtra, summarize(st.map(t => t.firstPollMs ?? NaN)), 0)
    }
    if (at.length > 0 && st.length > 0) out(row([`ratio astrad ÷ serf (${ev})`, '', fmtRatio(sums[ev].ratioMedian), '', fmtRatio(sums[ev].ratioMax), '', '']))
  }
  if (a != null) {
    const poll = summarize(a.trials.map(t => t.pollMeanMs))
    const worst = (ev: ChurnEvent): number => sums[ev].astrad?.max ?? Infinity
    out(`astrad: observer = separate scheduler daemon, polled every ~${fmtMs(poll?.mean)} ms (worst gap ${fmtMs(Math.max(...a.trials.map(t => t.pollMaxMs)))} ms); replacements: ${a.replacement}`)
    out(`  targets (ARCHITECTURE §2): drained out of routers ≤ 1000 ms: ${worst('drain') <= 1000 ? 'met' : 'MISSED'}; crashed ≤ 3000 ms: kill -9 ${worst('crash') <= 3000 ? 'met' : 'MISSED'}, SIGSTOP ${worst('freeze') <= 3000 ? 'met' : 'MISSED'} (worst case)`)
  }
  if (s != null) {
    const rtt = summarize(s.trials.map(t => t.pollMeanMs))
    const agree = s.trials.filter(t => t.ms != null && t.pollMs != null).map(t => (t.pollMs as number) - (t.ms as number))
    out(`serf ${s.version}, default LAN profile: observer = agent s1 (its log line); \`serf members\` poll round trip ~${fmtMs(rtt?.mean)} ms, poll minus log: median ${fmtMs(summarize(agree)?.median)} ms`)
  }
}

function printTable (o: Options, a: AstradChurnResult | undefined, s: SerfChurnResult | undefined, ing: IngestResult | undefined, sums: Record<ChurnEvent, EventSummary>, out: (l: string) => void): void {
  if (a != null || s != null) printChurn(o, a, s, sums, out)
  if (ing != null) {
    const r = ing.resource
    out('')
    out(`Heartbeat ingestion: 1 resource, ${ing.virtualNodes} simulated nodes at 1 Hz (${ing.simulatorProcesses} simulator processes), ${ing.windowSec.toFixed(1)} s window`)
    out(`  resource CPU          ${r.cpuPctOfOneCore.toFixed(1)} % of one core (idle alone: ${ing.idle.cpuPctOfOneCore.toFixed(1)} %)`)
    out(`  per heartbeat         ${r.usPerHeartbeat.toFixed(1)} µs (above idle: ${r.usPerHeartbeatAboveIdle.toFixed(1)} µs), ${r.heartbeatsPerSec.toFixed(0)} heartbeats/s ingested`)
    out(`  resource memory       VmRSS ${(r.rssBytes / 2 ** 20).toFixed(0)} MiB (peak ${(r.hwmBytes / 2 ** 20).toFixed(0)} MiB), ${r.connections ?? '-'} connections, event-loop lag p99 ${fmtMs(r.eventLoopLagP99Ms)} ms`)
    const fp = ing.falsePositives
    out(`  false suspect/dead    ${fp.digestsPublished} state-change digests in the window, ${fp.notAliveAtEnd} not alive at the end, ${fp.heartbeatsDropped} dropped`)
    const sm = ing.simulators
    out(`  simulators            ${sm.published} published (${sm.publishErrors} errors), worst gap ${sm.maxGapMs.toFixed(0)} ms, ${sm.disconnects} disconnects, ${sm.cpuPctOfOneCore.toFixed(0)} % of one core, ${(sm.rssBytesTotal / 2 ** 20).toFixed(0)} MiB RSS`)
    out(`  whole machine         ${ing.hostCpuPctOfOneCore != null ? ing.hostCpuPctOfOneCore.toFixed(0) : '-'} % of one core busy (of ${os.availableParallelism() * 100} %); ramp-up to all alive ${ing.rampUpSec.toFixed(1)} s`)
  }
  out('')
  out('How this differs from real nodes:')
  for (const n of SIMULATION_NOTES) out(`  - ${n}`)
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  if (!o.skipAstrad || !o.skipIngest) ensureBuilt(o, log)
  let serfVersion: string | null = null
  if (!o.skipSerf) {
    try {
      serfVersion = (await run('serf', ['version'], 5_000)).split('\n')[0]?.trim() ?? null
    } catch {
      throw new Error('serf not found: apt-get update && apt-get install -y serf (or --skip-serf)')
    }
  }
  const root = makeTempRoot('astrad-bench-membership-')
  const errors: string[] = []
  let astrad: AstradChurnResult | undefined
  let serf: SerfChurnResult | undefined
  let ingest: IngestResult | undefined

  const phase = phaseRunner(errors, log)

  if (!o.skipAstrad) astrad = await phase('astrad churn', async () => await runAstradChurn({ bin: o.bin, root, trials: o.trials, nodes: 9, pollMs: 10, freshIdentity: o.freshIdentity, events: EVENTS, log }))
  if (!o.skipSerf) serf = await phase('serf churn', async () => await runSerfChurn({ root, trials: o.trials, members: 10, events: EVENTS, log }))
  if (!o.skipIngest) {
    ingest = await phase('ingestion', async () => await runIngest({
      bin: o.bin, root, nodes: o.simNodes, sims: o.sims, windowSec: o.windowSec, baselineSec: o.quick ? 3 : 5, settleSec: 5, clockTicks: clockTicks(), log
    }))
  }

  const sums = summarizeEvents(astrad, serf)
  const lines: string[] = []
  printTable(o, astrad, serf, ingest, sums, l => { lines.push(l) })
  process.stdout.write(lines.join('\n') + '\n')

  const version = (() => { try { return execFileSync(o.bin, ['--version'], { encoding: 'utf8' }).trim() } catch { return null } })()
  const doc = {
    benchmark: 'membership',
    date: new Date().toISOString(),
    options: { trials: o.trials, quick: o.quick, simNodes: o.simNodes, sims: o.sims, windowSec: o.windowSec },
    machine: {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      node: process.version,
      astrad: version,
      serf: serfVersion
    },
    units: 'ms unless named otherwise; stats: median (mean of middle two for even n), p90 nearest rank',
    summary: {
      ...sums,
      extra: {
        astradDrainToLeft: astrad != null ? summarize(astrad.trials.filter(t => t.event === 'drain').map(t => t.finalMs ?? NaN)) : null,
        astradCrashToSuspect: astrad != null ? summarize(astrad.trials.filter(t => t.event === 'crash').map(t => t.firstMs ?? NaN)) : null,
        astradFreezeToSuspect: astrad != null ? summarize(astrad.trials.filter(t => t.event === 'freeze').map(t => t.firstMs ?? NaN)) : null,
        serfLeaveToLeaving: serf != null ? summarize(serf.trials.filter(t => t.event === 'drain').map(t => t.firstPollMs ?? NaN)) : null,
        astradDrainProcessExit: astrad != null ? summarize(astrad.trials.filter(t => t.event === 'drain').map(t => t.exitMs ?? NaN)) : null,
        serfLeaveAgentExit: serf != null ? summarize(serf.trials.filter(t => t.event === 'drain').map(t => t.exitMs ?? NaN)) : null,
        astradRejoinMeanMs: astrad?.rejoinMeanMs ?? null,
        serfRejoinMeanMs: serf?.rejoinMeanMs ?? null
      }
    },
    astrad: astrad ?? null,
    serf: serf ?? null,
    ingest: ingest ?? null,
    simulationNotes: SIMULATION_NOTES,
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  log(`total ${doc.durationSec} s`)
  // ARCHITECTURE §2's targets, worst case of astrad's trials (the ratios to Serf are in the table).
  const worst = (ev: ChurnEvent): number | null => astrad == null ? null : sums[ev].astrad?.max ?? null
  const within = (ev: ChurnEvent, ms: number): boolean | null => { const w = worst(ev); return w == null ? null : w <= ms }
  logGoals(log, { drainOutOfRouters1s: within('drain', 1000), killedDead3s: within('crash', 3000), frozenDead3s: within('freeze', 3000) })
  await cleanup()
  if (errors.length > 0) process.exitCode = 1
}

runBench('bench:membership', main, err => err instanceof UsageError)
