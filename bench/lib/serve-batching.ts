import fs from 'node:fs'
import path from 'node:path'
import { mlpModel, type MlpOptions } from '../../src/demo/batch-models.ts'
import { createPool, type InferencePool } from '../../src/inference/index.ts'
import { createBatcher } from '../../src/batching/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { astradCli, cpuTicks, getText, metric, startDaemon, type AstradDaemon } from './astrad.ts'
import { clockTicks } from './build.ts'
import { runAlternating, type LoadResult } from './load.ts'
import { stop, waitFor } from './procs.ts'
import { ratio, round } from './stats.ts'

/**
 * bench:serve part `batching` (docs/bench-serve.md, docs/batching.md): one astrad daemon serving
 * the same batchable MLP as two apps, `off` (no batching) and `on` (batching), each with the same
 * worker threads; a closed-loop load alternates between the two in slices (a b, b a …) at each
 * concurrency, so both see the same machine. Reports req/s and latency side by side, and the
 * ratios on ÷ off.
 */

/**
 * The model, 256 → 2048 → 2048 → 16 (19 MB): at one row each layer is a matrix-vector product
 * that reads all its weights, so a run of 8–32 rows costs little more than one (the per-run cost
 * dominates at batch 1, as in the dense rankers and embedding heads batching is for), and a run
 * costs more than the daemon's HTTP/JSON work for a request, so the saving shows through the RPC
 * port. Smaller ones were tried (docs/bench-serve.md, part 4): 64 → 128 → 128 → 16 has nothing to
 * save; 256 → 1024 → 1024 → 16 saves CPU but not enough to show as req/s on a busy 2-core VM.
 */
export const BATCH_MLP: MlpOptions = { features: 256, hidden: 2048, layers: 2, outputs: 16 }
/** The batching block of app `on`. */
export const BATCHING = { maxBatchSize: 32, maxQueueDelayMs: 0 }
/** Goal: throughput with batching ÷ without at BATCHING_GOAL_CONCURRENCY (the issue's ≥ 1.5× on CPU). */
export const GOAL_BATCHING_RPS_RATIO = 1.5
export const BATCHING_GOAL_CONCURRENCY = 32
/** Goal: p99 with batching ÷ without at BATCHING_P99_CONCURRENCY: batching must not cost latency at moderate load. */
export const GOAL_BATCHING_P99_RATIO = 1.2
export const BATCHING_P99_CONCURRENCY = 8
const READY_TIMEOUT_MS = 60_000
const APPS = { off: 'mlp-off', on: 'mlp-on' } as const

export interface BatchingOptions {
  bin: string
  root: string
  threads: number
  concurrency: number[]
  warmupSec: number
  /** Recorded seconds per app and concurrency (split into slices). */
  durationSec: number
}

export interface BatchingRow {
  concurrency: number
  offRps: number
  onRps: number
  rpsRatio: number | null
  offP50Ms: number | null
  onP50Ms: number | null
  offP99Ms: number | null
  onP99Ms: number | null
  p99Ratio: number | null
  errors: number
  /**
   * The daemon's CPU per answer (µs: its CPU time during each app's slices ÷ that app's answers).
   * Both apps live in the one daemon, so this is what a request costs the server whatever the
   * rest of the shared machine does; the load generator's CPU is not in it.
   */
  offCpuUs: number | null
  onCpuUs: number | null
  cpuRatio: number | null
  /** Mean rows per run of `on` during this concurrency's runs (from astrad_inference_batch_size). */
  meanBatch: number | null
  /** req/s of each recorded slice, in order, per app: how much the machine moved during the run. */
  sliceRps: { off: number[], on: number[] }
}

/** The same comparison without HTTP: a worker pool and a batcher over one, called in this process. */
export interface InProcessRow {
  concurrency: number
  offRps: number
  onRps: number
  rpsRatio: number | null
}

export interface BatchingResult {
  model: MlpOptions & { bytes: number }
  batching: typeof BATCHING
  threads: number
  /** The same requests answered by both apps: identical JSON outputs. */
  answersEqual: boolean
  answersChecked: number
  rows: BatchingRow[]
  /** The batcher alone (no HTTP, no daemon): what batching saves where the run is all the cost. */
  inProcess: InProcessRow[]
  goals: { rps: boolean | null, p99: boolean | null }
}

/** One row of features per request, values exact in float32; asks for output `y`. */
function body (seed: number): string {
  const data = Array.from({ length: BATCH_MLP.features }, (_, i) => (((seed * 37 + i * 11) % 41) - 20) / 16)
  // Only `y` (16 values): the model's hidden-layer output `h` is for tests of output filters.
  return JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, BATCH_MLP.features], data }], outputs: [{ name: 'y' }] })
}

async function answer (port: number, app: string, b: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/v2/models/${app}/infer`, { method: 'POST', body: b, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`POST /v2/models/${app}/infer: HTTP ${res.status} ${text.slice(0, 300)}`)
  return JSON.stringify((JSON.parse(text) as { outputs?: unknown }).outputs)
}

async function batchCounters (port: number): Promise<{ runs: number, rows: number }> {
  const text = await getText(port, '/metrics', 5_000)
  return {
    runs: metric(text, 'astrad_inference_batch_size_count', `{model="${APPS.on}"}`),
    rows: metric(text, 'astrad_inference_batch_size_sum', `{model="${APPS.on}"}`)
  }
}

async function deploy (o: BatchingOptions, daemon: AstradDaemon, log: (m: string) => void): Promise<number> {
  const file = path.join(o.root, 'batch-mlp.onnx')
  const bytes = mlpModel(BATCH_MLP)
  fs.writeFileSync(file, bytes)
  const added = (await astradCli(o.bin, daemon, ['model', 'add', file, '--json'], 120_000)).stdout
  const id = (JSON.parse(added.trim()) as { id?: unknown }).id
  if (typeof id !== 'string') throw new Error(`astrad model add --json printed no id: ${added.slice(0, 300)}`)
  for (const [key, name] of Object.entries(APPS)) {
    const spec = { name, model: id, replicas: 1, threads: o.threads, resources: { cpu: 1 }, ...(key === 'on' ? { batching: BATCHING } : {}) }
    const specFile = path.join(o.root, `${name}.json`)
    fs.writeFileSync(specFile, JSON.stringify(spec))
    await astradCli(o.bin, daemon, ['app', 'deploy', specFile], 60_000)
  }
  for (const name of Object.values(APPS)) {
    await waitFor(`GET /v2/models/${name}/ready to answer 200`, async () => {
      const res = await fetch(`http://127.0.0.1:${daemon.rpcPort}/v2/models/${name}/ready`, { signal: AbortSignal.timeout(2_000) })
      if (res.status !== 200) throw new Error(`HTTP ${res.status} ${(await res.text()).slice(0, 300)}`)
      return true
    }, READY_TIMEOUT_MS, 100)
  }
  log(`batching: apps ${APPS.off} and ${APPS.on} ready (model ${id.slice(0, 12)}…, ${bytes.length} bytes)`)
  return bytes.length
}

/**
 * Closed loops calling a pool (off) and a batcher over another pool (on) of the same model in this
 * process, alternating 1-s slices (off, on, on, off …), one row of zeros per request.
 */
async function runInProcess (o: BatchingOptions, file: string, log: (m: string) => void): Promise<InProcessRow[]> {
  const opened: InferencePool[] = []
  try {
    const init = { modelPath: file, name: 'inproc', workers: o.threads, maxQueue: 1024 }
    const off = await createPool({ logger: silentLogger() }, init)
    opened.push(off)
    const inner = await createPool({ logger: silentLogger() }, init)
    opened.push(inner)
    const on = createBatcher({ logger: silentLogger() }, { name: 'inproc', maxQueue: 1024, batching: BATCHING }, inner)
    const data = new Uint8Array(BATCH_MLP.features * 4)
    const slice = async (pool: InferencePool, c: number, ms: number): Promise<number> => {
      let n = 0
      const end = performance.now() + ms
      await Promise.all(Array.from({ length: c }, async () => {
        while (performance.now() < end) {
          await pool.infer({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, BATCH_MLP.features], data: data.slice() }], outputs: ['y'], deadline: Date.now() + 30_000 })
          n++
        }
      }))
      return n
    }
    const rows: InProcessRow[] = []
    const slices = Math.max(2, Math.round(o.durationSec / 2))
    for (const c of o.concurrency) {
      await slice(off, c, 300)
      await slice(on, c, 300)
      const done = { off: 0, on: 0 }
      for (let i = 0; i < slices; i++) {
        for (const which of i % 2 === 0 ? ['off', 'on'] as const : ['on', 'off'] as const) done[which] += await slice(which === 'off' ? off : on, c, 1_000)
      }
      const row = { concurrency: c, offRps: round(done.off / slices, 0), onRps: round(done.on / slices, 0), rpsRatio: ratio(done.on, done.off) }
      rows.push(row)
      log(`batching in process, c=${c}: off ${row.offRps} req/s, on ${row.onRps} req/s, ×${fx(row.rpsRatio)}`)
    }
    return rows
  } finally {
    await Promise.allSettled(opened.map(async p => { await p.close() }))
  }
}

/** Runs the part; the daemon is stopped before it returns. */
export async function runBatching (o: BatchingOptions, log: (m: string) => void): Promise<BatchingResult> {
  const daemon = await startDaemon({ bin: o.bin, root: o.root, name: 'batching', roles: 'node,resource,scheduler', extraArgs: ['--cores', '4'] })
  try {
    const bytes = await deploy(o, daemon, log)
    const port = daemon.rpcPort
    const checks = Array.from({ length: 16 }, (_, i) => body(i))
    const [off, on] = await Promise.all([
      Promise.all(checks.map(async b => await answer(port, APPS.off, b))),
      Promise.all(checks.map(async b => await answer(port, APPS.on, b)))
    ])
    const answersEqual = off.every((a, i) => a === on[i])
    log(`batching: the same ${checks.length} requests (sent at once) to both apps: ${answersEqual ? 'identical answers' : 'DIFFERENT answers'}`)
    const rows: BatchingRow[] = []
    const slices = Math.max(2, Math.round(o.durationSec / 2))
    const sliceMs = Math.max(500, Math.round(o.durationSec * 1000 / slices))
    for (const c of o.concurrency) {
      log(`batching, c=${c}: ${o.warmupSec} s warm-up, then ${slices} slices of ${sliceMs} ms per app, alternating`)
      const before = await batchCounters(port)
      const pid = daemon.proc.child.pid
      const cpu = [0, 0]
      let sliceStart = 0
      const ticks = (): number => { try { return pid != null ? cpuTicks(pid) : NaN } catch { return NaN } }
      const run = await runAlternating({
        targets: [APPS.off, APPS.on].map(app => ({ url: `http://127.0.0.1:${port}/v2/models/${app}/infer`, body: body(c) })),
        headers: { 'content-type': 'application/json' },
        concurrency: c,
        warmupMs: o.warmupSec * 1000,
        slicesPerTarget: slices,
        sliceMs,
        settleMs: 300
      }, {
        onWindowStart: () => { sliceStart = ticks() },
        onWindowEnd: (target) => { cpu[target] = (cpu[target] ?? 0) + ticks() - sliceStart }
      })
      const after = await batchCounters(port)
      const [a, b] = run.targets as [LoadResult, LoadResult]
      const row: BatchingRow = {
        concurrency: c,
        offRps: round(a.rps, 0),
        onRps: round(b.rps, 0),
        rpsRatio: ratio(b.rps, a.rps),
        offP50Ms: a.latencyMs?.p50 ?? null,
        onP50Ms: b.latencyMs?.p50 ?? null,
        offP99Ms: a.latencyMs?.p99 ?? null,
        onP99Ms: b.latencyMs?.p99 ?? null,
        p99Ratio: ratio(b.latencyMs?.p99, a.latencyMs?.p99),
        errors: a.errorCount + b.errorCount,
        offCpuUs: usPerAnswer(cpu[0]!, a),
        onCpuUs: usPerAnswer(cpu[1]!, b),
        cpuRatio: ratio(usPerAnswer(cpu[1]!, b) ?? undefined, usPerAnswer(cpu[0]!, a) ?? undefined),
        meanBatch: after.runs > before.runs ? (after.rows - before.rows) / (after.runs - before.runs) : null,
        sliceRps: {
          off: run.slices.filter(x => x.target === 0).map(x => round(x.ok / (x.windowMs / 1000), 0)),
          on: run.slices.filter(x => x.target === 1).map(x => round(x.ok / (x.windowMs / 1000), 0))
        }
      }
      rows.push(row)
      log(`batching, c=${c}: off ${row.offRps} req/s p99 ${fx(row.offP99Ms)} ms ${fx(row.offCpuUs, 0)} µs CPU/answer; on ${row.onRps} req/s p99 ${fx(row.onP99Ms)} ms ${fx(row.onCpuUs, 0)} µs CPU/answer (mean batch ${fx(row.meanBatch, 1)}); ×${fx(row.rpsRatio)} req/s`)
    }
    const at = (c: number): BatchingRow | undefined => rows.find(r => r.concurrency === c)
    const rpsAt = at(BATCHING_GOAL_CONCURRENCY)?.rpsRatio
    const p99At = at(BATCHING_P99_CONCURRENCY)?.p99Ratio
    return {
      model: { ...BATCH_MLP, bytes },
      batching: BATCHING,
      threads: o.threads,
      answersEqual,
      answersChecked: checks.length,
      rows,
      inProcess: await runInProcess(o, path.join(o.root, 'batch-mlp.onnx'), log),
      goals: {
        rps: rpsAt == null ? null : answersEqual && rpsAt >= GOAL_BATCHING_RPS_RATIO,
        p99: p99At == null ? null : answersEqual && p99At <= GOAL_BATCHING_P99_RATIO
      }
    }
  } finally {
    await stop(daemon.proc, 'SIGTERM', 10_000)
  }
}

const TICKS_PER_SECOND = clockTicks()

/** Server CPU per 2xx answer in µs, from clock ticks summed over a target's slices. */
function usPerAnswer (ticks: number, l: LoadResult): number | null {
  if (!Number.isFinite(ticks) || l.ok === 0) return null
  return round(ticks / TICKS_PER_SECOND / l.ok * 1e6, 0)
}

function fx (x: number | null | undefined, d = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

/** The part's table for the bench's report. */
export function formatBatching (r: BatchingResult): string[] {
  const lines = [
    `model: MLP ${r.model.features}→${r.model.hidden}×${r.model.layers}→${r.model.outputs} (${r.model.bytes} bytes, generated), one row per request, ${r.threads} worker thread(s) per app; batching ${JSON.stringify(r.batching)}`,
    `answers: ${r.answersChecked} requests to both apps: ${r.answersEqual ? 'identical' : 'DIFFERENT'}`,
    '     c   off req/s    on req/s   ×req/s   off p50   on p50   off p99   on p99   ×p99   off µs/ans   on µs/ans   ×CPU   mean batch   errors'
  ]
  for (const x of r.rows) {
    lines.push(`${String(x.concurrency).padStart(6)}${String(x.offRps).padStart(12)}${String(x.onRps).padStart(12)}${fx(x.rpsRatio).padStart(9)}${fx(x.offP50Ms).padStart(10)}${fx(x.onP50Ms).padStart(9)}${fx(x.offP99Ms).padStart(10)}${fx(x.onP99Ms).padStart(9)}${fx(x.p99Ratio).padStart(7)}${fx(x.offCpuUs, 0).padStart(13)}${fx(x.onCpuUs, 0).padStart(12)}${fx(x.cpuRatio).padStart(7)}${fx(x.meanBatch, 1).padStart(13)}${String(x.errors).padStart(9)}`)
  }
  const met = (g: boolean | null): string => g == null ? 'not measured' : g ? 'met' : 'MISSED'
  lines.push(`in process (a pool vs a batcher over a pool, no HTTP): ${r.inProcess.map(x => `c=${x.concurrency} ${x.offRps} → ${x.onRps} req/s ×${fx(x.rpsRatio)}`).join('; ')}`)
  lines.push('µs/ans: the daemon\'s CPU per answer during that app\'s slices (main thread + workers; the load generator excluded): independent of how busy the rest of the machine is.')
  lines.push(`goals: req/s on ÷ off at c=${BATCHING_GOAL_CONCURRENCY} ≥ ${GOAL_BATCHING_RPS_RATIO}: ${met(r.goals.rps)}; p99 on ÷ off at c=${BATCHING_P99_CONCURRENCY} ≤ ${GOAL_BATCHING_P99_RATIO}: ${met(r.goals.p99)}`)
  return lines
}
