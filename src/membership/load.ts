import os from 'node:os'

/**
 * Host CPU utilization from the kernel's per-CPU time counters (/proc/stat through os.cpus()),
 * as the busy fraction since the previous sample.
 */
export class CpuSampler {
  private last = this.read()

  private read (): { busy: number, total: number } {
    let busy = 0
    let total = 0
    for (const c of os.cpus()) {
      const t = c.times
      const all = t.user + t.nice + t.sys + t.idle + t.irq
      total += all
      busy += all - t.idle
    }
    return { busy, total }
  }

  /** Utilization 0..1 since the last call. */
  sample (): number {
    const now = this.read()
    const dt = now.total - this.last.total
    const db = now.busy - this.last.busy
    this.last = now
    if (dt <= 0) return 0
    return Math.max(0, Math.min(1, db / dt))
  }
}

/** Counts requests being served right now (the `inflight` field of heartbeats). */
export class InflightCounter {
  private n = 0
  get value (): number { return this.n }
  /** Marks one request started; call the returned function exactly once when it ends. */
  begin (): () => void {
    this.n++
    let done = false
    return () => { if (!done) { done = true; this.n-- } }
  }
}
