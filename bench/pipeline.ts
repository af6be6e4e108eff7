// Pipeline benchmark (npm run bench:pipeline; docs/bench-pipeline.md). One run, side by side, in
// one cluster of real `dist/astrad` processes (resource,scheduler + two nodes; bench/lib/
// pipeline-cluster.ts), the same 2-stage pipeline Silero VAD → gate:
//
//   (a) pipeline   one request to /v2/models/vad-gate/infer: the scheduler calls stage vad, then
//                  stage gate with vad's `output`, and answers `speech` (gate.y) and `prob`
//                  (vad.output);
//   (b) two apps   the client calls /v2/models/vad/infer, takes `output` and sends it as `x` to
//                  /v2/models/gate/infer, one after the other on its keep-alive connection.
//
// Same models, replica counts, threads and resources; same client (bench/lib/load.ts, closed
// loop), same concurrency; interleaved in one client run, slices of a few seconds a b b a a b …
// (load.ts runAlternating), so swings of the machine's speed hit both. For
// each: req/s, p50, p99, and the bytes moved between processes: the wchar (/proc/PID/io) of every
// daemon and of the client over the recorded window, and the client's HTTP bytes. Before timing,
// a sample of requests goes both ways and the answers must be equal, number for number.
// Goal (issue 12): (a) ≥ 1.0 × (b)'s throughput and (a)'s p99 ≤ (b)'s.
//
// Usage: node bench/pipeline.ts --help

import { execFileSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureBuilt, clockTicks } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, installCleanupHooks, makeTempRoot, cleanup, setKeepTemp, ioCounters, now, sleep, stop } from './lib/procs.ts'
import { round, ratio } from './lib/stats.ts'
import { cpuTicks, type AstradDaemon } from './lib/astrad.ts'
import { machineCpu } from './lib/transfer-common.ts'
import { runAlternating, summarizeLatencies, type LatencySummary, type LoadResult, type Target } from './lib/load.ts'
import { startPipelineCluster, PIPELINE, APPS, GATE_THRESHOLD, type PipelineCluster } from './lib/pipeline-cluster.ts'
import { vadInputs } from '../test/helpers/pipeline-models.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Issue 12's goals: (a) ÷ (b) throughput at least, p99 at most. */
const GOAL_RPS_RATIO = 1.0
const GOAL_P99_RATIO = 1.0
/** Node daemons, and replicas of each app and stage: one per node, so stage calls cross processes. */
const NODES = 2
const REPLICAS = 2
/** Unrecorded start of a slice that follows the other side's: its requests still in flight (p99 at c=32 is a few hundred ms here). */
const SETTLE_MS = 1_000

type Side = 'a' | 'b'
const SIDES: Side[] = ['a', 'b']
const SIDE_NAME: Record<Side, string> = { a: '(a) pipeline', b: '(b) two apps' }

interface Options {
  durationSec: number
  warmupSec: number
  slices: number
  concurrency: number[]
  threads: number
  check: number
  quick: boolean
  out: string
  keepTemp: boolean
  build: boolean
  bin: string
}

const USAGE = `usage: node bench/pipeline.ts [options]
  --quick               short run (≤ 3 min): --duration 3 --warmup 2 --slices 4 --check 8
  --duration SEC        recorded seconds per slice (default 4)
  --warmup SEC          unrecorded seconds, both sides, before the slices of each concurrency (default 3)
  --slices N            recorded slices per side and concurrency, alternating a,b / b,a (default 8)
  --concurrency LIST    closed-loop connections, repeatable or comma-separated (default 8,32)
  --threads N           worker threads (and cpu) of every replica (default 1)
  --check N             requests sent both ways whose answers must be equal before timing (default 20)
  --out FILE            JSON results (default bench/results/pipeline.json); --json-out FILE is the same
  --keep-temp           keep the temp dir (daemon data) for inspection
  --no-build            do not rebuild dist/astrad when src/ is newer
  --astrad FILE         executable to test (default dist/astrad)
`

function listFlag (values: string[] | undefined): string[] {
  return (values ?? []).flatMap(v => v.split(',')).map(x => x.trim()).filter(x => x !== '')
}

function parseOptions (argv: string[]): Options {
  const v = parseFlags(argv, {
    quick: { type: 'boolean' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    slices: { type: 'string' },
    concurrency: { type: 'string', multiple: true },
    threads: { type: 'string' },
    check: { type: 'string' },
    out: { type: 'string' },
    'json-out': { type: 'string' },
    'keep-temp': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    astrad: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const quick = v.quick === true
  const o: Options = {
    durationSec: quick ? 3 : 4,
    warmupSec: quick ? 2 : 3,
    slices: quick ? 4 : 8,
    concurrency: [8, 32],
    threads: 1,
    check: quick ? 8 : 20,
    quick,
    out: path.join(ROOT, 'bench/results/pipeline.json'),
    keepTemp: false,
    build: true,
    bin: path.join(ROOT, 'dist/astrad')
  }
  if (v.duration !== undefined) o.durationSec = intFlag('--duration', v.duration, 1, 3600)
  if (v.warmup !== undefined) o.warmupSec = intFlag('--warmup', v.warmup, 0, 600)
  if (v.slices !== undefined) o.slices = intFlag('--slices', v.slices, 1, 100)
  const conc = listFlag(v.concurrency)
  if (conc.length > 0) o.concurrency = [...new Set(conc.map(c => intFlag('--concurrency', c, 1, 1024)))]
  if (v.threads !== undefined) o.threads = intFlag('--threads', v.threads, 1, 16)
  if (v.check !== undefined) o.check = intFlag('--check', v.check, 1, 1000)
  if (v.out !== undefined && v['json-out'] !== undefined && path.resolve(v.out) !== path.resolve(v['json-out'])) throw new UsageError('--out and --json-out name the same thing: give one')
  const out = v.out ?? v['json-out']
  if (out !== undefined) o.out = path.resolve(out)
  if (v['keep-temp'] === true) o.keepTemp = true
  if (v['no-build'] === true) o.build = false
  if (v.astrad !== undefined) { o.bin = path.resolve(v.astrad); o.build = false }
  return o
}

// ---- requests ------------------------------------------------------------------------------

interface KserveTensor { name: string, datatype: string, shape: number[], data: unknown[] }

/**
 * A Silero VAD request (test/helpers/pipeline-models.ts vadInputs) of `batch` rows; samples
 * rounded to 4 decimals so the JSON is short and the same text every run.
 */
function vadBody (batch: number, seed: number): { inputs: KserveTensor[] } {
  const inputs = vadInputs(batch, seed)
  const audio = inputs[0] as KserveTensor
  audio.data = (audio.data as number[]).map(x => Math.round(x * 1e4) / 1e4)
  return { inputs }
}

/** (b)'s first call asks for `output` only: the client needs nothing else of it (the pipeline returns speech and prob). */
const VAD_OUTPUTS = [{ name: 'output' }]

async function post (port: number, model: string, body: unknown): Promise<KserveTensor[]> {
  const res = await fetch(`http://127.0.0.1:${port}/v2/models/${model}/infer`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`POST /v2/models/${model}/infer: HTTP ${res.status} ${text.slice(0, 300)}`)
  const doc = JSON.parse(text) as { outputs?: KserveTensor[] }
  if (!Array.isArray(doc.outputs)) throw new Error(`POST /v2/models/${model}/infer: no outputs in ${text.slice(0, 300)}`)
  return doc.outputs
}

// ---- correctness: (a) answers exactly as (b) ------------------------------------------------

interface AnswerCheck {
  ok: boolean
  /** Requests sent both ways, and how many answered the same. */
  requests: number
  equal: number
  /** Of the equal answers, how many had speech (gate = 1) in some row. */
  speech: number
  detail: string
}

function sameTensor (x: KserveTensor | undefined, y: KserveTensor | undefined): string | null {
  if (x == null || y == null) return 'missing'
  if (x.datatype !== y.datatype) return `datatype ${x.datatype} vs ${y.datatype}`
  if (JSON.stringify(x.shape) !== JSON.stringify(y.shape)) return `shape [${x.shape.join(',')}] vs [${y.shape.join(',')}]`
  const xd = x.data.flat(Infinity)
  const yd = y.data.flat(Infinity)
  if (xd.length !== yd.length) return `${xd.length} vs ${yd.length} values`
  for (let i = 0; i < xd.length; i++) if (!Object.is(xd[i], yd[i])) return `value ${i}: ${String(xd[i])} vs ${String(yd[i])}`
  return null
}

/**
 * Row `k` of a check request: quiet tone (VAD ~0.001), loud high tone (~0.02-0.13) or loud
 * sawtooth (~0.002-0.17), so gate (threshold GATE_THRESHOLD) answers both 0 and 1 across the check.
 */
function checkRow (k: number, v: number): number[] {
  return Array.from({ length: 512 }, (_, i) => {
    const x = k % 3 === 0 ? 0.5 * Math.sin(i * 0.05 + v) : k % 3 === 1 ? Math.sin(i * (1.8 + 0.1 * v)) : ((i * (0.9 + 0.05 * v)) % 1) - 0.5
    return Math.round(x * 1e4) / 1e4
  })
}

/**
 * `n` different requests (batches of 1 to 3 rows of different audio), each sent as (a) and as
 * (b): `speech` must equal gate's `y` and `prob` vad's `output`, number for number.
 */
async function checkAnswers (port: number, n: number): Promise<AnswerCheck> {
  let equal = 0
  let speech = 0
  const problems: string[] = []
  for (let i = 0; i < n; i++) {
    const batch = 1 + (i % 3)
    const body = vadBody(batch, i)
    ;(body.inputs[0] as KserveTensor).data = Array.from({ length: batch }, (_, r) => checkRow(i + r, (i * 7 + r) % 6)).flat()
    const a = await post(port, PIPELINE, body)
    const vad = await post(port, APPS.vad, { ...body, outputs: VAD_OUTPUTS })
    const out = vad.find(t => t.name === 'output')
    if (out == null) throw new Error(`(b): vad answered no 'output' (${vad.map(t => t.name).join(', ')})`)
    const gate = await post(port, APPS.gate, { inputs: [{ name: 'x', datatype: out.datatype, shape: out.shape, data: out.data }] })
    const diffs = [
      ['speech', sameTensor(a.find(t => t.name === 'speech'), gate.find(t => t.name === 'y'))],
      ['prob', sameTensor(a.find(t => t.name === 'prob'), out)]
    ].filter(([, d]) => d != null)
    // The pipeline's outputs are exactly its spec's: nothing more travels back to the client.
    const names = a.map(t => t.name).sort().join(',')
    if (names !== 'prob,speech') diffs.push(['outputs', `pipeline answered ${names}, not prob,speech`])
    if (diffs.length === 0) {
      equal++
      if ((gate.find(t => t.name === 'y')?.data.flat(Infinity) ?? []).some(x => x === 1)) speech++
    } else if (problems.length < 3) {
      problems.push(`request ${i}: ${diffs.map(([name, d]) => `${name as string} ${d as string}`).join('; ')} (pipeline answered ${a.map(t => t.name).join(', ')})`)
    }
  }
  const ok = equal === n
  return { ok, requests: n, equal, speech, detail: ok ? `${n}/${n} answers equal, number for number (${speech} with speech in some row, ${n - speech} without)` : `${equal}/${n} equal; ${problems.join(' | ')}` }
}

// ---- measurement -----------------------------------------------------------------------------

interface ProcDelta { name: string, wcharBytes: number | null, writeCalls: number | null, cpuSec: number | null }

/** One recorded slice: one side for a few seconds, with every daemon's deltas over it. */
interface Slice {
  side: Side
  /** Its place in the run (a, b, b, a …). */
  index: number
  windowMs: number
  ok: number
  rps: number
  daemons: ProcDelta[]
  machineBusy: number | null
}

/** One alternating load run at one concurrency: the sides' results (pooled over their slices by the client) and the slices. */
interface Run {
  concurrency: number
  sides: Partial<Record<Side, Omit<LoadResult, 'latencies'>>>
  slices: Slice[]
}

interface Snapshot { t: number, machine: ReturnType<typeof machineCpu>, procs: Array<{ wchar: number | null, syscw: number | null, ticks: number | null }> }

function snapshot (daemons: AstradDaemon[]): Snapshot {
  return {
    t: now(),
    machine: machineCpu(),
    procs: daemons.map(d => {
      const pid = d.proc.child.pid
      if (pid == null) return { wchar: null, syscw: null, ticks: null }
      let ticks: number | null = null
      try { ticks = cpuTicks(pid) } catch {}
      const io = ioCounters(pid)
      return { wchar: io?.wchar ?? null, syscw: io?.syscw ?? null, ticks }
    })
  }
}

/** Where one side's requests go: (a) one call to the pipeline; (b) vad, then gate fed with vad's `output`. */
function target (side: Side, cluster: PipelineCluster, body: string): Target {
  const base = `http://127.0.0.1:${cluster.scheduler.rpcPort}/v2/models`
  return side === 'a'
    ? { url: `${base}/${PIPELINE}/infer`, body }
    : { url: `${base}/${APPS.vad}/infer`, body: JSON.stringify({ ...JSON.parse(body) as object, outputs: VAD_OUTPUTS }), chain: [{ url: `${base}/${APPS.gate}/infer`, inputs: { x: 'output' } }] }
}

const HEADERS = { 'content-type': 'application/json' }

/** The sides at concurrency c in one alternating run (bench/lib/load.ts runAlternating). */
async function measure (sides: Side[], c: number, o: Options, cluster: PipelineCluster, body: string, ticks: number): Promise<{ run: Run, latencies: Map<Side, number[]> }> {
  const daemons = [cluster.scheduler, ...cluster.nodes]
  const starts = new Map<number, Snapshot>()
  const ends = new Map<number, Snapshot>()
  const result = await runAlternating({
    targets: sides.map(side => target(side, cluster, body)),
    headers: HEADERS,
    concurrency: c,
    warmupMs: o.warmupSec * 1000,
    slicesPerTarget: o.slices,
    sliceMs: o.durationSec * 1000,
    settleMs: SETTLE_MS,
    samples: true
  }, {
    onWindowStart: (_, k) => { starts.set(k, snapshot(daemons)) },
    onWindowEnd: (_, k) => { ends.set(k, snapshot(daemons)) }
  })
  const diff = (a: number | null | undefined, b: number | null | undefined): number | null => a != null && b != null ? b - a : null
  const slices = result.slices.map((sl, k): Slice => {
    const s = starts.get(k)
    const e = ends.get(k)
    return {
      side: sides[sl.target] as Side,
      index: k,
      windowMs: sl.windowMs,
      ok: sl.ok,
      rps: sl.windowMs > 0 ? sl.ok / (sl.windowMs / 1000) : 0,
      daemons: daemons.map((d, i) => {
        const ticksDiff = diff(s?.procs[i]?.ticks, e?.procs[i]?.ticks)
        return { name: d.name, wcharBytes: diff(s?.procs[i]?.wchar, e?.procs[i]?.wchar), writeCalls: diff(s?.procs[i]?.syscw, e?.procs[i]?.syscw), cpuSec: ticksDiff != null ? ticksDiff / ticks : null }
      }),
      machineBusy: s != null && e != null ? (e.machine.busy - s.machine.busy) / Math.max(1, e.machine.total - s.machine.total) : null
    }
  })
  const run: Run = { concurrency: c, sides: {}, slices }
  const latencies = new Map<Side, number[]>()
  sides.forEach((side, i) => {
    const r = result.targets[i]
    if (r == null) return
    const { latencies: lat, ...rest } = r
    run.sides[side] = rest
    latencies.set(side, lat ?? [])
  })
  return { run, latencies }
}

/** One side at one concurrency, over its slices. */
interface Cell {
  side: Side
  concurrency: number
  slices: number
  windowSec: number
  ok: number
  errors: Record<string, number>
  errorCount: number
  rps: number
  latencyMs: LatencySummary | null
  /** wchar per answer (bytes): all daemons, the client, and the two together. */
  wcharPerRequest: { daemons: number | null, client: number | null, total: number | null, byDaemon: Record<string, number | null> }
  /** write syscalls per answer, all daemons and the client. */
  writeCallsPerRequest: number | null
  /** The client's HTTP bytes per answer (headers and bodies, every call). */
  httpPerRequest: { sent: number, received: number }
  /** CPU per answer (µs): all daemons, and the client. */
  cpuUsPerRequest: { daemons: number | null, client: number, byDaemon: Record<string, number | null> }
  /** Cores used (CPU s ÷ window s). */
  cores: { daemons: number | null, client: number }
  machineBusy: number | null
}

function pool (side: Side, run: Run, latencies: number[]): Cell | undefined {
  const load = run.sides[side]
  if (load == null) return undefined
  const slices = run.slices.filter(x => x.side === side)
  const windowSec = load.windowMs / 1000
  const ok = load.ok
  const sumOrNull = (xs: Array<number | null>): number | null => xs.some(x => x == null) ? null : (xs as number[]).reduce((a, b) => a + b, 0)
  const per = (x: number | null): number | null => x != null && ok > 0 ? x / ok : null
  const names = slices[0]?.daemons.map(d => d.name) ?? []
  const daemonWchar = sumOrNull(slices.flatMap(x => x.daemons.map(d => d.wcharBytes)))
  const daemonCpu = sumOrNull(slices.flatMap(x => x.daemons.map(d => d.cpuSec)))
  const busy = slices.map(x => x.machineBusy)
  return {
    side,
    concurrency: run.concurrency,
    slices: slices.length,
    windowSec,
    ok,
    errors: load.errors,
    errorCount: load.errorCount,
    rps: load.rps,
    latencyMs: summarizeLatencies(Float64Array.from(latencies)),
    wcharPerRequest: {
      daemons: per(daemonWchar),
      client: per(load.wcharBytes),
      total: per(daemonWchar != null && load.wcharBytes != null ? daemonWchar + load.wcharBytes : null),
      byDaemon: Object.fromEntries(names.map(n => [n, per(sumOrNull(slices.map(x => x.daemons.find(d => d.name === n)?.wcharBytes ?? null)))]))
    },
    writeCallsPerRequest: per(sumOrNull([...slices.flatMap(x => x.daemons.map(d => d.writeCalls)), load.writeCalls])),
    httpPerRequest: { sent: ok > 0 ? load.httpSentBytes / ok : NaN, received: ok > 0 ? load.httpReceivedBytes / ok : NaN },
    cpuUsPerRequest: {
      daemons: daemonCpu != null && ok > 0 ? daemonCpu / ok * 1e6 : null,
      client: ok > 0 ? load.cpuSec / ok * 1e6 : NaN,
      byDaemon: Object.fromEntries(names.map(n => { const x = per(sumOrNull(slices.map(sl => sl.daemons.find(d => d.name === n)?.cpuSec ?? null))); return [n, x != null ? x * 1e6 : null] }))
    },
    cores: { daemons: daemonCpu != null && windowSec > 0 ? daemonCpu / windowSec : null, client: windowSec > 0 ? load.cpuSec / windowSec : NaN },
    machineBusy: busy.length === 0 || busy.some(b => b == null) ? null : (busy as number[]).reduce((a, b) => a + b, 0) / busy.length
  }
}

/** (a) ÷ (b) req/s of each pair of neighbouring slices (a,b or b,a): the spread says how noisy the machine was. */
function pairRatios (run: Run): number[] {
  const out: number[] = []
  for (let k = 0; k + 1 < run.slices.length; k += 2) {
    const x = run.slices[k] as Slice
    const y = run.slices[k + 1] as Slice
    const a = x.side === 'a' ? x : y.side === 'a' ? y : undefined
    const b = x.side === 'b' ? x : y.side === 'b' ? y : undefined
    if (a != null && b != null && b.rps > 0) out.push(a.rps / b.rps)
  }
  return out
}

interface Row {
  concurrency: number
  rpsRatio: number | null
  /** (a) ÷ (b) req/s of each neighbouring pair of slices, and their median. */
  pairRatios: number[]
  pairMedian: number | null
  p50Ratio: number | null
  p99Ratio: number | null
  wcharRatio: number | null
  httpRatio: number | null
  cpuRatio: number | null
  goalRps: boolean | null
  goalP99: boolean | null
}

function compare (c: number, a: Cell | undefined, b: Cell | undefined, pairs: number[]): Row {
  const ok = (x: Cell | undefined): x is Cell => x != null && x.ok > 0
  const rpsRatio = ok(a) && ok(b) ? ratio(a.rps, b.rps) : null
  const p99Ratio = ok(a) && ok(b) ? ratio(a.latencyMs?.p99, b.latencyMs?.p99) : null
  // A side with failed requests did not serve what it was asked: its goal is not met.
  const clean = a?.errorCount === 0 && b?.errorCount === 0
  const sorted = [...pairs].sort((x, y) => x - y)
  const mid = sorted.length / 2
  return {
    concurrency: c,
    rpsRatio,
    pairRatios: pairs.map(x => round(x, 3)),
    pairMedian: sorted.length === 0 ? null : sorted.length % 2 === 1 ? sorted[Math.floor(mid)] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2,
    p50Ratio: ok(a) && ok(b) ? ratio(a.latencyMs?.p50, b.latencyMs?.p50) : null,
    p99Ratio,
    wcharRatio: ratio(a?.wcharPerRequest.total ?? undefined, b?.wcharPerRequest.total ?? undefined),
    httpRatio: ratio(a != null ? a.httpPerRequest.sent + a.httpPerRequest.received : undefined, b != null ? b.httpPerRequest.sent + b.httpPerRequest.received : undefined),
    cpuRatio: ratio(a?.cpuUsPerRequest.daemons != null ? a.cpuUsPerRequest.daemons + a.cpuUsPerRequest.client : undefined, b?.cpuUsPerRequest.daemons != null ? b.cpuUsPerRequest.daemons + b.cpuUsPerRequest.client : undefined),
    goalRps: rpsRatio != null ? rpsRatio >= GOAL_RPS_RATIO && clean : null,
    goalP99: p99Ratio != null ? p99Ratio <= GOAL_P99_RATIO && clean : null
  }
}

// ---- output ----------------------------------------------------------------------------------

function fx (x: number | null | undefined, d = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

function kb (x: number | null | undefined): string {
  return x == null || !Number.isFinite(x) ? '-' : x >= 10_000 ? `${(x / 1024).toFixed(1)}k` : x.toFixed(0)
}

function notes (o: Options, cluster: PipelineCluster | null): string[] {
  const cores = os.availableParallelism()
  return [
    `Cluster: 3 real dist/astrad processes on one ${cores}-core machine over loopback: 'sched' (resource,scheduler; the client's KServe endpoint), n1 and n2 (node, --cores ${4 * o.threads}). Every app and stage has ${REPLICAS} replicas (threads ${o.threads}, cpu ${o.threads}), one per node, so every call leaves sched over libp2p (Noise + Yamux): (b)'s two stage calls on /astra/infer, (a)'s one chained call on /astra/infer-chain (both stages on the node it picks; stage by stage when placement is uneven).`,
    `(a) one POST /v2/models/${PIPELINE}/infer; (b) POST /v2/models/${APPS.vad}/infer (outputs: [output]) then POST /v2/models/${APPS.gate}/infer with that output as x, one after the other on the loop's keep-alive connection; a latency is the whole request (both calls for (b)). Same request body (Silero VAD, 1 × 512 samples), same closed-loop client process and connections, same concurrency. Interleaved: per concurrency one client run, ${o.warmupSec} s warm-up (loops split between the sides), then slices of ${o.durationSec} s recorded, a b b a a b …, ${o.slices} per side; the first ${SETTLE_MS / 1000} s after a switch are not recorded (the other side's requests are still in flight). A side's numbers are over all its slices; 'pairs' are (a) ÷ (b) req/s of neighbouring slices, whose spread shows the machine's noise.`,
    `wchar (/proc/PID/io) counts every byte a process passed to write syscalls: sockets (HTTP, libp2p), pipes and files alike. During load the daemons log at --log-level warn and write no files, so it is socket bytes (libp2p traffic is counted after Noise encryption and Yamux framing). Reads are not added: every byte written to a loopback socket is read once by the other end. "client" is the load generator process (it writes only its sockets). Per answer = bytes written in a side's recorded windows ÷ its answers in them: requests in flight at a window's ends make it approximate by a few %.`,
    `HTTP out/in: what the calls of each recorded answer wrote to and read from their socket, headers included (exact), per answer. CPU µs/req: the CPU time of the three daemons and the client over the window ÷ answers.`,
    `Closed loop: each connection waits for its answer before the next request, so the slower side is offered less load. All processes share ${cores} cores with the client: a side that needs less CPU per request gets more requests through.`,
    ...(cluster?.pipelineError != null ? [`(a) not measured: ${cluster.pipelineError.split('\n')[0] ?? ''}`] : [])
  ]
}

function printTable (o: Options, cells: Cell[], rows: Row[], out: (l: string) => void): void {
  const w = [20, 8, 8, 8, 8, 7, 10, 8, 8, 9, 9, 9, 9, 8]
  const row = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] ?? 9)).join(' ')
  out(row(['', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'wchar B/r', 'daemons', 'client', 'writes/r', 'HTTP out', 'HTTP in', 'CPU µs/r', 'machine']))
  for (const c of o.concurrency) {
    for (const side of SIDES) {
      const x = cells.find(y => y.side === side && y.concurrency === c)
      if (x == null) { out(row([`c=${c} ${SIDE_NAME[side]}`, 'not run'])); continue }
      const l = x.latencyMs
      const errs = x.errorCount === 0 ? '0' : Object.entries(x.errors).map(([k, v]) => `${k}:${v}`).join(',')
      const cpu = x.cpuUsPerRequest.daemons != null ? x.cpuUsPerRequest.daemons + x.cpuUsPerRequest.client : null
      out(row([`c=${c} ${SIDE_NAME[side]}`, x.rps.toFixed(0), fx(l?.p50), fx(l?.p99), fx(l?.max, 1), errs, kb(x.wcharPerRequest.total), kb(x.wcharPerRequest.daemons), kb(x.wcharPerRequest.client), fx(x.writeCallsPerRequest, 1), kb(x.httpPerRequest.sent), kb(x.httpPerRequest.received), fx(cpu, 0), x.machineBusy != null ? `${(x.machineBusy * 100).toFixed(0)} %` : '-']))
    }
    const r = rows.find(y => y.concurrency === c)
    const times = (x: number | null | undefined): string => x == null ? '-' : `${fx(x)}×`
    if (r != null) out(row([`c=${c} (a) ÷ (b)`, times(r.rpsRatio), times(r.p50Ratio), times(r.p99Ratio), '', '', times(r.wcharRatio), '', '', '', times(r.httpRatio), '', times(r.cpuRatio), '']))
    if (r != null && r.pairRatios.length > 0) out(`  c=${c} req/s (a) ÷ (b) of neighbouring slices: ${r.pairRatios.map(x => fx(x)).join(' ')}; median ${fx(r.pairMedian)}`)
  }
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const loadAtStart = os.loadavg().map(x => round(x, 2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  const errors: string[] = []
  const root = makeTempRoot('astrad-bench-pipeline-')
  const ticks = clockTicks()

  // Other work on the machine skews every number: one second of /proc/stat before the run.
  const before = machineCpu()
  await sleep(1_000)
  const after = machineCpu()
  const idleBusy = (after.busy - before.busy) / Math.max(1, after.total - before.total)
  if (idleBusy > 0.25) log(`WARNING: the machine is ${(idleBusy * 100).toFixed(0)} % busy with other work before the run; the numbers will be skewed`)

  ensureBuilt(o, log)
  let cluster: PipelineCluster | null = null
  let check: AnswerCheck | null = null
  const runs: Run[] = []
  const latencies = new Map<string, number[]>()
  const body = JSON.stringify(vadBody(1, 0))
  try {
    cluster = await startPipelineCluster({ bin: o.bin, root, nodes: NODES, replicas: REPLICAS, threads: o.threads, log })
    log(`placement (replicas per node): ${Object.entries(cluster.placement).map(([app, per]) => `${app} ${Object.entries(per).map(([n, k]) => `${n}:${k}`).join(' ')}`).join(', ')}`)
    if (cluster.pipelineError != null) errors.push(`(a) pipeline: ${cluster.pipelineError}`)
    let sides: Side[] = cluster.pipelineError == null ? ['a', 'b'] : ['b']
    if (sides.includes('a')) {
      try {
        check = await checkAnswers(cluster.scheduler.rpcPort, o.check)
        log(`answers of (a) and (b): ${check.detail}`)
      } catch (err) {
        check = { ok: false, requests: o.check, equal: 0, speech: 0, detail: err instanceof Error ? err.message : String(err) }
        log(`answer check failed: ${check.detail}`)
      }
      if (!check.ok) {
        // Timing a pipeline that answers differently compares different work: (b) alone is measured.
        errors.push(`(a) and (b) answer differently: ${check.detail}`)
        sides = ['b']
      }
    }
    for (const c of o.concurrency) {
      const gone = [cluster.scheduler, ...cluster.nodes].find(d => d.proc.child.exitCode != null || d.proc.child.signalCode != null)
      if (gone != null) throw new Error(`${gone.name} exited: ${gone.proc.tail.slice(-10).join('\n')}`)
      log(`c=${c}: ${o.warmupSec} s warm-up (both sides), then ${o.slices} × ${o.durationSec} s of each side, alternating ${sides.length > 1 ? 'a,b / b,a' : ''}`)
      try {
        const { run, latencies: lat } = await measure(sides, c, o, cluster, body, ticks)
        runs.push(run)
        for (const [side, l] of lat) latencies.set(`${side}:${c}`, l)
        for (const sl of run.slices) log(`  slice ${sl.index + 1}/${run.slices.length} ${SIDE_NAME[sl.side]}: ${sl.rps.toFixed(0)} req/s, machine ${sl.machineBusy != null ? (sl.machineBusy * 100).toFixed(0) : '-'} % busy`)
        for (const side of sides) {
          const l = run.sides[side]
          if (l != null) log(`${SIDE_NAME[side]}, c=${c}: ${l.rps.toFixed(0)} req/s, p50 ${fx(l.latencyMs?.p50)} ms, p99 ${fx(l.latencyMs?.p99)} ms, errors ${l.errorCount}`)
        }
      } catch (err) {
        errors.push(`c=${c}: ${err instanceof Error ? err.message : String(err)}`)
        log(errors[errors.length - 1] as string)
      }
      await sleep(300)
    }
  } catch (err) {
    errors.push(`cluster: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    log(errors[errors.length - 1] as string)
  }
  // How (a)'s requests ran on the scheduler: one chained call per request on the node holding both
  // stages (fused), or stage by stage (docs/pipelines.md "Fusion").
  let fused: string | undefined
  if (cluster != null) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${cluster.scheduler.rpcPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text()
      const count = (result: string): number => Number(text.split('\n').find(l => l.startsWith(`astrad_pipeline_fused_calls_total{pipeline="${PIPELINE}",result="${result}"} `))?.split(' ')[1] ?? 0)
      const steps = Number(text.split('\n').find(l => l.startsWith(`astrad_pipeline_step_duration_seconds_count{pipeline="${PIPELINE}",step="vad"} `))?.split(' ')[1] ?? 0)
      fused = `(a) ran as ${count('ok')} fused chained calls (one per request, /astra/infer-chain), ${count('fallback')} fell back, ${steps} stage by stage`
    } catch {}
    await Promise.all([cluster.scheduler, ...cluster.nodes].map(async d => { await stop(d.proc, 'SIGTERM', 10_000) }))
  }

  const cells: Cell[] = []
  for (const run of runs) {
    for (const side of SIDES) {
      const cell = pool(side, run, latencies.get(`${side}:${run.concurrency}`) ?? [])
      if (cell != null) cells.push(cell)
    }
  }
  const rows = o.concurrency.map(c => {
    const run = runs.find(r => r.concurrency === c)
    return compare(c, cells.find(x => x.side === 'a' && x.concurrency === c), cells.find(x => x.side === 'b' && x.concurrency === c), run != null ? pairRatios(run) : [])
  })
  const all = (xs: Array<boolean | null>): boolean | null => xs.some(x => x == null) || xs.length === 0 ? null : xs.every(x => x === true)
  const goals = { throughput: all(rows.map(r => r.goalRps)), p99: all(rows.map(r => r.goalP99)) }

  const lines: string[] = []
  const out = (l: string): void => { lines.push(l) }
  out('')
  out(`Pipeline vs two apps: Silero VAD → gate (x > ${GATE_THRESHOLD}), ${NODES} nodes × 1 replica of each, threads ${o.threads}; ${o.slices} slices × ${o.durationSec} s per side and concurrency, interleaved, after ${o.warmupSec} s warm-up${o.quick ? ' (--quick)' : ''}`)
  if (check != null) out(`  answers: ${check.ok ? 'EQUAL' : 'DIFFERENT'} — ${check.detail}`)
  if (fused != null) out(`  ${fused}`)
  if (cluster != null) out(`  ready after deploy: apps ${(cluster.appsReadyMs / 1000).toFixed(1)} s, pipeline ${cluster.pipelineReadyMs != null ? `${(cluster.pipelineReadyMs / 1000).toFixed(1)} s` : 'not ready'}; placement ${Object.entries(cluster.placement).map(([app, per]) => `${app} ${Object.entries(per).map(([n, k]) => `${n}:${k}`).join(' ')}`).join(', ')}`)
  printTable(o, cells, rows, out)
  out('  wchar B/r = daemons + client: bytes written per answer by the 3 daemons and the client (/proc/PID/io wchar), writes/r their write syscalls (syscw); HTTP out/in: the client\'s socket bytes per answer; CPU µs/r: daemons + client. Ratios are (a) ÷ (b).')
  for (const n of notes(o, cluster)) out(`  - ${n}`)
  const met = (b: boolean | null): string => b == null ? 'NOT MEASURED' : b ? 'met' : 'MISSED'
  // Three decimals: 0.998 is a miss, and must not print as 1.00.
  const ratios = (f: (r: Row) => number | null): string => rows.map(r => `c=${r.concurrency} ${fx(f(r), 3)}×`).join(', ')
  out('')
  out(`goal: throughput (a) ≥ ${GOAL_RPS_RATIO.toFixed(1)}× (b): ${met(goals.throughput)} (${ratios(r => r.rpsRatio)})`)
  out(`goal: p99 (a) ≤ (b): ${met(goals.p99)} (${ratios(r => r.p99Ratio)})`)
  if (errors.length > 0) {
    out('')
    out('Problems:')
    for (const e of errors) out(`  - ${e.split('\n')[0] ?? e}`)
  }
  process.stdout.write(lines.join('\n') + '\n')

  const version = (() => { try { return execFileSync(o.bin, ['--version'], { encoding: 'utf8' }).trim() } catch { return null } })()
  const doc = {
    benchmark: 'pipeline',
    date: new Date().toISOString(),
    options: { quick: o.quick, durationSec: o.durationSec, warmupSec: o.warmupSec, slices: o.slices, settleMs: SETTLE_MS, concurrency: o.concurrency, threads: o.threads, check: o.check },
    machine: {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      loadAvgAtStart: loadAtStart,
      busyBeforeRun: round(idleBusy, 3),
      node: process.version,
      astrad: version
    },
    units: 'ms, requests/s, bytes per answer, µs of CPU per answer, cores = CPU s per s',
    goals: { rpsRatioAtLeast: GOAL_RPS_RATIO, p99RatioAtMost: GOAL_P99_RATIO, met: goals },
    cluster: cluster == null ? null : { models: cluster.models, specs: cluster.specs, appsReadyMs: round(cluster.appsReadyMs, 0), pipelineReadyMs: cluster.pipelineReadyMs != null ? round(cluster.pipelineReadyMs, 0) : null, pipelineError: cluster.pipelineError, placement: cluster.placement },
    requestBytes: Buffer.byteLength(body),
    answers: check,
    cells,
    rows,
    runs,
    notes: notes(o, cluster),
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  log(`total ${doc.durationSec} s`)
  await cleanup()
  // Exit 0 when it ran (missed goals and problems are in the output); 1 when nothing was measured.
  if (runs.length === 0) process.exitCode = 1
  // The last line, on stdout with the table: `goals: N met, M missed`.
  logGoals(l => { process.stdout.write(l + '\n') }, { throughput: goals.throughput, p99: goals.p99 })
}

runBench('bench:pipeline', main, err => err instanceof UsageError)
