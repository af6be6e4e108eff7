import type { Message, TopicValidatorFn } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { Counter, Registry } from 'prom-client'
import { gaugeFn } from '../metrics/index.ts'
import { clientErrorReason } from '../clusterlog/metrics.ts'
import { ProtocolPeers, type Host } from '../p2p/index.ts'
import { PullStreams } from './pull-stream.ts'
import type { Logger } from '../util/logger.ts'
import { errorMessage, LifecycleError } from '../util/errors.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { Trust } from '../trust/index.ts'
import type { MailboxItem, NodeIdentity } from './notice.ts'
import { digestValidator } from './digest-validator.ts'
import type { MailboxServer } from './server.ts'
import { MailboxState, loadState, saveState, type MailboxAction } from './state.ts'
import { decodeDigest, decodePullResponse, encodePullRequest, type Digest, type PullResponse } from './wire.ts'
import { INSECURE_AUTHOR } from '../clusterlog/constants.ts'
import { DIGEST_JITTER_MS, MAILBOX_PROTOCOL, MAILBOX_TOPIC, MAX_PULL_PAGES, PULL_INTERVAL_MS, PULL_TIMEOUT_MS } from './constants.ts'

export interface MailboxPullerComponents {
  libp2p: Host
  logger: Logger
  registry?: Registry
  clock?: Clock
  /** This daemon's own resource mailbox, pulled in-process when the daemon is also a resource. */
  local?: () => MailboxServer | undefined
}

export interface MailboxPullerInit {
  dataDir: string
  self: NodeIdentity
  /** Runs the actions of a page after the state is saved. Must not throw (errors are logged). */
  onActions: (actions: MailboxAction[], state: MailboxState) => void
  pullIntervalMs?: number
  jitterMs?: number
}

/**
 * The node side of the mailbox: pulls from a resource (its own when it is one, else the one
 * that answered last, else any) when a digest shows something newer and every
 * PULL_INTERVAL_MS, hands each page to the MailboxState, saves it, then runs the actions. A
 * resource that fails is replaced by the next one; the cursor is then from another source, so
 * the new resource sends a snapshot and versions keep anything from applying twice.
 */
export class MailboxPuller {
  private readonly components: MailboxPullerComponents
  private readonly init: MailboxPullerInit
  private readonly clock: Clock
  private stateValue?: MailboxState
  private resources?: ProtocolPeers
  private sticky?: PeerId
  private streams: PullStreams
  private session?: Promise<void>
  private again = false
  private seenRevision = 0
  private timer?: NodeJS.Timeout
  private jitterTimer?: NodeJS.Timeout
  private expiryTimer?: NodeJS.Timeout
  private unsubscribeLocal?: () => void
  private controller = new AbortController()
  private running = false
  private readonly errors: Counter<'reason'>
  private readonly pulls: Counter<'result'>
  /** Set on the digest topic unless this daemon's mailbox server set its own (same checks). */
  private readonly validateDigest: TopicValidatorFn

  constructor (components: MailboxPullerComponents, init: MailboxPullerInit) {
    this.components = components
    this.init = init
    this.clock = components.clock ?? systemClock
    this.validateDigest = digestValidator(components.libp2p, () => { this.errors.inc({ reason: 'bad_digest' }) })
    this.streams = new PullStreams(components.libp2p)
    const registers = [components.registry ?? new Registry()]
    this.errors = new Counter({ name: 'astrad_mailbox_pull_errors_total', help: 'Mailbox pulls by this node that failed, by reason', labelNames: ['reason'], registers })
    this.pulls = new Counter({ name: 'astrad_mailbox_node_pulls_total', help: 'Mailbox pull pages received by this node, by mode', labelNames: ['result'], registers })
    gaugeFn(registers[0] as Registry, 'astrad_mailbox_cursor_revision', 'Highest notice revision this node has processed (its heartbeat mailboxCursor)', () => this.stateValue?.revision ?? 0)
  }

  get state (): MailboxState {
    if (this.stateValue == null) throw new LifecycleError('mailbox not started')
    return this.stateValue
  }

  /** Highest notice revision processed; 0 before start. */
  get revision (): number { return this.stateValue?.revision ?? 0 }

  /** Loads the saved state (throws MailboxStateError if it is unusable), then starts pulling. */
  async start (): Promise<void> {
    if (this.running) return
    const { libp2p } = this.components
    this.stateValue = new MailboxState(this.init.self, loadState(this.init.dataDir))
    this.controller = new AbortController()
    this.streams = new PullStreams(libp2p)
    this.running = true
    const resources = this.resources = new ProtocolPeers(libp2p, MAILBOX_PROTOCOL)
    resources.onConnect(() => { if (this.stateValue?.cursor == null) void this.pull() })
    await resources.start()
    const pubsub = libp2p.services.pubsub
    if (!pubsub.topicValidators.has(MAILBOX_TOPIC)) pubsub.topicValidators.set(MAILBOX_TOPIC, this.validateDigest)
    pubsub.subscribe(MAILBOX_TOPIC)
    pubsub.addEventListener('message', this.onMessage)
    this.unsubscribeLocal = this.components.local?.()?.onHead(d => { this.onDigest(d, 0) })
    const interval = this.init.pullIntervalMs ?? PULL_INTERVAL_MS
    this.timer = setInterval(() => { void this.pull() }, interval)
    this.timer.unref()
    // Standing effects saved before a restart are in force again, and preloads cut short resume.
    this.run([{ type: 'standing' }, ...this.stateValue.pendingPreloads()])
    this.scheduleExpiry()
    void this.pull()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.controller.abort()
    clearInterval(this.timer)
    clearTimeout(this.jitterTimer)
    clearTimeout(this.expiryTimer)
    this.unsubscribeLocal?.()
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    if (pubsub.topicValidators.get(MAILBOX_TOPIC) === this.validateDigest) pubsub.topicValidators.delete(MAILBOX_TOPIC)
    try { pubsub.unsubscribe(MAILBOX_TOPIC) } catch {}
    this.resources?.stop()
    await this.session?.catch(() => {})
    await this.streams.close()
  }

  /**
   * Pulls until caught up (one session at a time; a call during a session makes it run once
   * more). Resolves when the session ends, whether or not a resource answered.
   */
  async pull (): Promise<void> {
    if (!this.running) return
    if (this.session != null) {
      this.again = true
      return await this.session
    }
    this.session = (async () => {
      try {
        do {
          this.again = false
          await this.pullOnce()
        } while (this.again && this.running)
      } finally {
        this.session = undefined
      }
    })()
    return await this.session
  }

  /** One catch-up from the first resource that answers. */
  private async pullOnce (): Promise<void> {
    const local = this.components.local?.()
    if (local != null) {
      await this.drain(async cursor => local.pullLocal(this.init.self, cursor), 'local')
      return
    }
    const trust = Trust.of(this.components.libp2p)
    const peers = this.resources?.shuffled() ?? []
    const sticky = this.sticky != null ? peers.find(p => p.equals(this.sticky)) : undefined
    const order = sticky != null ? [sticky, ...peers.filter(p => !p.equals(sticky))] : peers
    for (const peer of order) {
      if (!this.running) return
      // Notices are taken from resources only (their certificate; anyone with --insecure).
      if (!await trust.check(peer, 'resource', MAILBOX_PROTOCOL)) continue
      try {
        // On the pull stream kept open to that resource (one-shot streams if it is older).
        await this.drain(async cursor => await this.streams.pull(peer, encodePullRequest({ node: this.init.self.peerId, cell: this.init.self.cell, cursor }), {
          signal: this.controller.signal, timeoutMs: PULL_TIMEOUT_MS
        }), peer.toString())
        this.sticky = peer
        return
      } catch (err) {
        if (!this.running) return
        const reason = err instanceof PageError ? 'bad_response' : clientErrorReason(err)
        this.errors.inc({ reason })
        this.components.logger.debug({ peer: peer.toString(), reason, err: errorMessage(err) }, 'mailbox pull failed; trying another resource')
      }
    }
  }

  /** Pages through one resource (`from`, for refusal logs) until it has nothing more for us. */
  private async drain (fetch: (cursor: MailboxState['cursor']) => Promise<Uint8Array>, from: string): Promise<void> {
    for (let page = 0; page < MAX_PULL_PAGES && this.running; page++) {
      const state = this.state
      const bytes = await fetch(state.cursor)
      let res: PullResponse
      try {
        res = decodePullResponse(bytes)
      } catch (err) {
        throw new PageError(errorMessage(err))
      }
      if (!this.running) return
      res.items = this.authorized(res.items, from)
      this.pulls.inc({ result: res.mode })
      if (res.revision > this.seenRevision) this.seenRevision = res.revision
      // An empty delta (most pulls) only moves the cursor: kept in memory, not written (a
      // restart re-reads from the saved cursor; versions keep that from applying anything twice).
      const changes = res.items.length > 0 || res.mode === 'snapshot'
      if (!changes) {
        state.receive(res, this.clock.now())
        if (!res.more) return
        continue
      }
      const before = structuredClone(state.toJSON())
      const actions = state.receive(res, this.clock.now())
      try {
        saveState(this.init.dataDir, state.toJSON())
      } catch (err) {
        // Not saved means not applied: put the state back and try again on the next pull.
        this.stateValue = new MailboxState(this.init.self, before)
        this.components.logger.error({ err: errorMessage(err) }, 'mailbox state not saved; notices not applied')
        return
      }
      this.run(actions)
      if (!res.more) return
    }
  }

  /**
   * Items a verified operator wrote: in a secure cluster an item without an author (written
   * around the operator check, or before it existed) is ignored, counted and logged by trust.
   */
  private authorized (items: MailboxItem[], from: string): MailboxItem[] {
    const trust = Trust.of(this.components.libp2p)
    if (!trust.secure) return items
    return items.filter(item => {
      if (item.author != null && item.author !== INSECURE_AUTHOR) return true
      trust.refuse(MAILBOX_PROTOCOL, 'no-author', from, `notice ${item.notice.id} (${item.notice.kind}) was not written by a verified operator; ignored`)
      return false
    })
  }

  /** Marks a preload finished (saved at once so a restart does not fetch it again). */
  settle (id: string): void {
    if (this.stateValue == null) return
    this.stateValue.settle(id)
    try {
      saveState(this.init.dataDir, this.stateValue.toJSON())
    } catch (err) {
      this.components.logger.warn({ err: errorMessage(err) }, 'mailbox state not saved')
    }
  }

  private run (actions: MailboxAction[]): void {
    if (actions.length === 0) return
    try {
      this.init.onActions(actions, this.state)
    } catch (err) {
      this.components.logger.error({ err: errorMessage(err) }, 'mailbox action failed')
    }
    this.scheduleExpiry()
  }

  private scheduleExpiry (): void {
    clearTimeout(this.expiryTimer)
    const next = this.stateValue?.nextExpiry()
    if (next == null || !this.running) return
    // setTimeout holds at most 2^31-1 ms; a far expiry is re-armed when the timer fires.
    const delay = Math.min(Math.max(0, next - this.clock.now()), 2 ** 31 - 1)
    this.expiryTimer = setTimeout(() => {
      const state = this.stateValue
      if (state == null || !this.running) return
      const actions = state.expire(this.clock.now())
      if (actions.length > 0) {
        try { saveState(this.init.dataDir, state.toJSON()) } catch (err) { this.components.logger.warn({ err: errorMessage(err) }, 'mailbox state not saved') }
        this.run(actions)
      } else {
        this.scheduleExpiry()
      }
    }, delay)
    this.expiryTimer.unref()
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== MAILBOX_TOPIC) return
    let d: Digest
    try {
      d = decodeDigest(msg.data)
    } catch {
      this.errors.inc({ reason: 'bad_digest' })
      return
    }
    this.onDigest(d, this.init.jitterMs ?? DIGEST_JITTER_MS)
  }

  /** Pulls (after a random delay that spreads a fleet's pulls) if the digest shows something newer. */
  private onDigest (d: Digest, jitterMs: number): void {
    if (!this.running) return
    const cursor = this.stateValue?.cursor
    const newer = cursor != null && cursor.source === d.source ? d.rev > cursor.rev : d.revision > this.seenRevision || cursor == null
    if (!newer || this.jitterTimer != null) return
    this.jitterTimer = setTimeout(() => {
      this.jitterTimer = undefined
      void this.pull()
    }, Math.floor(Math.random() * jitterMs))
    this.jitterTimer.unref()
  }
}

/** A resource answered with something that is not a pull response. */
class PageError extends Error {}
