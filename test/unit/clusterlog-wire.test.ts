import { test } from 'node:test'
import assert from 'node:assert/strict'
import { z } from 'zod'
import {
  decodeAccessRequest, decodeEntryResponse, decodeHint, decodeReplicateRequest, decodeReplicateResponse, decodeSyncRequest, decodeSyncResponse, decodeWriteResponse,
  encodeEntryResponse, encodeJson, encodeLogEntry, encodeReplicateRequest, encodeReplicateResponse, encodeSyncRequest, encodeSyncResponse, encodeWriteResponse
} from '../../src/clusterlog/wire.ts'
import { formatVersion } from '../../src/clusterlog/hlc.ts'
import { defineKind, encodeValue } from '../../src/clusterlog/kind.ts'
import { MAX_ORIGINS, MAX_VALUE_BYTES } from '../../src/clusterlog/constants.ts'
import type { LogEntry } from '../../src/clusterlog/store.ts'
import { fakePeerId } from '../helpers/heartbeat.ts'

const origin = `${fakePeerId(1)}:0123abcd`
const bytes = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v))
const entry = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  origin, seq: 1, kind: 'app', key: 'a', version: formatVersion({ wall: 1_700_000_000_000, counter: 0, origin }), deleted: false, value: { x: 1 }, ...over
})
const decodeErr = { name: 'DecodeError', code: 'ERR_DECODE' }

test('sync request and response round-trip', () => {
  const have = new Map([[origin, 5]])
  assert.deepEqual(decodeSyncRequest(encodeSyncRequest(have)), have)
  const e: LogEntry = { origin, seq: 1, kind: 'app', key: 'a', version: entry().version as string, deleted: false, pruned: false, value: '{"x":1}' }
  const tomb: LogEntry = { ...e, seq: 2, deleted: true, pruned: false, value: undefined }
  delete tomb.value
  const res = decodeSyncResponse(encodeSyncResponse([encodeLogEntry(e), encodeLogEntry(tomb)], true))
  assert.deepEqual(res, { entries: [e, tomb], more: true })
})

test('malformed sync requests are DecodeErrors', () => {
  assert.throws(() => decodeSyncRequest(bytes('not json')), decodeErr)
  assert.throws(() => decodeSyncRequest(new Uint8Array([0xff, 0xfe])), decodeErr)
  assert.throws(() => decodeSyncRequest(bytes({ have: { 'no-origin': 1 } })), decodeErr)
  assert.throws(() => decodeSyncRequest(bytes({ have: { [origin]: -1 } })), decodeErr)
  assert.throws(() => decodeSyncRequest(bytes({ have: {}, extra: 1 })), decodeErr)
  const many = Object.fromEntries(Array.from({ length: MAX_ORIGINS + 1 }, (_, i) => [`${fakePeerId(1)}:${i.toString(16).padStart(8, '0')}`, 1]))
  assert.throws(() => decodeSyncRequest(bytes({ have: many })), decodeErr)
})

test('malformed sync responses are DecodeErrors: shapes, kinds, keys, versions, value rules and sizes', () => {
  const bad = [
    entry({ kind: 'Bad Kind' }),
    entry({ key: '' }),
    entry({ key: 'a\u0000b' }),
    entry({ key: 'k'.repeat(300) }),
    entry({ version: 'yesterday' }),
    entry({ version: formatVersion({ wall: 1, counter: 0, origin: `${fakePeerId(2)}:0123abcd` }) }),
    entry({ deleted: true }), // a tombstone with a value
    entry({ value: undefined }), // a live entry without one
    entry({ pruned: true }),
    entry({ seq: 0 }),
    entry({ seq: 1.5 }),
    entry({ value: 'x'.repeat(MAX_VALUE_BYTES) })
  ]
  for (const e of bad) {
    assert.throws(() => decodeSyncResponse(bytes({ entries: [e], more: false })), decodeErr, JSON.stringify(e).slice(0, 120))
  }
  assert.throws(() => decodeSyncResponse(bytes({ entries: [], more: 'yes' })), decodeErr)
  const deep = '{"entries":[' + JSON.stringify(entry()).replace('{"x":1}', '['.repeat(200_000) + ']'.repeat(200_000)) + '],"more":false}'
  assert.throws(() => decodeSyncResponse(bytes(deep)), decodeErr, 'absurd nesting is refused, not a stack overflow')
})

test('hints and access requests are validated', () => {
  assert.deepEqual(decodeHint(bytes({ origin, seq: 3 })), { origin, seq: 3 })
  assert.throws(() => decodeHint(bytes({ origin, seq: 0 })), decodeErr)
  assert.throws(() => decodeHint(bytes({ origin: 'x', seq: 1 })), decodeErr)
  assert.equal(decodeAccessRequest(bytes({ op: 'put', kind: 'app', key: 'k', value: null })).op, 'put')
  assert.throws(() => decodeAccessRequest(bytes({ op: 'put', kind: 'app', key: 'k' })), decodeErr)
  assert.throws(() => decodeAccessRequest(bytes({ op: 'drop', kind: 'app', key: 'k' })), decodeErr)
  assert.throws(() => decodeAccessRequest(bytes({ op: 'list', kind: 'app', includeDeleted: false, limit: 1e9 })), decodeErr)
})

test('kinds check values against their schema and JSON size', () => {
  const app = defineKind('app', z.object({ replicas: z.number().int().min(1) }))
  assert.deepEqual(encodeValue(app, { replicas: 2 }), { value: { replicas: 2 }, text: '{"replicas":2}' })
  assert.throws(() => encodeValue(app, { replicas: 0 }), { name: 'InvalidEntryError', code: 'ERR_INVALID_ENTRY' })
  const blob = defineKind('blob', z.string())
  assert.throws(() => encodeValue(blob, 'x'.repeat(MAX_VALUE_BYTES)), { name: 'InvalidEntryError' })
  assert.throws(() => defineKind('Not A Kind', z.string()), { name: 'InvalidEntryError' })
})

test('replicate requests and responses round-trip; malformed ones are DecodeErrors', () => {
  const e: LogEntry = { origin, seq: 3, kind: 'app', key: 'a', version: entry().version as string, deleted: false, pruned: false, value: '{"x":1}' }
  assert.deepEqual(decodeReplicateRequest(encodeReplicateRequest(e)), e)
  const pruned: LogEntry = { ...e, pruned: true }
  delete pruned.value
  assert.deepEqual(decodeReplicateRequest(encodeReplicateRequest(pruned)), pruned)
  assert.equal(decodeReplicateResponse(encodeReplicateResponse(7)), 7)
  assert.throws(() => decodeReplicateRequest(bytes('nope')), decodeErr)
  assert.throws(() => decodeReplicateRequest(bytes({ entry: entry(), more: true })), decodeErr)
  assert.throws(() => decodeReplicateRequest(bytes({ entry: entry({ seq: 0 }) })), decodeErr)
  assert.throws(() => decodeReplicateRequest(bytes({ entry: entry({ value: undefined }) })), decodeErr)
  assert.throws(() => decodeReplicateRequest(bytes({ entries: [entry()] })), decodeErr)
  assert.throws(() => decodeReplicateResponse(bytes({ have: -1 })), decodeErr)
  assert.throws(() => decodeReplicateResponse(bytes({ have: 1, extra: 1 })), decodeErr)
})

test('write responses carry replicas; an answer without them counts as one copy', () => {
  const object = { kind: 'app', key: 'a', value: { x: 1 }, deleted: false, version: entry().version as string, origin: fakePeerId(1), rev: 4 }
  assert.deepEqual(decodeWriteResponse(encodeWriteResponse(object, 2)), { entry: object, replicas: 2 })
  assert.deepEqual(decodeWriteResponse(bytes({ entry: object })), { entry: object, replicas: 1 })
  assert.throws(() => decodeWriteResponse(bytes({ entry: object, replicas: 0 })), decodeErr)
  assert.throws(() => decodeWriteResponse(bytes({ entry: null, replicas: 1 })), decodeErr)
})

test('authors travel in sync entries and access answers; an access write carries its operator request', () => {
  const e: LogEntry = { origin, seq: 1, kind: 'notice', key: 'n1', version: formatVersion({ wall: 1_700_000_000_000, counter: 0, origin }), deleted: false, pruned: false, value: '{"v":1}', author: 'alice' }
  const synced = decodeSyncResponse(encodeSyncResponse([encodeLogEntry(e)], false)).entries[0]
  assert.equal(synced?.author, 'alice')
  const { author: _, ...anonymous } = e
  assert.equal(decodeSyncResponse(encodeSyncResponse([encodeLogEntry(anonymous)], false)).entries[0]?.author, undefined)
  const entry = { kind: 'app', key: 'vad', value: { x: 1 }, deleted: false, version: e.version, origin: fakePeerId(1), rev: 3, author: 'bob' }
  assert.equal(decodeEntryResponse(encodeEntryResponse(entry))?.author, 'bob')
  const put = decodeAccessRequest(encodeJson({ op: 'put', kind: 'app', key: 'vad', value: 1, auth: 'header.claims.signature' }))
  assert.equal(put.op === 'put' ? put.auth : undefined, 'header.claims.signature')
  assert.throws(() => decodeAccessRequest(encodeJson({ op: 'delete', kind: 'app', key: 'vad', auth: 'x'.repeat(64 * 1024) })), { code: 'ERR_DECODE' })
  assert.throws(() => decodeSyncResponse(encodeJson({ entries: [{ ...e, value: { v: 1 }, author: 'x'.repeat(200) }], more: false })), { code: 'ERR_DECODE' })
})
