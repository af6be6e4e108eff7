import type { Message } from '@libp2p/gossipsub'
import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import type { Metrics } from '../metrics/index.ts'
import { type Host, ProtocolPeers } from '../p2p/index.ts'
import { errorMessage } from '../util/errors.ts'
import { OnlineList, type NodeRecord } from './online-list.ts'
import { GossipDecoder } from './gossip.ts'
import type { WireRecord } from './records.ts'
import { pullOnlineList } from './snapshot.ts'
import { ChangeListeners, type MembershipView } from './view.ts'
import { ONLINE_TOPIC, ONLINE_PROTOCOL, VIEW_PULL_INTERVAL_MS } from './constants.ts'

export interface SchedulerMembershipComponents {
  libp2p: Host
  logger: Logger
  metrics: Metrics
  clock: Clock
}

/**
 * A scheduler's view of the cluster in a process without the resource role: pushed change
 * digests from `astra/online/1` at once, plus a full pull from a resource every 3 s (the
 * article's period), which also refreshes load figures for routing weights.
 */
export class SchedulerMembership implements MembershipView {
  readonly list: OnlineList
  private readonly components: SchedulerMembershipComponents
  private readonly decoder: GossipDecoder
  private readonly resources: ProtocolPeers
  private readonly listeners = new ChangeListeners()
  private timer?: NodeJS.Timeout
  private lastSyncAt = Number.NEGATIVE_INFINITY
  private pulling = false
  private started = false

  constructor (components: SchedulerMembershipComponents) {
    this.components = components
    this.list = new OnlineList(components.clock)
    this.decoder = new GossipDecoder(components.metrics, components.libp2p)
    this.resources = new ProtocolPeers(components.libp2p, ONLINE_PROTOCOL)
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.topicValidators.set(ONLINE_TOPIC, this.decoder.validateDigest)
    pubsub.subscribe(ONLINE_TOPIC)
    pubsub.addEventListener('message', this.onMessage)
    this.resources.onConnect(() => { void this.pull() })
    await this.resources.start()
    this.timer = setInterval(() => { void this.pull() }, VIEW_PULL_INTERVAL_MS)
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    clearInterval(this.timer)
    this.components.libp2p.services.pubsub.removeEventListener('message', this.onMessage)
    this.resources.stop()
  }

  onChange (listener: (rec: NodeRecord) => void): () => void {
    return this.listeners.add(listener)
  }

  stalenessMs (): number {
    return Math.max(0, this.components.clock.now() - this.lastSyncAt)
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    if (evt.detail.topic !== ONLINE_TOPIC) return
    const records = this.decoder.digest(evt.detail)
    if (records == null) return
    this.components.metrics.digestsReceived.inc()
    this.mergeAll(records)
  }

  private mergeAll (records: WireRecord[]): void {
    for (const r of records) {
      const c = this.list.merge(r)
      if (c != null) this.listeners.emit(c)
    }
  }

  /** One full pull; overlapping calls are skipped. */
  async pull (): Promise<void> {
    if (this.pulling || !this.started) return
    this.pulling = true
    const { libp2p, metrics, logger, clock } = this.components
    try {
      const records = await pullOnlineList(libp2p, this.resources.shuffled())
      this.mergeAll(records)
      this.list.forget()
      this.lastSyncAt = clock.now()
      metrics.viewPulls.inc({ result: 'ok' })
    } catch (err) {
      metrics.viewPulls.inc({ result: 'error' })
      logger.debug({ err: errorMessage(err) }, 'online list pull failed')
    } finally {
      this.pulling = false
    }
  }
}
