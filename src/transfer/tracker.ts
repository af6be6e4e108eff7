import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { z } from 'zod'
import { type Host, ProtocolPeers, handleRequests, request } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { AstradError, DecodeError, RequestError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { Bitfield } from './bitfield.ts'
import { decodeHave, type Have } from './have.ts'
import {
  HAVE_TOPIC, HAVE_EXPIRY_MS, MAX_HAVE_BYTES, TRACKER_PROTOCOL, TRACKER_HOLDERS, MAX_TRACKER_REQUEST_BYTES,
  MAX_TRACKER_RESPONSE_BYTES, MAX_PIECES
} from './constants.ts'

/**
 * The tracker (resource role): who holds which pieces of which model, learnt from signed have
 * announcements, and answered over `/astra/tracker/1.0.0`.
 *
 * "Who has pieces of X" returns a random subset of live holders, weighted by how much rare
 * content each holds (the sum over its pieces of 1 / holders of that piece): holders of rare
 * pieces are offered more often, and a thousand downloaders asking at once get different
 * subsets, so no single seed is asked by everyone. Availability counts come with the answer
 * for rarest-first picking.
 */

interface Holding {
  incarnation: number
  seq: number
  /** null = complete. */
  have: Bitfield | null
  updated: number
}

interface ModelHolders {
  pieces: number
  holders: Map<string, Holding>
  /** Cached availability and weights, recomputed when `dirty`. */
  dirty: boolean
  availability: Uint16Array
  weights: Map<string, number>
  refreshedAt: number
}

export interface HolderInfo {
  peer: string
  addrs: string[]
  /** Base64 bitfield, null = complete. */
  have: string | null
}

export interface HoldersAnswer {
  pieces: number
  holders: HolderInfo[]
  /** Base64 of big-endian u16 holder counts per piece (saturating). */
  availability: string
}

export interface TrackerSummary {
  models: Array<{ id: string, complete: number, partial: number }>
}

const holdersRequest = z.object({
  op: z.literal('holders'),
  id: z.string().regex(/^[0-9a-f]{64}$/),
  limit: z.number().int().min(1).max(100).optional()
}).strict()
const summaryRequest = z.object({ op: z.literal('summary') }).strict()
const trackerRequest = z.union([holdersRequest, summaryRequest])

export interface TrackerComponents {
  libp2p: Host
  logger: Logger
  clock?: Clock
  /** Whether a peer is a live member (not dead or gone); others are never offered as holders. */
  isLive?: (peerId: string) => boolean
}

export class Tracker {
  private readonly components: TrackerComponents
  private readonly clock: Clock
  private readonly models = new Map<string, ModelHolders>()
  private readonly decoded = new WeakMap<Uint8Array, Have>()
  private sweepTimer?: NodeJS.Timeout
  private started = false
  readonly stats = { announcements: 0, rejected: 0, queries: 0 }

  constructor (components: TrackerComponents) {
    this.components = components
    this.clock = components.clock ?? systemClock
  }

  async start (): Promise<void> {
    if (this.started) return
    const { libp2p } = this.components
    const pubsub = libp2p.services.pubsub
    pubsub.topicValidators.set(HAVE_TOPIC, this.validate)
    pubsub.subscribe(HAVE_TOPIC)
    pubsub.addEventListener('message', this.onMessage)
    await handleRequests(libp2p, TRACKER_PROTOCOL, async (req, peer) => this.answer(req, peer), {
      maxRequestBytes: MAX_TRACKER_REQUEST_BYTES,
      maxResponseBytes: MAX_TRACKER_RESPONSE_BYTES,
      authorize: Trust.guard(libp2p, 'member', TRACKER_PROTOCOL),
      onError: () => { this.stats.rejected++ }
    })
    this.sweepTimer = setInterval(() => { this.sweep() }, 5_000)
    this.sweepTimer.unref()
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    clearInterval(this.sweepTimer)
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.unsubscribe(HAVE_TOPIC)
    pubsub.topicValidators.delete(HAVE_TOPIC)
    await this.components.libp2p.unhandle(TRACKER_PROTOCOL).catch(() => {})
  }

  /**
   * A have announcement is signed by its holder (StrictSign `from`), who speaks only for itself
   * (it is recorded under `from`) and must hold the node role: only nodes hold models.
   */
  private readonly validate = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    if (msg.type !== 'signed' || msg.data.length > MAX_HAVE_BYTES) {
      this.stats.rejected++
      return TopicValidatorResult.Reject
    }
    let have: Have
    try {
      have = decodeHave(msg.data)
    } catch {
      this.stats.rejected++
      return TopicValidatorResult.Reject
    }
    if (!await Trust.of(this.components.libp2p).check(msg.from, 'node', HAVE_TOPIC, peer)) {
      this.stats.rejected++
      return TopicValidatorResult.Reject
    }
    this.decoded.set(msg.data, have)
    return TopicValidatorResult.Accept
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== HAVE_TOPIC || msg.type !== 'signed') return
    const have = this.decoded.get(msg.data)
    if (have != null) this.ingest(msg.from.toString(), have)
  }

  /** Records one announcement (from gossip, or from this process's own node role). */
  ingest (peer: string, h: Have): void {
    this.stats.announcements++
    let model = this.models.get(h.id)
    const current = model?.holders.get(peer)
    if (current != null && (h.incarnation < current.incarnation || (h.incarnation === current.incarnation && h.seq <= current.seq))) return
    if (h.have === undefined) {
      if (model?.holders.delete(peer) === true) model.dirty = true
      if (model?.holders.size === 0) this.models.delete(h.id)
      return
    }
    if (model != null && model.pieces !== h.pieces) {
      // The id is a hash of the manifest, so a different piece count is a lie or a bug.
      this.stats.rejected++
      return
    }
    if (model == null) {
      model = { pieces: h.pieces, holders: new Map(), dirty: true, availability: new Uint16Array(h.pieces), weights: new Map(), refreshedAt: 0 }
      this.models.set(h.id, model)
    }
    model.holders.set(peer, { incarnation: h.incarnation, seq: h.seq, have: h.have, updated: this.clock.now() })
    model.dirty = true
  }

  private sweep (): void {
    const cutoff = this.clock.now() - HAVE_EXPIRY_MS
    for (const [id, model] of this.models) {
      for (const [peer, h] of model.holders) {
        if (h.updated < cutoff) { model.holders.delete(peer); model.dirty = true }
      }
      if (model.holders.size === 0) this.models.delete(id)
    }
  }

  private live (peer: string): boolean {
    return this.components.isLive?.(peer) ?? true
  }

  private refresh (model: ModelHolders): void {
    if (!model.dirty) return
    const counts = new Uint32Array(model.pieces)
    for (const [peer, h] of model.holders) {
      if (!this.live(peer)) continue
      if (h.have == null) {
        for (let i = 0; i < model.pieces; i++) counts[i]!++
      } else {
        for (const i of h.have.indices()) counts[i]!++
      }
    }
    model.availability = Uint16Array.from(counts, c => Math.min(c, 0xffff))
    model.weights.clear()
    for (const [peer, h] of model.holders) {
      let w = 0
      if (h.have == null) {
        for (let i = 0; i < model.pieces; i++) w += 1 / Math.max(1, counts[i]!)
      } else {
        for (const i of h.have.indices()) w += 1 / Math.max(1, counts[i]!)
      }
      model.weights.set(peer, w)
    }
    model.dirty = false
    model.refreshedAt = this.clock.now()
  }

  /** Live holders of a model, a weighted random subset of at most `limit`, excluding `exclude`. */
  holders (id: string, limit = TRACKER_HOLDERS, exclude?: string, random: () => number = Math.random): HoldersAnswer {
    const model = this.models.get(id)
    if (model == null) return { pieces: 0, holders: [], availability: '' }
    // Announcements mark the counts dirty; liveness changes without one, so counts older than
    // a second are recomputed too (O(holders × pieces): not on every one of many queries).
    if (this.clock.now() - model.refreshedAt > 1_000) model.dirty = true
    this.refresh(model)
    // Efraimidis–Spirakis weighted sampling without replacement: key = u^(1/w), keep the largest.
    const keyed: Array<{ peer: string, key: number }> = []
    for (const peer of model.holders.keys()) {
      if (peer === exclude || !this.live(peer)) continue
      const w = model.weights.get(peer) ?? 0
      if (w <= 0) continue
      keyed.push({ peer, key: Math.pow(random(), 1 / w) })
    }
    keyed.sort((a, b) => b.key - a.key)
    const holders = keyed.slice(0, limit).map(({ peer }) => ({
      peer,
      addrs: this.addresses(peer),
      have: model.holders.get(peer)?.have?.toBase64() ?? null
    }))
    const avail = Buffer.alloc(model.pieces * 2)
    for (let i = 0; i < model.pieces; i++) avail.writeUInt16BE(model.availability[i]!, i * 2)
    return { pieces: model.pieces, holders, availability: avail.toString('base64') }
  }

  summary (): TrackerSummary {
    const models: TrackerSummary['models'] = []
    for (const [id, model] of this.models) {
      let complete = 0
      let partial = 0
      for (const [peer, h] of model.holders) {
        if (!this.live(peer)) continue
        if (h.have == null) complete++
        else partial++
      }
      models.push({ id, complete, partial })
    }
    return { models }
  }

  private addresses (peer: string): string[] {
    const { libp2p } = this.components
    const addrs = new Set<string>()
    try {
      const id = peerIdFromString(peer)
      for (const c of libp2p.getConnections(id)) addrs.add(c.remoteAddr.toString())
    } catch {}
    return [...addrs]
  }

  /** Adds the addresses the peer store holds (listen and relayed ones, learnt by identify). */
  async withStoredAddresses (answer: HoldersAnswer): Promise<HoldersAnswer> {
    const { libp2p } = this.components
    await Promise.all(answer.holders.map(async h => {
      try {
        const peer = await libp2p.peerStore.get(peerIdFromString(h.peer))
        const set = new Set(h.addrs)
        for (const a of peer.addresses) set.add(a.multiaddr.toString())
        h.addrs = [...set].slice(0, 16)
      } catch {}
    }))
    return answer
  }

  private async answer (req: Uint8Array, peer: PeerId): Promise<Uint8Array> {
    this.stats.queries++
    let parsed: z.infer<typeof trackerRequest>
    try {
      parsed = trackerRequest.parse(JSON.parse(new TextDecoder().decode(req)))
    } catch (err) {
      throw new AstradError(`bad tracker request: ${errorMessage(err).slice(0, 200)}`, 'ERR_BAD_REQUEST')
    }
    const body = parsed.op === 'summary'
      ? this.summary()
      : await this.withStoredAddresses(this.holders(parsed.id, parsed.limit ?? TRACKER_HOLDERS, peer.toString()))
    return new TextEncoder().encode(JSON.stringify(body))
  }
}

const holdersAnswerSchema = z.object({
  pieces: z.number().int().min(0).max(MAX_PIECES),
  holders: z.array(z.object({
    peer: z.string().min(1).max(128),
    addrs: z.array(z.string().max(512)).max(64),
    have: z.string().max(4096).nullable()
  })).max(100),
  availability: z.string().max(MAX_PIECES * 4)
})

const summarySchema = z.object({
  models: z.array(z.object({ id: z.string(), complete: z.number().int().min(0), partial: z.number().int().min(0) }))
})

/** A decoded holders answer, bitfields and counts checked against the piece count. */
export interface Holders {
  pieces: number
  holders: Array<{ peer: PeerId, addrs: string[], have: Bitfield | 'complete' }>
  availability: Uint16Array
}

export function decodeHolders (answer: HoldersAnswer, pieces: number): Holders {
  const out: Holders = { pieces, holders: [], availability: new Uint16Array(pieces) }
  if (answer.pieces === 0) return out
  if (answer.pieces !== pieces) throw new DecodeError(`tracker says ${answer.pieces} pieces, manifest ${pieces}`)
  const avail = Buffer.from(answer.availability, 'base64')
  if (avail.length !== pieces * 2) throw new DecodeError('availability of the wrong length')
  for (let i = 0; i < pieces; i++) out.availability[i] = avail.readUInt16BE(i * 2)
  for (const h of answer.holders) {
    try {
      out.holders.push({ peer: peerIdFromString(h.peer), addrs: h.addrs, have: h.have == null ? 'complete' : Bitfield.fromBase64(pieces, h.have) })
    } catch {
      // One bad holder entry does not spoil the rest.
    }
  }
  return out
}

/** The node side: asks any connected resource's tracker, failing over to the others. */
export class TrackerClient {
  private readonly libp2p: Host
  private readonly resources: ProtocolPeers
  /** The tracker in this process, if this daemon is also a resource. */
  private readonly local?: Tracker

  constructor (libp2p: Host, local?: Tracker) {
    this.libp2p = libp2p
    this.local = local
    this.resources = new ProtocolPeers(libp2p, TRACKER_PROTOCOL)
  }

  async start (): Promise<void> { await this.resources.start() }
  stop (): void { this.resources.stop() }

  onResourceConnect (listener: (peer: PeerId) => void): void { this.resources.onConnect(listener) }

  private async ask (body: unknown, signal?: AbortSignal): Promise<unknown> {
    const payload = new TextEncoder().encode(JSON.stringify(body))
    let lastErr: unknown = new RequestError('no resource connected to ask the tracker', 'ERR_NO_TRACKER')
    for (const peer of this.resources.shuffled()) {
      // Holders are only learnt from resources: a tracker answer names whom to download from.
      if (!await Trust.of(this.libp2p).check(peer, 'resource', TRACKER_PROTOCOL)) continue
      try {
        const res = await request(this.libp2p, peer, TRACKER_PROTOCOL, payload, { signal, maxResponseBytes: MAX_TRACKER_RESPONSE_BYTES })
        return JSON.parse(new TextDecoder().decode(res))
      } catch (err) {
        lastErr = err
        if (signal?.aborted === true) break
      }
    }
    throw lastErr
  }

  async holders (id: string, pieces: number, options: { limit?: number, signal?: AbortSignal } = {}): Promise<Holders> {
    const self = this.libp2p.peerId.toString()
    const merge = (answers: HoldersAnswer[]): Holders => {
      const out: Holders = { pieces, holders: [], availability: new Uint16Array(pieces) }
      const seen = new Set<string>([self])
      for (const a of answers) {
        const d = decodeHolders(a, pieces)
        for (let i = 0; i < pieces; i++) out.availability[i] = Math.max(out.availability[i]!, d.availability[i]!)
        for (const h of d.holders) {
          if (seen.has(h.peer.toString())) continue
          seen.add(h.peer.toString())
          out.holders.push(h)
        }
      }
      return out
    }
    const answers: HoldersAnswer[] = []
    if (this.local != null) answers.push(await this.local.withStoredAddresses(this.local.holders(id, options.limit ?? TRACKER_HOLDERS, self)))
    if (this.resources.list().length > 0 || this.local == null) {
      try {
        answers.push(holdersAnswerSchema.parse(await this.ask({ op: 'holders', id, limit: options.limit ?? TRACKER_HOLDERS }, options.signal)))
      } catch (err) {
        if (answers.length === 0) throw err
      }
    }
    return merge(answers)
  }

  async summary (signal?: AbortSignal): Promise<TrackerSummary> {
    if (this.local != null) return this.local.summary()
    return summarySchema.parse(await this.ask({ op: 'summary' }, signal))
  }
}
