import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import type { Metrics } from '../metrics/index.ts'
import { type Host, ProtocolPeers, handleRequests } from '../p2p/index.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { TrustError } from '../trust/index.ts'
import { OnlineList, type NodeRecord, type Thresholds } from './online-list.ts'
import { GossipDecoder, holdsClaimedRoles } from './gossip.ts'
import { encodeRecords, type WireRecord } from './records.ts'
import { serveOnlineList, pullOnlineList } from './snapshot.ts'
import { ChangeListeners, type MembershipView } from './view.ts'
import { decodeHeartbeat, type Heartbeat } from './heartbeat.ts'
import {
  HEARTBEAT_SHARDS, HEARTBEAT_TOPIC_PREFIX, ONLINE_TOPIC, ONLINE_PROTOCOL, TICK_INTERVAL_MS,
  DIGEST_COALESCE_MS, MAX_RECORDS_PER_DIGEST, ANTI_ENTROPY_INTERVAL_MS, ANNOUNCE_PROTOCOL,
  ANNOUNCE_MAX_INBOUND_STREAMS, MAX_HEARTBEAT_BYTES
} from './constants.ts'

export interface ResourceMembershipComponents {
  libp2p: Host
  logger: Logger
  metrics: Metrics
  clock: Clock
}

export interface ResourceMembershipInit {
  shards?: number
  thresholds?: Partial<Thresholds>
}

/**
 * The resource role's membership: ingests heartbeats, runs the state machine, publishes
 * changes on `astra/online/1`, serves the full list on `/astra/online/1.0.0` and pulls peer
 * resources' lists (anti-entropy; a late resource catches up at once).
 */
export class ResourceMembership implements MembershipView {
  readonly list: OnlineList
  private readonly components: ResourceMembershipComponents
  private readonly shards: number
  private readonly decoder: GossipDecoder
  private readonly resources: ProtocolPeers
  private readonly listeners = new ChangeListeners()
  private readonly pending = new Map<string, NodeRecord>()
  private flushTimer?: NodeJS.Timeout
  private tickTimer?: NodeJS.Timeout
  private syncTimer?: NodeJS.Timeout
  private started = false

  constructor (components: ResourceMembershipComponents, init: ResourceMembershipInit = {}) {
    this.components = components
    this.shards = init.shards ?? HEARTBEAT_SHARDS
    this.list = new OnlineList(components.clock, init.thresholds)
    this.decoder = new GossipDecoder(components.metrics, components.libp2p)
    this.resources = new ProtocolPeers(components.libp2p, ONLINE_PROTOCOL)
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const { libp2p, metrics } = this.components
    const pubsub = libp2p.services.pubsub
    await serveOnlineList(libp2p, this.list, this.components.clock, () => { metrics.digestsDropped.inc({ reason: 'snapshot-request' }) })
    await handleRequests(libp2p, ANNOUNCE_PROTOCOL, this.onAnnounce, {
      maxRequestBytes: MAX_HEARTBEAT_BYTES,
      maxInboundStreams: ANNOUNCE_MAX_INBOUND_STREAMS,
      onError: () => { metrics.heartbeatsDropped.inc({ reason: 'announce' }) }
    })
    for (let s = 0; s < this.shards; s++) {
      pubsub.topicValidators.set(`${HEARTBEAT_TOPIC_PREFIX}${s}`, this.decoder.validateHeartbeat)
      pubsub.subscribe(`${HEARTBEAT_TOPIC_PREFIX}${s}`)
    }
    pubsub.topicValidators.set(ONLINE_TOPIC, this.decoder.validateDigest)
    pubsub.subscribe(ONLINE_TOPIC)
    pubsub.addEventListener('message', this.onMessage)
    libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.resources.onConnect(peer => { void this.pullFrom(peer) })
    await this.resources.start()
    this.tickTimer = setInterval(() => { this.queue(this.list.tick()) }, TICK_INTERVAL_MS)
    this.syncTimer = setInterval(() => { void this.antiEntropy() }, ANTI_ENTROPY_INTERVAL_MS)
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    const { libp2p } = this.components
    clearInterval(this.tickTimer)
    clearInterval(this.syncTimer)
    clearTimeout(this.flushTimer)
    libp2p.services.pubsub.removeEventListener('message', this.onMessage)
    libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    this.resources.stop()
    await libp2p.unhandle(ONLINE_PROTOCOL).catch(() => {})
    await libp2p.unhandle(ANNOUNCE_PROTOCOL).catch(() => {})
  }

  onChange (listener: (rec: NodeRecord) => void): () => void {
    return this.listeners.add(listener)
  }

  stalenessMs (): number { return 0 }

  /** A heartbeat from this process's own node role (gossipsub does not deliver to self). */
  ingestLocal (hb: Heartbeat): void {
    if (!this.started) return
    this.components.metrics.heartbeatsReceived.inc()
    this.queue([this.list.ingest(hb)])
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic === ONLINE_TOPIC) {
      const records = this.decoder.digest(msg)
      if (records == null) return
      this.components.metrics.digestsReceived.inc()
      // Already gossiped to everyone on the topic: merge without re-announcing.
      this.mergeAll(records, false)
      return
    }
    if (!msg.topic.startsWith(HEARTBEAT_TOPIC_PREFIX)) return
    const hb = this.decoder.heartbeat(msg)
    if (hb == null) return
    this.components.metrics.heartbeatsReceived.inc()
    this.queue([this.list.ingest(hb)])
  }

  /**
   * A node's `draining`/`left` beat sent straight to us: taken like a gossiped one, and answered
   * (empty) as the confirmation. The connection's Noise handshake proved the sender: a daemon
   * announces only for itself, and only the roles its certificate grants (as on gossip).
   */
  private readonly onAnnounce = async (req: Uint8Array, peer: PeerId): Promise<Uint8Array> => {
    const hb = decodeHeartbeat(req)
    if (hb.peerId !== peer.toString()) throw new AstradError('a node announces only for itself', 'ERR_FORBIDDEN')
    if (!await holdsClaimedRoles(this.components.libp2p, peer, hb, ANNOUNCE_PROTOCOL)) throw new TrustError(`${ANNOUNCE_PROTOCOL}: refused; the announcement claims roles this peer's certificate does not grant`, 'role')
    this.components.metrics.heartbeatsReceived.inc()
    this.queue([this.list.ingest(hb)])
    return new Uint8Array(0)
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.queue([this.list.disconnected(evt.detail.toString())])
  }

  private mergeAll (records: WireRecord[], announce: boolean): void {
    const changed = records.map(r => this.list.merge(r))
    if (announce) {
      this.queue(changed)
    } else {
      for (const c of changed) if (c != null) this.listeners.emit(c)
    }
  }

  /** Announces changes: local listeners at once, gossip after a short coalescing delay. */
  private queue (changes: Array<NodeRecord | undefined>): void {
    let any = false
    for (const c of changes) {
      if (c == null) continue
      any = true
      this.pending.set(c.hb.peerId, c)
      this.listeners.emit(c)
      this.components.logger.info({ peer: c.hb.peerId, node: c.hb.name, state: c.state }, 'node state')
    }
    if (any && this.flushTimer == null) {
      this.flushTimer = setTimeout(() => { void this.flush() }, DIGEST_COALESCE_MS)
    }
  }

  private async flush (): Promise<void> {
    this.flushTimer = undefined
    const records = [...this.pending.values()]
    this.pending.clear()
    const now = this.components.clock.now()
    for (let i = 0; i < records.length; i += MAX_RECORDS_PER_DIGEST) {
      try {
        await this.components.libp2p.services.pubsub.publish(ONLINE_TOPIC, encodeRecords(records.slice(i, i + MAX_RECORDS_PER_DIGEST), now))
        this.components.metrics.digestsPublished.inc()
      } catch (err) {
        this.components.logger.debug({ err: errorMessage(err) }, 'digest not published')
      }
    }
  }

  private async antiEntropy (): Promise<void> {
    const peer = this.resources.shuffled()[0]
    if (peer != null) await this.pullFrom(peer)
  }

  private async pullFrom (peer: PeerId): Promise<void> {
    if (!this.started) return
    const { libp2p, metrics, logger } = this.components
    try {
      const records = await pullOnlineList(libp2p, [peer])
      metrics.viewPulls.inc({ result: 'ok' })
      // What a peer resource knew and we did not: announce it, our subscribers may lack it too.
      this.mergeAll(records, true)
    } catch (err) {
      metrics.viewPulls.inc({ result: 'error' })
      logger.debug({ peer: peer.toString(), err: errorMessage(err) }, 'anti-entropy pull failed')
    }
  }
}
