import type { Metrics } from '@libp2p/interface'

/**
 * libp2p's metrics hook, used for one thing: its connection upgrader counts every connection
 * that failed after TCP connected and before it was usable (private-network key, protocol
 * negotiation, Noise, muxer, timeouts, refusals) under two counter groups keyed by error name.
 * This reports each of those to `onFailure`, so a stranger knocking without the cluster secret is
 * counted and logged (astrad_trust_handshake_failures_total). Every other metric is a no-op.
 */
export function upgradeErrorMetrics (onFailure: (direction: 'inbound' | 'outbound', reason: string) => void): () => Metrics {
  const noop = (): void => {}
  const stopTimer = (): (() => void) => noop
  const metric = { update: noop, increment: noop, decrement: noop, reset: noop, observe: noop, timer: stopTimer }
  const failures = (direction: 'inbound' | 'outbound') => ({
    ...metric,
    increment: (values: Record<string, number | true>) => {
      for (const reason of Object.keys(values)) onFailure(direction, reason)
    }
  })
  const group = (name: string): unknown => {
    if (name === 'libp2p_connection_manager_dials_inbound_errors_total') return failures('inbound')
    if (name === 'libp2p_connection_manager_dials_outbound_errors_total') return failures('outbound')
    return metric
  }
  const metrics = {
    trackMultiaddrConnection: noop,
    trackProtocolStream: noop,
    registerMetric: () => metric,
    registerMetricGroup: group,
    registerCounter: () => metric,
    registerCounterGroup: group,
    registerHistogram: () => metric,
    registerHistogramGroup: () => metric,
    registerSummary: () => metric,
    registerSummaryGroup: () => metric,
    traceFunction: (_name: string, fn: unknown) => fn,
    createTrace: () => undefined
  }
  return () => metrics as unknown as Metrics
}
