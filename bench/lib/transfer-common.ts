// Helpers shared by the transfer benchmark phases: RPC calls with error bodies, whole-machine
// CPU sampling (/proc/stat), rate windows over a sampled byte counter.

import crypto from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'

/** An RPC call that failed with the daemon's `{error, code}` body (or none). */
export class RpcCallError extends Error {
  readonly status: number
  readonly code: string | undefined
  constructor (message: string, status: number, code: string | undefined) {
    super(message)
    this.name = 'RpcCallError'
    this.status = status
    this.code = code
  }
}

export async function rpc<T> (port: number, method: string, route: string, body?: unknown, timeoutMs = 10_000): Promise<{ status: number, body: T }> {
  const res = await fetch(`http://127.0.0.1:${port}${route}`, {
    method,
    signal: AbortSignal.timeout(timeoutMs),
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {})
  })
  const text = await res.text()
  let parsed: unknown
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = text }
  if (!res.ok) {
    const err = parsed as { error?: string, code?: string } | undefined
    throw new RpcCallError(`${method} ${route} on :${port}: HTTP ${res.status} ${err?.code ?? ''} ${err?.error ?? text.slice(0, 300)}`, res.status, err?.code)
  }
  return { status: res.status, body: parsed as T }
}

/** Streams an HTTP body from 127.0.0.1 and returns its size, SHA-256 and a response header. */
export async function hashUrl (port: number, route: string, header: string, timeoutMs: number): Promise<{ status: number, bytes: number, sha256: string, header: string | undefined }> {
  return await new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: route, agent: false, timeout: timeoutMs }, res => {
      const hash = crypto.createHash('sha256')
      let bytes = 0
      res.on('data', (chunk: Buffer) => { hash.update(chunk); bytes += chunk.length })
      res.on('end', () => {
        const h = res.headers[header.toLowerCase()]
        resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest('hex'), header: Array.isArray(h) ? h[0] : h })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error(`GET ${route} on :${port}: no data for ${timeoutMs} ms`)) })
    req.on('error', reject)
  })
}

/** Writes `size` random bytes to `file` and returns their SHA-256 (hex). */
export function writeRandomFile (file: string, size: number): string {
  const hash = crypto.createHash('sha256')
  const block = Buffer.alloc(16 * 1024 * 1024)
  const fd = fs.openSync(file, 'w')
  try {
    let written = 0
    while (written < size) {
      const n = Math.min(block.length, size - written)
      crypto.randomFillSync(block, 0, n)
      const part = block.subarray(0, n)
      fs.writeSync(fd, part)
      hash.update(part)
      written += n
    }
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  return hash.digest('hex')
}

/** Aggregate jiffies of all CPUs: busy and total (from the first line of /proc/stat). */
export function machineCpu (): { busy: number, total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest times are included in user/nice)
  const idle = (v[3] ?? 0) + (v[4] ?? 0)
  const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0)
  return { busy: total - idle, total }
}

/**
 * Samples whole-machine CPU every second while a phase runs. `busyFraction` is the share of all
 * cores busy over the whole phase; `saturatedSeconds` counts seconds with ≥ 95 % busy.
 */
export class CpuSampler {
  private readonly start = machineCpu()
  private readonly startSelf = process.cpuUsage()
  private last = this.start
  private readonly timer: NodeJS.Timeout
  private readonly clockTicks: number
  readonly perSecond: number[] = []

  constructor (clockTicks: number) {
    this.clockTicks = clockTicks
    this.timer = setInterval(() => {
      const cur = machineCpu()
      const dt = cur.total - this.last.total
      if (dt > 0) this.perSecond.push((cur.busy - this.last.busy) / dt)
      this.last = cur
    }, 1_000)
    this.timer.unref()
  }

  /**
   * busyCoreSec: CPU seconds all processes of the machine used; benchCpuSec: this bench
   * process's own (its RPC polling). The caller subtracts its daemons' CPU to see how much
   * other work (other users of the machine) ran during the phase.
   */
  stop (): { busyFraction: number, saturatedSeconds: number, seconds: number, busyCoreSec: number, benchCpuSec: number } {
    clearInterval(this.timer)
    const cur = machineCpu()
    const dt = cur.total - this.start.total
    const self = process.cpuUsage(this.startSelf)
    return {
      busyFraction: dt > 0 ? (cur.busy - this.start.busy) / dt : 0,
      saturatedSeconds: this.perSecond.filter(x => x >= 0.95).length,
      seconds: this.perSecond.length,
      busyCoreSec: (cur.busy - this.start.busy) / this.clockTicks,
      benchCpuSec: (self.user + self.system) / 1e6
    }
  }
}

export interface CounterSample {
  /** ms (performance.now()). */
  t: number
  bytes: number
}

export interface RateWindow {
  startSec: number
  bytes: number
  bytesPerSec: number
  /** bytesPerSec ÷ limit. */
  ratio: number
}

export interface WindowStats {
  windowSec: number
  limit: number
  /** Consecutive windows from the first byte, only those that end before the transfer did. */
  windows: RateWindow[]
  /** Every window of that length starting at a whole second from the first byte. */
  slidingCount: number
  slidingMinRatio: number | null
  slidingMaxRatio: number | null
  /** Share of the consecutive windows within ±5 % of the limit. */
  withinFivePct: number | null
  /** Whole span first byte → last sample: bytes / s ÷ limit. */
  spanRatio: number | null
}

function valueAt (samples: CounterSample[], t: number): number {
  // Linear interpolation between the samples around t (samples sorted by t).
  let lo = samples[0] as CounterSample
  for (const s of samples) {
    if (s.t >= t) {
      if (s.t === lo.t) return s.bytes
      return lo.bytes + (s.bytes - lo.bytes) * (t - lo.t) / (s.t - lo.t)
    }
    lo = s
  }
  return lo.bytes
}

/**
 * Rates of a sampled byte counter in windows of `windowSec`, from the moment the counter first
 * moved until `endT` (the transfer's end or the end of measuring; windows crossing it are
 * dropped, since the rate falls at the end of a transfer).
 */
export function rateWindows (samples: CounterSample[], limit: number, windowSec: number, endT: number): WindowStats {
  const out: WindowStats = { windowSec, limit, windows: [], slidingCount: 0, slidingMinRatio: null, slidingMaxRatio: null, withinFivePct: null, spanRatio: null }
  if (samples.length < 2) return out
  const base = (samples[0] as CounterSample).bytes
  const firstMove = samples.findIndex(s => s.bytes > base)
  if (firstMove < 1) return out
  // The counter moved between the sample before and this one: start at the earlier one.
  const t0 = (samples[firstMove - 1] as CounterSample).t
  const tEnd = Math.min(endT, (samples[samples.length - 1] as CounterSample).t)
  const w = windowSec * 1000
  for (let k = 0; t0 + (k + 1) * w <= tEnd; k++) {
    const a = t0 + k * w
    const bytes = valueAt(samples, a + w) - valueAt(samples, a)
    out.windows.push({ startSec: k * windowSec, bytes, bytesPerSec: bytes / windowSec, ratio: bytes / windowSec / limit })
  }
  const sliding: number[] = []
  for (let a = t0; a + w <= tEnd; a += 1000) sliding.push((valueAt(samples, a + w) - valueAt(samples, a)) / windowSec / limit)
  out.slidingCount = sliding.length
  if (sliding.length > 0) {
    out.slidingMinRatio = Math.min(...sliding)
    out.slidingMaxRatio = Math.max(...sliding)
  }
  if (out.windows.length > 0) out.withinFivePct = out.windows.filter(x => Math.abs(x.ratio - 1) <= 0.05).length / out.windows.length
  if (tEnd > t0) out.spanRatio = (valueAt(samples, tEnd) - valueAt(samples, t0)) / ((tEnd - t0) / 1000) / limit
  return out
}
