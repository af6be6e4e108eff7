import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { defineKind } from '../clusterlog/index.ts'
import { LOG_LEVELS } from '../config/defaults.ts'
import { MAX_AUDIENCE, MAX_DATA_BYTES, MAX_MESSAGE_CHARS } from './constants.ts'

/**
 * Notices: cluster-wide orders (ARCHITECTURE §2 "Mailboxes", after Baidu's public mailbox).
 * A public notice is stored once in the cluster log (kind `notice`, key = its id) and read by
 * every node it is for; a private notice is one copy per addressed node (kind `inbox`, key
 * `<peerId>/<id>`), the write-fan-out the public mailbox exists to avoid, kept for orders meant
 * for a few named nodes.
 */

export const NOTICE_KINDS = ['bandwidth', 'drain', 'preload', 'message', 'config'] as const
export type NoticeKind = typeof NOTICE_KINDS[number]

/** `canary → published → stopped`, and `recalled` from any of them (final). */
export const NOTICE_STATES = ['canary', 'published', 'stopped', 'recalled'] as const
export type NoticeState = typeof NOTICE_STATES[number]

export interface Audience {
  /** Cells the notice is for; null = every cell. */
  cells: string[] | null
  /** The canary whitelist (peer ids): while `canary`, only these nodes see the notice. */
  canary: string[] | null
  /** A private notice: the peer id of the node whose private mailbox holds this copy; else null. */
  node: string | null
}

/** Runtime settings a `config` notice may change (unknown keys are refused at publish). */
export interface RuntimeSettings {
  logLevel?: typeof LOG_LEVELS[number]
  /** Bytes the model cache may hold before least-recently-used models are evicted. */
  cacheSize?: number
}

/** The payload of each kind, as stored (rates and sizes already in bytes). */
export interface NoticeData {
  /** Cluster-wide P2P cap in bytes/s per direction; null = no cap that way. */
  bandwidth: { upload: number | null, download: number | null }
  /** `all` must be set to drain every node the audience covers when it names no cell or node. */
  drain: { reason?: string, all?: boolean }
  /** A model id (64 hex) the nodes fetch ahead of a deployment. */
  preload: { model: string }
  message: { text: string, level: 'info' | 'warn' }
  config: RuntimeSettings
}

export interface Notice {
  id: string
  kind: NoticeKind
  /** The kind's payload (NoticeData[kind]); null once recalled (the tombstone keeps no payload). */
  data: unknown
  audience: Audience
  state: NoticeState
  /**
   * Mailbox revision of this write: every write to the mailbox takes the highest revision the
   * writer knows + 1, so revisions grow with every publish, edit and state change. Nodes report
   * the highest revision they have processed in their heartbeat (`mailboxCursor`).
   */
  revision: number
  createdAt: number
  updatedAt: number
  /** Wall-clock ms after which the notice is never applied (and standing effects end); null = never. */
  expiresAt: number | null
  /** Name of the daemon that accepted the last write. */
  by: string
}

/** One notice as a mailbox pull delivers it. */
export interface MailboxItem {
  /** Cluster-log key: the id (public) or `<peerId>/<id>` (private). */
  key: string
  /** The cluster log's HLC version of this write: a node applies a notice once per version. */
  version: string
  notice: Notice
  /**
   * The operator who wrote this version (its cluster-log author). A node in a secure cluster
   * ignores an item without one: no verified operator asked for it.
   */
  author?: string
}

/** Who a node is, for audience checks. */
export interface NodeIdentity {
  peerId: string
  cell: string
}

export const NOTICE_ID_PATTERN = /^[0-9a-f]{12}$/
const PEER_ID = z.string().regex(/^[1-9A-HJ-NP-Za-km-z]{40,100}$/, 'not a peer id')
const CELL = z.string().min(1).max(64)
const MODEL_ID = z.string().regex(/^[0-9a-f]{64}$/, 'not a model id (64 hex digits)')

/** Stored payload schemas, one per kind (strict: unknown keys are refused). */
export const DATA_SCHEMAS: { [K in NoticeKind]: z.ZodType<NoticeData[K]> } = {
  bandwidth: z.object({
    upload: z.number().int().min(1).max(2 ** 40).nullable(),
    download: z.number().int().min(1).max(2 ** 40).nullable()
  }).strict(),
  drain: z.object({
    reason: z.string().max(500).optional(),
    all: z.boolean().optional()
  }).strict(),
  preload: z.object({ model: MODEL_ID }).strict(),
  message: z.object({
    text: z.string().min(1).max(MAX_MESSAGE_CHARS),
    level: z.enum(['info', 'warn'])
  }).strict(),
  config: z.object({
    logLevel: z.enum(LOG_LEVELS).optional(),
    cacheSize: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional()
  }).strict()
}

export const audienceSchema: z.ZodType<Audience> = z.object({
  cells: z.array(CELL).min(1).max(MAX_AUDIENCE).nullable(),
  canary: z.array(PEER_ID).min(1).max(MAX_AUDIENCE).nullable(),
  node: PEER_ID.nullable()
}).strict()

export const noticeSchema: z.ZodType<Notice> = z.object({
  id: z.string().regex(NOTICE_ID_PATTERN),
  kind: z.enum(NOTICE_KINDS),
  data: z.unknown(),
  audience: audienceSchema,
  state: z.enum(NOTICE_STATES),
  revision: z.number().int().min(1).max(0xffffffff),
  createdAt: z.number().int().min(0),
  updatedAt: z.number().int().min(0),
  expiresAt: z.number().int().min(0).nullable(),
  by: z.string().max(256)
}).strict().superRefine((n, ctx) => {
  if (n.state === 'recalled') {
    if (n.data !== null) ctx.addIssue({ code: 'custom', path: ['data'], message: 'a recalled notice keeps no payload' })
  } else {
    const parsed = DATA_SCHEMAS[n.kind].safeParse(n.data)
    if (!parsed.success) ctx.addIssue({ code: 'custom', path: ['data'], message: `not ${n.kind} data: ${parsed.error.issues[0]?.message ?? 'invalid'}` })
    else if (Buffer.byteLength(JSON.stringify(n.data)) > MAX_DATA_BYTES) ctx.addIssue({ code: 'custom', path: ['data'], message: `data exceeds ${MAX_DATA_BYTES} bytes` })
  }
  if (n.state === 'canary' && n.audience.canary == null) ctx.addIssue({ code: 'custom', path: ['audience', 'canary'], message: 'a canary notice needs a whitelist' })
  if (n.audience.node != null && (n.audience.canary != null || n.audience.cells != null)) {
    ctx.addIssue({ code: 'custom', path: ['audience'], message: 'a private notice has no cells or whitelist' })
  }
}) as z.ZodType<Notice>

/** The public mailbox: each notice once. */
export const noticeKind = defineKind<Notice>('notice', noticeSchema)
/** Private mailboxes: key `<peerId>/<id>`, one copy per addressed node. */
export const inboxKind = defineKind<Notice>('inbox', noticeSchema)

export function inboxKey (peerId: string, id: string): string {
  return `${peerId}/${id}`
}

export function newNoticeId (): string {
  return randomBytes(6).toString('hex')
}

/** Whether a notice (in this state) is addressed to the node. */
export function visibleTo (n: Notice, node: NodeIdentity): boolean {
  if (!inAudience(n, node)) return false
  return n.state !== 'canary' || n.audience.node != null || (n.audience.canary?.includes(node.peerId) ?? false)
}

/** Whether a notice's audience (ignoring its state) covers the node: the canary list counts. */
export function inAudience (n: Notice, node: NodeIdentity): boolean {
  if (n.audience.node != null) return n.audience.node === node.peerId
  if (n.audience.cells != null && !n.audience.cells.includes(node.cell)) return false
  return true
}

export function isExpired (n: Notice, now: number): boolean {
  return n.expiresAt != null && now >= n.expiresAt
}

/** Kinds whose effect lasts while the notice is in force and ends at recall or expiry. */
export function isStanding (kind: NoticeKind): boolean {
  return kind === 'bandwidth' || kind === 'config' || kind === 'message'
}
