import { Reader, Writer } from '../util/codec.ts'
import { DecodeError } from '../util/errors.ts'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import { Bitfield } from './bitfield.ts'
import { HAVE_COALESCE_MS, HAVE_REFRESH_MS, HAVE_TOPIC, MAX_HAVE_BYTES, MAX_PIECES } from './constants.ts'

/**
 * Have announcements: what a node holds of one model, published on gossip topic `astra/have/1`
 * (resources subscribe and keep the tracker). Signed by the holder; ordered by (incarnation,
 * seq) so a late old message never overwrites a newer one.
 *
 *   u8 version(1) · u64 incarnation · u32 seq · 32 B model id · u32 pieces ·
 *   u8 state (0 removed, 1 complete, 2 partial) · [u16 n · n B bitfield if partial]
 */
export interface Have {
  incarnation: number
  seq: number
  id: string
  pieces: number
  /** null = complete; undefined = removed. */
  have: Bitfield | null | undefined
}

const VERSION = 1

export function encodeHave (h: Have): Uint8Array {
  const id = Buffer.from(h.id, 'hex')
  if (id.length !== 32) throw new RangeError('model id must be 32 bytes of hex')
  const w = new Writer(64 + (h.have?.bytes.length ?? 0)).u8(VERSION).u64(h.incarnation).u32(h.seq)
  for (const b of id) w.u8(b)
  w.u32(h.pieces)
  if (h.have === undefined) w.u8(0)
  else if (h.have === null || h.have.complete) w.u8(1)
  else w.u8(2).bytes16(h.have.bytes)
  return w.finish()
}

export function decodeHave (bytes: Uint8Array): Have {
  if (bytes.length > MAX_HAVE_BYTES) throw new DecodeError(`have message of ${bytes.length} bytes exceeds ${MAX_HAVE_BYTES}`)
  const r = new Reader(bytes)
  const version = r.u8('version')
  if (version !== VERSION) throw new DecodeError(`unsupported have version ${version}`)
  const incarnation = r.u64('incarnation')
  const seq = r.u32('seq')
  const idBytes = new Uint8Array(32)
  for (let i = 0; i < 32; i++) idBytes[i] = r.u8('id')
  const pieces = r.u32('pieces')
  if (pieces < 1 || pieces > MAX_PIECES) throw new DecodeError(`invalid piece count ${pieces}`)
  const state = r.u8('state')
  let have: Bitfield | null | undefined
  if (state === 0) have = undefined
  else if (state === 1) have = null
  else if (state === 2) have = new Bitfield(pieces, r.bytes16('bitfield'))
  else throw new DecodeError(`invalid have state ${state}`)
  r.end()
  return { incarnation, seq, id: Buffer.from(idBytes).toString('hex'), pieces, have }
}

/** What the announcer reads from the store. */
export interface HaveSource {
  /** Every model held (complete or partial) with its bitfield. */
  held: () => Array<{ id: string, have: Bitfield }>
  /** One model's bitfield (its length is the piece count), undefined if no longer held. */
  bitfield: (id: string) => Bitfield | undefined
}

export interface HaveAnnouncerComponents {
  libp2p: Host
  logger: Logger
  source: HaveSource
  /** Delivers our own announcements to a tracker in this process (gossip does not echo). */
  local?: (from: string, have: Have) => void
}

/**
 * Publishes what this node holds: a changed model within HAVE_COALESCE_MS (a download
 * completing a piece every few ms sends ~2 messages/s, not hundreds), everything every
 * HAVE_REFRESH_MS (trackers expire silent holders; a restarted resource relearns), and
 * everything soon after a new resource connects.
 */
export class HaveAnnouncer {
  private readonly components: HaveAnnouncerComponents
  private readonly incarnation = Date.now()
  private seq = 0
  private readonly dirty = new Set<string>()
  private flushTimer?: NodeJS.Timeout
  private refreshTimer?: NodeJS.Timeout
  private running = false
  /** Models announced as held, so a removal is announced once. */
  private readonly announced = new Set<string>()

  constructor (components: HaveAnnouncerComponents) {
    this.components = components
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.refreshTimer = setInterval(() => { this.announceAll() }, HAVE_REFRESH_MS)
    this.refreshTimer.unref()
    this.announceAll()
  }

  stop (): void {
    this.running = false
    clearInterval(this.refreshTimer)
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
  }

  /** A model's holding changed (a piece landed, it completed, it was removed). */
  changed (id: string): void {
    this.dirty.add(id)
    if (this.flushTimer == null && this.running) {
      this.flushTimer = setTimeout(() => { this.flushTimer = undefined; this.flush() }, HAVE_COALESCE_MS)
    }
  }

  /** Announces one model at once (a user just added it and will look for it next). */
  announceNow (id: string): void {
    this.dirty.delete(id)
    if (this.running) this.publish(id)
  }

  /** Re-announces everything held (soon: coalesced with other changes). */
  announceAll (): void {
    for (const { id } of this.components.source.held()) this.changed(id)
  }

  private flush (): void {
    const ids = [...this.dirty]
    this.dirty.clear()
    for (const id of ids) this.publish(id)
  }

  private publish (id: string): void {
    const { source } = this.components
    const bitfield = source.bitfield(id)
    // Nothing held (removed, or every held piece rotted): withdraw what was announced.
    if (bitfield == null || bitfield.size === 0) {
      if (!this.announced.has(id)) return
      // Removed: the piece count is unknown now and irrelevant to a removal.
      this.announced.delete(id)
      this.send({ incarnation: this.incarnation, seq: ++this.seq, id, pieces: 1, have: undefined })
      return
    }
    this.announced.add(id)
    this.send({ incarnation: this.incarnation, seq: ++this.seq, id, pieces: bitfield.length, have: bitfield.complete ? null : bitfield })
  }

  private send (have: Have): void {
    const { libp2p, logger, local } = this.components
    if (libp2p.status !== 'started') return
    local?.(libp2p.peerId.toString(), have)
    libp2p.services.pubsub.publish(HAVE_TOPIC, encodeHave(have)).catch((err: unknown) => {
      logger.debug({ err: errorMessage(err) }, 'have announcement not sent')
    })
  }
}
