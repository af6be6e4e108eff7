import { z } from 'zod'
import { DecodeError, errorMessage } from '../util/errors.ts'
import { ORIGIN_PATTERN, isVersion, parseVersion } from './hlc.ts'
import { InvalidEntryError, isKey, isKindName, valueText, type Entry } from './kind.ts'
import type { LogEntry } from './store.ts'
import { LIST_PAGE_ENTRIES, MAX_AUTH_BYTES, MAX_AUTHOR_CHARS, MAX_ORIGINS, SYNC_BATCH_ENTRIES } from './constants.ts'

/**
 * Wire formats of the cluster log: JSON over the request/response helper (sync, access) and
 * gossip (hints). Everything decoded here is checked with zod (shapes, sizes, kinds, keys,
 * version format); a failure is a DecodeError, never a crash.
 */

const origin = z.string().max(160).regex(ORIGIN_PATTERN)
const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const kind = z.string().max(32).refine(isKindName, 'bad kind name')
const key = z.string().max(1024).refine(isKey, 'bad key')
const version = z.string().max(200).refine(isVersion, 'bad version')
const peerId = z.string().regex(/^[A-Za-z0-9]{16,128}$/)
const author = z.string().min(1).max(MAX_AUTHOR_CHARS)
/** A signed operator request (checked by trust where the write lands, not here). */
const auth = z.string().min(1).max(MAX_AUTH_BYTES)

const syncRequest = z.strictObject({
  have: z.record(origin, seq).refine(r => Object.keys(r).length <= MAX_ORIGINS, `more than ${MAX_ORIGINS} origins`)
})

const wireLogEntry = z.strictObject({
  origin,
  seq: seq.min(1),
  kind,
  key,
  version,
  deleted: z.boolean(),
  pruned: z.boolean().optional(),
  value: z.unknown().optional(),
  author: author.optional()
}).superRefine((e, ctx) => {
  if (isVersion(e.version) && parseVersion(e.version).origin !== e.origin) ctx.addIssue({ code: 'custom', message: 'version origin differs from entry origin' })
  const hasValue = e.value !== undefined
  if (hasValue !== (!e.deleted && e.pruned !== true)) ctx.addIssue({ code: 'custom', message: 'value must be present exactly on live, unpruned entries' })
})

const syncResponse = z.strictObject({
  entries: z.array(wireLogEntry).max(SYNC_BATCH_ENTRIES),
  more: z.boolean()
})

const hint = z.strictObject({ origin, seq: seq.min(1) })

const replicateRequest = z.strictObject({ entry: wireLogEntry })
const replicateResponse = z.strictObject({ have: seq })

const accessRequest = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('put'), kind, key, value: z.unknown().refine(v => v !== undefined, 'value required'), auth: auth.optional() }),
  z.strictObject({ op: z.literal('delete'), kind, key, auth: auth.optional() }),
  z.strictObject({ op: z.literal('get'), kind, key }),
  z.strictObject({
    op: z.literal('list'),
    kind,
    includeDeleted: z.boolean(),
    after: key.optional(),
    limit: z.number().int().min(1).max(LIST_PAGE_ENTRIES)
  })
])

const wireObject = z.strictObject({
  kind,
  key,
  version,
  origin: peerId,
  deleted: z.boolean(),
  rev: seq,
  value: z.unknown().optional(),
  author: author.optional()
}).refine(o => (o.value !== undefined) !== o.deleted, 'value must be present exactly on live objects')

const entryResponse = z.strictObject({ entry: wireObject.nullable() })
/** A put/delete answer; `replicas` is absent from resources older than acknowledged writes (one copy assumed). */
const writeResponse = z.strictObject({ entry: wireObject, replicas: z.number().int().min(1).max(1_000).optional() })
const listResponse = z.strictObject({ entries: z.array(wireObject).max(LIST_PAGE_ENTRIES), more: z.boolean() })

export type SyncRequest = z.infer<typeof syncRequest>
export type AccessRequest = z.infer<typeof accessRequest>

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

function parseJson (bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(decoder.decode(bytes))
  } catch (err) {
    throw new DecodeError(`${what}: not JSON (${errorMessage(err)})`)
  }
}

function check<S extends z.ZodType> (schema: S, input: unknown, what: string): z.infer<S> {
  let parsed
  try {
    parsed = schema.safeParse(input)
  } catch (err) {
    // Absurdly nested input can exhaust the stack inside a validator.
    throw new DecodeError(`${what}: ${errorMessage(err)}`)
  }
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new DecodeError(`${what}: ${issue != null ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`)
  }
  return parsed.data
}

export function encodeJson (value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

// ---- sync ------------------------------------------------------------------------------------

export function encodeSyncRequest (have: ReadonlyMap<string, number>): Uint8Array {
  return encodeJson({ have: Object.fromEntries(have) })
}

export function decodeSyncRequest (bytes: Uint8Array): Map<string, number> {
  const req = check(syncRequest, parseJson(bytes, 'sync request'), 'sync request')
  return new Map(Object.entries(req.have))
}

/** One entry as JSON text; the stored value text is spliced in as is (it is our own JSON). */
export function encodeLogEntry (e: LogEntry): string {
  const head = JSON.stringify({
    origin: e.origin, seq: e.seq, kind: e.kind, key: e.key, version: e.version, deleted: e.deleted, ...(e.pruned ? { pruned: true } : {}), ...(e.author != null ? { author: e.author } : {})
  })
  return e.value === undefined ? head : `${head.slice(0, -1)},"value":${e.value}}`
}

/** A response from entries already encoded with encodeLogEntry (the sender counts their bytes). */
export function encodeSyncResponse (entries: string[], more: boolean): Uint8Array {
  return encoder.encode(`{"entries":[${entries.join(',')}],"more":${more}}`)
}

export function decodeSyncResponse (bytes: Uint8Array): { entries: LogEntry[], more: boolean } {
  const res = check(syncResponse, parseJson(bytes, 'sync response'), 'sync response')
  return { entries: res.entries.map((e, i) => toLogEntry(e, `sync response: entries.${i}`)), more: res.more }
}

function toLogEntry (e: z.infer<typeof wireLogEntry>, where: string): LogEntry {
  const out: LogEntry = {
    origin: e.origin, seq: e.seq, kind: e.kind, key: e.key, version: e.version, deleted: e.deleted, pruned: e.pruned === true
  }
  if (e.author != null) out.author = e.author
  if (e.value !== undefined) {
    try {
      out.value = valueText(e.value)
    } catch (err) {
      throw new DecodeError(`${where}.value: ${errorMessage(err)}`)
    }
  }
  return out
}

// ---- replicate (acknowledged writes) ---------------------------------------------------------

export function encodeReplicateRequest (entry: LogEntry): Uint8Array {
  return encoder.encode(`{"entry":${encodeLogEntry(entry)}}`)
}

export function decodeReplicateRequest (bytes: Uint8Array): LogEntry {
  const req = check(replicateRequest, parseJson(bytes, 'replicate request'), 'replicate request')
  return toLogEntry(req.entry, 'replicate request: entry')
}

/** The receiver's high-water mark for the pushed entry's origin after storing it. */
export function encodeReplicateResponse (have: number): Uint8Array {
  return encodeJson({ have })
}

export function decodeReplicateResponse (bytes: Uint8Array): number {
  return check(replicateResponse, parseJson(bytes, 'replicate response'), 'replicate response').have
}

// ---- gossip hint -----------------------------------------------------------------------------

export function encodeHint (origin: string, seq: number): Uint8Array {
  return encodeJson({ origin, seq })
}

export function decodeHint (bytes: Uint8Array): { origin: string, seq: number } {
  return check(hint, parseJson(bytes, 'log hint'), 'log hint')
}

// ---- access ----------------------------------------------------------------------------------

export function decodeAccessRequest (bytes: Uint8Array): AccessRequest {
  return check(accessRequest, parseJson(bytes, 'log request'), 'log request')
}

/** A value sent for a put: JSON within the size cap (InvalidEntryError otherwise). */
export function checkValue (value: unknown): string {
  try {
    return valueText(value)
  } catch (err) {
    if (err instanceof InvalidEntryError) throw err
    throw new InvalidEntryError(errorMessage(err))
  }
}

export function encodeObject (entry: Entry<unknown>): string {
  return JSON.stringify({
    kind: entry.kind, key: entry.key, version: entry.version, origin: entry.origin, deleted: entry.deleted, rev: entry.rev, value: entry.value, author: entry.author
  })
}

export function encodeEntryResponse (entry: Entry<unknown> | undefined): Uint8Array {
  return encoder.encode(`{"entry":${entry != null ? encodeObject(entry) : 'null'}}`)
}

/** A put/delete answer: the written entry and how many resources held it durably when acknowledged. */
export function encodeWriteResponse (entry: Entry<unknown>, replicas: number): Uint8Array {
  return encoder.encode(`{"entry":${encodeObject(entry)},"replicas":${replicas}}`)
}

export function encodeListResponse (objects: string[], more: boolean): Uint8Array {
  return encoder.encode(`{"entries":[${objects.join(',')}],"more":${more}}`)
}

function toEntry (o: z.infer<typeof wireObject>): Entry<unknown> {
  return { kind: o.kind, key: o.key, value: o.value, deleted: o.deleted, version: o.version, origin: o.origin, rev: o.rev, ...(o.author != null ? { author: o.author } : {}) }
}

export function decodeEntryResponse (bytes: Uint8Array): Entry<unknown> | undefined {
  const res = check(entryResponse, parseJson(bytes, 'log response'), 'log response')
  return res.entry != null ? toEntry(res.entry) : undefined
}

export function decodeWriteResponse (bytes: Uint8Array): { entry: Entry<unknown>, replicas: number } {
  const res = check(writeResponse, parseJson(bytes, 'log write response'), 'log write response')
  return { entry: toEntry(res.entry), replicas: res.replicas ?? 1 }
}

export function decodeListResponse (bytes: Uint8Array): { entries: Array<Entry<unknown>>, more: boolean } {
  const res = check(listResponse, parseJson(bytes, 'log list response'), 'log list response')
  return { entries: res.entries.map(toEntry), more: res.more }
}
