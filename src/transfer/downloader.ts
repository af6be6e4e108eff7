import type { PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { Bitfield } from './bitfield.ts'
import { pieceLength, type Manifest } from './manifest.ts'
import { PiecePicker, type PeerHave } from './picker.ts'
import { fetchPiece, type Throttle } from './piece-protocol.ts'
import { RateMeter } from './limiter.ts'
import type { Holders } from './tracker.ts'
import {
  MAX_PEERS_PER_DOWNLOAD, PIPELINE_PER_PEER, TRACKER_REFRESH_MS, PEER_MAX_STRIKES, PEER_REST_MS, NO_SOURCE_TIMEOUT_MS,
  SWARM_HAVE_COALESCE_MS, REQUESTER_MEMORY_MS, REQUEST_AHEAD_FIRST_BYTES, MAX_PENDING_COMMITS
} from './constants.ts'

/** The part of the piece store a download uses. */
export interface DownloadStore {
  addModel: (manifest: Manifest) => Promise<{ have: Bitfield }>
  beginPiece: (id: string, index: number) => {
    write: (chunk: Uint8Array) => Promise<void>
    commit: () => Promise<boolean>
    abort: () => Promise<void>
  }
  pin: (id: string, owner: string) => () => void
}

export interface DownloadComponents {
  libp2p: Host
  store: DownloadStore
  holders: (id: string, pieces: number, signal: AbortSignal) => Promise<Holders>
  download?: Throttle
  logger: Logger
  /** Counts failed piece fetches by reason (hash, timeout, refused, unreachable, stream). */
  onPieceFailure?: (reason: string) => void
  /** Direct have messages to the peers downloading the same model (swarm-have.ts). */
  swarm?: {
    /** Tells one peer what we hold (fire and forget). */
    send: (peer: PeerId, have: Bitfield) => void
    /** Peers that lately asked us for pieces of this model: they are downloading it too. */
    requesters: (id: string) => PeerId[]
  }
}

export type TransferState = 'downloading' | 'complete' | 'failed'

export interface TransferInfo {
  id: string
  name: string
  size: number
  pieces: number
  havePieces: number
  haveBytes: number
  rateBps: number
  peers: number
  state: TransferState
  error?: string
  /** The failure's stable code (ERR_NO_SPACE, ERR_READ_ONLY, ERR_NO_SOURCE …) when it failed. */
  errorCode?: string
  startedAt: number
  etaSeconds: number | null
  phase: 'shuffled' | 'rarest' | 'endgame' | 'done'
  failures: number
}

interface PeerState {
  id: PeerId
  key: string
  have: PeerHave
  serving: Set<number>
  lanes: number
  strikes: number
  restUntil: number
  banned: boolean
  /** Had nothing we need at its last pick; not restarted until the picture changes. */
  idle: boolean
  /** Recent time from a request to its first byte (ms, moving average; undefined until one arrived). */
  firstByteMs?: number
  /** Recent time from a piece's first byte to its last (ms, moving average). */
  pieceMs?: number
}

/**
 * One model being fetched from many peers at once: up to MAX_PEERS_PER_DOWNLOAD peers, each
 * with PIPELINE_PER_PEER requests in flight, pieces chosen by the PiecePicker (shuffled, then
 * rarest first, then endgame duplicates). Every piece is verified by the store before it
 * counts; a peer that sends a bad piece is dropped for the rest of the download, one that
 * times out or fails repeatedly rests, and the piece is fetched elsewhere.
 */
export class Download {
  readonly manifest: Manifest
  readonly id: string
  readonly name: string
  readonly startedAt = Date.now()
  state: TransferState = 'downloading'
  error?: string
  errorCode?: string
  private readonly components: DownloadComponents
  private readonly controller = new AbortController()
  private readonly peers = new Map<string, PeerState>()
  private readonly inflight = new Map<number, Set<AbortController>>()
  /** The rate shown in progress bars and status: the last 5 s. */
  private readonly rate = new RateMeter(5_000)
  private have = new Bitfield(0)
  private picker?: PiecePicker
  private holders: Holders['holders'] = []
  private lastProgress = Date.now()
  private lastError = ''
  private failures = 0
  private wake?: PromiseWithResolvers<void>
  private running?: Promise<void>
  private announceTimer?: NodeJS.Timeout
  /** Every missing piece has been requested once (idle peers were woken for duplicates). */
  private endgame = false
  /** Pieces received and being verified, fsynced and renamed (commit), of every lane. */
  private committing = 0
  private commitDone?: PromiseWithResolvers<void>
  /** Bitfields peers sent us directly (newer than the tracker's), with when. */
  private readonly direct = new Map<string, { peer: PeerId, have: Bitfield, at: number }>()

  constructor (components: DownloadComponents, manifest: Manifest, id: string, name: string) {
    this.components = components
    this.manifest = manifest
    this.id = id
    this.name = name
  }

  /** Starts (once) and resolves when complete; rejects with the reason it failed. */
  run (): Promise<void> {
    this.running ??= this.loop().then(() => {
      this.state = 'complete'
    }, (err: unknown) => {
      this.state = 'failed'
      this.error = errorMessage(err)
      this.errorCode = err instanceof AstradError ? err.code : 'ERR_UNKNOWN'
      throw err
    }).finally(() => {
      this.controller.abort(new AstradError('download finished', 'ERR_ABORTED'))
    })
    return this.running
  }

  abort (reason = 'cancelled'): void {
    this.controller.abort(new AstradError(reason, 'ERR_ABORTED'))
    this.wake?.resolve()
  }

  info (): TransferInfo {
    const pieces = this.manifest.pieces.length
    let haveBytes = 0
    for (const i of this.have.indices()) haveBytes += pieceLength(this.manifest, i)
    const rateBps = this.state === 'downloading' ? this.rate.rate() : 0
    const left = this.manifest.size - haveBytes
    return {
      id: this.id,
      name: this.name,
      size: this.manifest.size,
      pieces,
      havePieces: this.have.size,
      haveBytes,
      rateBps,
      peers: this.activePeers(),
      state: this.state,
      ...(this.error != null ? { error: this.error } : {}),
      ...(this.errorCode != null ? { errorCode: this.errorCode } : {}),
      startedAt: this.startedAt,
      etaSeconds: this.state === 'complete' ? 0 : rateBps > 0 ? Math.ceil(left / rateBps) : null,
      phase: this.state === 'complete' ? 'done' : this.picker?.phase ?? 'shuffled',
      failures: this.failures
    }
  }

  private notify (): void {
    this.wake?.resolve()
  }

  private async loop (): Promise<void> {
    const { store, logger } = this.components
    const held = await store.addModel(this.manifest)
    this.have = held.have.clone()
    const unpin = store.pin(this.id, 'download')
    const signal = this.controller.signal
    try {
      this.picker = new PiecePicker(this.have)
      let nextRefresh = 0
      while (!this.have.complete) {
        signal.throwIfAborted()
        const now = Date.now()
        if (now >= nextRefresh || this.activePeers() === 0) {
          await this.refresh(signal)
          nextRefresh = Date.now() + TRACKER_REFRESH_MS
        }
        this.assignPeers()
        if (this.have.complete) break
        if (Date.now() - this.lastProgress > NO_SOURCE_TIMEOUT_MS) {
          throw new AstradError(this.holders.length === 0
            ? `no reachable peer holds model ${this.id.slice(0, 12)} (waited ${NO_SOURCE_TIMEOUT_MS / 1000} s)`
            : `no progress for ${NO_SOURCE_TIMEOUT_MS / 1000} s; last error: ${this.lastError || 'none'}`, 'ERR_NO_SOURCE')
        }
        this.wake = Promise.withResolvers<void>()
        const timer = setTimeout(() => { this.wake?.resolve() }, this.activePeers() === 0 ? 500 : TRACKER_REFRESH_MS)
        await this.wake.promise
        clearTimeout(timer)
      }
      logger.info({ model: this.id, name: this.name, seconds: (Date.now() - this.startedAt) / 1000, failures: this.failures }, 'model complete')
    } finally {
      unpin()
      clearTimeout(this.announceTimer)
      this.announceTimer = undefined
      for (const set of this.inflight.values()) for (const c of set) c.abort()
    }
  }

  /**
   * A peer told us directly what it holds of this model (it is downloading it too). It becomes
   * a source at once, rather than after the tracker learns it and we next ask (2 s or more).
   * Throws DecodeError if the bitfield does not fit the manifest.
   */
  peerHave (peer: PeerId, bytes: Uint8Array): void {
    if (this.state !== 'downloading') return
    const have = new Bitfield(this.manifest.pieces.length, bytes)
    const key = peer.toString()
    this.direct.set(key, { peer, have, at: Date.now() })
    const holder = this.holders.find(h => h.peer.toString() === key)
    if (holder == null) this.holders.push({ peer, addrs: [], have: have.clone() })
    else if (holder.have !== 'complete') holder.have = union(holder.have, have)
    const p = this.peers.get(key)
    if (p != null && p.have !== 'complete') {
      for (const i of have.indices()) if (!p.have.has(i)) this.picker?.gained(i)
      p.have = union(p.have, have)
    }
    if (p != null) p.idle = false
    this.notify()
  }

  /** Our new pieces, told to the peers downloading the same model (coalesced). */
  private announce (): void {
    if (this.components.swarm == null || this.announceTimer != null) return
    this.announceTimer = setTimeout(() => {
      this.announceTimer = undefined
      const swarm = this.components.swarm
      if (swarm == null) return
      const targets = new Map<string, PeerId>()
      for (const h of this.holders) if (h.have !== 'complete') targets.set(h.peer.toString(), h.peer)
      for (const p of swarm.requesters(this.id)) targets.set(p.toString(), p)
      const have = this.have.clone()
      for (const peer of targets.values()) swarm.send(peer, have)
    }, SWARM_HAVE_COALESCE_MS)
  }

  private activePeers (): number {
    let n = 0
    for (const p of this.peers.values()) if (p.lanes > 0) n++
    return n
  }

  private async refresh (signal: AbortSignal): Promise<void> {
    const { holders, libp2p, logger } = this.components
    let answer: Holders
    try {
      answer = await holders(this.id, this.manifest.pieces.length, AbortSignal.any([signal, AbortSignal.timeout(5_000)]))
    } catch (err) {
      if (signal.aborted) throw err
      this.lastError = `tracker: ${errorMessage(err)}`
      logger.debug({ model: this.id, err: errorMessage(err) }, 'tracker query failed')
      return
    }
    this.holders = answer.holders
    // Peers that told us directly what they hold stay sources until the tracker catches up.
    const cutoff = Date.now() - REQUESTER_MEMORY_MS
    for (const [key, d] of this.direct) {
      if (d.at < cutoff) { this.direct.delete(key); continue }
      const h = this.holders.find(x => x.peer.toString() === key)
      if (h == null) this.holders.push({ peer: d.peer, addrs: [], have: d.have.clone() })
      else if (h.have !== 'complete') h.have = union(h.have, d.have)
    }
    this.picker?.setAvailability(answer.availability)
    // New bitfields: a peer that had nothing for us may have something now.
    for (const p of this.peers.values()) p.idle = false
    for (const h of answer.holders) {
      const known = this.peers.get(h.peer.toString())
      if (known != null) known.have = h.have === 'complete' ? 'complete' : h.have.clone()
      if (h.addrs.length > 0 && libp2p.getConnections(h.peer).length === 0) {
        const addrs = []
        for (const a of h.addrs) { try { addrs.push(multiaddr(a)) } catch {} }
        await libp2p.peerStore.merge(h.peer, { multiaddrs: addrs }).catch(() => {})
      }
    }
  }

  /** Starts lanes on holders until MAX_PEERS_PER_DOWNLOAD peers are busy. */
  private assignPeers (): void {
    const now = Date.now()
    for (const h of this.holders) {
      if (this.activePeers() >= MAX_PEERS_PER_DOWNLOAD) return
      const key = h.peer.toString()
      let p = this.peers.get(key)
      if (p == null) {
        p = { id: h.peer, key, have: h.have, serving: new Set(), lanes: 0, strikes: 0, restUntil: 0, banned: false, idle: false, firstByteMs: undefined, pieceMs: undefined }
        this.peers.set(key, p)
      }
      if (p.banned || p.idle || p.restUntil > now || p.lanes > 0) continue
      for (let i = 0; i < PIPELINE_PER_PEER; i++) {
        p.lanes++
        void this.lane(p).finally(() => {
          p.lanes--
          this.notify()
        })
      }
    }
  }

  /**
   * One request pipeline to a peer. The next piece is asked for before the current one ends:
   * when what is left of it, at the rate it arrives, takes less than REQUEST_AHEAD_FIRST_BYTES
   * times this peer's recent wait for a first byte (half-way before any was measured). The
   * peer then has it queued, its file open and first chunk read, when the current one ends,
   * and the current piece's hash check, fsync and rename run while the next one streams: the
   * connection does not idle for a round trip and a commit between pieces (docs/bench-transfer.md,
   * issue 17 goal 1). At most two pieces per lane are on the wire (the tail of one and the
   * head of the next); received pieces waiting for their commit are bounded per download
   * (MAX_PENDING_COMMITS).
   */
  private async lane (peer: PeerState): Promise<void> {
    const picker = this.picker!
    const signal = this.controller.signal
    const mine = new Set<Promise<void>>()
    /** The previous piece's bytes are all in (or it ended). */
    let previous: Promise<void> | undefined
    try {
      while (!signal.aborted && !this.have.complete && !peer.banned && peer.restUntil <= Date.now()) {
        const piece = picker.next(peer.have, peer.serving)
        if (piece === undefined) {
          // Without this the loop would restart its lanes at once, again and again, and spin
          // the event loop until the next tracker refresh (found by bench:transfer).
          if (peer.serving.size === 0) peer.idle = true
          return
        }
        picker.started(piece)
        // The last missing piece is now requested: idle peers may take endgame duplicates.
        if (!this.endgame && picker.unrequested() === 0) {
          this.endgame = true
          for (const p of this.peers.values()) p.idle = false
          this.notify()
        }
        peer.serving.add(piece)
        const ahead = Promise.withResolvers<void>()
        const received = Promise.withResolvers<void>()
        const job = this.fetchOne(peer, piece, ahead.resolve, received.resolve)
        mine.add(job)
        void job.finally(() => { mine.delete(job) })
        await Promise.race([ahead.promise, job])
        await previous
        previous = Promise.race([received.promise, job])
        while (this.committing >= MAX_PENDING_COMMITS) await (this.commitDone ??= Promise.withResolvers<void>()).promise
      }
    } finally {
      // The lane counts as busy until its last piece is stored or given up.
      await Promise.all(mine)
    }
  }

  /**
   * Fetches, verifies and stores one piece from `peer`; calls `ahead` when the next request
   * should go out (see lane()) and `received` when the bytes are in. Never rejects: a failure
   * is counted, the peer rested or dropped as it deserves, and the piece goes back to the picker.
   */
  private async fetchOne (peer: PeerState, piece: number, ahead: () => void, received: () => void): Promise<void> {
    const { libp2p, store, download, onPieceFailure, logger } = this.components
    const picker = this.picker!
    const signal = this.controller.signal
    const cancel = new AbortController()
    let set = this.inflight.get(piece)
    if (set == null) this.inflight.set(piece, set = new Set())
    set.add(cancel)
    const length = pieceLength(this.manifest, piece)
    let got = 0
    const asked = performance.now()
    let firstAt = 0
    let writer: ReturnType<DownloadStore['beginPiece']> | undefined
    // A peer whose first byte takes longer than a whole piece (a busy or distant peer, a
    // loaded machine) gets the next request at once: waiting for this one's first byte would
    // cap the lane at one piece per wait.
    if (peer.firstByteMs !== undefined && peer.pieceMs !== undefined && peer.pieceMs <= REQUEST_AHEAD_FIRST_BYTES * peer.firstByteMs) ahead()
    try {
      writer = store.beginPiece(this.id, piece)
      const w = writer
      await fetchPiece(libp2p, peer.id, { id: this.id, index: piece, offset: 0, length }, async chunk => { await w.write(chunk) }, {
        signal: AbortSignal.any([signal, cancel.signal]),
        download,
        onBytes: n => {
          this.rate.add(n)
          this.lastProgress = Date.now()
          const t = performance.now()
          if (got === 0) {
            firstAt = t
            const wait = t - asked
            peer.firstByteMs = peer.firstByteMs === undefined ? wait : 0.7 * peer.firstByteMs + 0.3 * wait
          }
          got += n
          const left = length - got
          // Time left at this piece's rate so far (its first chunk alone gives no rate).
          const leftMs = t > firstAt ? left * (t - firstAt) / (got - n) : Infinity
          if (peer.firstByteMs === undefined ? 2 * got >= length : leftMs <= REQUEST_AHEAD_FIRST_BYTES * peer.firstByteMs) ahead()
        }
      })
      ahead()
      received()
      if (firstAt > 0) {
        const ms = performance.now() - firstAt
        peer.pieceMs = peer.pieceMs === undefined ? ms : 0.7 * peer.pieceMs + 0.3 * ms
      }
      let stored: boolean
      this.committing++
      try {
        stored = await w.commit()
      } finally {
        this.committing--
        const done = this.commitDone
        this.commitDone = undefined
        done?.resolve()
      }
      if (stored) {
        this.have.set(piece)
        this.announce()
        // Endgame: the other copies of this piece are now wasted work.
        for (const c of this.inflight.get(piece) ?? []) if (c !== cancel) c.abort()
        this.notify()
      }
      peer.strikes = 0
    } catch (err) {
      ahead()
      received()
      await writer?.abort().catch(() => {})
      if (signal.aborted || cancel.signal.aborted) return
      const code = (err as { code?: string }).code ?? 'ERR_UNKNOWN'
      this.failures++
      // The piece is back in the pool: idle peers that hold it can take it.
      for (const p of this.peers.values()) p.idle = false
      this.lastError = `${peer.key.slice(-8)}: ${errorMessage(err)}`
      if (code === 'ERR_PIECE_HASH') {
        // A peer that serves bytes not matching the manifest is not asked again.
        peer.banned = true
        onPieceFailure?.('hash')
        logger.warn({ model: this.id, piece, peer: peer.key }, 'piece failed verification; peer dropped for this download')
        return
      }
      if (code === 'ERR_NO_SPACE' || code === 'ERR_READ_ONLY' || code === 'ERR_NOT_FOUND' || code === 'ERR_LIFECYCLE') {
        // The store cannot take this model (disk full or read-only, model removed, store
        // closed): stop at the first such write, not at the no-progress timeout (issue 16).
        this.controller.abort(err)
        this.notify()
        return
      }
      onPieceFailure?.(code === 'ERR_TIMEOUT' ? 'timeout' : code === 'ERR_UNREACHABLE' ? 'unreachable' : code === 'ERR_STREAM' ? 'stream' : 'refused')
      if (code === 'ERR_NO_PIECE') {
        // The tracker's view was stale (evicted, removed): stop asking this peer for it.
        if (peer.have === 'complete') peer.have = Bitfield.full(this.manifest.pieces.length)
        peer.have.clear(piece)
      }
      if (code !== 'ERR_NO_PIECE' && ++peer.strikes >= PEER_MAX_STRIKES) peer.restUntil = Date.now() + PEER_REST_MS
      if (code === 'ERR_BUSY' || code === 'ERR_UNREACHABLE') peer.restUntil = Date.now() + (code === 'ERR_BUSY' ? 1_000 : PEER_REST_MS)
      logger.debug({ model: this.id, piece, peer: peer.key, code, err: errorMessage(err) }, 'piece fetch failed; will fetch elsewhere')
    } finally {
      picker.finished(piece)
      peer.serving.delete(piece)
      set.delete(cancel)
      if (set.size === 0) this.inflight.delete(piece)
    }
  }
}

/** The pieces in either bitfield (a new copy). */
function union (a: Bitfield, b: Bitfield): Bitfield {
  const out = a.clone()
  for (const i of b.indices()) out.set(i)
  return out
}
