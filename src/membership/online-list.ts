import type { Clock } from '../util/time.ts'
import type { Heartbeat, NodeState } from './heartbeat.ts'
import { SUSPECT_AFTER_MS, DEAD_AFTER_MS, DEAD_AFTER_DISCONNECT_MS, FORGET_AFTER_MS, REINSTATE_MARGIN_MS } from './constants.ts'

/** One daemon as the cluster sees it. */
export interface NodeRecord {
  hb: Heartbeat
  state: NodeState
  /** Local clock time of the newest heartbeat this record reflects. */
  lastSeen: number
  /** Local clock time of the last state change. */
  changedAt: number
  /** Set when our direct connection to the node closed and no heartbeat has come since. */
  disconnectedAt?: number
  /** The newest (incarnation, seq) the node itself told us, in a heartbeat it signed (resources). */
  own?: { incarnation: number, seq: number }
  /** Local clock time we last heard the node itself (resources). */
  heardAt?: number
}

export interface Thresholds {
  suspectAfterMs: number
  deadAfterMs: number
  deadAfterDisconnectMs: number
  forgetAfterMs: number
  reinstateMarginMs: number
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  suspectAfterMs: SUSPECT_AFTER_MS,
  deadAfterMs: DEAD_AFTER_MS,
  deadAfterDisconnectMs: DEAD_AFTER_DISCONNECT_MS,
  forgetAfterMs: FORGET_AFTER_MS,
  reinstateMarginMs: REINSTATE_MARGIN_MS
}

/**
 * Rank of a state within one heartbeat: conclusions drawn from silence supersede the heartbeat
 * they follow, and any newer heartbeat supersedes them.
 */
function rank (state: NodeState): number {
  return state === 'dead' ? 2 : state === 'suspect' ? 1 : 0
}

/**
 * Total order of versions of one node's record: (incarnation, seq, rank). Merging by maximum
 * makes the list a state-based CRDT: resources that see the same heartbeats and digests in any
 * order converge to the same view.
 */
export function compareVersions (a: Pick<NodeRecord, 'hb' | 'state'>, b: Pick<NodeRecord, 'hb' | 'state'>): number {
  return (a.hb.incarnation - b.hb.incarnation) || (a.hb.seq - b.hb.seq) || (rank(a.state) - rank(b.state))
}

function beyond (hb: Heartbeat, own: { incarnation: number, seq: number } | undefined): boolean {
  return own == null || (hb.incarnation - own.incarnation || hb.seq - own.seq) > 0
}

/** Fields whose change is announced at once; load figures travel in the periodic pull. */
function staticChanged (a: Heartbeat, b: Heartbeat): boolean {
  return a.name !== b.name || a.cell !== b.cell || a.cores !== b.cores || a.gpus !== b.gpus ||
    a.gpuPerf !== b.gpuPerf || a.roles.join() !== b.roles.join() || a.incarnation !== b.incarnation || a.cordoned !== b.cordoned
}

/**
 * The online list: the state machine `alive → suspect → dead` on missed heartbeats, and
 * `draining`/`left` on announcement. Pure logic on an injected clock; the resource and
 * scheduler services feed it and publish what it reports as changed.
 */
export class OnlineList {
  private readonly records = new Map<string, NodeRecord>()
  private readonly clock: Clock
  readonly thresholds: Thresholds

  constructor (clock: Clock, thresholds: Partial<Thresholds> = {}) {
    this.clock = clock
    this.thresholds = { ...DEFAULT_THRESHOLDS, ...thresholds }
  }

  get size (): number { return this.records.size }

  get (peerId: string): NodeRecord | undefined { return this.records.get(peerId) }

  all (): NodeRecord[] { return [...this.records.values()] }

  /**
   * A heartbeat heard directly (signed by the node itself). Returns the record if the change is
   * one to announce (new node, state change, static fields changed), else undefined (load-only
   * update or stale).
   *
   * Nothing forged sticks (docs/membership.md): a heartbeat older by version than the record is
   * normally a late one and ignored, but if it is newer than anything the node itself told us
   * and was heard more than `reinstateMarginMs` after the heartbeat the record reflects, the
   * record's higher version is a claim by someone else (a forged or stale digest: "left at
   * incarnation + 1") that the node's own later beat refutes: the node's word replaces it.
   */
  ingest (hb: Heartbeat): NodeRecord | undefined {
    const now = this.clock.now()
    const cur = this.records.get(hb.peerId)
    const next: NodeRecord = { hb, state: hb.state, lastSeen: now, changedAt: now, own: { incarnation: hb.incarnation, seq: hb.seq }, heardAt: now }
    if (cur == null) {
      this.records.set(hb.peerId, next)
      return next
    }
    if (!beyond(hb, cur.own)) {
      // An old or duplicate heartbeat (gossip can deliver out of order): nothing new.
      return undefined
    }
    cur.heardAt = now
    if (compareVersions(next, cur) <= 0 && now - cur.lastSeen <= this.thresholds.reinstateMarginMs) {
      // Older than a claim made about it moments ago: wait (a late beat proves nothing yet).
      cur.own = next.own
      return undefined
    }
    const announce = cur.state !== next.state || staticChanged(cur.hb, hb)
    if (!announce) next.changedAt = cur.changedAt
    this.records.set(hb.peerId, next)
    return announce ? next : undefined
  }

  /**
   * A record learnt from another resource (digest or snapshot), `ageMs` old at the sender.
   * Adopted if it is a newer version, except (docs/membership.md, "Nothing forged sticks"):
   * - while we hear the node ourselves (a heartbeat within deadAfterMs), only the node speaks for
   *   itself: records about it from others are ignored;
   * - when version and time disagree by more than `reinstateMarginMs` time wins: a newer version
   *   whose node was heard earlier than ours is a stale or forged claim, and an older version
   *   heard later than ours refutes the claim we hold (the node is still beating).
   * Returns the record when our view changed in a way to announce.
   */
  merge (remote: { hb: Heartbeat, state: NodeState, ageMs: number }): NodeRecord | undefined {
    const now = this.clock.now()
    const cur = this.records.get(remote.hb.peerId)
    const lastSeen = now - Math.max(0, remote.ageMs)
    if (cur != null) {
      if (cur.heardAt != null && now - cur.heardAt < this.thresholds.deadAfterMs) return undefined
      const cmp = compareVersions(remote, cur)
      if (cmp === 0) {
        if (lastSeen > cur.lastSeen) cur.lastSeen = lastSeen
        return undefined
      }
      const gap = lastSeen - cur.lastSeen
      if (cmp < 0 ? gap <= this.thresholds.reinstateMarginMs : gap < -this.thresholds.reinstateMarginMs) return undefined
    }
    const next: NodeRecord = { hb: remote.hb, state: remote.state, lastSeen, changedAt: now, own: cur?.own, heardAt: cur?.heardAt }
    const announce = cur == null || cur.state !== next.state || staticChanged(cur.hb, next.hb)
    if (!announce && cur != null) next.changedAt = cur.changedAt
    this.records.set(remote.hb.peerId, next)
    return announce ? next : undefined
  }

  /** Our direct connection to the node closed: a crashed process closes its sockets at once. */
  disconnected (peerId: string): NodeRecord | undefined {
    const cur = this.records.get(peerId)
    if (cur == null || cur.state === 'left' || cur.state === 'dead') return undefined
    cur.disconnectedAt = this.clock.now()
    return this.tickOne(cur, cur.disconnectedAt)
  }

  /** Re-evaluates silences; returns the records whose state changed. Forgets old dead/left. */
  tick (): NodeRecord[] {
    const now = this.clock.now()
    const changed: NodeRecord[] = []
    for (const rec of this.records.values()) {
      if ((rec.state === 'dead' || rec.state === 'left') && now - rec.changedAt >= this.thresholds.forgetAfterMs) {
        this.records.delete(rec.hb.peerId)
        continue
      }
      const c = this.tickOne(rec, now)
      if (c != null) changed.push(c)
    }
    return changed
  }

  /** Forgets dead and left nodes older than forgetAfterMs without judging silences (schedulers). */
  forget (): void {
    const now = this.clock.now()
    for (const rec of this.records.values()) {
      if ((rec.state === 'dead' || rec.state === 'left') && now - rec.changedAt >= this.thresholds.forgetAfterMs) this.records.delete(rec.hb.peerId)
    }
  }

  private tickOne (rec: NodeRecord, now: number): NodeRecord | undefined {
    if (rec.state === 'dead' || rec.state === 'left') return undefined
    const t = this.thresholds
    const silence = now - rec.lastSeen
    const lostLink = rec.disconnectedAt != null && rec.disconnectedAt >= rec.lastSeen
    let next: NodeState = rec.state
    if (silence >= t.deadAfterMs || (lostLink && now - (rec.disconnectedAt as number) >= t.deadAfterDisconnectMs)) {
      next = 'dead'
    } else if (silence >= t.suspectAfterMs || (lostLink && rec.state !== 'draining')) {
      // A draining node closing its connection is leaving as announced (its `left` may still be
      // in validation behind the close): it stays draining, and is dead if no `left` follows.
      next = 'suspect'
    }
    if (next === rec.state) return undefined
    rec.state = next
    rec.changedAt = now
    return rec
  }

  countByState (): Record<NodeState, number> {
    const counts: Record<NodeState, number> = { alive: 0, suspect: 0, draining: 0, dead: 0, left: 0 }
    for (const r of this.records.values()) counts[r.state]++
    return counts
  }
}
