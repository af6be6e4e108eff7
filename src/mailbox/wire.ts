import { z } from 'zod'
import { DecodeError } from '../util/errors.ts'
import { noticeSchema, type MailboxItem } from './notice.ts'
import { MAX_DIGEST_BYTES, MAX_PULL_ITEMS, MAX_PULL_REQUEST_BYTES, MAX_PULL_RESPONSE_BYTES } from './constants.ts'

/**
 * Messages of `/astra/mailbox/1.0.0` (JSON, one request and one answer per stream) and of the
 * `astra/mailbox/1` digest topic. Everything from the network is checked here.
 */

/**
 * Where a node is in one resource's mailbox: the resource's change-feed space (`source`, its
 * cluster-log origin) and the last rev the node has processed there. Revs of different
 * resources are not comparable: a cursor from another source gets a snapshot.
 */
export interface Cursor {
  source: string
  rev: number
  /**
   * Set while a snapshot is being paged: the next page continues it from `rev` even if the
   * resource forgot older notices meanwhile (otherwise a snapshot longer than a page, started
   * below the forget floor, would restart from rev 0 forever).
   */
  snapshot?: true
}

export interface PullRequest {
  /** The pulling node (its private mailbox and canary membership). */
  node: string
  cell: string
  cursor: Cursor | null
}

export interface PullResponse {
  /** `snapshot`: the cursor was not usable here (new node, other resource, too far behind): every item for the node follows, over as many pages as `more` says. */
  mode: 'delta' | 'snapshot'
  /** The cursor to send next. */
  source: string
  rev: number
  /** Highest notice revision this resource holds (for digests and status). */
  revision: number
  more: boolean
  items: MailboxItem[]
}

export interface Digest {
  source: string
  rev: number
  revision: number
}

const SOURCE = z.string().min(1).max(256)
const REV = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const cursorSchema = z.object({ source: SOURCE, rev: REV, snapshot: z.literal(true).optional() }).strict()

const pullRequestSchema = z.object({
  node: z.string().regex(/^[1-9A-HJ-NP-Za-km-z]{40,100}$/, 'not a peer id'),
  cell: z.string().min(1).max(64),
  cursor: cursorSchema.nullable()
}).strict()

const itemSchema = z.object({
  key: z.string().min(1).max(512),
  version: z.string().min(1).max(256),
  notice: noticeSchema,
  author: z.string().min(1).max(64).optional()
}).strict()

const pullResponseSchema = z.object({
  mode: z.enum(['delta', 'snapshot']),
  source: SOURCE,
  rev: REV,
  revision: z.number().int().min(0).max(0xffffffff),
  more: z.boolean(),
  items: z.array(itemSchema).max(MAX_PULL_ITEMS)
}).strict()

const digestSchema = z.object({ source: SOURCE, rev: REV, revision: z.number().int().min(0).max(0xffffffff) }).strict()

function parseJson (bytes: Uint8Array, max: number, what: string): unknown {
  if (bytes.length > max) throw new DecodeError(`${what} of ${bytes.length} bytes exceeds ${max}`)
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch {
    throw new DecodeError(`${what} is not JSON`)
  }
}

function check<T> (schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new DecodeError(`malformed ${what}: ${issue != null ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`)
  }
  return parsed.data
}

export function encodePullRequest (req: PullRequest): Uint8Array {
  return Buffer.from(JSON.stringify(req))
}

export function decodePullRequest (bytes: Uint8Array): PullRequest {
  return check(pullRequestSchema, parseJson(bytes, MAX_PULL_REQUEST_BYTES, 'pull request'), 'pull request')
}

/**
 * Builds an answer from items already serialized (the resource keeps each item's JSON, so a
 * pull costs a lookup and a concatenation, not a serialization of every notice).
 */
export function encodePullResponse (head: Omit<PullResponse, 'items'>, itemsJson: string[]): Uint8Array {
  return Buffer.from(`{"mode":"${head.mode}","source":${JSON.stringify(head.source)},"rev":${head.rev},"revision":${head.revision},"more":${head.more},"items":[${itemsJson.join(',')}]}`)
}

export function decodePullResponse (bytes: Uint8Array): PullResponse {
  return check(pullResponseSchema, parseJson(bytes, MAX_PULL_RESPONSE_BYTES, 'pull response'), 'pull response')
}

export function encodeDigest (d: Digest): Uint8Array {
  return Buffer.from(JSON.stringify(d))
}

export function decodeDigest (bytes: Uint8Array): Digest {
  return check(digestSchema, parseJson(bytes, MAX_DIGEST_BYTES, 'mailbox digest'), 'mailbox digest')
}

export function itemJson (item: MailboxItem): string {
  return JSON.stringify({ key: item.key, version: item.version, notice: item.notice, author: item.author })
}
