// A closed-loop HTTP load generator in its own process (bench:serve).
//
// `concurrency` loops each keep exactly one request in flight on a keep-alive connection
// (http.Agent, one socket per loop): send, read the whole response, record, send the next.
// The first `warmupMs` are not recorded (connections open, JIT, onnxruntime caches warm);
// then every response that completes inside the `durationMs` window is recorded: its
// latency when the status is 2xx, its status (or network error code) otherwise. No sampling.
// Closed loop: when the server slows down, the offered load drops with it (coordinated
// omission), so p99 here is the latency at the server's own pace, the same for any server.
//
// A load may step: `steps` change the number of loops at given offsets of the window (bench:
// autoscale's c → 4c → c). A loop told to stop finishes its request first (nothing is cut
// off); a new loop opens its own connection. With `trace`, every recorded answer comes back
// (end time, latency, status), so a caller can cut the window into phases.
//
// runLoad() forks this file; the child runs the loops and sends one result back over IPC.

import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { forkTs, stop, type Managed } from './procs.ts'

export interface LoadOptions {
  /** http://127.0.0.1:PORT/path (plain HTTP on loopback). */
  url: string
  method?: 'GET' | 'POST'
  /** Request body, sent as is with every request. */
  body?: string
  /** A binary request body (base64 here, so it crosses the IPC channel as text); instead of `body`. */
  bodyBase64?: string
  headers?: Record<string, string>
  concurrency: number
  warmupMs: number
  durationMs: number
  /** A request without a complete answer for this long counts as error 'timeout'. */
  timeoutMs?: number
  /** Changes of the number of loops, at ms from the window's start (ascending). */
  steps?: LoadStep[]
  /** Return every recorded answer in `trace`. */
  trace?: boolean
}

export interface LoadStep {
  /** ms after the recorded window starts. */
  atMs: number
  concurrency: number
}

/** Every recorded answer, in completion order (parallel arrays). */
export interface LoadTrace {
  /** Epoch ms (performance.timeOrigin + now) at which the window started: the same clock as Date.now() in any process. */
  windowStartEpochMs: number
  /** Epoch ms at which each of `steps` took effect. */
  stepEpochMs: number[]
  /** Completion time, ms from the window's start. */
  endMs: number[]
  latencyMs: number[]
  /** HTTP status, or a network error code. */
  status: Array<number | string>
}

export interface LatencySummary {
  min: number
  mean: number
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
}

export interface LoadResult {
  concurrency: number
  /** Length of the recorded window (ms): answers that completed in it are counted. */
  windowMs: number
  /** 2xx answers completed in the window. */
  ok: number
  /** ok ÷ window, per second. */
  rps: number
  /** Latency of the 2xx answers in the window, ms. */
  latencyMs: LatencySummary | null
  /** Non-2xx answers by status, network failures by error code ('timeout', 'ECONNRESET' …). */
  errors: Record<string, number>
  errorCount: number
  /** 2xx answers completed in each whole second of the window. */
  perSecond: number[]
  /** Mean size of a 2xx response body (bytes): the two servers should answer alike. */
  meanResponseBytes: number | null
  /** Requests answered during the warm-up (not recorded). */
  warmupRequests: number
  /** CPU seconds the load generator itself used in the window (user + system). */
  cpuSec: number
  /** With `trace`: every recorded answer. */
  trace?: LoadTrace
}

/** Hooks called (in the parent) when the child starts and stops recording. */
export interface LoadHooks {
  onWindowStart?: () => void
  onWindowEnd?: () => void
}

/** How long a request may take by default: a stuck server shows up as errors, not a hang. */
const DEFAULT_TIMEOUT_MS = 30_000
/** Pause after a network error, so a refused port is not hammered in a tight loop. */
const ERROR_BACKOFF_MS = 10

type ChildMessage =
  | { type: 'window-start' }
  | { type: 'window-end' }
  | { type: 'result', result: LoadResult }
  | { type: 'error', message: string }

const SELF = fileURLToPath(import.meta.url)
const CHILD_FLAG = '--load-child'

/** Runs a load in a fresh child process and returns what it measured. */
export async function runLoad (o: LoadOptions, hooks: LoadHooks = {}): Promise<LoadResult> {
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${o.concurrency}`)
  for (const s of o.steps ?? []) {
    if (!Number.isInteger(s.concurrency) || s.concurrency < 0) throw new RangeError(`step concurrency must be an integer ≥ 0, got ${s.concurrency}`)
  }
  const child: Managed = forkTs('load', SELF, [CHILD_FLAG])
  const limitMs = o.warmupMs + o.durationMs + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS) + 30_000
  try {
    return await new Promise<LoadResult>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`load generator gave no result within ${limitMs} ms`)) }, limitMs)
      child.child.on('message', (m: ChildMessage) => {
        if (m.type === 'window-start') hooks.onWindowStart?.()
        else if (m.type === 'window-end') hooks.onWindowEnd?.()
        else if (m.type === 'result') { clearTimeout(timer); resolve(m.result) } else { clearTimeout(timer); reject(new Error(`load generator: ${m.message}`)) }
      })
      void child.exited.then(({ code, signal }) => {
        clearTimeout(timer)
        reject(new Error(`load generator exited ${code ?? signal} without a result: ${child.tail.join('\n')}`))
      })
      child.child.send({ type: 'run', options: o })
    })
  } finally {
    await stop(child, 'SIGTERM', 2_000)
  }
}

/** Nearest-rank percentile of sorted values. */
function percentile (sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number
}

export function summarizeLatencies (values: Float64Array): LatencySummary | null {
  if (values.length === 0) return null
  const sorted = values.slice().sort()
  let sum = 0
  for (const v of sorted) sum += v
  return {
    min: sorted[0] as number,
    mean: sum / sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: sorted[sorted.length - 1] as number
  }
}

/** A growable Float64Array (a load of 100k requests would box 100k numbers in an array). */
class Samples {
  private buf = new Float64Array(1 << 16)
  length = 0
  push (v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2)
      next.set(this.buf)
      this.buf = next
    }
    this.buf[this.length++] = v
  }

  values (): Float64Array { return this.buf.subarray(0, this.length) }
}

interface Outcome {
  /** HTTP status, or a network error code. */
  status: number | string
  bytes: number
}

async function generate (o: LoadOptions, send: (m: ChildMessage) => void): Promise<LoadResult> {
  const url = new URL(o.url)
  if (url.protocol !== 'http:') throw new Error(`only http:// URLs, got ${o.url}`)
  const body = o.bodyBase64 !== undefined ? Buffer.from(o.bodyBase64, 'base64') : o.body !== undefined ? Buffer.from(o.body) : undefined
  const headers: Record<string, string | number> = { ...o.headers }
  if (body !== undefined) headers['content-length'] = body.length
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const steps = [...(o.steps ?? [])].sort((a, b) => a.atMs - b.atMs)
  const maxLoops = Math.max(o.concurrency, ...steps.map(s => s.concurrency))
  const agent = new http.Agent({ keepAlive: true, maxSockets: maxLoops, maxFreeSockets: maxLoops })
  const request = async (): Promise<Outcome> => await new Promise(resolve => {
    let settled = false
    const done = (v: Outcome): void => { if (!settled) { settled = true; resolve(v) } }
    const req = http.request({ agent, host: url.hostname, port: url.port, path: url.pathname + url.search, method: o.method ?? 'POST', headers }, res => {
      let bytes = 0
      res.on('data', (chunk: Buffer) => { bytes += chunk.length })
      res.on('end', () => { done({ status: res.statusCode ?? 0, bytes }) })
      res.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'response-error', bytes }) })
    })
    req.setTimeout(timeoutMs, () => { req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })) })
    req.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'request-error', bytes: 0 }) })
    req.end(body)
  })

  const latencies = new Samples()
  const trace: LoadTrace | undefined = o.trace === true ? { windowStartEpochMs: 0, stepEpochMs: [], endMs: [], latencyMs: [], status: [] } : undefined
  const errors: Record<string, number> = {}
  const perSecond: number[] = []
  let okBytes = 0
  let warmupRequests = 0
  const t0 = performance.now()
  const windowStart = t0 + o.warmupMs
  const windowEnd = windowStart + o.durationMs
  let cpuAtStart = process.cpuUsage()
  let cpuInWindow: NodeJS.CpuUsage | undefined
  if (trace != null) trace.windowStartEpochMs = performance.timeOrigin + windowStart
  const startTimer = setTimeout(() => { cpuAtStart = process.cpuUsage(); send({ type: 'window-start' }) }, o.warmupMs)
  const endTimer = setTimeout(() => { cpuInWindow = process.cpuUsage(cpuAtStart); send({ type: 'window-end' }) }, o.warmupMs + o.durationMs)

  // Loop i runs while i < target; a step up starts the loops that are not running.
  let target = o.concurrency
  const running = new Set<number>()
  const loops: Array<Promise<void>> = []
  const loop = async (i: number): Promise<void> => {
    running.add(i)
    while (i < target && performance.now() < windowEnd) {
      const start = performance.now()
      const r = await request()
      const end = performance.now()
      if (end < windowStart) {
        warmupRequests++
      } else if (end <= windowEnd) {
        if (trace != null) {
          trace.endMs.push(end - windowStart)
          trace.latencyMs.push(end - start)
          trace.status.push(r.status)
        }
        if (typeof r.status === 'number' && r.status >= 200 && r.status < 300) {
          latencies.push(end - start)
          okBytes += r.bytes
          const sec = Math.floor((end - windowStart) / 1000)
          if (sec < Math.floor(o.durationMs / 1000)) perSecond[sec] = (perSecond[sec] ?? 0) + 1
        } else {
          errors[String(r.status)] = (errors[String(r.status)] ?? 0) + 1
        }
      }
      if (typeof r.status === 'string') await new Promise(resolve => setTimeout(resolve, ERROR_BACKOFF_MS))
    }
    running.delete(i)
  }
  const startLoops = (): void => {
    for (let i = 0; i < target; i++) if (!running.has(i)) loops.push(loop(i))
  }
  const stepTimers = steps.map(s => setTimeout(() => {
    target = s.concurrency
    trace?.stepEpochMs.push(performance.timeOrigin + performance.now())
    startLoops()
  }, o.warmupMs + s.atMs))
  startLoops()
  // Loops started by later steps join the list while earlier ones run.
  for (let n = 0; n < loops.length || performance.now() < windowEnd;) {
    if (n < loops.length) { await loops[n]; n++ } else await new Promise(resolve => setTimeout(resolve, 50))
  }
  for (const t of stepTimers) clearTimeout(t)
  clearTimeout(startTimer)
  clearTimeout(endTimer)
  cpuInWindow ??= process.cpuUsage(cpuAtStart)
  agent.destroy()
  const values = latencies.values()
  return {
    concurrency: o.concurrency,
    windowMs: o.durationMs,
    ok: values.length,
    rps: values.length / (o.durationMs / 1000),
    latencyMs: summarizeLatencies(values),
    errors,
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
    perSecond: Array.from({ length: Math.floor(o.durationMs / 1000) }, (_, i) => perSecond[i] ?? 0),
    meanResponseBytes: values.length > 0 ? okBytes / values.length : null,
    warmupRequests,
    cpuSec: (cpuInWindow.user + cpuInWindow.system) / 1e6,
    ...(trace != null ? { trace } : {})
  }
}

if (process.argv[1] === SELF && process.argv.includes(CHILD_FLAG)) {
  const send = (m: ChildMessage): void => { process.send?.(m) }
  process.once('message', (m: { type: 'run', options: LoadOptions }) => {
    generate(m.options, send).then(
      result => { process.send?.({ type: 'result', result }, () => { process.exit(0) }) },
      (err: unknown) => { process.send?.({ type: 'error', message: err instanceof Error ? err.message : String(err) }, () => { process.exit(1) }) }
    )
  })
}
