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
// Bytes: the HTTP bytes of each recorded 2xx answer (what its calls wrote to and read from their
// socket, headers included), and the client process's wchar (/proc/self/io) over the recorded
// window.
//
// runAlternating() measures several targets in one run, slice by slice (AlternatingOptions).
//
// A (single-target) load may step: `steps` change the number of loops at given offsets of the
// window (bench:autoscale's c → 4c → c). A loop told to stop finishes its request first (nothing
// is cut off); a new loop opens its own connection. With `trace`, every recorded answer comes
// back (end time, latency, status), so a caller can cut the window into phases.
//
// runLoad() and runAlternating() fork this file; the child runs the loops and sends one result
// back over IPC.

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
  /** A binary request body (base64 here, so it crosses the IPC channel as text); instead of `body`. */
  bodyBase64?: string
  /** Changes of the number of loops, at ms from the window's start. */
  steps?: LoadStep[]
  /** Return every recorded answer in `trace`. */
  trace?: boolean
}

export interface LoadStep {
  /** ms after the recorded window starts. */
  atMs: number
  /** Loops from then on (0 stops them all). */
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
  /** Length of the recorded window (ms; of all its slices in an alternating run): answers that completed in it are counted. */
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
  /** 2xx answers completed in each whole second of the window (empty in an alternating run). */
  perSecond: number[]
  /** Mean size of a 2xx response body (bytes): the two servers should answer alike. */
  meanResponseBytes: number | null
  /** Requests answered during the warm-up (not recorded). */
  warmupRequests: number
  /** CPU seconds the load generator itself used in the window (user + system). */
  cpuSec: number
  /** HTTP calls per request: 1 + the chain's length. */
  calls: number
  /** Bytes the client wrote / read for the recorded 2xx answers: HTTP headers and bodies, every call of a chain. */
  httpSentBytes: number
  httpReceivedBytes: number
  /** wchar (bytes passed to write syscalls) of the load generator process in the window; null where /proc/self/io is unreadable. */
  wcharBytes: number | null
  /** Its write syscalls (syscw) in the window. */
  writeCalls: number | null
  /** Latencies (ms) of the 2xx answers in the window, in completion order, when `samples` was asked. */
  latencies?: number[]
  /** Every recorded answer, when `trace` was asked. */
  trace?: LoadTrace
}

/** A target of an alternating run: where each request goes (as in LoadOptions). */
export interface Target {
  url: string
  body?: string
  bodyBase64?: string
  chain?: ChainCall[]
}

/**
 * Several targets measured in one run, slice by slice: every loop sends to the target of the
 * current slice (a b, b a, a b … pairs, so each is as often first as second). A slice that
 * follows another target's starts with `settleMs` not recorded (that target's last requests
 * are still in flight); then `sliceMs` recorded. Only answers of the slice's own target that
 * complete in its recorded part count. So both see the same machine, a few seconds apart.
 */
export interface AlternatingOptions extends Omit<LoadOptions, 'url' | 'body' | 'chain' | 'durationMs'> {
  targets: Target[]
  /** Recorded slices of each target. */
  slicesPerTarget: number
  sliceMs: number
  settleMs: number
}

export interface SliceResult {
  target: number
  windowMs: number
  /** 2xx answers recorded in it. */
  ok: number
}

export interface AlternatingResult {
  /** One result per target, over its recorded slices (perSecond empty). */
  targets: LoadResult[]
  slices: SliceResult[]
}

/** Hooks called (in the parent) when the child starts and stops recording (a slice of `target`). */
export interface LoadHooks {
  onWindowStart?: (target: number, slice: number) => void
  onWindowEnd?: (target: number, slice: number) => void
}

/** How long a request may take by default: a stuck server shows up as errors, not a hang. */
const DEFAULT_TIMEOUT_MS = 30_000
/** Pause after a network error, so a refused port is not hammered in a tight loop. */
const ERROR_BACKOFF_MS = 10

type ChildMessage =
  | { type: 'window-start', target: number, slice: number }
  | { type: 'window-end', target: number, slice: number }
  | { type: 'result', result: AlternatingResult }
  | { type: 'error', message: string }

const SELF = fileURLToPath(import.meta.url)
const CHILD_FLAG = '--load-child'

/** Runs a load in a fresh child process and returns what it measured. */
export async function runLoad (o: LoadOptions, hooks: LoadHooks = {}): Promise<LoadResult> {
  const r = await runChild(o, o.warmupMs + o.durationMs, hooks)
  return r.targets[0] as LoadResult
}

/** Runs an alternating load (AlternatingOptions) in a fresh child process. */
export async function runAlternating (o: AlternatingOptions, hooks: LoadHooks = {}): Promise<AlternatingResult> {
  if (o.targets.length < 1) throw new RangeError('no targets')
  if (!Number.isInteger(o.slicesPerTarget) || o.slicesPerTarget < 1) throw new RangeError(`slicesPerTarget must be a positive integer, got ${o.slicesPerTarget}`)
  return await runChild(o, o.warmupMs + o.targets.length * o.slicesPerTarget * (o.sliceMs + o.settleMs), hooks)
}

async function runChild (o: LoadOptions | AlternatingOptions, runMs: number, hooks: LoadHooks): Promise<AlternatingResult> {
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${o.concurrency}`)
  for (const st of 'steps' in o ? o.steps ?? [] : []) {
    if (!Number.isInteger(st.concurrency) || st.concurrency < 0) throw new RangeError(`step concurrency must be an integer ≥ 0, got ${st.concurrency}`)
  }
  const child: Managed = forkTs('load', SELF, [CHILD_FLAG])
  const limitMs = runMs + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS) + 30_000
  try {
    return await new Promise<AlternatingResult>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`load generator gave no result within ${limitMs} ms`)) }, limitMs)
      child.child.on('message', (m: ChildMessage) => {
        if (m.type === 'window-start') hooks.onWindowStart?.(m.target, m.slice)
        else if (m.type === 'window-end') hooks.onWindowEnd?.(m.target, m.slice)
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
  /** HTTP bytes written and read for it (every call of a chain), when it was answered. */
  sent?: number
  received?: number
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

/** What the child runs: targets, and when each is recorded (ms after the start). */
interface Plan {
  targets: Target[]
  warmupMs: number
  /** In time order, back to back after the warm-up. */
  slices: Array<{ target: number, start: number, recordStart: number, end: number }>
}

function planOf (o: LoadOptions | AlternatingOptions): Plan {
  if (!('targets' in o)) {
    const t = o.warmupMs
    return { targets: [{ url: o.url, body: o.body, bodyBase64: o.bodyBase64, chain: o.chain }], warmupMs: t, slices: [{ target: 0, start: t, recordStart: t, end: t + o.durationMs }] }
  }
  const n = o.targets.length
  const slices: Plan['slices'] = []
  let at = o.warmupMs
  for (let p = 0; p < o.slicesPerTarget; p++) {
    // a b, b a, a b …: each target is as often first as last in a pair.
    for (let i = 0; i < n; i++) {
      const target = p % 2 === 0 ? i : n - 1 - i
      const prev = slices[slices.length - 1]
      // Right after a slice of another target its requests are still in flight: not recorded.
      const recordStart = prev == null || prev.target !== target ? at + o.settleMs : at
      slices.push({ target, start: at, recordStart, end: recordStart + o.sliceMs })
      at = recordStart + o.sliceMs
    }
  }
  return { targets: o.targets, warmupMs: o.warmupMs, slices }
}

/** One target's accumulators over its recorded windows. */
class Tally {
  readonly latencies = new Samples()
  readonly errors: Record<string, number> = {}
  okBytes = 0
  windowMs = 0
  cpuSec = 0
  written = 0
  read = 0
  wchar: number | null = 0
  syscw: number | null = 0
}

async function generate (o: LoadOptions | AlternatingOptions, send: (m: ChildMessage) => void): Promise<{ targets: LoadResult[], slices: SliceResult[] }> {
  const plan = planOf(o)
  const first = new URL(plan.targets[0]?.url ?? '')
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const targets = plan.targets.map(t => {
    const url = new URL(t.url)
    if (url.protocol !== 'http:') throw new Error(`only http:// URLs, got ${t.url}`)
    if (url.host !== first.host) throw new Error(`${t.url}: not on ${first.host} (one connection per loop)`)
    const chain = (t.chain ?? []).map(c => {
      const u = new URL(c.url)
      if (u.host !== first.host) throw new Error(`chain call ${c.url}: not on ${first.host} (one connection per loop)`)
      return { ...c, path: u.pathname + u.search }
    })
    const body = t.bodyBase64 !== undefined ? Buffer.from(t.bodyBase64, 'base64') : t.body !== undefined ? Buffer.from(t.body) : undefined
    return { path: url.pathname + url.search, body, chain }
  })
  const steps = 'steps' in o ? [...(o.steps ?? [])].sort((a, b) => a.atMs - b.atMs) : []
  const maxLoops = Math.max(o.concurrency, ...steps.map(st => st.concurrency))
  const agent = new http.Agent({ keepAlive: true, maxSockets: maxLoops, maxFreeSockets: maxLoops })
  // A socket carries one call at a time: its counters since the last call ended are this call's bytes.
  const seen = new WeakMap<net.Socket, { written: number, read: number }>()
  const callBytes = (sock: net.Socket | null): { sent: number, received: number } => {
    if (sock == null) return { sent: 0, received: 0 }
    const last = seen.get(sock) ?? { written: 0, read: 0 }
    seen.set(sock, { written: sock.bytesWritten, read: sock.bytesRead })
    return { sent: sock.bytesWritten - last.written, received: sock.bytesRead - last.read }
  }
  /** One HTTP call; `keep` keeps the answer's text (a chain reads it). */
  const call = async (callPath: string, payload: Buffer | undefined, keep: boolean): Promise<Outcome> => await new Promise(resolve => {
    let settled = false
    const done = (v: Outcome): void => { if (!settled) { settled = true; resolve(v) } }
    const headers: Record<string, string | number> = { ...o.headers }
    if (payload !== undefined) headers['content-length'] = payload.length
    const req = http.request({ agent, host: first.hostname, port: first.port, path: callPath, method: o.method ?? 'POST', headers }, res => {
      let bytes = 0
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => { bytes += chunk.length; if (keep) chunks.push(chunk) })
      res.on('end', () => { done({ status: res.statusCode ?? 0, bytes, ...callBytes(req.socket), text: keep ? Buffer.concat(chunks).toString() : undefined }) })
      res.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'response-error', bytes }) })
    })
    req.setTimeout(timeoutMs, () => { req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })) })
    req.on('error', (err: NodeJS.ErrnoException) => { done({ status: err.code ?? 'request-error', bytes: 0 }) })
    req.end(payload)
  })
  const request = async (i: number): Promise<Outcome> => {
    const t = targets[i] as (typeof targets)[number]
    let r = await call(t.path, t.body, t.chain.length > 0)
    let sent = r.sent ?? 0
    let received = r.received ?? 0
    for (const c of t.chain) {
      if (typeof r.status !== 'number' || r.status < 200 || r.status >= 300) return r
      const next = chainBody(r.text ?? '', c)
      if (next == null) return { status: 'chain-missing-output', bytes: r.bytes }
      r = await call(c.path, next, c !== t.chain[t.chain.length - 1])
      sent += r.sent ?? 0
      received += r.received ?? 0
    }
    return { ...r, sent, received }
  }

  const tallies = plan.targets.map(() => new Tally())
  const sliceOk = plan.slices.map(() => 0)
  const perSecond: number[] = []
  let warmupRequests = 0
  const t0 = performance.now()
  const lastEnd = t0 + (plan.slices[plan.slices.length - 1]?.end ?? plan.warmupMs)
  const recordStart0 = t0 + (plan.slices[0]?.recordStart ?? plan.warmupMs)
  const trace: LoadTrace | undefined = 'trace' in o && o.trace === true
    ? { windowStartEpochMs: performance.timeOrigin + recordStart0, stepEpochMs: [], endMs: [], latencyMs: [], status: [] }
    : undefined
  /** The slice at time t (-1 in the warm-up). */
  const sliceAt = (t: number): number => {
    for (let k = plan.slices.length - 1; k >= 0; k--) if (t >= t0 + (plan.slices[k]?.start ?? 0)) return k
    return -1
  }
  // Each recorded window: CPU and wchar from its start to its end, added to its target.
  const io = (): { wchar: number, syscw: number } | null => ioCounters('self')
  const timers: NodeJS.Timeout[] = []
  const closers: Array<() => void> = []
  plan.slices.forEach((sl, k) => {
    let at: { cpu: NodeJS.CpuUsage, io: { wchar: number, syscw: number } | null } | undefined
    let closed = false
    timers.push(setTimeout(() => {
      at = { cpu: process.cpuUsage(), io: io() }
      send({ type: 'window-start', target: sl.target, slice: k })
    }, sl.recordStart))
    const close = (): void => {
      if (closed || at == null) return
      closed = true
      const tally = tallies[sl.target] as Tally
      const cpu = process.cpuUsage(at.cpu)
      const w = io()
      tally.windowMs += sl.end - sl.recordStart
      tally.cpuSec += (cpu.user + cpu.system) / 1e6
      tally.wchar = tally.wchar != null && w != null && at.io != null ? tally.wchar + w.wchar - at.io.wchar : null
      tally.syscw = tally.syscw != null && w != null && at.io != null ? tally.syscw + w.syscw - at.io.syscw : null
      send({ type: 'window-end', target: sl.target, slice: k })
    }
    closers.push(close)
    timers.push(setTimeout(close, sl.end))
  })

  // Loop i runs while i < wanted; a step up starts the loops that are not running.
  let wanted = o.concurrency
  const running = new Set<number>()
  const loops: Array<Promise<void>> = []
  const loop = async (i: number): Promise<void> => {
    running.add(i)
    while (i < wanted && performance.now() < lastEnd) {
      const start = performance.now()
      const k = sliceAt(start)
      // In the warm-up the loops share the targets out, so every target is warm.
      const target = k < 0 ? i % targets.length : (plan.slices[k] as Plan['slices'][number]).target
      const r = await request(target)
      const end = performance.now()
      const ke = sliceAt(end)
      const sl = plan.slices[ke]
      if (sl == null) {
        warmupRequests++
      } else if (end <= lastEnd && sl.target === target && end >= t0 + sl.recordStart && end <= t0 + sl.end) {
        const tally = tallies[target] as Tally
        if (trace != null) {
          trace.endMs.push(end - recordStart0)
          trace.latencyMs.push(end - start)
          trace.status.push(r.status)
        }
        if (typeof r.status === 'number' && r.status >= 200 && r.status < 300) {
          tally.latencies.push(end - start)
          tally.okBytes += r.bytes
          tally.written += r.sent ?? 0
          tally.read += r.received ?? 0
          sliceOk[ke] = (sliceOk[ke] ?? 0) + 1
          const sec = Math.floor((end - t0 - sl.recordStart) / 1000)
          if (plan.slices.length === 1 && sec < Math.floor((sl.end - sl.recordStart) / 1000)) perSecond[sec] = (perSecond[sec] ?? 0) + 1
        } else {
          tally.errors[String(r.status)] = (tally.errors[String(r.status)] ?? 0) + 1
        }
      }
      if (typeof r.status === 'string') await new Promise(resolve => setTimeout(resolve, ERROR_BACKOFF_MS))
    }
    running.delete(i)
  }
  const startLoops = (): void => {
    for (let i = 0; i < wanted; i++) if (!running.has(i)) loops.push(loop(i))
  }
  const stepTimers = steps.map(st => setTimeout(() => {
    wanted = st.concurrency
    trace?.stepEpochMs.push(performance.timeOrigin + performance.now())
    startLoops()
  }, recordStart0 - t0 + st.atMs))
  startLoops()
  // Loops started by later steps join the list while the earlier ones run.
  for (let n = 0; n < loops.length || performance.now() < lastEnd;) {
    if (n < loops.length) { await loops[n]; n++ } else await new Promise(resolve => setTimeout(resolve, 50))
  }
  for (const t of stepTimers) clearTimeout(t)
  // The last window's timer may not have run yet when the loops' last answers arrive.
  for (const close of closers) close()
  for (const t of timers) clearTimeout(t)
  agent.destroy()
  const results = tallies.map((tally, i): LoadResult => {
    const values = tally.latencies.values()
    const whole = plan.slices.length === 1 ? (plan.slices[0] as Plan['slices'][number]) : undefined
    return {
      concurrency: o.concurrency,
      windowMs: tally.windowMs,
      ok: values.length,
      rps: tally.windowMs > 0 ? values.length / (tally.windowMs / 1000) : 0,
      latencyMs: summarizeLatencies(values),
      errors: tally.errors,
      errorCount: Object.values(tally.errors).reduce((a, b) => a + b, 0),
      perSecond: whole != null ? Array.from({ length: Math.floor((whole.end - whole.recordStart) / 1000) }, (_, s) => perSecond[s] ?? 0) : [],
      meanResponseBytes: values.length > 0 ? tally.okBytes / values.length : null,
      warmupRequests,
      cpuSec: tally.cpuSec,
      calls: 1 + (targets[i]?.chain.length ?? 0),
      httpSentBytes: tally.written,
      httpReceivedBytes: tally.read,
      wcharBytes: tally.wchar,
      writeCalls: tally.syscw,
      ...(o.samples === true ? { latencies: Array.from(values) } : {}),
      ...(trace != null ? { trace } : {})
    }
  })
  return { targets: results, slices: plan.slices.map((sl, k) => ({ target: sl.target, windowMs: sl.end - sl.recordStart, ok: sliceOk[k] ?? 0 })) }
}

if (process.argv[1] === SELF && process.argv.includes(CHILD_FLAG)) {
  const send = (m: ChildMessage): void => { process.send?.(m) }
  process.once('message', (m: { type: 'run', options: LoadOptions | AlternatingOptions }) => {
    generate(m.options, send).then(
      result => { process.send?.({ type: 'result', result }, () => { process.exit(0) }) },
      (err: unknown) => { process.send?.({ type: 'error', message: err instanceof Error ? err.message : String(err) }, () => { process.exit(1) }) }
    )
  })
}
