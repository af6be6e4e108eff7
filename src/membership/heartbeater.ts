import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import type { Host } from '../p2p/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { errorMessage } from '../util/errors.ts'
import { encodeHeartbeat, heartbeatTopic, type AnnouncedState, type Heartbeat } from './heartbeat.ts'
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_SHARDS } from './constants.ts'

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

  constructor (components: HeartbeaterComponents, init: HeartbeaterInit) {
    this.components = components
    this.init = init
    this.incarnation = components.clock.now()
  }

  get announced (): AnnouncedState { return this.state }

  start (): void {
    if (this.timer != null) return
    void this.beat()
    this.timer = setInterval(() => { void this.beat() }, this.init.intervalMs ?? HEARTBEAT_INTERVAL_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Announces a new state at once (and in every later beat). */
  async announce (state: AnnouncedState): Promise<void> {
    this.state = state
    await this.beat()
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

  private async beat (): Promise<void> {
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
  }
}
