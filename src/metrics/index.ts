import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * One Prometheus registry per daemon (several daemons share a process in integration tests).
 * Names follow `astrad_<area>_<what>_<unit>`; areas add their own metrics to `registry`.
 */
export interface Metrics {
  registry: Registry
  heartbeatsSent: Counter
  heartbeatsReceived: Counter
  heartbeatsDropped: Counter<'reason'>
  digestsPublished: Counter
  digestsReceived: Counter
  digestsDropped: Counter<'reason'>
  viewPulls: Counter<'result'>
  rpcRequests: Counter<'route' | 'code'>
}

export interface MetricsInit {
  /** Include Node's process metrics (cpu, memory, event loop lag); off for in-process tests. */
  processMetrics?: boolean
}

export function createMetrics (init: MetricsInit = {}): Metrics {
  const registry = new Registry()
  if (init.processMetrics === true) collectDefaultMetrics({ register: registry })
  const r = [registry]
  return {
    registry,
    heartbeatsSent: new Counter({ name: 'astrad_membership_heartbeats_sent_total', help: 'Heartbeats this daemon published', registers: r }),
    heartbeatsReceived: new Counter({ name: 'astrad_membership_heartbeats_received_total', help: 'Valid heartbeats ingested by the resource role', registers: r }),
    heartbeatsDropped: new Counter({ name: 'astrad_membership_heartbeats_dropped_total', help: 'Heartbeats dropped, by reason (decode, signer, oversize, role: a role not in the signer\'s certificate)', labelNames: ['reason'], registers: r }),
    digestsPublished: new Counter({ name: 'astrad_membership_digests_published_total', help: 'Online-list change digests published', registers: r }),
    digestsReceived: new Counter({ name: 'astrad_membership_digests_received_total', help: 'Online-list change digests received', registers: r }),
    digestsDropped: new Counter({ name: 'astrad_membership_digests_dropped_total', help: 'Online-list digests or snapshots refused, by reason (decode, unsigned, role: author holds no resource certificate)', labelNames: ['reason'], registers: r }),
    viewPulls: new Counter({ name: 'astrad_membership_view_pulls_total', help: 'Full online-list pulls, by result', labelNames: ['result'], registers: r }),
    rpcRequests: new Counter({ name: 'astrad_rpc_requests_total', help: 'RPC port requests, by route and status code', labelNames: ['route', 'code'], registers: r })
  }
}

/** A gauge whose value is read at scrape time. */
export function gaugeFn (registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({ name, help, registers: [registry], collect () { this.set(read()) } })
}

/** A gauge with one label whose values are read at scrape time (e.g. nodes by state). */
export function labelledGaugeFn (registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): Gauge {
  return new Gauge({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect () {
      for (const [value, n] of Object.entries(read())) this.set({ [label]: value }, n)
    }
  })
}
