import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import type { AppRecord } from '../placement/app.ts'
import { MAX_REASON_CHARS } from './constants.ts'
import type { Decision, LoadBoard } from './load.ts'

export interface AutoscalerComponents {
  board: LoadBoard
  clock: Clock
  logger: Logger
  registry?: Registry
}

interface AppScale {
  deployment: string
  desired: number
  load: number
  reason: string
  decidedAt: number
  /** Since when more replicas have been wanted (unset when not). */
  upSince?: number
  /** Since when fewer have been enough, and the most wanted in that window. */
  downSince?: number
  downMax: number
}

function clamp (n: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, n))
}

/**
 * The owner's scaling decision for each autoscaled app it owns (docs/autoscaling.md): the load
 * is the requests in flight for the app at every scheduler's router, averaged over the last
 * second (LoadBoard); the count wanted is ceil(load ÷ targetOngoingRequests) within the bounds.
 * More replicas are taken once they have been wanted for upscaleDelayMs; fewer once for a whole
 * downscaleDelayMs no more were wanted, and then the most wanted in that window (hysteresis: a
 * steady load never flaps). An app at zero with a request waiting scales to one at once. A
 * node's death is not load going away: the load is counted at the routers, where a failed
 * request is retried and still in flight.
 */
export class Autoscaler {
  private readonly components: AutoscalerComponents
  private readonly apps = new Map<string, AppScale>()
  private readonly changes?: Counter<'app' | 'direction'>

  constructor (components: AutoscalerComponents) {
    this.components = components
    if (components.registry != null) {
      const registers = [components.registry]
      const apps = this.apps
      new Gauge({ // eslint-disable-line no-new
        name: 'astrad_autoscale_load',
        help: 'Requests in flight per autoscaled app this scheduler owns, summed over the schedulers (mean over the last second): the load its scaling follows',
        labelNames: ['app'],
        registers,
        collect () {
          this.reset()
          for (const [app, s] of apps) this.set({ app }, s.load)
        }
      })
      new Gauge({ // eslint-disable-line no-new
        name: 'astrad_autoscale_desired_replicas',
        help: 'Replicas the autoscaler wants for each autoscaled app this scheduler owns',
        labelNames: ['app'],
        registers,
        collect () {
          this.reset()
          for (const [app, s] of apps) this.set({ app }, s.desired)
        }
      })
      this.changes = new Counter({ name: 'astrad_autoscale_decisions_total', help: 'Changes of an autoscaled app\'s desired replicas made by this scheduler, by direction', labelNames: ['app', 'direction'], registers })
    }
  }

  /**
   * The replica count an autoscaled app should have now. `current`: its replicas of the current
   * generation placed (loading or ready), the starting point when this scheduler becomes the
   * owner (no jump on a change of owner). `waiting`: requests held here for it (scale from zero).
   */
  desired (record: AppRecord, current: number, waiting = 0): number {
    const a = record.spec.autoscaling
    if (a == null) return record.spec.replicas
    const name = record.spec.name
    const now = this.components.clock.now()
    const deployment = `${record.generation}/${record.deployedAt}`
    let s = this.apps.get(name)
    if (s == null) {
      const start = clamp(current > 0 ? current : record.spec.replicas, a.minReplicas, a.maxReplicas)
      s = { deployment, desired: start, load: 0, reason: `starting at ${start} (bounds ${a.minReplicas}..${a.maxReplicas})`, decidedAt: now, downMax: 0 }
      this.apps.set(name, s)
    } else if (s.deployment !== deployment) {
      // A redeploy may move the bounds: the count stays where it is, within them.
      s.deployment = deployment
      const d = clamp(s.desired, a.minReplicas, a.maxReplicas)
      if (d !== s.desired) this.set(name, s, d, now, `bounds changed to ${a.minReplicas}..${a.maxReplicas}`)
      s.upSince = s.downSince = undefined
    }
    const load = Math.max(this.components.board.total(name, now), waiting)
    s.load = load
    const raw = load <= 0 ? 0 : Math.ceil(load / a.targetOngoingRequests - 1e-9)
    const want = clamp(raw, a.minReplicas, a.maxReplicas)
    const why = (verb: string): string => `load ${load.toFixed(1)} / target ${a.targetOngoingRequests} → ${raw}${raw !== want ? ` (bounds ${a.minReplicas}..${a.maxReplicas})` : ''}: ${verb}`
    if (want > s.desired) {
      s.downSince = undefined
      s.upSince ??= now
      // From zero a request is waiting: no delay (Knative's activator).
      if (s.desired === 0 || now - s.upSince >= a.upscaleDelayMs) {
        this.set(name, s, want, now, why(s.desired === 0 ? 'scale from zero' : `up after ${a.upscaleDelayMs} ms`))
        s.upSince = undefined
      }
    } else if (want < s.desired) {
      s.upSince = undefined
      if (s.downSince == null) {
        s.downSince = now
        s.downMax = want
      } else {
        s.downMax = Math.max(s.downMax, want)
      }
      if (now - s.downSince >= a.downscaleDelayMs) {
        this.set(name, s, s.downMax, now, why(`down after ${a.downscaleDelayMs} ms at most ${s.downMax} wanted`))
        s.downSince = undefined
      }
    } else {
      s.upSince = s.downSince = undefined
    }
    return s.desired
  }

  private set (app: string, s: AppScale, desired: number, now: number, reason: string): void {
    const direction = desired > s.desired ? 'up' : 'down'
    this.components.logger.info({ app, from: s.desired, to: desired, reason }, 'autoscaling')
    this.changes?.inc({ app, direction })
    s.desired = desired
    s.reason = reason.slice(0, MAX_REASON_CHARS)
    s.decidedAt = now
  }

  /** This scheduler's decisions (the apps it owns), to publish and show. */
  decisions (): Map<string, Decision> {
    const out = new Map<string, Decision>()
    for (const [app, s] of this.apps) out.set(app, { desired: s.desired, load: s.load, reason: s.reason, decidedAt: s.decidedAt })
    return out
  }

  decision (app: string): Decision | undefined {
    const s = this.apps.get(app)
    return s != null ? { desired: s.desired, load: s.load, reason: s.reason, decidedAt: s.decidedAt } : undefined
  }

  /** Forgets apps no longer owned here (removed, or another scheduler owns them now). */
  retain (owned: Set<string>): void {
    for (const app of this.apps.keys()) if (!owned.has(app)) this.apps.delete(app)
  }
}
