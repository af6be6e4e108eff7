import type { ClusterLogAccess, Entry, WriteOptions } from '../clusterlog/index.ts'
import { LOG_LEVELS, type Role } from '../config/defaults.ts'
import { parseBytes, parseRate } from '../config/units.ts'
import type { Heartbeat, NodeState } from '../membership/index.ts'
import type { NoticeSummary } from '../daemon/status.ts'
import { modelKind } from '../transfer/kinds.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { parseForPeople } from '../util/schema.ts'
import { systemClock, type Clock } from '../util/time.ts'
import {
  DATA_SCHEMAS, NOTICE_KINDS, inAudience, inboxKey, inboxKind, isExpired, newNoticeId, noticeKind, noticeSchema, visibleTo,
  type Audience, type Notice, type NoticeKind, type NoticeState
} from './notice.ts'
import { MAX_AUDIENCE, MAX_DATA_BYTES, MAX_EXPIRY_MS, MAX_MESSAGE_CHARS } from './constants.ts'

/**
 * The operator side of the mailbox (docs/mailbox.md "Operating notices"): validates what an
 * operator asks for, writes notices to the cluster log (a public notice once, a private one as
 * one copy per addressed node) and reports how far each has rolled out, from the mailbox cursors
 * nodes put in their heartbeats.
 */

/** Shortest notice id prefix accepted: 4 hex digits tell apart the notices of any real cluster. */
export const MIN_NOTICE_PREFIX = 4
/** Shortest model id prefix a `preload` accepts, as `astrad model pull` (4 bytes). */
export const MIN_MODEL_PREFIX = 8
/** Names shown in a status audience before "+N more": a status line, not a roster. */
export const AUDIENCE_NAMES_SHOWN = 5
/** Names listed in an "unknown node" error before "…". */
const KNOWN_NAMES_SHOWN = 20

/** One daemon of the online list, as the admin needs it. */
export interface Member {
  peerId: string
  name: string
  cell: string
  roles: Role[]
  state: NodeState
  /** The highest mailbox revision the node has processed (from its heartbeat; 0 = none). */
  mailboxCursor: number
}

/** A record of the online list as the admin needs it. */
export function memberOf (r: { hb: Heartbeat, state: NodeState }): Member {
  return { peerId: r.hb.peerId, name: r.hb.name, cell: r.hb.cell, roles: r.hb.roles, state: r.state, mailboxCursor: r.hb.mailboxCursor }
}

export interface NoticeAdminComponents {
  clusterLog: () => ClusterLogAccess
  /** The online list this daemon sees. */
  members: (signal?: AbortSignal) => Promise<Member[]>
  /** This daemon's name, stored in `Notice.by`. */
  self: () => string
  /** Wall clock (ms since the epoch). @default systemClock */
  clock?: Clock
}

/** What an operator asks to publish (`POST /v1/notices`). */
export interface PublishRequest {
  kind: string
  /** The kind's payload in operator form: rates and sizes may be strings ("25MB/s", "2GiB"). */
  data: unknown
  /** Canary whitelist: node names or peer ids. */
  canary?: string[]
  cells?: string[]
  /** A private notice to these nodes (names or peer ids); excludes canary and cells. */
  nodes?: string[]
  /** "90s", "30m", "2h", "7d", an ISO-8601 date-time, or ms since the epoch. */
  expires?: string | number
}

/**
 * A notice as `notice ls/show` and the routes present it. A private notice (one copy per node)
 * is one view: `private` is true, `audience.node` is null and `nodes` lists the addressed nodes.
 * For a public notice with a canary whitelist, `nodes` lists the whitelist.
 */
export interface NoticeView extends Notice {
  private: boolean
  /**
   * Live nodes (node role; alive, suspect or draining) the current revision is for, plus nodes
   * that applied it and then left.
   */
  targets: number
  /** Of those, nodes whose mailbox cursor is at or past the current revision. */
  applied: number
  /** Of those that applied, nodes that have left since (a drain notice's targets exit). */
  left: number
  /** 'all', 'cells: a,b', 'canary: n1,n2', 'private: n1,n2' (names; "+N more" after five). */
  audienceText: string
  nodes?: Array<{ peerId: string, name: string }>
  /**
   * The operator who made the current revision (its cluster-log author; 'insecure' with
   * --insecure). Absent: no verified operator wrote it, and nodes ignore it. `by` is the daemon
   * it was written through.
   */
  author?: string
}

/**
 * A refused or failed notice operation. `status` is the HTTP status the routes answer with:
 * ERR_BAD_NOTICE, ERR_UNKNOWN_NODE, ERR_AMBIGUOUS 400; ERR_NOT_FOUND 404; ERR_STATE 409;
 * cluster log or online list unavailable 503 (the underlying code, e.g. ERR_NO_RESOURCE).
 */
export class NoticeError extends AstradError {
  readonly status: number
  constructor (message: string, code: string, status: number, options?: ErrorOptions) {
    super(message, code, options)
    this.name = 'NoticeError'
    this.status = status
  }
}

const bad = (message: string): NoticeError => new NoticeError(message, 'ERR_BAD_NOTICE', 400)
const wrongState = (message: string): NoticeError => new NoticeError(message, 'ERR_STATE', 409)

/** Cluster-log failures that mean "no resource to talk to right now" rather than a refused write. */
const UNAVAILABLE = new Set(['ERR_NO_RESOURCE', 'ERR_UNREACHABLE', 'ERR_TIMEOUT', 'ERR_REQUEST', 'ERR_BAD_RESPONSE', 'ERR_LIFECYCLE', 'ERR_INTERNAL', 'ERR_DECODE'])

/** Node states that count as present: a notice may target them and they count in `targets`. */
const LIVE_STATES: ReadonlySet<NodeState> = new Set<NodeState>(['alive', 'suspect', 'draining'])

const isLiveNode = (m: Member): boolean => m.roles.includes('node') && LIVE_STATES.has(m.state)

/** Example payloads, shown when data is malformed. */
const EXAMPLES: Record<NoticeKind, string> = {
  bandwidth: '{"upload":"25MB/s","download":"none"}',
  drain: '{"reason":"kernel update"}',
  preload: '{"model":"<model id or its first 8+ hex digits>"}',
  message: '{"text":"maintenance tonight 22:00","level":"warn"}',
  config: '{"logLevel":"debug","cacheSize":"20GiB"}'
}

const ALLOWED_KEYS: Record<NoticeKind, string[]> = {
  bandwidth: ['upload', 'download'],
  drain: ['reason', 'all'],
  preload: ['model'],
  message: ['text', 'level'],
  config: ['logLevel', 'cacheSize']
}

/** All copies of one notice: the public record, or the private copies of one id. */
interface Group {
  id: string
  private: boolean
  /** Live copies (values present), keyed by cluster-log key. */
  copies: Array<{ key: string, notice: Notice }>
  /** Author of the newest copy (Entry.author). */
  author?: string
  authorRevision?: number
}

interface Mailbox {
  groups: Map<string, Group>
  /** Highest revision of any notice or inbox object, recalled ones included. */
  maxRevision: number
}

export class NoticeAdmin {
  private readonly components: NoticeAdminComponents
  private readonly clock: Clock
  /** Writes of this daemon, one at a time: each takes the highest revision + 1. */
  private writing: Promise<unknown> = Promise.resolve()

  constructor (components: NoticeAdminComponents) {
    this.components = components
    this.clock = components.clock ?? systemClock
  }

  async publish (req: PublishRequest, options: WriteOptions = {}): Promise<NoticeView> {
    const { signal, auth } = options
    if (req == null || typeof req !== 'object') throw bad('expected {kind, data, canary?, cells?, nodes?, expires?}')
    const kind = parseKind(req.kind)
    const canaryIn = stringList('canary', req.canary)
    const cellsIn = stringList('cells', req.cells)
    const nodesIn = stringList('nodes', req.nodes)
    if (nodesIn != null && (canaryIn != null || cellsIn != null)) {
      throw bad('nodes cannot be combined with canary or cells: a private notice goes to the named nodes only')
    }
    const cells = cellsIn != null ? parseCells(cellsIn) : null
    const members = canaryIn != null || nodesIn != null ? await this.readMembers(signal) : []
    const canary = canaryIn != null ? resolveNodes('canary', canaryIn, members) : null
    if (canary != null && cells != null) {
      for (const peerId of canary) {
        const m = members.find(x => x.peerId === peerId) as Member
        if (!cells.includes(m.cell)) throw bad(`canary node '${m.name}' is in cell '${m.cell}', not in cells ${cells.join(',')}`)
      }
    }
    const addressed = nodesIn != null ? resolveNodes('nodes', nodesIn, members) : null
    const audience: Audience = { cells, canary, node: null }
    const data = await this.parseData(kind, req.data, addressed != null ? { cells: null, canary: null, node: addressed[0] ?? null } : audience, signal)
    const now = this.clock.now()
    const expiresAt = parseExpiry(req.expires, now)

    const written = await this.exclusive(async () => {
      const mailbox = await this.load(signal)
      let id = newNoticeId()
      while (mailbox.groups.has(id)) id = newNoticeId()
      const notice: Notice = {
        id,
        kind,
        data,
        audience,
        state: canary != null ? 'canary' : 'published',
        revision: mailbox.maxRevision + 1,
        createdAt: now,
        updatedAt: now,
        expiresAt,
        by: this.components.self()
      }
      if (addressed == null) {
        checkNotice(notice)
        const entry = await this.logCall(async log => await log.put(noticeKind, id, notice, { signal, auth }))
        return { notice, addressed: null, author: entry.author }
      }
      const copies = addressed.map(peerId => ({ key: inboxKey(peerId, id), notice: { ...notice, audience: { cells: null, canary: null, node: peerId } } }))
      copies.forEach(c => { checkNotice(c.notice) })
      const author = await this.writeCopies(copies, options, 'published')
      return { notice, addressed, author }
    })
    return this.viewOf(written.notice, written.addressed, await this.membersOrEmpty(signal), written.author)
  }

  /** Replaces the whitelist of a notice in canary. */
  async setCanary (id: string, nodes: string[], options: WriteOptions = {}): Promise<NoticeView> {
    const signal = options.signal
    const given = stringList('nodes', nodes)
    if (given == null) throw bad('give the canary nodes (names or peer ids)')
    const members = await this.readMembers(signal)
    return await this.transition(id, options, (current) => {
      if (current.state !== 'canary') throw wrongState(`notice ${current.id} is ${current.state}; only canary notices have a whitelist to change`)
      this.requireUnexpired(current, 'its whitelist changed')
      const canary = resolveNodes('canary', given, members)
      const cells = current.audience.cells
      if (cells != null) {
        for (const peerId of canary) {
          const m = members.find(x => x.peerId === peerId) as Member
          if (!cells.includes(m.cell)) throw bad(`canary node '${m.name}' is in cell '${m.cell}', not in the notice's cells ${cells.join(',')}`)
        }
      }
      return { ...current, audience: { ...current.audience, canary } }
    }, members)
  }

  /** canary → published: the notice goes to its whole audience. */
  async promote (id: string, options: WriteOptions = {}): Promise<NoticeView> {
    return await this.transition(id, options, (current, group) => {
      if (current.state !== 'canary') {
        if (current.state === 'published' && isRepair(group)) return current
        throw wrongState(`notice ${current.id} is ${current.state}; only canary notices can be promoted`)
      }
      this.requireUnexpired(current, 'promoted')
      if (current.kind === 'drain' && current.audience.cells == null && (current.data as { all?: boolean }).all !== true) {
        throw bad(`promoting drain ${current.id} would drain every node: edit it with --data '{"all":true}' first, or recall it and publish one with --cells`)
      }
      return { ...current, state: 'published', audience: { ...current.audience, canary: null } }
    })
  }

  /** canary|published → stopped: no longer delivered; effects stay where applied. */
  async stop (id: string, options: WriteOptions = {}): Promise<NoticeView> {
    return await this.transition(id, options, (current, group) => {
      if (current.state === 'stopped' && isRepair(group)) return current
      if (current.state !== 'canary' && current.state !== 'published') throw wrongState(`notice ${current.id} is ${current.state}; only canary or published notices can be stopped`)
      return { ...current, state: 'stopped' }
    })
  }

  /** Any state → recalled: a tombstone at a higher revision; nodes undo the effect. */
  async recall (id: string, options: WriteOptions = {}): Promise<NoticeView> {
    return await this.transition(id, options, (current, group) => {
      if (current.state === 'recalled' && !isRepair(group)) throw wrongState(`notice ${current.id} is already recalled`)
      return { ...current, state: 'recalled', data: null }
    })
  }

  /** New data for a canary or published notice: a new revision supersedes the old one. */
  async edit (id: string, data: unknown, options: WriteOptions = {}): Promise<NoticeView> {
    const signal = options.signal
    if (data === undefined) throw bad('give the new data of the notice')
    // The data may need the cluster log (a preload's model): parse it before taking the lock.
    const group = await this.find(id, signal)
    const current = representative(group)
    checkEditable(current)
    const parsed = await this.parseData(current.kind, data, current.audience, signal)
    return await this.transition(id, options, (latest) => {
      checkEditable(latest)
      this.requireUnexpired(latest, 'edited')
      return { ...latest, data: parsed }
    })
  }

  /**
   * Every notice, newest first; the copies of a private notice are one view. `known` is the
   * online list when the caller already holds it (status), else it is read.
   */
  async list (signal?: AbortSignal, known?: Member[]): Promise<NoticeView[]> {
    const [mailbox, members] = await Promise.all([this.load(signal), known ?? this.readMembers(signal)])
    return [...mailbox.groups.values()]
      .map(g => this.groupView(g, members))
      .sort((a, b) => b.createdAt - a.createdAt || b.revision - a.revision || a.id.localeCompare(b.id))
  }

  /** One notice by its id or a unique prefix of at least MIN_NOTICE_PREFIX hex digits. */
  async get (id: string, signal?: AbortSignal): Promise<NoticeView> {
    const [group, members] = await Promise.all([this.find(id, signal), this.readMembers(signal)])
    return this.groupView(group, members)
  }

  /** The `notices` of the status document. */
  async summaries (signal?: AbortSignal, known?: Member[]): Promise<NoticeSummary[]> {
    return (await this.list(signal, known)).map(v => ({
      id: v.id,
      kind: v.kind,
      state: v.state,
      audience: v.audienceText,
      targets: v.targets,
      applied: v.applied,
      left: v.left,
      expiresAt: v.expiresAt,
      revision: v.revision
    }))
  }

  // --- internals -------------------------------------------------------------------------

  private async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.writing.then(fn, fn)
    this.writing = run.catch(() => {})
    return await run
  }

  /** Loads the notice, applies `change` to its current state and writes every copy at a new revision. */
  private async transition (id: string, options: WriteOptions, change: (current: Notice, group: Group) => Notice, members?: Member[]): Promise<NoticeView> {
    const { signal, auth } = options
    const written = await this.exclusive(async () => {
      const mailbox = await this.load(signal)
      const group = resolveId(id, mailbox.groups)
      const next = change(representative(group), group)
      const base: Notice = { ...next, revision: mailbox.maxRevision + 1, updatedAt: this.clock.now(), by: this.components.self() }
      if (!group.private) {
        checkNotice(base)
        const entry = await this.logCall(async log => await log.put(noticeKind, group.id, base, { signal, auth }))
        return { notice: base, addressed: null, author: entry.author }
      }
      const copies = group.copies.map(c => ({ key: c.key, notice: { ...base, audience: c.notice.audience } }))
      copies.forEach(c => { checkNotice(c.notice) })
      const author = await this.writeCopies(copies, options, base.state)
      return { notice: base, addressed: copies.map(c => c.notice.audience.node as string), author }
    })
    return this.viewOf(written.notice, written.addressed, members ?? await this.membersOrEmpty(signal), written.author)
  }

  /** The private copies of one write (returns their author); a failure part-way says what was written. */
  private async writeCopies (copies: Array<{ key: string, notice: Notice }>, options: WriteOptions, what: NoticeState): Promise<string | undefined> {
    let done = 0
    let author: string | undefined
    try {
      for (const c of copies) {
        author = (await this.logCall(async log => await log.put(inboxKind, c.key, c.notice, { signal: options.signal, auth: options.auth }))).author
        done++
      }
      return author
    } catch (err) {
      if (done === 0) throw err
      const id = copies[0]?.notice.id ?? '?'
      const status = err instanceof NoticeError ? err.status : 503
      throw new NoticeError(
        `notice ${id} is ${what} for ${done} of ${copies.length} nodes, then the write failed: ${errorMessage(err)}; repeat the command (or recall ${id})`,
        err instanceof AstradError ? err.code : 'ERR_PARTIAL', status, { cause: err })
    }
  }

  private async find (id: string, signal?: AbortSignal): Promise<Group> {
    return resolveId(id, (await this.load(signal)).groups)
  }

  private async load (signal?: AbortSignal): Promise<Mailbox> {
    const [pub, priv] = await this.logCall(async log => await Promise.all([
      log.list(noticeKind, { includeDeleted: true, signal }),
      log.list(inboxKind, { includeDeleted: true, signal })
    ]))
    const groups = new Map<string, Group>()
    let maxRevision = 0
    const add = (e: Entry<Notice>, isPrivate: boolean): void => {
      const n = e.value
      if (n == null) return
      maxRevision = Math.max(maxRevision, n.revision)
      if (e.deleted) return
      let g = groups.get(n.id)
      if (g == null) {
        g = { id: n.id, private: isPrivate, copies: [] }
        groups.set(n.id, g)
      }
      // Ids are random and checked unused at publish; a public and a private notice sharing one
      // would be a foreign write: the public one keeps the id.
      if (g.private !== isPrivate) return
      g.copies.push({ key: e.key, notice: n })
      if (g.authorRevision == null || n.revision > g.authorRevision) {
        g.author = e.author
        g.authorRevision = n.revision
      }
    }
    for (const e of pub) add(e, false)
    for (const e of priv) add(e, true)
    return { groups, maxRevision }
  }

  private async logCall<T> (fn: (log: ClusterLogAccess) => Promise<T>): Promise<T> {
    try {
      return await fn(this.components.clusterLog())
    } catch (err) {
      throw mapLogError(err)
    }
  }

  private async readMembers (signal?: AbortSignal): Promise<Member[]> {
    try {
      return await this.components.members(signal)
    } catch (err) {
      if (err instanceof NoticeError || signal?.aborted === true) throw err
      throw new NoticeError(`cannot read the online list: ${errorMessage(err)}`, err instanceof AstradError ? err.code : 'ERR_NO_MEMBERS', 503, { cause: err })
    }
  }

  /** Members for the view answered after a write: the write stands even if the list is unavailable. */
  private async membersOrEmpty (signal?: AbortSignal): Promise<Member[]> {
    try {
      return await this.components.members(signal)
    } catch {
      return []
    }
  }

  private requireUnexpired (n: Notice, what: string): void {
    if (isExpired(n, this.clock.now())) {
      throw wrongState(`notice ${n.id} expired at ${new Date(n.expiresAt ?? 0).toISOString()} and cannot be ${what}; publish a new one`)
    }
  }

  /** Operator input → the stored payload of `kind`, checked with DATA_SCHEMAS. */
  private async parseData (kind: NoticeKind, raw: unknown, audience: Audience, signal?: AbortSignal): Promise<unknown> {
    const input = raw === undefined ? {} : raw
    if (input === null || typeof input !== 'object' || Array.isArray(input)) throw bad(`${kind} data must be a JSON object, e.g. ${EXAMPLES[kind]}`)
    const obj = input as Record<string, unknown>
    for (const key of Object.keys(obj)) {
      if (!ALLOWED_KEYS[kind].includes(key)) throw bad(`${kind} data: unknown key '${key}' (allowed: ${ALLOWED_KEYS[kind].join(', ')})`)
    }
    let data: unknown
    switch (kind) {
      case 'bandwidth': {
        const upload = parseCap('upload', obj.upload)
        const download = parseCap('download', obj.download)
        if (upload == null && download == null) throw bad(`a bandwidth notice needs an upload or a download cap, e.g. ${EXAMPLES.bandwidth}`)
        data = { upload, download }
        break
      }
      case 'drain': {
        if (obj.reason !== undefined && typeof obj.reason !== 'string') throw bad('drain data: reason must be a string')
        if (obj.all !== undefined && typeof obj.all !== 'boolean') throw bad('drain data: all must be true or false')
        const targeted = audience.node != null || audience.cells != null || audience.canary != null
        if (!targeted && obj.all !== true) {
          throw bad('a drain for every node needs --data \'{"all":true}\'; target it with --cells, --canary or --node')
        }
        data = { ...(obj.reason !== undefined ? { reason: obj.reason } : {}), ...(obj.all !== undefined ? { all: obj.all } : {}) }
        break
      }
      case 'preload':
        data = { model: await this.resolveModel(obj.model, signal) }
        break
      case 'message': {
        if (typeof obj.text !== 'string' || obj.text.trim() === '') throw bad(`a message needs text, e.g. ${EXAMPLES.message}`)
        if (obj.text.length > MAX_MESSAGE_CHARS) throw bad(`message text has ${obj.text.length} characters; at most ${MAX_MESSAGE_CHARS}`)
        const level = obj.level ?? 'info'
        if (level !== 'info' && level !== 'warn') throw bad(`message level must be info or warn, got ${JSON.stringify(level)}`)
        data = { text: obj.text, level }
        break
      }
      case 'config': {
        if (Object.keys(obj).length === 0) throw bad(`a config notice needs at least one setting (allowed: ${ALLOWED_KEYS.config.join(', ')}), e.g. ${EXAMPLES.config}`)
        const out: Record<string, unknown> = {}
        if (obj.logLevel !== undefined) {
          if (typeof obj.logLevel !== 'string' || !(LOG_LEVELS as readonly string[]).includes(obj.logLevel)) {
            throw bad(`config.logLevel: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(obj.logLevel)}`)
          }
          out.logLevel = obj.logLevel
        }
        if (obj.cacheSize !== undefined) out.cacheSize = parseSize(obj.cacheSize)
        data = out
        break
      }
    }
    const parsed = parseForPeople(DATA_SCHEMAS[kind], data)
    if (!parsed.success) throw bad(`${kind} data: ${parsed.problems}`)
    const bytes = Buffer.byteLength(JSON.stringify(parsed.data))
    if (bytes > MAX_DATA_BYTES) throw bad(`${kind} data has ${bytes} bytes of JSON; at most ${MAX_DATA_BYTES}`)
    return parsed.data
  }

  /** A full model id or a unique prefix of at least MIN_MODEL_PREFIX hex digits → the full id. */
  private async resolveModel (raw: unknown, signal?: AbortSignal): Promise<string> {
    const given = typeof raw === 'string' ? raw.trim().toLowerCase() : ''
    if (!new RegExp(`^[0-9a-f]{${MIN_MODEL_PREFIX},64}$`).test(given)) {
      throw bad(`preload data: model must be a model id or its first ${MIN_MODEL_PREFIX}+ hex digits (see: astrad model ls), got ${JSON.stringify(raw ?? null)}`)
    }
    const models = await this.logCall(async log => await log.list(modelKind, { signal }))
    const matches = models.filter(e => !e.deleted && e.value != null && e.key.startsWith(given)).map(e => e.key)
    if (matches.length === 0) throw bad(`preload: no model ${given} in the cluster (see: astrad model ls)`)
    if (matches.length > 1) throw new NoticeError(`preload: ${given} matches ${matches.length} models (${matches.slice(0, 3).map(m => m.slice(0, given.length + 4) + '…').join(', ')}); give more digits`, 'ERR_AMBIGUOUS', 400)
    return matches[0] as string
  }

  private groupView (group: Group, members: Member[]): NoticeView {
    const current = representative(group)
    return this.viewOf(current, group.private ? group.copies.map(c => c.notice.audience.node as string) : null, members, group.author)
  }

  /** The view of a notice: `addressed` are the nodes of a private notice, null for a public one. */
  private viewOf (notice: Notice, addressed: string[] | null, members: Member[], author?: string): NoticeView {
    const byPeer = new Map(members.map(m => [m.peerId, m]))
    const nameOf = (peerId: string): string => byPeer.get(peerId)?.name ?? `…${peerId.slice(-8)}`
    const wanted = addressed != null ? new Set(addressed) : null
    const addressedTo = (m: Member): boolean => {
      if (!m.roles.includes('node')) return false
      if (wanted != null) return wanted.has(m.peerId)
      return notice.state === 'canary' ? visibleTo(notice, m) : inAudience(notice, m)
    }
    // A node that applied the current revision and then left (a drain notice's targets exit)
    // still counts as a target that applied it; a node that left without applying does not.
    const left = members.filter(m => m.state === 'left' && m.mailboxCursor >= notice.revision && addressedTo(m)).length
    const live = members.filter(m => LIVE_STATES.has(m.state) && addressedTo(m))
    const applied = live.filter(m => m.mailboxCursor >= notice.revision).length + left
    const listed = addressed ?? notice.audience.canary
    const view: NoticeView = {
      ...notice,
      audience: addressed != null ? { cells: null, canary: null, node: null } : notice.audience,
      private: addressed != null,
      targets: live.length + left,
      applied,
      left,
      audienceText: audienceText(notice, addressed, nameOf)
    }
    if (listed != null) view.nodes = listed.map(peerId => ({ peerId, name: nameOf(peerId) }))
    if (author != null) view.author = author
    return view
  }
}

/** The copy that reflects the latest write (all copies share it unless a write failed part-way). */
function representative (group: Group): Notice {
  let best = group.copies[0]?.notice as Notice
  for (const c of group.copies) if (c.notice.revision > best.revision) best = c.notice
  return best
}

/**
 * A private notice whose copies disagree (a write failed part-way): repeating the command that
 * failed rewrites every copy instead of being refused for the state the first copies reached.
 */
function isRepair (group: Group): boolean {
  if (!group.private) return false
  const first = group.copies[0]?.notice
  return group.copies.some(c => c.notice.revision !== first?.revision)
}

function checkEditable (n: Notice): void {
  if (n.state !== 'canary' && n.state !== 'published') throw wrongState(`notice ${n.id} is ${n.state}; only canary or published notices can be edited`)
}

function resolveId (raw: string, groups: Map<string, Group>): Group {
  const id = typeof raw === 'string' ? raw.trim().toLowerCase() : ''
  if (!new RegExp(`^[0-9a-f]{${MIN_NOTICE_PREFIX},12}$`).test(id)) {
    throw bad(`a notice id is 12 hex digits, or a unique prefix of ${MIN_NOTICE_PREFIX} or more (see: astrad notice ls); got '${String(raw).slice(0, 40)}'`)
  }
  const exact = groups.get(id)
  if (exact != null) return exact
  const matches = [...groups.keys()].filter(k => k.startsWith(id)).sort()
  if (matches.length === 0) throw new NoticeError(`no notice ${id} (see: astrad notice ls)`, 'ERR_NOT_FOUND', 404)
  if (matches.length > 1) throw new NoticeError(`${id} matches ${matches.length} notices (${matches.slice(0, 5).join(', ')}${matches.length > 5 ? ', …' : ''}); give more digits`, 'ERR_AMBIGUOUS', 400)
  return groups.get(matches[0] as string) as Group
}

function mapLogError (err: unknown): unknown {
  if (err instanceof NoticeError || !(err instanceof AstradError)) return err
  if (err.code === 'ERR_INVALID_ENTRY') return new NoticeError(`the cluster log refused the notice: ${err.message}`, 'ERR_BAD_NOTICE', 400, { cause: err })
  if (UNAVAILABLE.has(err.code)) return new NoticeError(`cluster log unavailable: ${err.message}`, err.code, 503, { cause: err })
  return err
}

/** Defence in depth: exactly what the nodes will check. */
function checkNotice (n: Notice): void {
  const parsed = noticeSchema.safeParse(n)
  if (!parsed.success) {
    throw bad(`invalid notice: ${parsed.error.issues.map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`)
  }
}

function parseKind (raw: unknown): NoticeKind {
  if (typeof raw === 'string' && (NOTICE_KINDS as readonly string[]).includes(raw)) return raw as NoticeKind
  throw bad(`unknown notice kind ${JSON.stringify(raw ?? null)} (kinds: ${NOTICE_KINDS.join(', ')})`)
}

/** An optional list field: undefined stays undefined; anything else must be non-empty strings. */
function stringList (field: string, raw: unknown): string[] | undefined {
  if (raw === undefined || raw === null) return undefined
  if (!Array.isArray(raw) || raw.some(x => typeof x !== 'string')) throw bad(`${field} must be a list of strings`)
  const list = (raw as string[]).map(s => s.trim())
  if (list.length === 0) throw bad(`${field} is empty: give at least one entry, or leave it out`)
  if (list.some(s => s === '')) throw bad(`${field} has an empty entry`)
  if (list.length > MAX_AUDIENCE) throw bad(`${field} has ${list.length} entries; at most ${MAX_AUDIENCE}`)
  return list
}

function parseCells (list: string[]): string[] {
  for (const c of list) if (c.length > 64) throw bad(`cell name '${c.slice(0, 20)}…' is longer than 64 characters`)
  return [...new Set(list)]
}

/**
 * Node names or peer ids → peer ids of live nodes, deduplicated in the order given. A name two
 * live nodes share must be given as a peer id.
 */
function resolveNodes (field: string, given: string[], members: Member[]): string[] {
  const out = new Set<string>()
  for (const s of given) {
    const byId = members.find(m => m.peerId === s)
    const candidates = byId != null ? [byId] : members.filter(m => m.name === s)
    const live = candidates.filter(isLiveNode)
    if (live.length > 1) {
      throw new NoticeError(`${field}: node name '${s}' is ambiguous (${live.length} nodes: ${live.map(m => m.peerId).join(', ')}); give the peer id`, 'ERR_AMBIGUOUS', 400)
    }
    const m = live[0]
    if (m == null) {
      const seen = candidates[0]
      if (seen != null) {
        const why = seen.roles.includes('node') ? `is ${seen.state}` : `has no node role (roles: ${seen.roles.join(',')})`
        throw new NoticeError(`${field}: node '${s}' ${why}; a notice can only target live nodes`, 'ERR_UNKNOWN_NODE', 400)
      }
      const names = [...new Set(members.filter(isLiveNode).map(x => x.name))].sort()
      const known = names.length === 0 ? 'no live nodes known' : `known nodes: ${names.slice(0, KNOWN_NAMES_SHOWN).join(', ')}${names.length > KNOWN_NAMES_SHOWN ? ', …' : ''}`
      throw new NoticeError(`${field}: unknown node '${s}' (${known})`, 'ERR_UNKNOWN_NODE', 400)
    }
    out.add(m.peerId)
  }
  return [...out]
}

/** A bandwidth direction: bytes/s, a rate string, or null/"none". */
function parseCap (field: string, raw: unknown): number | null {
  if (raw === undefined || raw === null) return null
  if (typeof raw === 'string' && /^(none|unlimited)$/i.test(raw.trim())) return null
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw) || raw < 1 || raw > 2 ** 40) throw bad(`bandwidth.${field}: expected 1 to 2^40 whole bytes/s, a rate such as 25MB/s, or "none"; got ${raw}`)
    return raw
  }
  if (typeof raw === 'string') {
    try {
      return parseRate(raw)
    } catch (err) {
      throw bad(`bandwidth.${field}: ${errorMessage(err)}`)
    }
  }
  throw bad(`bandwidth.${field}: expected a rate such as 25MB/s, bytes/s, or "none"; got ${JSON.stringify(raw)}`)
}

function parseSize (raw: unknown): number {
  if (typeof raw === 'number') {
    if (!Number.isSafeInteger(raw) || raw < 1) throw bad(`config.cacheSize: expected a positive whole number of bytes or a size such as 20GiB; got ${raw}`)
    return raw
  }
  if (typeof raw === 'string') {
    try {
      return parseBytes(raw)
    } catch (err) {
      throw bad(`config.cacheSize: ${errorMessage(err)}`)
    }
  }
  throw bad(`config.cacheSize: expected a size such as 20GiB or bytes; got ${JSON.stringify(raw)}`)
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `expires` → ms since the epoch (null = never); refuses the past and beyond MAX_EXPIRY_MS. */
export function parseExpiry (raw: unknown, now: number): number | null {
  if (raw === undefined || raw === null) return null
  let at: number
  const text = String(raw).trim()
  if (typeof raw === 'number' || /^\d+$/.test(text)) {
    at = Number(text)
    if (!Number.isSafeInteger(at)) throw bad(`expiry ${text} is not a time (ms since the epoch)`)
  } else {
    const d = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/i.exec(text)
    if (d != null) {
      at = now + Math.round(Number(d[1]) * (DURATION_UNITS[(d[2] as string).toLowerCase()] as number))
    } else if (/^\d{4}-\d{2}-\d{2}/.test(text) && !Number.isNaN(Date.parse(text))) {
      at = Date.parse(text)
    } else {
      throw bad(`expiry '${text.slice(0, 40)}' is not a duration (90s, 30m, 2h, 7d), an ISO-8601 date-time or ms since the epoch`)
    }
  }
  if (at <= now) throw bad(`expiry '${text}' is in the past (${new Date(at).toISOString()}; now ${new Date(now).toISOString()})`)
  if (at - now > MAX_EXPIRY_MS) throw bad(`expiry '${text}' is more than ${Math.round(MAX_EXPIRY_MS / 86_400_000)} days away`)
  return at
}

/** 'all', 'cells: a,b', 'canary: n1,n2', 'private: n1,n2', names cut after AUDIENCE_NAMES_SHOWN. */
function audienceText (n: Notice, addressed: string[] | null, nameOf: (peerId: string) => string): string {
  const names = (peers: string[]): string => {
    const shown = peers.slice(0, AUDIENCE_NAMES_SHOWN).map(nameOf).join(',')
    return peers.length > AUDIENCE_NAMES_SHOWN ? `${shown} +${peers.length - AUDIENCE_NAMES_SHOWN} more` : shown
  }
  if (addressed != null) return `private: ${names(addressed)}`
  if (n.state === 'canary' && n.audience.canary != null) return `canary: ${names(n.audience.canary)}`
  if (n.audience.cells != null) {
    const cells = n.audience.cells
    return `cells: ${cells.slice(0, AUDIENCE_NAMES_SHOWN).join(',')}${cells.length > AUDIENCE_NAMES_SHOWN ? ` +${cells.length - AUDIENCE_NAMES_SHOWN} more` : ''}`
  }
  return 'all'
}
