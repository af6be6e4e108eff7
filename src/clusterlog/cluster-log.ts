import path from 'node:path'
import type { Message } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Registry } from 'prom-client'
import { type Host, ProtocolPeers, handleRequests, request } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { Trust } from '../trust/index.ts'
import { AstradError, DecodeError, LifecycleError, errorMessage } from '../util/errors.ts'
import { LogStore, peerOf } from './store.ts'
import { Replicator } from './replicate.ts'
import { checkKey, checkKindName, encodeValue, typed, InvalidEntryError, type Entry, type Kind, type WriteOptions, type Written } from './kind.ts'
import {
  checkValue, decodeAccessRequest, decodeHint, decodeReplicateRequest, decodeSyncRequest, decodeSyncResponse, encodeEntryResponse,
  encodeHint, encodeListResponse, encodeLogEntry, encodeObject, encodeReplicateResponse, encodeSyncRequest, encodeSyncResponse,
  encodeWriteResponse
} from './wire.ts'
import { clientErrorReason, createClusterLogMetrics, serverErrorReason, type ClusterLogMetrics, type SyncErrorReason } from './metrics.ts'
import {
  ACCESS_MAX_INBOUND_STREAMS, ACCESS_PROTOCOL, DB_FILE, DEFAULT_CHANGES_LIMIT, INSECURE_AUTHOR, LIST_PAGE_BYTES, LOG_TOPIC,
  MAX_ACCESS_REQUEST_BYTES, MAX_ACCESS_RESPONSE_BYTES, MAX_CHANGES_LIMIT, MAX_HINT_BYTES, MAX_REPLICATE_REQUEST_BYTES,
  MAX_REPLICATE_RESPONSE_BYTES, MAX_SYNC_REQUEST_BYTES, MAX_SYNC_RESPONSE_BYTES, MAX_SYNC_ROUNDS, REPLICATE_MAX_INBOUND_STREAMS,
  REPLICATE_PROTOCOL, REPLICATE_WAIT_MS, SYNC_BATCH_BYTES, SYNC_BATCH_ENTRIES, SYNC_INTERVAL_MS, SYNC_MAX_INBOUND_STREAMS,
  SYNC_PROTOCOL
} from './constants.ts'

export interface ClusterLogComponents {
  libp2p: Host
  logger: Logger
  /** prom-client registry for astrad_clusterlog_* metrics; omitted = not exported. */
  registry?: Registry
}

export interface ClusterLogInit {
  /** The daemon's data dir; the log lives in `<dataDir>/cluster-log.sqlite`. */
  dataDir: string
  /** Anti-entropy period with a random resource peer. @default SYNC_INTERVAL_MS (5 s) */
  syncIntervalMs?: number
  /**
   * How long a write waits for a second resource to confirm it before it is acknowledged with
   * one copy. @default REPLICATE_WAIT_MS (2 s)
   */
  replicateWaitMs?: number
}

/**
 * The replicated cluster log of the resource tier: (kind, key) → JSON value, last-writer-wins
 * by hybrid logical clock, deletes as tombstones, durable before a write resolves (on a second
 * resource too when one is reachable), replicated to every resource (push hint + pull, periodic
 * anti-entropy, catch-up on connect).
 */
export interface ClusterLog {
  start(): Promise<void>
  stop(): Promise<void>
  /**
   * Writes locally (fsynced), announces it, and waits (bounded) until a second resource holds
   * it durably; resolves with the new current entry and how many resources hold it (`replicas`).
   */
  put<T>(kind: Kind<T>, key: string, value: T, options?: WriteOptions): Promise<Written<T>>
  /** Writes a tombstone, acknowledged like put. */
  delete<T>(kind: Kind<T>, key: string, options?: WriteOptions): Promise<Written<T>>
  /** The current entry (a tombstone when deleted), or undefined if never written. */
  get<T>(kind: Kind<T>, key: string): Entry<T> | undefined
  /** Objects of a kind in key order; values that do not match the kind's schema are skipped (logged). */
  list<T>(kind: Kind<T>, options?: { includeDeleted?: boolean }): Array<Entry<T>>
  /** Local change feed: the rev of the newest change. */
  readonly revision: number
  /**
   * This replica's writer id (`<peerId>:<epoch>`): names the space its revs count in (revs
   * survive a restart; a resource that lost its disk gets a new epoch).
   */
  readonly origin: string
  /** Objects changed after `rev`, oldest first, each once at its latest state (a compacted feed). */
  changesSince(rev: number, limit?: number): Array<Entry<unknown>>
  /** Called after every committed change (local or replicated), in rev order. Returns an unsubscribe. */
  onChange(listener: (entry: Entry<unknown>) => void): () => void
}

export function clusterLog (init: ClusterLogInit): (components: ClusterLogComponents) => ClusterLog {
  return (components) => new ClusterLogService(components, init)
}

type Status = 'stopped' | 'starting' | 'started' | 'stopping'

interface Session {
  again: boolean
  done: Promise<void>
}

class ClusterLogService implements ClusterLog {
  private readonly components: ClusterLogComponents
  private readonly dataDir: string
  private readonly syncIntervalMs: number
  private readonly metrics: ClusterLogMetrics
  private readonly replicator: Replicator
  private readonly listeners = new Set<(entry: Entry<unknown>) => void>()
  private readonly sessions = new Map<string, Session>()
  private status: Status = 'stopped'
  private starting?: Promise<void>
  private store?: LogStore
  private resources?: ProtocolPeers
  private controller = new AbortController()
  private timer?: NodeJS.Timeout
  private announcing = false

  constructor (components: ClusterLogComponents, init: ClusterLogInit) {
    this.components = components
    this.dataDir = init.dataDir
    this.syncIntervalMs = init.syncIntervalMs ?? SYNC_INTERVAL_MS
    this.metrics = createClusterLogMetrics(components.registry, {
      entries: () => this.store?.entryCount ?? 0,
      revision: () => this.store?.revision ?? 0
    })
    this.replicator = new Replicator({
      libp2p: components.libp2p,
      logger: components.logger,
      metrics: this.metrics,
      peers: first => this.resources?.shuffled(first) ?? []
    }, init.replicateWaitMs ?? REPLICATE_WAIT_MS)
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  async start (): Promise<void> {
    if (this.status === 'started') return
    if (this.status === 'starting') return await this.starting
    if (this.status === 'stopping') throw new LifecycleError('cluster log is stopping')
    this.status = 'starting'
    this.starting = this.open().then(
      () => { this.status = 'started' },
      (err: unknown) => { this.status = 'stopped'; throw err }
    )
    return await this.starting
  }

  private async open (): Promise<void> {
    const { libp2p, logger } = this.components
    // Gossip subscriptions need a running host; handlers are registered before any dial the
    // daemon makes, so peers learn through identify that we serve the log.
    if (libp2p.status !== 'started') throw new LifecycleError('start libp2p before the cluster log')
    // Opening may fail (corrupt, locked): nothing else is set up yet.
    this.store = LogStore.open({ file: path.join(this.dataDir, DB_FILE), peerId: libp2p.peerId.toString() })
    this.controller = new AbortController()
    try {
      // Every refused or failed inbound request is counted by reason and logged at debug.
      const refused = (count: (reason: SyncErrorReason) => void, what: string) => (err: unknown, peer: PeerId): void => {
        const reason = serverErrorReason(err)
        count(reason)
        logger.debug({ peer: peer.toString(), reason, err: errorMessage(err) }, what)
      }
      const countSync = (reason: SyncErrorReason): void => { this.countSync(reason) }
      await handleRequests(libp2p, SYNC_PROTOCOL, this.serveSync, {
        maxRequestBytes: MAX_SYNC_REQUEST_BYTES,
        maxResponseBytes: MAX_SYNC_RESPONSE_BYTES,
        maxInboundStreams: SYNC_MAX_INBOUND_STREAMS,
        authorize: Trust.guard(libp2p, 'resource', SYNC_PROTOCOL),
        onError: refused(countSync, 'sync request refused')
      })
      await handleRequests(libp2p, REPLICATE_PROTOCOL, this.serveReplicate, {
        maxRequestBytes: MAX_REPLICATE_REQUEST_BYTES,
        maxResponseBytes: MAX_REPLICATE_RESPONSE_BYTES,
        maxInboundStreams: REPLICATE_MAX_INBOUND_STREAMS,
        onError: refused(countSync, 'replicate push refused')
      })
      await handleRequests(libp2p, ACCESS_PROTOCOL, this.serveAccess, {
        maxRequestBytes: MAX_ACCESS_REQUEST_BYTES,
        maxResponseBytes: MAX_ACCESS_RESPONSE_BYTES,
        maxInboundStreams: ACCESS_MAX_INBOUND_STREAMS,
        authorize: Trust.guard(libp2p, 'member', ACCESS_PROTOCOL),
        onError: refused(reason => { this.metrics.accessErrors.inc({ reason }) }, 'cluster-log request refused')
      })
      const pubsub = libp2p.services.pubsub
      pubsub.topicValidators.set(LOG_TOPIC, this.validateHint)
      pubsub.subscribe(LOG_TOPIC)
      pubsub.addEventListener('message', this.onMessage)
      const resources = new ProtocolPeers(libp2p, SYNC_PROTOCOL)
      // A resource that (re)connects may hold writes we missed, and we may hold some of its.
      resources.onConnect(peer => { void this.syncWith(peer) })
      await resources.start()
      this.resources = resources
      this.scheduleAntiEntropy()
      logger.info({ origin: this.store.origin, revision: this.store.revision, entries: this.store.entryCount }, 'cluster log open')
    } catch (err) {
      await this.teardown()
      throw err
    }
  }

  async stop (): Promise<void> {
    if (this.status === 'starting') await this.starting?.catch(() => {})
    if (this.status !== 'started') return
    this.status = 'stopping'
    try {
      await this.teardown()
    } finally {
      this.status = 'stopped'
    }
  }

  private async teardown (): Promise<void> {
    const { libp2p } = this.components
    clearTimeout(this.timer)
    this.timer = undefined
    this.controller.abort()
    const pubsub = libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    if (pubsub.topicValidators.get(LOG_TOPIC) === this.validateHint) pubsub.topicValidators.delete(LOG_TOPIC)
    // Throws when libp2p is already stopped (the daemon may stop it first): nothing to undo then.
    try { pubsub.unsubscribe(LOG_TOPIC) } catch {}
    this.resources?.stop()
    this.resources = undefined
    for (const protocol of [SYNC_PROTOCOL, REPLICATE_PROTOCOL, ACCESS_PROTOCOL]) {
      try { await libp2p.unhandle(protocol) } catch {}
    }
    await Promise.allSettled([...this.sessions.values()].map(async s => { await s.done }))
    this.store?.close()
    this.store = undefined
  }

  private openStore (): LogStore {
    if (this.status !== 'started' || this.store == null || !this.store.isOpen) {
      throw new LifecycleError(`cluster log is ${this.status === 'started' ? 'closed' : this.status}`)
    }
    return this.store
  }

  // ---- local API -----------------------------------------------------------------------------

  async put<T> (kind: Kind<T>, key: string, value: T, options: WriteOptions = {}): Promise<Written<T>> {
    options.signal?.throwIfAborted()
    this.openStore()
    checkKindName(kind.name)
    checkKey(key)
    const encoded = encodeValue(kind, value)
    const author = await this.authorize(options.auth, this.components.libp2p.peerId.toString(), kind.name, key)
    const written = await this.commit(kind.name, key, encoded.text, options.signal, author)
    return { ...written, value: encoded.value }
  }

  async delete<T> (kind: Kind<T>, key: string, options: WriteOptions = {}): Promise<Written<T>> {
    options.signal?.throwIfAborted()
    this.openStore()
    checkKindName(kind.name)
    checkKey(key)
    const author = await this.authorize(options.auth, this.components.libp2p.peerId.toString(), kind.name, key)
    return await this.commit(kind.name, key, undefined, options.signal, author) as Written<T>
  }

  get<T> (kind: Kind<T>, key: string): Entry<T> | undefined {
    const store = this.openStore()
    checkKey(key)
    const entry = store.get(kind.name, key)
    return entry != null ? typed(kind, entry) : undefined
  }

  list<T> (kind: Kind<T>, options: { includeDeleted?: boolean } = {}): Array<Entry<T>> {
    const store = this.openStore()
    const out: Array<Entry<T>> = []
    for (const entry of store.list(kind.name, { includeDeleted: options.includeDeleted })) {
      try {
        out.push(typed(kind, entry))
      } catch (err) {
        if (!(err instanceof DecodeError)) throw err
        this.components.logger.warn({ kind: kind.name, key: entry.key, version: entry.version, err: errorMessage(err) }, 'skipping cluster object that does not match its kind')
      }
    }
    return out
  }

  get revision (): number {
    return this.openStore().revision
  }

  get origin (): string {
    return this.openStore().origin
  }

  changesSince (rev: number, limit = DEFAULT_CHANGES_LIMIT): Array<Entry<unknown>> {
    const store = this.openStore()
    if (!Number.isSafeInteger(rev) || rev < 0) throw new InvalidEntryError(`rev must be a non-negative integer, got ${rev}`)
    if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidEntryError(`limit must be a positive integer, got ${limit}`)
    return store.changesSince(rev, Math.min(limit, MAX_CHANGES_LIMIT))
  }

  onChange (listener: (entry: Entry<unknown>) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /**
   * A local write: durable here, announced to listeners and peer resources, then pushed to a
   * peer resource until one confirms it holds it durably (bounded; see Replicator).
   */
  private async commit (kind: string, key: string, text: string | undefined, signal: AbortSignal | undefined, author: string): Promise<Written<unknown>> {
    const store = this.openStore()
    const entry = store.write(kind, key, text, author)
    const seq = store.highWater(store.origin)
    this.emit([entry])
    this.announce()
    // Read back as held now: a later write to the same key may already have pruned it.
    const logged = store.logEntry(store.origin, seq)
    if (logged == null) throw new AstradError(`cluster log lost its own entry ${seq}`, 'ERR_INTERNAL')
    const stop = this.controller.signal
    const replicas = await this.replicator.confirm(logged, signal != null ? AbortSignal.any([signal, stop]) : stop)
    signal?.throwIfAborted()
    return { ...entry, replicas }
  }

  /**
   * Where a write lands: the operator request `auth`, forwarded by `from` (the peer whose RPC
   * port verified it; ourselves for a local write), must be valid and allow this kind and key
   * (trust's authorizeWrite, which counts and logs a refusal). Returns the author to record.
   */
  private async authorize (auth: string | undefined, from: string, kind: string, key: string): Promise<string> {
    const trust = Trust.of(this.components.libp2p)
    if (!trust.secure) return INSECURE_AUTHOR
    const op = await trust.authorizeWrite(auth, from, kind, key)
    return op?.name ?? INSECURE_AUTHOR
  }

  /**
   * Publishes one hint with our newest seq once the current burst of writes is done (a loop of
   * awaited puts runs in microtasks, before the immediate): the newest seq covers the others.
   */
  private announce (): void {
    if (this.announcing) return
    this.announcing = true
    setImmediate(() => {
      this.announcing = false
      const store = this.store
      if (store == null || !store.isOpen) return
      const seq = store.highWater(store.origin)
      this.components.libp2p.services.pubsub.publish(LOG_TOPIC, encodeHint(store.origin, seq)).catch((err: unknown) => {
        // No resource peer subscribed yet: anti-entropy delivers the write when one appears.
        this.components.logger.debug({ err: errorMessage(err) }, 'log hint not published')
      })
    })
  }

  private emit (changed: Array<Entry<unknown>>): void {
    for (const entry of changed) {
      for (const listener of this.listeners) {
        try {
          listener(entry)
        } catch (err) {
          this.components.logger.error({ kind: entry.kind, key: entry.key, err: errorMessage(err) }, 'cluster-log change listener failed')
        }
      }
    }
  }

  // ---- replication ---------------------------------------------------------------------------

  private countSync (reason: SyncErrorReason): void {
    this.metrics.syncErrors.inc({ reason })
  }

  /** Serves a peer resource's pull: what we hold beyond its version vector, one bounded batch. */
  private readonly serveSync = (bytes: Uint8Array): Uint8Array => {
    const store = this.openStore()
    const have = decodeSyncRequest(bytes)
    const parts: string[] = []
    let size = 0
    let more = false
    for (const entry of store.missing(have)) {
      const text = encodeLogEntry(entry)
      const n = Buffer.byteLength(text) + 1
      if (parts.length >= SYNC_BATCH_ENTRIES || (parts.length > 0 && size + n > SYNC_BATCH_BYTES)) {
        more = true
        break
      }
      parts.push(text)
      size += n
    }
    return encodeSyncResponse(parts, more)
  }

  /**
   * One pull session with a peer at a time; a request for a session already running makes it
   * go round once more when it ends (a hint that arrived meanwhile is not lost).
   */
  private async syncWith (peer: PeerId): Promise<void> {
    const id = peer.toString()
    const running = this.sessions.get(id)
    if (running != null) {
      running.again = true
      return await running.done
    }
    const session: Session = { again: true, done: Promise.resolve() }
    this.sessions.set(id, session)
    session.done = (async () => {
      try {
        while (session.again && !this.controller.signal.aborted) {
          session.again = false
          await this.pull(peer)
        }
      } finally {
        this.sessions.delete(id)
      }
    })()
    return await session.done
  }

  /** Pulls batches from a peer resource until it has nothing more for us (bounded rounds). */
  private async pull (peer: PeerId): Promise<void> {
    const { libp2p, logger } = this.components
    const signal = this.controller.signal
    // Entries are taken from resources only: a peer that merely serves the protocol could
    // otherwise feed us any write under any author.
    if (!await Trust.of(libp2p).check(peer, 'resource', SYNC_PROTOCOL)) return
    for (let round = 0; round < MAX_SYNC_ROUNDS; round++) {
      const store = this.store
      if (store == null || !store.isOpen || signal.aborted) return
      let bytes: Uint8Array
      try {
        bytes = await request(libp2p, peer, SYNC_PROTOCOL, encodeSyncRequest(store.versionVector()), {
          signal, maxResponseBytes: MAX_SYNC_RESPONSE_BYTES
        })
      } catch (err) {
        if (signal.aborted) return
        const reason = clientErrorReason(err)
        this.countSync(reason)
        logger.debug({ peer: peer.toString(), reason, err: errorMessage(err) }, 'sync pull failed')
        return
      }
      let batch
      try {
        batch = decodeSyncResponse(bytes)
      } catch (err) {
        this.countSync('bad_response')
        logger.warn({ peer: peer.toString(), err: errorMessage(err) }, 'sync response refused')
        return
      }
      if (this.store !== store || !store.isOpen || signal.aborted) return
      const result = store.apply(batch.entries)
      for (const r of result.rejected) this.countSync(r.reason)
      if (result.rejected.length > 0) {
        logger.warn({ peer: peer.toString(), rejected: result.rejected.slice(0, 5) }, 'sync entries refused')
      }
      if (result.applied > 0) {
        logger.debug({ peer: peer.toString(), applied: result.applied, changed: result.changed.length, revision: store.revision }, 'sync applied')
      }
      this.emit(result.changed)
      if (!batch.more || result.applied === 0) return
    }
  }

  private scheduleAntiEntropy (): void {
    const delay = Math.round(this.syncIntervalMs * (0.75 + Math.random() * 0.5))
    this.timer = setTimeout(() => {
      if (this.controller.signal.aborted) return
      const peer = this.resources?.shuffled()[0]
      if (peer != null) void this.syncWith(peer)
      this.scheduleAntiEntropy()
    }, delay)
    this.timer.unref()
  }

  /** Hints are published by resources only (their certificate; any peer with --insecure). */
  private readonly validateHint = async (propagationSource: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    try {
      if (msg.data.length > MAX_HINT_BYTES) throw new DecodeError('log hint too large')
      decodeHint(msg.data)
    } catch {
      this.countSync('bad_hint')
      return TopicValidatorResult.Reject
    }
    return await Trust.of(this.components.libp2p).checkAuthor(msg, 'resource', LOG_TOPIC, propagationSource) ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
  }

  /** A push hint: pull at once if we lack the write, from its writer when it is our peer. */
  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== LOG_TOPIC || this.status !== 'started' || this.store == null) return
    let hint
    try {
      hint = decodeHint(msg.data)
    } catch {
      return
    }
    if (hint.seq <= this.store.highWater(hint.origin)) return
    const from = msg.type === 'signed' ? this.resources?.list().find(p => p.equals(msg.from)) : undefined
    const peer = from ?? this.resources?.shuffled()[0]
    if (peer != null) void this.syncWith(peer)
  }

  /**
   * Pushes are taken from peers serving the cluster log that hold the resource role (their
   * certificate, docs/security.md); with --insecure, from any peer serving the log.
   */
  private async mayReplicate (peer: PeerId): Promise<boolean> {
    if (!(this.resources?.list().some(p => p.equals(peer)) ?? false)) return false
    return await Trust.of(this.components.libp2p).check(peer, 'resource', REPLICATE_PROTOCOL)
  }

  /**
   * A peer resource pushes one of its own new entries and waits for us to hold it durably: it is
   * merged like a pulled one (idempotent: one we hold is skipped). If we lack earlier entries of
   * that origin, we pull from the pusher first (bounded). The answer is our high-water mark for
   * the origin, which the pusher compares with the entry's seq.
   */
  private readonly serveReplicate = async (bytes: Uint8Array, peer: PeerId): Promise<Uint8Array> => {
    const store = this.openStore()
    if (!await this.mayReplicate(peer)) throw new AstradError('replicate pushes are taken from cluster-log resources only', 'ERR_FORBIDDEN')
    const entry = decodeReplicateRequest(bytes)
    if (peerOf(entry.origin) !== peer.toString()) throw new DecodeError('replicate request: a resource pushes only its own entries')
    if (entry.seq > store.highWater(entry.origin)) {
      const result = store.apply([entry])
      for (const r of result.rejected) this.countSync(r.reason)
      this.emit(result.changed)
      if (result.rejected.some(r => r.reason === 'gap')) {
        const bound = AbortSignal.any([this.controller.signal, AbortSignal.timeout(REPLICATE_WAIT_MS)])
        await Promise.race([this.syncWith(peer), new Promise(resolve => { bound.addEventListener('abort', resolve, { once: true }) })])
      }
    }
    return encodeReplicateResponse(this.openStore().highWater(entry.origin))
  }

  // ---- remote access -------------------------------------------------------------------------

  /**
   * put/delete/get/list for members. A write carries the operator request that caused it,
   * checked here against the peer that forwards it; reads are open to any member.
   */
  private readonly serveAccess = async (bytes: Uint8Array, peer: PeerId): Promise<Uint8Array> => {
    const store = this.openStore()
    const req = decodeAccessRequest(bytes)
    switch (req.op) {
      case 'put': {
        const text = checkValue(req.value)
        const author = await this.authorize(req.auth, peer.toString(), req.kind, req.key)
        const written = await this.commit(req.kind, req.key, text, undefined, author)
        return encodeWriteResponse(written, written.replicas)
      }
      case 'delete': {
        const author = await this.authorize(req.auth, peer.toString(), req.kind, req.key)
        const written = await this.commit(req.kind, req.key, undefined, undefined, author)
        return encodeWriteResponse(written, written.replicas)
      }
      case 'get':
        return encodeEntryResponse(store.get(req.kind, req.key))
      case 'list': {
        const parts: string[] = []
        let size = 0
        let more = false
        for (const entry of store.scan(req.kind, { includeDeleted: req.includeDeleted, after: req.after })) {
          const text = encodeObject(entry)
          const n = Buffer.byteLength(text) + 1
          if (parts.length >= req.limit || (parts.length > 0 && size + n > LIST_PAGE_BYTES)) {
            more = true
            break
          }
          parts.push(text)
          size += n
        }
        return encodeListResponse(parts, more)
      }
    }
  }
}
