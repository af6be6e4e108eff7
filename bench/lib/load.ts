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
// With `chain` one request is several HTTP calls, one after the other on the loop's connection:
// a client-side pipeline (bench:pipeline). Each later call's KServe v2 JSON body is built from
// the answer before it; the latency recorded is the whole chain's, and a chain counts as one
// answer, 2xx only when every call was.
//
// Bytes: the HTTP bytes the client's sockets wrote and read (headers included) and the client
// process's wchar (/proc/self/io) are counted over the recorded window.
//
// runLoad() forks this file; the child runs the loops and sends one result back over IPC.

import http from 'node:http'
import type net from 'node:net'
import { fileURLToPath } from 'node:url'
import { forkTs, ioCounters, stop, type Managed } from './procs.ts'

/**
 * One later call of a chain: a POST of KServe v2 JSON to `url` whose inputs are tensors of the
 * previous call's answer (datatype, shape and data as the server wrote them).
 */
export interface ChainCall {
  /** http://HOST:PORT/path, on the same host and port as the first call (same connection). */
  url: string
  /** This call's input name → the previous answer's output name. */
  inputs: Record<string, string>
  /** The KServe `outputs` to ask for (by name); every output when left out. */
  outputs?: string[]
}

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
  /** Calls after the first, each fed from the answer before it (a client-side pipeline). */
  chain?: ChainCall[]
  /** Return every recorded latency (`latencies`), so several runs can be pooled. */
  samples?: boolean
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
  /** HTTP calls per request: 1 + the chain's length. */
  calls: number
  /** Bytes the client's sockets wrote / read in the window: HTTP headers and bodies, all calls. */
  httpSentBytes: number
  httpReceivedBytes: number
  /** wchar (bytes passed to write syscalls) of the load generator process in the window; null where /proc/self/io is unreadable. */
  wcharBytes: number | null
  /** Its write syscalls (syscw) in the window. */
  writeCalls: number | null
  /** Latencies (ms) of the 2xx answers in the window, in completion order, when `samples` was asked. */
  latencies?: number[]
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
  /** The answer's text, when asked for. */
  text?: string
}

interface KserveTensor { name: string, datatype: string, shape: number[], data: unknown[] }

/** The body of a chain call from the answer before it; null when an output it reads is missing. */
function chainBody (answer: string, c: ChainCall): Buffer | null {
  let outputs: KserveTensor[] | undefined
  try { outputs = (JSON.parse(answer) as { outputs?: KserveTensor[] }).outputs } catch { return null }
  const inputs: KserveTensor[] = []
  for (const [name, from] of Object.entries(c.inputs)) {
    const t = outputs?.find(x => x.name === from)
    if (t == null) return null
    inputs.push({ name, datatype: t.datatype, shape: t.shape, data: t.data })
  }
  return Buffer.from(JSON.stringify(c.outputs != null ? { inputs, outputs: c.outputs.map(name => ({ name })) } : { inputs }))
}

async function generate (o: LoadOptions, send: (m: ChildMessage) => void): Promise<LoadResult> {
  const url = new URL(o.url)
  if (url.protocol !== 'http:') throw new Error(`only http:// URLs, got ${o.url}`)
  const body = o.body !== undefined ? Buffer.from(o.body) : undefined
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const chain = (o.chain ?? []).map(c => {
    const u = new URL(c.url)
    if (u.host !== url.host) throw new Error(`chain call ${c.url}: not on ${url.host} (one connection per loop)`)
    return { ...c, path: u.pathname + u.search }
  })
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency })
  // Every socket the agent opens, so the bytes of the window can be summed (closed ones kept).
  const sockets = new Set<net.Socket>()
  const closed = { written: 0, read: 0 }
  const track = (s: net.Socket): void => {
    if (sockets.has(s)) return
    sockets.add(s)
    s.once('close', () => { closed.written += s.bytesWritten; closed.read += s.bytesRead; sockets.delete(s) })
  }
  const socketBytes = (): { written: number, read: number } => {
    let { written, read } = closed
    for (const s of sockets) { written += s.bytesWritten; read += s.bytesRead }
    return { written, read }
  }
  /** One HTTP call; `keep` keeps the answer's text (a chain reads it). */
  const call = async (callPath: string, payload: Buffer | undefined, keep: boolean): Promise<Outcome> => await new Promise(resolve => {
    let settled = false
    const done = (v: Outcome): void => { if (!settled) { settled = true; resolve(v) } }
    const headers: Record<string, string | number> = { ...o.headers }
    if (payload !== undefined) headers['content-length'] = payload.length
    const req = http.request({ agent, host: url.hostname, port: url.port, path: callPath, method: o.method ?? 'POST', headers }, res => {
      let bytes = 0
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => { bytes += chunk.length; if (keep) chunks.push(chunk) })
      res.on('end', () => { done({ status: res.statusCode ?? 0, bytes, text: keep ? Buffer.concat(chunks).toString() : undefined }) })
      res.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'response-error', bytes }) })
    })
    req.on('socket', track)
    req.setTimeout(timeoutMs, () => { req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })) })
    req.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'request-error', bytes: 0 }) })
    req.end(payload)
  })
  const request = async (): Promise<Outcome> => {
    let r = await call(url.pathname + url.search, body, chain.length > 0)
    for (const c of chain) {
      if (typeof r.status !== 'number' || r.status < 200 || r.status >= 300) return r
      const next = chainBody(r.text ?? '', c)
      if (next == null) return { status: 'chain-missing-output', bytes: r.bytes }
      r = await call(c.path, next, c !== chain[chain.length - 1])
    }
    return r
  }

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
  const io = (): { wchar: number, syscw: number } | null => ioCounters('self')
  let bytesAtStart = { socket: socketBytes(), io: io() }
  let bytesInWindow: { written: number, read: number, wchar: number | null, syscw: number | null } | undefined
  const startTimer = setTimeout(() => {
    cpuAtStart = process.cpuUsage()
    bytesAtStart = { socket: socketBytes(), io: io() }
    send({ type: 'window-start' })
  }, o.warmupMs)
  const endTimer = setTimeout(() => {
    cpuInWindow = process.cpuUsage(cpuAtStart)
    const sb = socketBytes()
    const w = io()
    const w0 = bytesAtStart.io
    bytesInWindow = { written: sb.written - bytesAtStart.socket.written, read: sb.read - bytesAtStart.socket.read, wchar: w != null && w0 != null ? w.wchar - w0.wchar : null, syscw: w != null && w0 != null ? w.syscw - w0.syscw : null }
    send({ type: 'window-end' })
  }, o.warmupMs + o.durationMs)

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
  bytesInWindow ??= { written: NaN, read: NaN, wchar: null, syscw: null }
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
    calls: 1 + chain.length,
    httpSentBytes: bytesInWindow.written,
    httpReceivedBytes: bytesInWindow.read,
    wcharBytes: bytesInWindow.wchar,
    writeCalls: bytesInWindow.syscw,
    ...(o.samples === true ? { latencies: Array.from(values) } : {})
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
