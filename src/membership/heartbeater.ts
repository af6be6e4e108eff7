import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import { type Host, ProtocolPeers, request } from '../p2p/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { errorMessage } from '../util/errors.ts'
import { encodeHeartbeat, heartbeatTopic, type AnnouncedState, type Heartbeat } from './heartbeat.ts'
import { ANNOUNCE_PROTOCOL, ANNOUNCE_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, HEARTBEAT_SHARDS } from './constants.ts'

/** Fixed facts about the daemon, plus a reader for each measured field, read at every beat. */
type Measured = 'cpuUtil' | 'gpuUtil' | 'inflight' | 'ledgerVersion' | 'readyReplicas' | 'modelsDigest' | 'mailboxCursor' |
  'uploadLimit' | 'downloadLimit' | 'uploadRate' | 'downloadRate' | 'transfers'
export type SelfReport = Pick<Heartbeat, 'roles' | 'name' | 'cell' | 'cores' | 'gpus' | 'gpuPerf'> & { [K in Measured]: () => number } & {
  /** Whether the operator cordoned this node (absent: never). */
  cordoned?: () => boolean
}

export interface HeartbeaterComponents {
  libp2p: Host
  logger: Logger
  metrics: Metrics
  clock: Clock
  /** In-process resource role, fed directly (gossipsub does not deliver our own messages). */
  local?: (hb: Heartbeat) => void
}

export interface HeartbeaterInit {
  report: SelfReport
  intervalMs?: number
  shards?: number
}

/**
 * Publishes this daemon's heartbeat every second on `astra/hb/1/<shard>`, and at once when the
 * announced state changes (draining on SIGTERM, left just before exit).
 */
export class Heartbeater {
  private readonly components: HeartbeaterComponents
  private readonly init: HeartbeaterInit
  private readonly incarnation: number
  private seq = 0
  private state: AnnouncedState = 'alive'
  private timer?: NodeJS.Timeout
  /** Connected resources, which confirm `draining`/`left` over ANNOUNCE_PROTOCOL. */
  private readonly resources: ProtocolPeers

  constructor (components: HeartbeaterComponents, init: HeartbeaterInit) {
    this.components = components
    this.init = init
    this.incarnation = components.clock.now()
    this.resources = new ProtocolPeers(components.libp2p, ANNOUNCE_PROTOCOL)
  }

  get announced (): AnnouncedState { return this.state }

  start (): void {
    if (this.timer != null) return
    void this.beat()
    this.timer = setInterval(() => { void this.beat() }, this.init.intervalMs ?? HEARTBEAT_INTERVAL_MS)
    this.resources.start().catch(err => { this.components.logger.warn({ err: errorMessage(err) }, 'cannot track resources for announcements') })
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.resources.stop()
  }

  /**
   * Announces a new state at once (and in every later beat): on gossip, and straight to every
   * connected resource, returning once each confirmed or ANNOUNCE_TIMEOUT_MS passed (never throws).
   */
  async announce (state: AnnouncedState): Promise<void> {
    this.state = state
    const hb = await this.beat()
    const { libp2p, logger } = this.components
    const bytes = encodeHeartbeat(hb)
    await Promise.all(this.resources.list().map(async peer => {
      try {
        await request(libp2p, peer, ANNOUNCE_PROTOCOL, bytes, { timeoutMs: ANNOUNCE_TIMEOUT_MS })
      } catch (err) {
        logger.debug({ err: errorMessage(err), peer: peer.toString(), state }, 'announcement not confirmed')
      }
    }))
  }

  private build (): Heartbeat {
    const r = this.init.report
    return {
      peerId: this.components.libp2p.peerId.toString(),
      incarnation: this.incarnation,
      seq: this.seq++,
      state: this.state,
      cordoned: r.cordoned?.() ?? false,
      roles: r.roles,
      name: r.name,
      cell: r.cell,
      cores: r.cores,
      gpus: r.gpus,
      gpuPerf: r.gpuPerf,
      cpuUtil: r.cpuUtil(),
      gpuUtil: r.gpuUtil(),
      inflight: r.inflight(),
      ledgerVersion: r.ledgerVersion(),
      readyReplicas: r.readyReplicas(),
      modelsDigest: r.modelsDigest(),
      mailboxCursor: r.mailboxCursor(),
      uploadLimit: r.uploadLimit(),
      downloadLimit: r.downloadLimit(),
      uploadRate: r.uploadRate(),
      downloadRate: r.downloadRate(),
      transfers: r.transfers()
    }
  }

  private async beat (): Promise<Heartbeat> {
    const { libp2p, logger, metrics, local } = this.components
    const hb = this.build()
    local?.(hb)
    const topic = heartbeatTopic(hb.peerId, this.init.shards ?? HEARTBEAT_SHARDS)
    try {
      await libp2p.services.pubsub.publish(topic, encodeHeartbeat(hb))
      metrics.heartbeatsSent.inc()
    } catch (err) {
      logger.debug({ err: errorMessage(err), seq: hb.seq }, 'heartbeat not published')
    }
    return hb
  }
}
