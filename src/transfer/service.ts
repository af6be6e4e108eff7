import path from 'node:path'
import { Counter, type Registry } from 'prom-client'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { componentLogger } from '../util/logger.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import type { ClusterLogAccess } from '../clusterlog/index.ts'
import type { RateSetting } from '../config/index.ts'
import { gaugeFn, labelledGaugeFn } from '../metrics/index.ts'
import { manifestId, type Manifest } from './manifest.ts'
import { PieceStore, type StoredModel } from './store.ts'
import { TransferLimits, type LimitState } from './limiter.ts'
import { AutoLimiter, ProbeServer } from './probe.ts'
import { PieceServer, type Throttle } from './piece-protocol.ts'
import { HaveAnnouncer } from './have.ts'
import { Scrubber } from './scrub.ts'
import { SwarmHave } from './swarm-have.ts'
import { SCRUB_RATE_BPS } from './constants.ts'
import { Tracker, TrackerClient } from './tracker.ts'
import { Download, type TransferInfo } from './downloader.ts'
import { modelKind, type ModelRecord } from './kinds.ts'

export interface ModelInfo {
  id: string
  name: string
  size: number
  pieceSize: number
  pieces: number
  /** SHA-256 of the whole file (from the manifest): `model pull --output` checks against it. */
  sha256: string
  addedAt: number | null
  addedBy: string | null
  /** The operator who added it (the cluster-log entry's author); absent for models only on this node. */
  author?: string
  nodesComplete: number
  nodesPartial: number
  local: { havePieces: number, haveBytes: number, complete: boolean, pinned: boolean } | null
}

export interface LimitsInfo {
  upload: LimitState
  download: LimitState
  uploadRateBps: number
  downloadRateBps: number
}

export interface TransferInit {
  dataDir: string
  /** Holds pieces, downloads, serves (node role). */
  node: boolean
  /** Runs the tracker and the speed-probe endpoint (resource role). */
  resource: boolean
  uploadLimit: RateSetting
  downloadLimit: RateSetting
  cacheSize?: number
  /** Bytes/s the background scrub re-hashes held pieces at; 0 = no scrub. @default SCRUB_RATE_BPS */
  scrubRate?: number
  /** How old a piece's last hash may grow before the scrub re-hashes it (0: continuously). @default SCRUB_INTERVAL_MS */
  scrubIntervalMs?: number
}

export interface TransferComponents {
  libp2p: Host
  logger: Logger
  registry: Registry
  clusterLog: () => ClusterLogAccess
  /** Membership: whether a peer is alive (trackers offer only live holders). */
  isLive?: (peerId: string) => boolean
}

/** How long a finished transfer stays listed in status. */
const FINISHED_KEEP_MS = 10 * 60_000

/** A model the user asked for that this daemon cannot serve: not a node, unknown id … */
export class TransferError extends AstradError {
  readonly status: number
  constructor (message: string, code: string, status: number) {
    super(message, code)
    this.name = 'TransferError'
    this.status = status
  }
}

/**
 * Model distribution in one daemon: the piece store, the piece server, have announcements
 * and downloads (node role); the tracker and the probe endpoint (resource role); the rate
 * limits and the cluster-wide cap (every role that moves bytes).
 */
export class TransferService {
  private readonly components: TransferComponents
  private readonly init: TransferInit
  private readonly logger: Logger
  readonly limits: TransferLimits
  readonly store?: PieceStore
  private readonly tracker?: Tracker
  private readonly trackerClient: TrackerClient
  private readonly server?: PieceServer
  private readonly announcer?: HaveAnnouncer
  private readonly autoLimiter?: AutoLimiter
  private readonly probeServer?: ProbeServer
  private readonly scrubber?: Scrubber
  private readonly swarmHave?: SwarmHave
  private readonly downloads = new Map<string, Download>()
  private readonly uploadedBytes: Counter
  private readonly downloadedBytes: Counter
  private readonly pieceFailures: Counter<'reason'>
  private unsubscribe?: () => void
  private started = false

  constructor (components: TransferComponents, init: TransferInit) {
    this.components = components
    this.init = init
    const { libp2p, registry } = components
    this.logger = componentLogger(components.logger, 'transfer')
    // Only the node role moves pieces; other roles have nothing to limit (and nothing to probe).
    this.limits = new TransferLimits(init.node
      ? { upload: init.uploadLimit, download: init.downloadLimit }
      : { upload: 'unlimited', download: 'unlimited' }, { logger: this.logger })
    this.uploadedBytes = new Counter({ name: 'astrad_transfer_uploaded_bytes_total', help: 'Model bytes sent to peers', registers: [registry] })
    this.downloadedBytes = new Counter({ name: 'astrad_transfer_downloaded_bytes_total', help: 'Model bytes received from peers', registers: [registry] })
    this.pieceFailures = new Counter({ name: 'astrad_transfer_piece_failures_total', help: 'Piece fetches that failed, by reason', labelNames: ['reason'], registers: [registry] })
    if (init.resource) {
      this.probeServer = new ProbeServer(libp2p, { logger: this.logger })
      this.tracker = new Tracker({ libp2p, logger: componentLogger(components.logger, 'tracker'), isLive: components.isLive })
    }
    this.trackerClient = new TrackerClient(libp2p, this.tracker)
    if (init.node) {
      const store = this.store = new PieceStore({ logger: componentLogger(components.logger, 'store'), registry }, {
        dir: path.join(init.dataDir, 'models'),
        maxBytes: init.cacheSize
      })
      this.server = new PieceServer({ libp2p, source: { manifest: id => store.get(id)?.manifest, has: (id, i) => store.has(id, i), readPiece: (id, i, o, l) => store.readPiece(id, i, o, l) }, upload: this.uploadThrottle(), logger: this.logger })
      const tracker = this.tracker
      this.announcer = new HaveAnnouncer({
        libp2p,
        logger: this.logger,
        source: {
          held: () => store.list().map(m => ({ id: m.id, have: m.have })),
          bitfield: id => store.get(id)?.have
        },
        local: tracker != null ? (from, have) => { tracker.ingest(from, have) } : undefined
      })
      this.autoLimiter = new AutoLimiter({ libp2p, logger: this.logger }, this.limits)
      this.swarmHave = new SwarmHave({
        libp2p,
        logger: this.logger,
        onHave: (peer, m) => {
          const d = this.downloads.get(m.id)
          if (d == null) return
          try {
            d.peerHave(peer, m.bitfield)
          } catch (err) {
            this.logger.debug({ peer: peer.toString(), model: m.id, err: errorMessage(err) }, 'have message does not fit the manifest')
          }
        }
      })
      const scrubRate = init.scrubRate ?? SCRUB_RATE_BPS
      if (scrubRate > 0) this.scrubber = new Scrubber({ store, logger: componentLogger(components.logger, 'scrub'), registry }, { rateBps: scrubRate, intervalMs: init.scrubIntervalMs })
    }

    gaugeFn(registry, 'astrad_transfer_active', 'Model downloads in progress', () => this.activeTransfers())
    labelledGaugeFn(registry, 'astrad_transfer_limit_bytes_per_second', 'P2P rate limit in force (0 = none)', 'direction', () => {
      const s = this.limits.state()
      return { upload: s.upload.limit ?? 0, download: s.download.limit ?? 0 }
    })
    if (this.server != null) {
      const server = this.server
      gaugeFn(registry, 'astrad_transfer_uploads_active', 'Piece uploads in progress', () => server.stats.active)
      gaugeFn(registry, 'astrad_transfer_uploads_queued', 'Piece requests waiting for an upload slot', () => server.stats.queued)
      gaugeFn(registry, 'astrad_transfer_pieces_served', 'Pieces served to peers since start', () => server.stats.served)
      labelledGaugeFn(registry, 'astrad_transfer_piece_requests_refused', 'Piece requests not served since start, by code (bad request, busy, no piece, timeout …)', 'code', () => server.stats.refused)
    }
    if (this.swarmHave != null) {
      const swarm = this.swarmHave
      labelledGaugeFn(registry, 'astrad_transfer_swarm_have_messages', 'Direct have messages between downloaders since start, by direction (sent, received, rejected)', 'direction', () => ({ ...swarm.stats }))
    }
    if (this.tracker != null) {
      const tracker = this.tracker
      gaugeFn(registry, 'astrad_tracker_announcements', 'Have announcements ingested since start', () => tracker.stats.announcements)
      gaugeFn(registry, 'astrad_tracker_rejected', 'Malformed announcements and tracker requests refused since start', () => tracker.stats.rejected)
      gaugeFn(registry, 'astrad_tracker_queries', 'Tracker queries answered since start', () => tracker.stats.queries)
    }
  }

  private uploadThrottle (): Throttle {
    return {
      take: async (n, signal) => { await this.limits.upload.take(n, signal) },
      record: n => { this.limits.uploaded.add(n); this.uploadedBytes.inc(n) }
    }
  }

  private downloadThrottle (): Throttle {
    return {
      take: async (n, signal) => { await this.limits.download.take(n, signal) },
      record: n => { this.limits.downloaded.add(n); this.downloadedBytes.inc(n) }
    }
  }

  async start (): Promise<void> {
    if (this.started) return
    const { libp2p } = this.components
    if (this.store != null) {
      await this.store.open()
      const announcer = this.announcer!
      this.unsubscribe = this.store.onChange(e => {
        announcer.changed(e.id)
        // A held piece failed its hash (scrub, or a changed file before serving): fetch it again.
        if (e.type === 'rotten') this.repair(e.id)
      })
    }
    await this.tracker?.start()
    await this.probeServer?.start()
    await this.trackerClient.start()
    await this.server?.start()
    await this.swarmHave?.start()
    this.announcer?.start()
    // A new resource (or one restarted with an empty tracker) learns what we hold at once.
    this.trackerClient.onResourceConnect(() => { this.announcer?.announceAll() })
    this.autoLimiter?.start()
    this.scrubber?.start()
    this.started = true
    // A partial model on disk was wanted by someone: resume it.
    for (const m of this.store?.list() ?? []) {
      if (!m.complete) this.startDownload(m.manifest, m.id, '(resumed)')
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    for (const d of this.downloads.values()) d.abort('daemon stopping')
    await Promise.allSettled([...this.downloads.values()].map(async d => { await d.run() }))
    this.autoLimiter?.stop()
    await this.scrubber?.stop()
    this.announcer?.stop()
    this.unsubscribe?.()
    await this.server?.stop()
    await this.swarmHave?.stop()
    this.trackerClient.stop()
    await this.tracker?.stop()
    await this.probeServer?.stop()
    await this.store?.close()
  }

  private requireStore (): PieceStore {
    if (this.store == null) throw new TransferError('this daemon has no node role: it holds no models (use the --rpc of a node)', 'ERR_ROLE', 409)
    return this.store
  }

  /** The model cache size (a `config` notice changes it); undefined = disk watermarks only. */
  setCacheSize (bytes: number | undefined): void {
    this.store?.setMaxBytes(bytes ?? this.init.cacheSize)
  }

  /**
   * `model add`: stores the bytes, records the manifest in the cluster log. `auth`: the signed
   * operator request that asked for it (required where the record lands, unless --insecure).
   */
  async add (source: AsyncIterable<Uint8Array>, size: number, name: string, signal?: AbortSignal, auth?: string): Promise<{ id: string, name: string, size: number, pieceSize: number, pieces: number }> {
    const store = this.requireStore()
    const stored = await store.importModel(source, size, { signal })
    const record: ModelRecord = { manifest: stored.manifest, name, addedAt: Date.now(), addedBy: this.components.libp2p.peerId.toString() }
    const existing = await this.components.clusterLog().get(modelKind, stored.id).catch(() => undefined)
    if (existing?.value == null || existing.deleted) {
      try {
        await this.components.clusterLog().put(modelKind, stored.id, record, { signal, auth })
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_FORBIDDEN') throw new TransferError(`model ${stored.id} is stored on this node but the cluster log refused its record: ${errorMessage(err)}`, 'ERR_FORBIDDEN', 403)
        throw new TransferError(`model ${stored.id} is stored on this node but could not be recorded in the cluster log: ${errorMessage(err)}; run 'model add' again when a resource is reachable`, 'ERR_CLUSTER_LOG', 503)
      }
    }
    this.announcer?.announceNow(stored.id)
    this.logger.info({ model: stored.id, name, size }, 'model added')
    return { id: stored.id, name: existing?.value?.name ?? name, size: stored.manifest.size, pieceSize: stored.manifest.pieceSize, pieces: stored.manifest.pieces.length }
  }

  private async record (id: string): Promise<ModelRecord | undefined> {
    const entry = await this.components.clusterLog().get(modelKind, id)
    if (entry?.value == null || entry.deleted) return undefined
    if (manifestId(entry.value.manifest) !== id) throw new TransferError(`cluster log entry for ${id} holds a manifest with another id`, 'ERR_CORRUPT', 500)
    return entry.value
  }

  /** Starts fetching a model from peers (or joins the fetch in progress). */
  async pull (id: string): Promise<TransferInfo> {
    const store = this.requireStore()
    const running = this.downloads.get(id)
    if (running != null && running.state !== 'failed') return running.info()
    const local = store.get(id)
    const record = await this.record(id).catch((err: unknown) => {
      if (local != null) return undefined
      throw err
    })
    const manifest = record?.manifest ?? local?.manifest
    if (manifest == null) throw new TransferError(`no model ${id} in the cluster (see: astrad model ls)`, 'ERR_NOT_FOUND', 404)
    const download = this.startDownload(manifest, id, record?.name ?? '(unlisted)')
    return download.info()
  }

  /**
   * Fetches again the pieces of a model that rotted. A download of it in progress finishes
   * first (it may have counted the piece as held), then the model is checked again.
   */
  private repair (id: string): void {
    const running = this.downloads.get(id)
    if (running?.state === 'downloading') {
      void running.run().catch(() => {}).finally(() => { if (this.started) this.repair(id) })
      return
    }
    const m = this.store?.get(id)
    if (m == null || m.complete || !this.started) return
    this.logger.info({ model: id, missing: m.manifest.pieces.length - m.have.size }, 'fetching rotten pieces again')
    this.startDownload(m.manifest, id, running?.info().name ?? '(repair)')
  }

  private startDownload (manifest: Manifest, id: string, name: string): Download {
    const store = this.requireStore()
    const download = new Download({
      libp2p: this.components.libp2p,
      store,
      holders: async (mid, pieces, signal) => await this.trackerClient.holders(mid, pieces, { signal }),
      download: this.downloadThrottle(),
      logger: this.logger,
      onPieceFailure: reason => { this.pieceFailures.inc({ reason }) },
      swarm: this.swarmHave != null && this.server != null
        ? { send: (peer, have) => { this.swarmHave!.send(peer, { id, bitfield: have.bytes }) }, requesters: mid => this.server!.recentRequesters(mid) }
        : undefined
    }, manifest, id, name)
    this.downloads.set(id, download)
    download.run().catch((err: unknown) => {
      this.logger.warn({ model: id, err: errorMessage(err) }, 'model download failed')
    }).finally(() => {
      setTimeout(() => { if (this.downloads.get(id) === download) this.downloads.delete(id) }, FINISHED_KEEP_MS).unref()
    })
    return download
  }

  transfer (id: string): TransferInfo | undefined {
    const d = this.downloads.get(id)
    if (d != null) return d.info()
    const m = this.store?.get(id)
    if (m?.complete === true) return completeInfo(m)
    return undefined
  }

  transfers (): TransferInfo[] {
    return [...this.downloads.values()].map(d => d.info())
  }

  activeTransfers (): number {
    let n = 0
    for (const d of this.downloads.values()) if (d.state === 'downloading') n++
    return n
  }

  limitsInfo (): LimitsInfo {
    const s = this.limits.state()
    return { upload: s.upload, download: s.download, uploadRateBps: this.limits.uploaded.rate(), downloadRateBps: this.limits.downloaded.rate() }
  }

  /** Frees this node's copy (unless a replica pins it); `forget` also drops the manifest cluster-wide. */
  async remove (id: string, forget: boolean, auth?: string): Promise<void> {
    const local = this.store?.get(id)
    const replicaPins = local?.pinnedBy.filter(o => o !== 'download') ?? []
    if (replicaPins.length > 0) throw new TransferError(`model ${id} is in use by ${replicaPins.join(', ')}`, 'ERR_PINNED', 409)
    const d = this.downloads.get(id)
    if (d != null) {
      d.abort('removed')
      await d.run().catch(() => {})
      this.downloads.delete(id)
    }
    let found = false
    if (local != null && this.store != null) {
      await this.store.remove(id)
      found = true
    }
    if (forget) {
      const entry = await this.components.clusterLog().get(modelKind, id)
      if (entry != null && !entry.deleted) {
        await this.components.clusterLog().delete(modelKind, id, { auth })
        found = true
      }
    }
    if (!found) throw new TransferError(`no model ${id} on this node${forget ? ' or in the cluster' : ''}`, 'ERR_NOT_FOUND', 404)
  }

  /** Every model the cluster log knows, with holder counts and this node's copy. */
  async models (): Promise<ModelInfo[]> {
    const entries = await this.components.clusterLog().list(modelKind)
    let summary = new Map<string, { complete: number, partial: number }>()
    try {
      summary = new Map((await this.trackerClient.summary(AbortSignal.timeout(3_000))).models.map(m => [m.id, m]))
    } catch (err) {
      this.logger.debug({ err: errorMessage(err) }, 'tracker summary unavailable')
    }
    const out = new Map<string, ModelInfo>()
    for (const e of entries) {
      if (e.value == null || e.deleted) continue
      out.set(e.key, { ...this.info(e.key, e.value.manifest, e.value, summary.get(e.key)), ...(e.author != null ? { author: e.author } : {}) })
    }
    for (const m of this.store?.list() ?? []) {
      if (!out.has(m.id)) out.set(m.id, this.info(m.id, m.manifest, undefined, summary.get(m.id)))
    }
    return [...out.values()].sort((a, b) => (b.addedAt ?? 0) - (a.addedAt ?? 0))
  }

  async model (id: string): Promise<ModelInfo | undefined> {
    return (await this.models()).find(m => m.id === id)
  }

  private info (id: string, manifest: Manifest, record: ModelRecord | undefined, counts: { complete: number, partial: number } | undefined): ModelInfo {
    const local = this.store?.get(id)
    return {
      id,
      name: record?.name ?? '(unlisted)',
      size: manifest.size,
      pieceSize: manifest.pieceSize,
      pieces: manifest.pieces.length,
      sha256: manifest.sha256,
      addedAt: record?.addedAt ?? null,
      addedBy: record?.addedBy ?? null,
      nodesComplete: counts?.complete ?? 0,
      nodesPartial: counts?.partial ?? 0,
      local: local != null ? { havePieces: local.have.size, haveBytes: local.haveBytes, complete: local.complete, pinned: local.pinnedBy.some(o => o !== 'download') } : null
    }
  }

  /** The verified bytes of a complete local model, with its whole-file hash. */
  readModel (id: string): { size: number, sha256: string, stream: AsyncIterable<Uint8Array> } {
    const m = this.requireStore().get(id)
    if (m == null) throw new TransferError(`this node holds no copy of model ${id}`, 'ERR_NOT_FOUND', 404)
    if (!m.complete) throw new TransferError(`this node holds ${m.have.size} of ${m.manifest.pieces.length} pieces of model ${id}`, 'ERR_INCOMPLETE', 409)
    return { size: m.manifest.size, sha256: m.manifest.sha256, stream: this.requireStore().readModel(id) }
  }

  /** A digest of the complete models held (changes when the set changes). */
  modelsDigest (): number {
    let h = 0
    for (const m of this.store?.list() ?? []) {
      if (!m.complete) continue
      h = (h ^ Number.parseInt(m.id.slice(0, 8), 16)) >>> 0
    }
    return h
  }
}

function completeInfo (m: StoredModel): TransferInfo {
  return {
    id: m.id,
    name: '',
    size: m.manifest.size,
    pieces: m.manifest.pieces.length,
    havePieces: m.manifest.pieces.length,
    haveBytes: m.manifest.size,
    rateBps: 0,
    peers: 0,
    state: 'complete',
    startedAt: m.lastUsed,
    etaSeconds: 0,
    phase: 'done',
    failures: 0
  }
}
