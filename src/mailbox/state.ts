import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { compareVersions, isVersion } from '../clusterlog/hlc.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { writeFileAtomic } from '../util/fs.ts'
import { isExpired, isStanding, NOTICE_KINDS, NOTICE_STATES, visibleTo, type MailboxItem, type Notice, type NoticeData, type NodeIdentity, type NoticeKind, type NoticeState, type RuntimeSettings } from './notice.ts'
import type { Cursor, PullResponse } from './wire.ts'
import { APPLIED_RETENTION_MS, STATE_FILE } from './constants.ts'

/**
 * A node's mailbox: what it has applied, and where it is in its resource's feed. Pure logic
 * (no network, no effects): pages of pulls go in, actions come out, and the whole state is
 * saved (atomically, fsynced) before the actions run, so a restart neither re-applies nor
 * misses a notice.
 *
 * Exactly once: a notice is processed once per version (the cluster log's HLC version of the
 * write), whichever resource, page or snapshot delivers it, in whatever order. One-shot kinds
 * (`drain`, `preload`) act when first applied and again only when an edit changes their data;
 * standing kinds (`bandwidth`, `config`, `message`) hold while the notice is in force and end
 * at recall or expiry. A stopped notice is no longer applied by nodes that had not applied it;
 * nodes that had keep its effect.
 */

export interface AppliedRecord {
  id: string
  kind: NoticeKind
  /** Version of the last write processed. */
  version: string
  revision: number
  state: NoticeState
  /** The data in force (standing kinds) or last acted on (one-shot kinds); null when never applied. */
  data: unknown
  expiresAt: number | null
  /** In force on this node (applied, not recalled or expired). */
  active: boolean
  /** A one-shot effect has run for `data`. */
  executed: boolean
  /** A preload started and not yet finished (resumed after a restart). */
  pending: boolean
  /** When the notice stopped being in force here (ms); null while active or never applied. */
  endedAt: number | null
  /** When its data was last applied (ms). */
  appliedAt: number | null
}

export type MailboxAction =
  | { type: 'drain', notice: Notice }
  | { type: 'preload', id: string, model: string }
  | { type: 'unpreload', id: string, model: string }
  /** A message came into force (to log); the standing set is recomputed by `standing`. */
  | { type: 'message', notice: Notice }
  /** Standing effects changed: recompute bandwidth, config and messages. */
  | { type: 'standing' }

export interface StandingEffects {
  bandwidth: { upload: number | null, download: number | null } | undefined
  config: RuntimeSettings
  messages: Array<{ id: string, level: 'info' | 'warn', text: string, since: number, expiresAt: number | null }>
}

export interface SavedState {
  format: 1
  cursor: Cursor | null
  /** Highest notice revision processed (reported in heartbeats). */
  revision: number
  applied: Record<string, AppliedRecord>
}

const recordSchema = z.object({
  id: z.string(),
  kind: z.enum(NOTICE_KINDS),
  version: z.string().refine(isVersion, 'not a version'),
  revision: z.number().int().min(0),
  state: z.enum(NOTICE_STATES),
  data: z.unknown(),
  expiresAt: z.number().nullable(),
  active: z.boolean(),
  executed: z.boolean(),
  pending: z.boolean(),
  endedAt: z.number().nullable(),
  appliedAt: z.number().nullable()
}).strict()

const savedSchema = z.object({
  format: z.literal(1),
  cursor: z.object({ source: z.string(), rev: z.number().int().min(0), snapshot: z.literal(true).optional() }).strict().nullable(),
  revision: z.number().int().min(0),
  applied: z.record(z.string(), recordSchema)
}).strict()

/** The state file exists but cannot be used: refusing to start beats re-applying every order. */
export class MailboxStateError extends AstradError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_MAILBOX_STATE', options)
    this.name = 'MailboxStateError'
  }
}

export class MailboxState {
  private readonly self: NodeIdentity
  private cursorValue: Cursor | null = null
  private revisionValue = 0
  private readonly applied = new Map<string, AppliedRecord>()
  /** Keys seen in the snapshot being received (pages until `more` is false). */
  private snapshotIds?: Set<string>

  constructor (self: NodeIdentity, saved?: SavedState) {
    this.self = self
    if (saved != null) {
      // A snapshot cut short by a restart starts again: the keys seen so far were in memory.
      this.cursorValue = saved.cursor?.snapshot === true ? null : saved.cursor
      this.revisionValue = saved.revision
      for (const [id, r] of Object.entries(saved.applied)) this.applied.set(id, r)
    }
  }

  get cursor (): Cursor | null { return this.cursorValue }
  get revision (): number { return this.revisionValue }

  /** Takes one page of a pull; returns the actions to run once the state is saved. */
  receive (page: Pick<PullResponse, 'mode' | 'source' | 'rev' | 'more' | 'items'>, now: number): MailboxAction[] {
    const actions: MailboxAction[] = []
    if (page.mode === 'snapshot' && (this.snapshotIds == null || this.cursorValue?.source !== page.source)) this.snapshotIds = new Set()
    // Merge order: the resource's feed already interleaves public and private by its rev; a
    // snapshot is in the same order. Versions decide what is new, so order across resources
    // never makes a notice apply twice or an older write win.
    for (const item of page.items) {
      this.snapshotIds?.add(item.notice.id)
      this.processItem(item, now, actions)
    }
    this.cursorValue = page.mode === 'snapshot' && page.more ? { source: page.source, rev: page.rev, snapshot: true } : { source: page.source, rev: page.rev }
    if (!page.more && this.snapshotIds != null) {
      // A complete snapshot lists every notice still in force for us: one we hold that it does
      // not list was recalled or expired long enough ago to be forgotten, or deleted.
      for (const r of this.applied.values()) {
        if (this.snapshotIds.has(r.id) || !r.active) continue
        this.end(r, now, actions)
      }
      this.snapshotIds = undefined
    }
    this.prune(now)
    return dedupe(actions)
  }

  /** Ends standing effects whose notice has expired; returns the actions. */
  expire (now: number): MailboxAction[] {
    const actions: MailboxAction[] = []
    for (const r of this.applied.values()) {
      if (r.active && r.expiresAt != null && now >= r.expiresAt && isStanding(r.kind)) this.end(r, now, actions)
    }
    return dedupe(actions)
  }

  /** The next time `expire` has work (ms), or null. */
  nextExpiry (): number | null {
    let next: number | null = null
    for (const r of this.applied.values()) {
      if (r.active && r.expiresAt != null && isStanding(r.kind) && (next == null || r.expiresAt < next)) next = r.expiresAt
    }
    return next
  }

  /** A preload finished (or failed for good): not resumed after a restart. */
  settle (id: string): void {
    const r = this.applied.get(id)
    if (r != null) r.pending = false
  }

  /** Preloads that were running when the daemon stopped, as actions to run again. */
  pendingPreloads (): MailboxAction[] {
    return [...this.applied.values()]
      .filter(r => r.kind === 'preload' && r.pending && r.active)
      .map(r => ({ type: 'preload', id: r.id, model: (r.data as NoticeData['preload']).model }))
  }

  /** The standing effects in force: later versions override earlier ones. */
  standing (now: number): StandingEffects {
    const active = [...this.applied.values()]
      .filter(r => r.active && isStanding(r.kind) && !(r.expiresAt != null && now >= r.expiresAt))
      .sort((a, b) => compareVersions(a.version, b.version))
    let bandwidth: StandingEffects['bandwidth']
    const config: RuntimeSettings = {}
    const messages: StandingEffects['messages'] = []
    for (const r of active) {
      if (r.kind === 'bandwidth') bandwidth = r.data as NoticeData['bandwidth']
      else if (r.kind === 'config') Object.assign(config, r.data as RuntimeSettings)
      else if (r.kind === 'message') {
        const m = r.data as NoticeData['message']
        messages.push({ id: r.id, level: m.level, text: m.text, since: r.appliedAt ?? 0, expiresAt: r.expiresAt })
      }
    }
    return { bandwidth, config, messages: messages.reverse() }
  }

  toJSON (): SavedState {
    return { format: 1, cursor: this.cursorValue, revision: this.revisionValue, applied: Object.fromEntries(this.applied) }
  }

  private processItem (item: MailboxItem, now: number, actions: MailboxAction[]): void {
    const n = item.notice
    const prev = this.applied.get(n.id)
    if (prev != null && compareVersions(item.version, prev.version) <= 0) return
    if (n.revision > this.revisionValue) this.revisionValue = n.revision
    if (prev == null) {
      // Only notices that would act here are recorded; the rest need no memory (a later
      // version of them is simply new).
      if (n.state === 'stopped' || n.state === 'recalled' || !visibleTo(n, this.self) || isExpired(n, now)) return
    }
    const r: AppliedRecord = prev ?? {
      id: n.id, kind: n.kind, version: item.version, revision: n.revision, state: n.state, data: null,
      expiresAt: n.expiresAt, active: false, executed: false, pending: false, endedAt: null, appliedAt: null
    }
    r.version = item.version
    r.revision = n.revision
    r.state = n.state
    this.applied.set(n.id, r)
    if (n.state === 'recalled') {
      if (r.active) this.end(r, now, actions)
      return
    }
    if (n.state === 'stopped') {
      // No longer delivered: effects stay where applied; an expiry still ends them.
      r.expiresAt = n.expiresAt
      return
    }
    if (!visibleTo(n, this.self)) return
    if (isExpired(n, now)) {
      if (r.active) this.end(r, now, actions)
      return
    }
    const changed = !r.active || JSON.stringify(r.data) !== JSON.stringify(n.data)
    const expiryChanged = r.expiresAt !== n.expiresAt
    r.expiresAt = n.expiresAt
    r.active = true
    r.endedAt = null
    if (!changed) {
      // The same order at a newer version (promoted, whitelist changed, re-sent): not again.
      if (expiryChanged && isStanding(n.kind)) actions.push({ type: 'standing' })
      return
    }
    r.data = n.data
    r.appliedAt = now
    switch (n.kind) {
      case 'drain':
        if (!r.executed) actions.push({ type: 'drain', notice: n })
        r.executed = true
        break
      case 'preload':
        actions.push({ type: 'preload', id: n.id, model: (n.data as NoticeData['preload']).model })
        r.executed = true
        r.pending = true
        break
      case 'message':
        actions.push({ type: 'message', notice: n }, { type: 'standing' })
        break
      default:
        actions.push({ type: 'standing' })
    }
  }

  /** A notice stops being in force here: standing effects end, a preload is undone on recall. */
  private end (r: AppliedRecord, now: number, actions: MailboxAction[]): void {
    r.active = false
    r.endedAt = now
    r.pending = false
    if (isStanding(r.kind)) actions.push({ type: 'standing' })
    else if (r.kind === 'preload' && r.executed) {
      actions.push({ type: 'unpreload', id: r.id, model: (r.data as NoticeData['preload']).model })
    }
  }

  /** Forgets records of notices that ended long ago (a snapshot no longer lists them). */
  private prune (now: number): void {
    for (const [id, r] of this.applied) {
      if (!r.active && r.endedAt != null && now - r.endedAt > APPLIED_RETENTION_MS) this.applied.delete(id)
    }
  }
}

function dedupe (actions: MailboxAction[]): MailboxAction[] {
  let standing = false
  return actions.filter(a => {
    if (a.type !== 'standing') return true
    if (standing) return false
    standing = true
    return true
  })
}

/** Reads the saved state; undefined when the node never had one. */
export function loadState (dataDir: string): SavedState | undefined {
  const file = path.join(dataDir, STATE_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new MailboxStateError(`cannot read ${file}: ${errorMessage(err)}`, { cause: err })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new MailboxStateError(`${file} is not JSON (remove it to re-sync from a snapshot; notices already applied may then apply again)`, { cause: err })
  }
  const parsed = savedSchema.safeParse(json)
  if (!parsed.success) throw new MailboxStateError(`${file} is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'} (remove it to re-sync; notices already applied may then apply again)`)
  return parsed.data as SavedState
}

/** Writes the state atomically: temp file, fsync, rename, fsync of the directory. */
export function saveState (dataDir: string, state: SavedState): void {
  writeFileAtomic(path.join(dataDir, STATE_FILE), JSON.stringify(state))
}
