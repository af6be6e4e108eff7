import type { Entry } from '../clusterlog/index.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { inboxKind, isExpired, noticeKind, noticeSchema, visibleTo, type MailboxItem, type Notice, type NodeIdentity } from './notice.ts'
import { itemJson, type Cursor, type PullResponse } from './wire.ts'
import { MAX_PULL_ITEMS, PULL_BATCH_BYTES, RETENTION_MS } from './constants.ts'

/**
 * A resource's in-memory mailbox (the article's in-memory public mailbox): the current state of
 * every notice, ordered by the rev at which it last changed in this resource's cluster log (its
 * change feed). The durable copy is the cluster log; this is rebuilt from it at start and kept
 * current by its change feed, so a pull is answered without touching the disk.
 *
 * Two feeds are kept, public and one per node's private mailbox; a pull merges the public feed
 * and the puller's private feed by rev from its cursor. A cursor of another source (another
 * resource, or this one after it lost its disk), or older than what was forgotten (recalled or
 * expired notices dropped after RETENTION_MS, deleted objects), gets a snapshot: every current
 * item for the node, from rev 0.
 */

interface Slot {
  key: string
  rev: number
  item: MailboxItem
  /** The item serialized once for every pull that sends it. */
  json: string
  /** Its UTF-8 size (what the page budget counts). */
  bytes: number
  /** Peer id of a private mailbox's owner; null for public notices. */
  owner: string | null
  /** Superseded by a newer change of the same key (left in the feed array until compaction). */
  dead: boolean
}

/** An ordered feed: slots in rev order with dead ones skipped, compacted when half dead. */
class Feed {
  slots: Slot[] = []
  private deadCount = 0

  push (slot: Slot): void { this.slots.push(slot) }

  kill (slot: Slot): void {
    slot.dead = true
    this.deadCount++
    if (this.deadCount > 64 && this.deadCount * 2 > this.slots.length) {
      this.slots = this.slots.filter(s => !s.dead)
      this.deadCount = 0
    }
  }

  get live (): number { return this.slots.length - this.deadCount }

  /** Index of the first slot with rev > `rev`. */
  after (rev: number): number {
    let lo = 0
    let hi = this.slots.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.slots[mid] as Slot).rev <= rev) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

export interface PullAnswer {
  head: Omit<PullResponse, 'items'>
  /** Items as JSON text, in rev order. */
  items: string[]
}

export interface MailboxIndexInit {
  /** The cluster log's origin: the space of its revs. */
  source: string
  clock?: Clock
  retentionMs?: number
}

export class MailboxIndex {
  readonly source: string
  private readonly clock: Clock
  private readonly retentionMs: number
  private readonly slots = new Map<string, Slot>()
  private readonly publicFeed = new Feed()
  private readonly privateFeeds = new Map<string, Feed>()
  /** Cursors below this rev may have missed a forgotten change: they get a snapshot. */
  private floor = 0
  /** Newest rev of any mailbox change (the cursor a caught-up node holds). */
  private headRev = 0
  private headRevision = 0

  constructor (init: MailboxIndexInit) {
    this.source = init.source
    this.clock = init.clock ?? systemClock
    this.retentionMs = init.retentionMs ?? RETENTION_MS
  }

  get rev (): number { return this.headRev }
  /** Highest notice revision held. */
  get revision (): number { return this.headRevision }
  get size (): number { return this.slots.size }

  /**
   * Takes one change of the cluster log (any kind; only `notice` and `inbox` matter). Changes
   * must come in rev order, as the log's change feed delivers them. Returns whether it was a
   * mailbox change.
   */
  apply (entry: Entry<unknown>): boolean {
    if (entry.kind !== noticeKind.name && entry.kind !== inboxKind.name) return false
    const prev = this.slots.get(slotKey(entry.kind, entry.key))
    if (prev != null) this.remove(prev)
    if (entry.rev > this.headRev) this.headRev = entry.rev
    if (entry.deleted) {
      // A deleted notice (not how notices end: that is a recall) drops out; nodes that held it
      // must see a snapshot to learn that.
      this.floor = Math.max(this.floor, entry.rev)
      return true
    }
    const parsed = noticeSchema.safeParse(entry.value)
    if (!parsed.success) {
      // Written by a daemon with another idea of a notice: not deliverable, and nodes that had
      // an older version must re-sync.
      this.floor = Math.max(this.floor, entry.rev)
      return true
    }
    const notice = parsed.data
    const owner = entry.kind === inboxKind.name ? ownerOf(entry.key) : null
    const item: MailboxItem = { key: entry.key, version: entry.version, notice, ...(entry.author != null ? { author: entry.author } : {}) }
    const json = itemJson(item)
    const slot: Slot = { key: slotKey(entry.kind, entry.key), rev: entry.rev, item, json, bytes: Buffer.byteLength(json), owner, dead: false }
    if (this.forgettable(notice, this.clock.now())) {
      this.floor = Math.max(this.floor, entry.rev)
      return true
    }
    this.slots.set(slot.key, slot)
    this.feedOf(owner, true)?.push(slot)
    if (notice.revision > this.headRevision) this.headRevision = notice.revision
    return true
  }

  /** Loads a log's current objects (any order); used at start. */
  load (entries: Iterable<Entry<unknown>>): void {
    const sorted = [...entries].sort((a, b) => a.rev - b.rev)
    for (const e of sorted) this.apply(e)
  }

  /**
   * Forgets recalled and expired notices older than the retention (they stay in the cluster
   * log). Returns how many were dropped.
   */
  gc (): number {
    const now = this.clock.now()
    let dropped = 0
    for (const slot of [...this.slots.values()]) {
      if (!this.forgettable(slot.item.notice, now)) continue
      this.remove(slot)
      this.floor = Math.max(this.floor, slot.rev)
      dropped++
    }
    return dropped
  }

  /** Answers one pull: a delta from the cursor, or a snapshot page; bounded in items and bytes. */
  pull (node: NodeIdentity, cursor: Cursor | null): PullAnswer {
    const ours = cursor != null && cursor.source === this.source && cursor.rev <= this.headRev
    // A snapshot being paged continues from its cursor; a delta needs nothing forgotten after it.
    const continuing = ours && cursor.snapshot === true
    const usable = ours && (continuing || cursor.rev >= this.floor)
    const mode = usable && !continuing ? 'delta' : 'snapshot'
    const from = usable ? cursor.rev : 0
    const pub = this.publicFeed
    const priv = this.privateFeeds.get(node.peerId)
    let i = pub.after(from)
    let j = priv?.after(from) ?? 0
    const privSlots = priv?.slots ?? []
    const items: string[] = []
    let bytes = 0
    let last = from
    let more = false
    while (i < pub.slots.length || j < privSlots.length) {
      const a = pub.slots[i]
      const b = privSlots[j]
      let slot: Slot
      if (b == null || (a != null && a.rev < b.rev)) { slot = a as Slot; i++ } else { slot = b; j++ }
      if (slot.dead) continue
      if (slot.owner == null && !visibleTo(slot.item.notice, node)) {
        last = slot.rev
        continue
      }
      if (items.length >= MAX_PULL_ITEMS || (items.length > 0 && bytes + slot.bytes > PULL_BATCH_BYTES)) {
        more = true
        break
      }
      items.push(slot.json)
      bytes += slot.bytes + 1
      last = slot.rev
    }
    const rev = more ? last : Math.max(this.headRev, from)
    return { head: { mode, source: this.source, rev, revision: this.headRevision, more }, items }
  }

  /** Current items (tests, status). */
  items (): MailboxItem[] {
    return [...this.slots.values()].sort((a, b) => a.rev - b.rev).map(s => s.item)
  }

  private forgettable (n: Notice, now: number): boolean {
    const ended = n.state === 'recalled' ? n.updatedAt : isExpired(n, now) ? (n.expiresAt as number) : null
    return ended != null && now - ended >= this.retentionMs
  }

  private remove (slot: Slot): void {
    this.slots.delete(slot.key)
    const feed = this.feedOf(slot.owner, false)
    if (feed == null) return
    feed.kill(slot)
    if (slot.owner != null && feed.live === 0) this.privateFeeds.delete(slot.owner)
  }

  private feedOf (owner: string | null, create: boolean): Feed | undefined {
    if (owner == null) return this.publicFeed
    let feed = this.privateFeeds.get(owner)
    if (feed == null && create) {
      feed = new Feed()
      this.privateFeeds.set(owner, feed)
    }
    return feed
  }
}

function slotKey (kind: string, key: string): string {
  return `${kind}\u0000${key}`
}

/** `<peerId>/<id>` → peerId. */
function ownerOf (key: string): string {
  const i = key.lastIndexOf('/')
  return i > 0 ? key.slice(0, i) : key
}
