import { Counter, Registry } from 'prom-client'
import { gaugeFn } from '../metrics/index.ts'
import type { ClusterLog } from '../clusterlog/index.ts'
import { serverErrorReason } from '../clusterlog/metrics.ts'
import { handleRequests, type Host } from '../p2p/index.ts'
import { Trust } from '../trust/index.ts'
import type { Logger } from '../util/logger.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import type { PeerId } from '@libp2p/interface'
import { handlePullStreams } from './pull-stream.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { inboxKind, noticeKind, type NodeIdentity } from './notice.ts'
import { MailboxIndex } from './memory.ts'
import type { TopicValidatorFn } from '@libp2p/gossipsub'
import { digestValidator } from './digest-validator.ts'
import { decodePullRequest, encodeDigest, encodePullResponse, type Cursor, type Digest } from './wire.ts'
import {
  DIGEST_DEBOUNCE_MS, DIGEST_INTERVAL_MS, MAILBOX_MAX_INBOUND_STREAMS, MAILBOX_PROTOCOL, MAILBOX_STREAM_PROTOCOL, MAILBOX_TOPIC,
  MAX_PULL_REQUEST_BYTES, MAX_PULL_RESPONSE_BYTES
} from './constants.ts'

export interface MailboxServerComponents {
  libp2p: Host
  log: ClusterLog
  logger: Logger
  registry?: Registry
  clock?: Clock
}

export interface MailboxServerInit {
  retentionMs?: number
  digestIntervalMs?: number
  /** Idle pull streams are closed after this (MAILBOX_STREAM_IDLE_MS; tests shorten it). */
  streamIdleMs?: number
  /** Serve only the one-shot `/astra/mailbox/1.0.0` (an older resource; tests and bench baselines). */
  oneShotOnly?: boolean
}

/** Why a pull was refused (label `reason` of astrad_mailbox_refused_total). */
type RefusedReason = 'bad_request' | 'too_large' | 'timeout' | 'refused' | 'stream' | 'streams'

/**
 * The resource side of the mailbox: answers pulls — many per long-lived stream on
 * `/astra/mailbox-pull/1.1.0` (pull-stream.ts), one per stream on `/astra/mailbox/1.0.0` — from the in-memory
 * index (kept current by the cluster log's change feed) and announces its head on
 * `astra/mailbox/1` when it moves and every DIGEST_INTERVAL_MS.
 */
export class MailboxServer {
  private readonly components: MailboxServerComponents
  private readonly init: MailboxServerInit
  private readonly clock: Clock
  private indexValue?: MailboxIndex
  private unsubscribe?: () => void
  private timer?: NodeJS.Timeout
  private debounce?: NodeJS.Timeout
  private gcTimer?: NodeJS.Timeout
  private readonly headListeners = new Set<(d: Digest) => void>()
  private readonly pulls: Counter<'mode'>
  private readonly refused: Counter<'reason'>
  private started = false
  /** Well-formed digests from resources only (digest-validator.ts). */
  private readonly validateDigest: TopicValidatorFn

  constructor (components: MailboxServerComponents, init: MailboxServerInit = {}) {
    this.components = components
    this.validateDigest = digestValidator(components.libp2p, () => { this.refused.inc({ reason: 'bad_request' }) })
    this.init = init
    this.clock = components.clock ?? systemClock
    const registers = [components.registry ?? new Registry()]
    this.pulls = new Counter({ name: 'astrad_mailbox_pulls_total', help: 'Mailbox pulls answered by this resource, by mode (delta or snapshot)', labelNames: ['mode'], registers })
    this.refused = new Counter({ name: 'astrad_mailbox_refused_total', help: 'Mailbox pulls and digests refused (malformed, oversized, timed out), by reason', labelNames: ['reason'], registers })
    gaugeFn(registers[0] as Registry, 'astrad_mailbox_notices', 'Notices held in this resource\'s in-memory mailbox (public and private copies)', () => this.indexValue?.size ?? 0)
  }

  get index (): MailboxIndex {
    if (this.indexValue == null) throw new Error('mailbox server not started')
    return this.indexValue
  }

  /** After the cluster log has started. */
  async start (): Promise<void> {
    if (this.started) return
    const { libp2p, log } = this.components
    const index = new MailboxIndex({ source: log.origin, clock: this.clock, retentionMs: this.init.retentionMs })
    index.load([...log.list(noticeKind, { includeDeleted: true }), ...log.list(inboxKind, { includeDeleted: true })])
    this.indexValue = index
    this.unsubscribe = log.onChange(entry => {
      if (index.apply(entry)) this.headMoved()
    })
    const onError = (err: unknown, peer: PeerId): void => {
      const reason = err instanceof AstradError && err.code === 'ERR_TOO_MANY_STREAMS' ? 'streams' : serverErrorReason(err) as RefusedReason
      this.refused.inc({ reason })
      this.components.logger.debug({ peer: peer.toString(), reason, err: errorMessage(err) }, 'mailbox pull refused')
    }
    await handleRequests(libp2p, MAILBOX_PROTOCOL, (bytes) => this.serve(bytes), {
      // Pulls are reads, open to members (as the cluster log's reads are).
      authorize: Trust.guard(libp2p, 'member', MAILBOX_PROTOCOL),
      maxRequestBytes: MAX_PULL_REQUEST_BYTES,
      maxResponseBytes: MAX_PULL_RESPONSE_BYTES,
      maxInboundStreams: MAILBOX_MAX_INBOUND_STREAMS,
      onError
    })
    if (this.init.oneShotOnly !== true) {
      await handlePullStreams(libp2p, (bytes) => this.serve(bytes), {
        // Checked for every request on the stream, not only when it opens.
        authorize: Trust.guard(libp2p, 'member', MAILBOX_STREAM_PROTOCOL),
        idleMs: this.init.streamIdleMs,
        onError
      })
    }
    const pubsub = libp2p.services.pubsub
    pubsub.topicValidators.set(MAILBOX_TOPIC, this.validateDigest)
    const interval = this.init.digestIntervalMs ?? DIGEST_INTERVAL_MS
    this.timer = setInterval(() => { this.publishDigest() }, interval)
    this.timer.unref()
    this.gcTimer = setInterval(() => {
      if (index.gc() > 0) this.components.logger.debug({ size: index.size }, 'mailbox forgot ended notices')
    }, 60_000)
    this.gcTimer.unref()
    this.started = true
    this.components.logger.info({ notices: index.size, rev: index.rev, revision: index.revision }, 'mailbox serving')
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    clearInterval(this.timer)
    clearInterval(this.gcTimer)
    clearTimeout(this.debounce)
    this.unsubscribe?.()
    const { libp2p } = this.components
    if (libp2p.services.pubsub.topicValidators.get(MAILBOX_TOPIC) === this.validateDigest) libp2p.services.pubsub.topicValidators.delete(MAILBOX_TOPIC)
    try { await libp2p.unhandle(MAILBOX_PROTOCOL) } catch {}
    try { await libp2p.unhandle(MAILBOX_STREAM_PROTOCOL) } catch {}
  }

  /** The head as a digest. */
  digest (): Digest {
    const index = this.index
    return { source: index.source, rev: index.rev, revision: index.revision }
  }

  /** In-process digests (a node role in the same daemon pulls from this server directly). */
  onHead (listener: (d: Digest) => void): () => void {
    this.headListeners.add(listener)
    return () => { this.headListeners.delete(listener) }
  }

  /** A pull answered in-process: the same answer a remote pull gets, as bytes. */
  pullLocal (node: NodeIdentity, cursor: Cursor | null): Uint8Array {
    const answer = this.index.pull(node, cursor)
    this.pulls.inc({ mode: answer.head.mode })
    return encodePullResponse(answer.head, answer.items)
  }

  private serve (bytes: Uint8Array): Uint8Array {
    const req = decodePullRequest(bytes)
    // The node id comes from the request, not the connection: one connection may carry pulls for
    // many simulated nodes (bench:mailbox); a member could read any private mailbox through the
    // log anyway.
    return this.pullLocal({ peerId: req.node, cell: req.cell }, req.cursor)
  }

  private headMoved (): void {
    if (this.debounce != null) return
    this.debounce = setTimeout(() => {
      this.debounce = undefined
      this.publishDigest()
    }, DIGEST_DEBOUNCE_MS)
    this.debounce.unref()
  }

  private publishDigest (): void {
    if (!this.started || this.indexValue == null) return
    const d = this.digest()
    for (const l of this.headListeners) {
      try { l(d) } catch (err) { this.components.logger.warn({ err: errorMessage(err) }, 'mailbox head listener failed') }
    }
    const pubsub = this.components.libp2p.services.pubsub
    if (pubsub.getSubscribers(MAILBOX_TOPIC).length === 0) return
    pubsub.publish(MAILBOX_TOPIC, encodeDigest(d)).catch((err: unknown) => {
      this.components.logger.debug({ err: errorMessage(err) }, 'mailbox digest not published')
    })
  }

}
