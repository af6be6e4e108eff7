import { MAX_LOAD_APPS } from './constants.ts'

/**
 * Requests in flight per app at this scheduler's router (held requests of an app scaled to zero
 * included), as a time average: each sample() gives, per app, the mean number in flight since
 * the previous sample — Ray Serve's "ongoing requests", measured where every request passes.
 */
export class AppLoadMeter {
  private readonly apps = new Map<string, { n: number, area: number, at: number }>()
  private windowStart: number
  private readonly now: () => number

  constructor (now: () => number = () => performance.now()) {
    this.now = now
    this.windowStart = now()
  }

  /** One request of `app` starts; call the returned function once when it ends. */
  begin (app: string): () => void {
    const t = this.now()
    let a = this.apps.get(app)
    if (a == null) this.apps.set(app, a = { n: 0, area: 0, at: t })
    a.area += a.n * (t - a.at)
    a.at = t
    a.n++
    let done = false
    return () => {
      if (done) return
      done = true
      const t2 = this.now()
      a.area += a.n * (t2 - a.at)
      a.at = t2
      a.n--
    }
  }

  /** Requests of `app` in flight right now. */
  current (app: string): number {
    return this.apps.get(app)?.n ?? 0
  }

  /** The mean in flight per app since the last sample (apps idle the whole window are left out). */
  sample (): Map<string, number> {
    const t = this.now()
    const span = Math.max(1, t - this.windowStart)
    const out = new Map<string, number>()
    for (const [app, a] of this.apps) {
      a.area += a.n * (t - a.at)
      a.at = t
      const mean = a.area / span
      a.area = 0
      if (mean > 0 || a.n > 0) out.set(app, Math.max(mean, 0))
      if (a.n === 0) this.apps.delete(app)
    }
    this.windowStart = t
    return out
  }
}

/** What the owner of an app decided, as it publishes it (and `app ls` shows it on any scheduler). */
export interface Decision {
  desired: number
  /** The load the decision saw (requests in flight, summed over the schedulers). */
  load: number
  reason: string
  /** When `desired` last changed (epoch ms). */
  decidedAt: number
}

interface Report {
  at: number
  apps: Map<string, number>
  decisions: Map<string, Decision>
}

/**
 * The latest load report of every scheduler (this one's included): an app's load is the sum of
 * the fresh reports; decisions come from whichever scheduler owns the app.
 */
export class LoadBoard {
  private readonly reports = new Map<string, Report>()
  private readonly staleMs: number

  constructor (staleMs: number) {
    this.staleMs = staleMs
  }

  set (from: string, at: number, apps: Map<string, number>, decisions: Map<string, Decision>): void {
    this.reports.set(from, { at, apps, decisions })
  }

  /** Requests of `app` in flight across the schedulers (the mean over their last second). */
  total (app: string, now: number): number {
    let sum = 0
    for (const [from, r] of this.reports) {
      if (now - r.at > this.staleMs) {
        this.reports.delete(from)
        continue
      }
      sum += r.apps.get(app) ?? 0
    }
    return sum
  }

  /** The freshest published decision for `app`. */
  decision (app: string, now: number): Decision | undefined {
    let best: { at: number, d: Decision } | undefined
    for (const r of this.reports.values()) {
      if (now - r.at > this.staleMs) continue
      const d = r.decisions.get(app)
      if (d != null && (best == null || r.at > best.at)) best = { at: r.at, d }
    }
    return best?.d
  }
}

/** The apps to publish: every loaded one, the most loaded first when there are too many. */
export function topLoads (loads: Map<string, number>): Array<[string, number]> {
  const all = [...loads]
  if (all.length <= MAX_LOAD_APPS) return all
  return all.sort((a, b) => b[1] - a[1]).slice(0, MAX_LOAD_APPS)
}
