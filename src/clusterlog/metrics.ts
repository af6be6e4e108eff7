import { Counter, Gauge, Registry } from 'prom-client'

/** Why a sync exchange, hint or access request was refused or failed (label `reason`). */
export type SyncErrorReason =
  | 'bad_request' // a peer sent a malformed sync request
  | 'too_large' // a request or response over its cap
  | 'bad_response' // a peer answered with a malformed batch
  | 'gap' // a batch skipped entries of an origin
  | 'clock_skew' // an entry stamped too far in the future
  | 'bad_version' // an entry whose version does not match its origin
  | 'bad_hint' // a malformed push hint on the gossip topic
  | 'refused' // the peer answered with an error
  | 'forbidden' // a replicate push from a peer that does not serve the cluster log
  | 'unreachable' // the peer could not be reached
  | 'timeout' // the exchange ran out of time
  | 'stream' // the stream failed otherwise

export interface ClusterLogMetrics {
  syncErrors: Counter<'reason'>
  accessErrors: Counter<'reason'>
  /** Writes acknowledged while only this resource held them (no second resource confirmed in time). */
  unreplicatedAcks: Counter
}

export interface MetricsSource {
  entries: () => number
  revision: () => number
}

/**
 * Cluster-log metrics on the daemon's registry (or a private one when none is given, so the
 * code never branches on "metrics enabled").
 */
export function createClusterLogMetrics (registry: Registry | undefined, source: MetricsSource): ClusterLogMetrics {
  const registers = [registry ?? new Registry()]
  new Gauge({ name: 'astrad_clusterlog_entries', help: 'Log entries held by this resource (all origins)', registers, collect () { this.set(source.entries()) } })
  new Gauge({ name: 'astrad_clusterlog_revision', help: 'Local revision of the cluster log (change feed cursor)', registers, collect () { this.set(source.revision()) } })
  return {
    syncErrors: new Counter({ name: 'astrad_clusterlog_sync_errors_total', help: 'Sync exchanges, entries or hints refused or failed, by reason', labelNames: ['reason'], registers }),
    accessErrors: new Counter({ name: 'astrad_clusterlog_access_errors_total', help: 'Remote put/delete/get/list requests refused, by reason', labelNames: ['reason'], registers }),
    unreplicatedAcks: new Counter({ name: 'astrad_clusterlog_unreplicated_acks_total', help: 'Writes acknowledged with one durable copy (no second resource confirmed in time)', registers })
  }
}

function names (err: unknown): string[] {
  const e = err as { name?: unknown, cause?: { name?: unknown } } | undefined
  return [e?.name, e?.cause?.name].filter((n): n is string => typeof n === 'string')
}

function codeOf (err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code
  return typeof code === 'string' ? code : undefined
}

/** Reason label for an inbound request we could not serve (handleRequests' onError). */
export function serverErrorReason (err: unknown): SyncErrorReason {
  const code = codeOf(err)
  if (names(err).some(n => /DataLength|MessageLength/.test(n)) || code === 'ERR_TOO_LARGE') return 'too_large'
  if (code === 'ERR_DECODE' || code === 'ERR_INVALID_ENTRY') return 'bad_request'
  if (names(err).some(n => n === 'TimeoutError' || n === 'AbortError')) return 'timeout'
  if (code === 'ERR_LIFECYCLE') return 'refused'
  if (code === 'ERR_FORBIDDEN') return 'forbidden'
  return 'stream'
}

/** Reason label for an outbound request() that failed. */
export function clientErrorReason (err: unknown): SyncErrorReason {
  const code = codeOf(err)
  if (names(err).some(n => /DataLength|MessageLength/.test(n))) return 'too_large'
  switch (code) {
    case 'ERR_UNREACHABLE': return 'unreachable'
    case 'ERR_TIMEOUT': return 'timeout'
    case 'ERR_BAD_RESPONSE': return 'bad_response'
    case 'ERR_REQUEST': case undefined: return 'stream'
    default: return 'refused'
  }
}
