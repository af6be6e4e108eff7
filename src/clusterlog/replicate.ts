import type { PeerId } from '@libp2p/interface'
import { type Host, request } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import type { LogEntry } from './store.ts'
import { decodeReplicateResponse, encodeReplicateRequest } from './wire.ts'
import { clientErrorReason, type ClusterLogMetrics } from './metrics.ts'
import { MAX_REPLICATE_RESPONSE_BYTES, REPLICATE_PROTOCOL, REPLICATE_WAIT_MS, UNREPLICATED_WARN_INTERVAL_MS } from './constants.ts'

export interface ReplicatorComponents {
  libp2p: Host
  logger: Logger
  metrics: ClusterLogMetrics
  /** The connected peer resources in random order, `first` leading when connected. */
  peers: (first?: string) => PeerId[]
}

/**
 * The sending half of acknowledged writes: before a resource answers a writer, it pushes the new
 * entry to one peer resource after another until one confirms that it holds the entry durably,
 * within a bounded wait. The peer that confirmed last is asked first next time, so its copy of
 * our origin stays gap-free and a push is one round trip.
 */
export class Replicator {
  private readonly components: ReplicatorComponents
  private readonly waitMs: number
  private preferred?: string
  private lastWarn = 0
  private unwarned = 0

  constructor (components: ReplicatorComponents, waitMs = REPLICATE_WAIT_MS) {
    this.components = components
    this.waitMs = waitMs
  }

  /**
   * How many resources hold `entry` durably: 2 once a peer confirmed it, else 1 (counted, and
   * warned about when peers were known). `signal` (the caller's, or stopping) cuts the wait.
   */
  async confirm (entry: LogEntry, signal: AbortSignal): Promise<number> {
    const { libp2p, logger, metrics } = this.components
    const peers = this.components.peers(this.preferred)
    const payload = encodeReplicateRequest(entry)
    const deadline = Date.now() + this.waitMs
    for (let i = 0; i < peers.length && !signal.aborted; i++) {
      const peer = peers[i] as PeerId
      const left = deadline - Date.now()
      if (left <= 0) break
      try {
        const have = decodeReplicateResponse(await request(libp2p, peer, REPLICATE_PROTOCOL, payload, {
          signal,
          // One stalled peer of several may not use up the whole wait.
          timeoutMs: Math.max(1, Math.floor(left / Math.min(2, peers.length - i))),
          maxResponseBytes: MAX_REPLICATE_RESPONSE_BYTES
        }))
        if (have >= entry.seq) {
          this.preferred = peer.toString()
          return 2
        }
        logger.debug({ peer: peer.toString(), seq: entry.seq, have }, 'peer resource did not take the write')
      } catch (err) {
        if (signal.aborted) break
        metrics.syncErrors.inc({ reason: clientErrorReason(err) })
        logger.debug({ peer: peer.toString(), seq: entry.seq, err: errorMessage(err) }, 'replicate push failed')
      }
      if (this.preferred === peer.toString()) this.preferred = undefined
    }
    metrics.unreplicatedAcks.inc()
    if (peers.length > 0) this.warn(peers.length)
    return 1
  }

  private warn (peers: number): void {
    const now = Date.now()
    if (now - this.lastWarn < UNREPLICATED_WARN_INTERVAL_MS) {
      this.unwarned++
      return
    }
    this.components.logger.warn({ peers, alsoSinceLastWarning: this.unwarned },
      'cluster-log write acknowledged with one copy: no peer resource confirmed it in time (it is lost if this disk dies before replication)')
    this.lastWarn = now
    this.unwarned = 0
  }
}
