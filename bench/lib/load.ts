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
  headers?: Record<string, string>
  concurrency: number
  warmupMs: number
  durationMs: number
  /** A request without a complete answer for this long counts as error 'timeout'. */
  timeoutMs?: number
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
  const body = o.body !== undefined ? Buffer.from(o.body) : undefined
  const headers: Record<string, string | number> = { ...o.headers }
  if (body !== undefined) headers['content-length'] = body.length
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency })
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
  const errors: Record<string, number> = {}
  const perSecond: number[] = []
  let okBytes = 0
  let warmupRequests = 0
  const t0 = performance.now()
  const windowStart = t0 + o.warmupMs
  const windowEnd = windowStart + o.durationMs
  let cpuAtStart = process.cpuUsage()
  let cpuInWindow: NodeJS.CpuUsage | undefined
  const startTimer = setTimeout(() => { cpuAtStart = process.cpuUsage(); send({ type: 'window-start' }) }, o.warmupMs)
  const endTimer = setTimeout(() => { cpuInWindow = process.cpuUsage(cpuAtStart); send({ type: 'window-end' }) }, o.warmupMs + o.durationMs)

  const loop = async (): Promise<void> => {
    while (performance.now() < windowEnd) {
      const start = performance.now()
      const r = await request()
      const end = performance.now()
      if (end < windowStart) {
        warmupRequests++
      } else if (end <= windowEnd) {
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
  }
  await Promise.all(Array.from({ length: o.concurrency }, loop))
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
    cpuSec: (cpuInWindow.user + cpuInWindow.system) / 1e6
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
