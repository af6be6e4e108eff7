import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fakePeerId } from '../helpers/heartbeat.ts'
import { MailboxState, MailboxStateError, loadState, saveState, type MailboxAction } from '../../src/mailbox/state.ts'
import { MailboxIndex } from '../../src/mailbox/memory.ts'
import { decodePullResponse, encodePullResponse, type PullResponse } from '../../src/mailbox/wire.ts'
import { formatVersion } from '../../src/clusterlog/hlc.ts'
import { mailboxConstants, type MailboxItem, type Notice, type NoticeKind } from '../../src/mailbox/index.ts'
import type { Entry } from '../../src/clusterlog/index.ts'

/**
 * The node's mailbox logic without a network: merge order, exactly once across a restart,
 * expiry, recall undo, snapshots; and the resource's in-memory feed it pulls from.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-mailbox-unit-'))
after(() => { fs.rmSync(root, { recursive: true, force: true }) })

const ORIGIN = `${'A'.repeat(46)}:0badc0de`
const ME = { peerId: fakePeerId(1), cell: 'a' }
const OTHER = { peerId: fakePeerId(2), cell: 'b' }
let wall = 1_700_000_000_000
let counter = 0
function version (): string { return formatVersion({ wall: wall, counter: counter++, origin: ORIGIN }) }

function notice (id: string, kind: NoticeKind, data: unknown, over: Partial<Notice> = {}): Notice {
  return {
    id, kind, data, audience: { cells: null, canary: null, node: null }, state: 'published', revision: 1,
    createdAt: wall, updatedAt: wall, expiresAt: null, by: 'test', ...over
  }
}

function item (n: Notice, v = version()): MailboxItem {
  return { key: n.audience.node != null ? `${n.audience.node}/${n.id}` : n.id, version: v, notice: n }
}

function page (items: MailboxItem[], over: Partial<PullResponse> = {}): PullResponse {
  return { mode: 'delta', source: ORIGIN, rev: 1, revision: 1, more: false, items, ...over }
}

const types = (a: MailboxAction[]): string[] => a.map(x => x.type)
const BW = { upload: 1_000_000, download: null }

test('a bandwidth notice is a standing effect: applied once per version, later versions win, recall ends it', () => {
  const s = new MailboxState(ME)
  const v1 = item(notice('000000000001', 'bandwidth', BW, { revision: 1 }))
  assert.deepEqual(types(s.receive(page([v1]), wall)), ['standing'])
  assert.deepEqual(s.standing(wall).bandwidth, BW)
  // The same write again (another page, another resource, a snapshot): nothing happens.
  assert.deepEqual(s.receive(page([v1]), wall), [])
  assert.deepEqual(s.receive(page([v1], { mode: 'snapshot' }), wall), [])
  // A newer notice overrides; an older version of the first arriving late changes nothing.
  const v2 = item(notice('000000000002', 'bandwidth', { upload: 5, download: 5 }, { revision: 2 }))
  s.receive(page([v2]), wall)
  assert.deepEqual(s.standing(wall).bandwidth, { upload: 5, download: 5 })
  const stale = { ...v1, version: formatVersion({ wall: wall - 1000, counter: 0, origin: ORIGIN }) }
  assert.deepEqual(s.receive(page([stale]), wall), [])
  // Recall of the newer one: the older one is in force again.
  const recalled = item(notice('000000000002', 'bandwidth', null, { state: 'recalled', revision: 3 }))
  assert.deepEqual(types(s.receive(page([recalled]), wall)), ['standing'])
  assert.deepEqual(s.standing(wall).bandwidth, BW)
  assert.equal(s.revision, 3)
})

test('merge order: private and public interleaved by version, an edit supersedes, the newest version decides', () => {
  const s = new MailboxState(ME)
  const pub = notice('00000000000a', 'config', { logLevel: 'debug' }, { revision: 1 })
  const priv = notice('00000000000b', 'config', { logLevel: 'warn' }, { revision: 2, audience: { cells: null, canary: null, node: ME.peerId } })
  s.receive(page([item(pub), item(priv)]), wall)
  assert.deepEqual(s.standing(wall).config, { logLevel: 'warn' })
  // Edit of the public one (a newer version) now overrides the private one.
  s.receive(page([item({ ...pub, data: { logLevel: 'error', cacheSize: 1024 }, revision: 3 })]), wall)
  assert.deepEqual(s.standing(wall).config, { logLevel: 'error', cacheSize: 1024 })
})

test('one-shot drain and preload: exactly once, again only when an edit changes the data; recall frees a preload', () => {
  const s = new MailboxState(ME)
  const drain = notice('0000000000d1', 'drain', { all: true })
  assert.deepEqual(types(s.receive(page([item(drain)]), wall)), ['drain'])
  // Promotion or re-delivery at a newer version with the same data: no second drain.
  assert.deepEqual(s.receive(page([item({ ...drain, revision: 2 })]), wall), [])
  const model = 'ab'.repeat(32)
  const pre = notice('0000000000e1', 'preload', { model })
  assert.deepEqual(types(s.receive(page([item(pre)]), wall)), ['preload'])
  assert.deepEqual(s.pendingPreloads(), [{ type: 'preload', id: pre.id, model }])
  s.settle(pre.id)
  assert.deepEqual(s.pendingPreloads(), [])
  const other = 'cd'.repeat(32)
  assert.deepEqual(types(s.receive(page([item({ ...pre, data: { model: other }, revision: 3 })]), wall)), ['preload'])
  const undo = s.receive(page([item({ ...pre, state: 'recalled', data: null, revision: 4 })]), wall)
  assert.deepEqual(undo, [{ type: 'unpreload', id: pre.id, model: other }])
})

test('not for me, stopped before I saw it, or expired: never applied', () => {
  const s = new MailboxState(ME)
  const elsewhere = notice('000000000101', 'message', { text: 'cell b', level: 'info' }, { audience: { cells: ['b'], canary: null, node: null } })
  const canary = notice('000000000102', 'message', { text: 'canary', level: 'info' }, { state: 'canary', audience: { cells: null, canary: [OTHER.peerId], node: null } })
  const stopped = notice('000000000103', 'message', { text: 'stopped', level: 'info' }, { state: 'stopped' })
  const expired = notice('000000000104', 'message', { text: 'late', level: 'info' }, { expiresAt: wall - 1 })
  assert.deepEqual(s.receive(page([item(elsewhere), item(canary), item(stopped), item(expired)]), wall), [])
  assert.deepEqual(s.standing(wall).messages, [])
  // The canary promoted: now it applies.
  assert.deepEqual(types(s.receive(page([item({ ...canary, state: 'published', audience: { cells: null, canary: null, node: null }, revision: 2 })]), wall)), ['message', 'standing'])
})

test('stop keeps effects where applied; expiry ends standing effects and is never applied after it', () => {
  const s = new MailboxState(ME)
  const bw = notice('000000000201', 'bandwidth', BW, { expiresAt: wall + 10_000 })
  s.receive(page([item(bw)]), wall)
  s.receive(page([item({ ...bw, state: 'stopped', revision: 2 })]), wall)
  assert.deepEqual(s.standing(wall).bandwidth, BW, 'stop keeps the effect')
  assert.equal(s.nextExpiry(), wall + 10_000)
  assert.deepEqual(s.expire(wall + 9_999), [])
  assert.deepEqual(types(s.expire(wall + 10_000)), ['standing'])
  assert.equal(s.standing(wall + 10_000).bandwidth, undefined)
  assert.equal(s.nextExpiry(), null)
  // A notice edited after its expiry is not applied.
  const late = notice('000000000202', 'bandwidth', BW, { expiresAt: wall + 5 })
  assert.deepEqual(s.receive(page([item(late)]), wall + 6), [])
})

test('a complete snapshot that no longer lists an active notice ends it (recalled and forgotten while away)', () => {
  const s = new MailboxState(ME)
  const keep = notice('000000000301', 'message', { text: 'keep', level: 'warn' })
  const gone = notice('000000000302', 'bandwidth', BW)
  const vKeep = item(keep)
  s.receive(page([vKeep, item(gone)]), wall)
  // Snapshot over two pages: the first page alone must not end anything.
  assert.deepEqual(s.receive(page([vKeep], { mode: 'snapshot', source: 'other:00000000', more: true }), wall), [])
  assert.deepEqual(s.standing(wall).bandwidth, BW)
  assert.deepEqual(types(s.receive(page([], { mode: 'snapshot', source: 'other:00000000', more: false }), wall)), ['standing'])
  assert.equal(s.standing(wall).bandwidth, undefined)
  assert.equal(s.standing(wall).messages.length, 1)
  assert.deepEqual(s.cursor, { source: 'other:00000000', rev: 1 })
})

test('exactly once across a restart: the saved state neither re-applies nor misses', () => {
  const dir = fs.mkdtempSync(path.join(root, 'restart-'))
  const s1 = new MailboxState(ME)
  const drain = item(notice('000000000401', 'drain', { all: true }, { revision: 7 }))
  const msg = item(notice('000000000402', 'message', { text: 'hello', level: 'info' }, { revision: 8 }))
  assert.deepEqual(types(s1.receive(page([drain], { rev: 10 }), wall)), ['drain'])
  saveState(dir, s1.toJSON())
  // Restart: the same page again (the resource did not see our cursor move) applies nothing;
  // the next one applies only what is new.
  const s2 = new MailboxState(ME, loadState(dir))
  assert.deepEqual(s2.cursor, { source: ORIGIN, rev: 10 })
  assert.equal(s2.revision, 7)
  assert.deepEqual(s2.receive(page([drain], { rev: 10 }), wall), [])
  assert.deepEqual(types(s2.receive(page([drain, msg], { rev: 11 }), wall)), ['message', 'standing'])
  saveState(dir, s2.toJSON())
  const s3 = new MailboxState(ME, loadState(dir))
  assert.equal(s3.standing(wall).messages[0]?.text, 'hello', 'standing effects come back after a restart')
  assert.equal(s3.revision, 8)
})

test('a corrupt state file is refused with a clear error, a missing one is a fresh start', () => {
  const dir = fs.mkdtempSync(path.join(root, 'corrupt-'))
  assert.equal(loadState(dir), undefined)
  fs.writeFileSync(path.join(dir, mailboxConstants.STATE_FILE), '{"format":1,')
  assert.throws(() => loadState(dir), (err: unknown) => err instanceof MailboxStateError && /not JSON/.test(err.message))
  fs.writeFileSync(path.join(dir, mailboxConstants.STATE_FILE), '{"format":2}')
  assert.throws(() => loadState(dir), (err: unknown) => err instanceof MailboxStateError && /malformed/.test(err.message))
})

// ---- the resource's in-memory mailbox --------------------------------------------------------

let rev = 0
function entry (n: Notice, over: Partial<Entry<unknown>> = {}): Entry<unknown> {
  const isPrivate = n.audience.node != null
  return {
    kind: isPrivate ? 'inbox' : 'notice', key: isPrivate ? `${n.audience.node}/${n.id}` : n.id, value: n, deleted: false,
    version: version(), origin: ORIGIN, rev: ++rev, ...over
  }
}

function pullOf (index: MailboxIndex, who: typeof ME, cursor: { source: string, rev: number } | null): PullResponse {
  const a = index.pull(who, cursor)
  return decodePullResponse(encodePullResponse(a.head, a.items))
}

test('in-memory mailbox: deltas from the cursor merge public and private feeds by rev; invisible items only move the cursor', () => {
  const index = new MailboxIndex({ source: ORIGIN })
  const p1 = notice('000000000501', 'message', { text: 'all', level: 'info' })
  const mine = notice('000000000502', 'drain', {}, { audience: { cells: null, canary: null, node: ME.peerId } })
  const theirs = notice('000000000503', 'drain', {}, { audience: { cells: null, canary: null, node: OTHER.peerId } })
  const canary = notice('000000000504', 'message', { text: 'canary', level: 'info' }, { state: 'canary', audience: { cells: null, canary: [OTHER.peerId], node: null } })
  for (const n of [p1, mine, theirs, canary]) index.apply(entry(n))
  const first = pullOf(index, ME, null)
  assert.equal(first.mode, 'snapshot')
  assert.deepEqual(first.items.map(i => i.notice.id), [p1.id, mine.id])
  assert.equal(first.rev, index.rev)
  const other = pullOf(index, OTHER, null)
  assert.deepEqual(other.items.map(i => i.notice.id), [p1.id, theirs.id, canary.id])
  // Caught up: an empty delta.
  const again = pullOf(index, ME, { source: ORIGIN, rev: first.rev })
  assert.equal(again.mode, 'delta')
  assert.deepEqual(again.items, [])
  // Promotion moves the canary to the end of the feed: ME gets only it.
  index.apply(entry({ ...canary, state: 'published', audience: { cells: null, canary: null, node: null }, revision: 2 }))
  const promoted = pullOf(index, ME, { source: ORIGIN, rev: first.rev })
  assert.deepEqual(promoted.items.map(i => [i.notice.id, i.notice.state]), [[canary.id, 'published']])
  assert.equal(index.revision, 2)
  // Another resource's cursor, or one from the future: a snapshot.
  assert.equal(pullOf(index, ME, { source: 'x:00000000', rev: 3 }).mode, 'snapshot')
  assert.equal(pullOf(index, ME, { source: ORIGIN, rev: index.rev + 5 }).mode, 'snapshot')
})

test('in-memory mailbox: pages are bounded; forgotten notices force a snapshot for cursors before them', () => {
  const now = { t: wall }
  const index = new MailboxIndex({ source: ORIGIN, clock: { now: () => now.t }, retentionMs: 1_000 })
  const n = mailboxConstants.MAX_PULL_ITEMS + 10
  for (let i = 0; i < n; i++) index.apply(entry(notice(`1${String(i).padStart(11, '0')}`, 'message', { text: `m${i}`, level: 'info' })))
  const p1 = pullOf(index, ME, null)
  assert.equal(p1.items.length, mailboxConstants.MAX_PULL_ITEMS)
  assert.equal(p1.more, true)
  const p2 = pullOf(index, ME, { source: p1.source, rev: p1.rev })
  assert.equal(p2.items.length, 10)
  assert.equal(p2.more, false)
  assert.equal(p2.mode, 'delta')
  const caughtUp = { source: p2.source, rev: p2.rev }
  // A recall, forgotten after the retention: a cursor from before it gets a snapshot without it.
  const old = { source: ORIGIN, rev: p1.rev }
  const recalledId = `1${String(0).padStart(11, '0')}`
  index.apply(entry(notice(recalledId, 'message', null, { state: 'recalled', revision: 2, updatedAt: now.t })))
  now.t += 1_000
  assert.equal(index.gc(), 1)
  const snap = pullOf(index, ME, old)
  assert.equal(snap.mode, 'snapshot')
  assert.ok(!snap.items.some(i => i.notice.id === recalledId))
  // A node that had seen the recall before it was forgotten keeps its delta.
  const recallRev = index.rev
  assert.equal(pullOf(index, ME, { source: ORIGIN, rev: recallRev }).mode, 'delta')
  assert.equal(pullOf(index, ME, caughtUp).mode, 'snapshot', 'a cursor before the forgotten change cannot be served a delta')
})

test('a snapshot longer than a page completes even when forgotten notices put the floor past its first page', () => {
  const now = { t: wall }
  const index = new MailboxIndex({ source: ORIGIN, clock: { now: () => now.t }, retentionMs: 1_000 })
  const total = mailboxConstants.MAX_PULL_ITEMS + 50
  for (let i = 0; i < total; i++) index.apply(entry(notice(`2${String(i).padStart(11, '0')}`, 'message', { text: `m${i}`, level: 'info' })))
  index.apply(entry(notice('3'.repeat(12), 'message', null, { state: 'recalled', updatedAt: now.t })))
  now.t += 1_000
  assert.equal(index.gc(), 1)
  // A node whose state sends the cursor back each page, as the puller does.
  const s = new MailboxState(ME)
  let pages = 0
  let last: PullResponse
  do {
    last = pullOf(index, ME, s.cursor)
    s.receive(last, now.t)
    pages++
  } while (last.more && pages < 10)
  assert.equal(pages, 2, 'two pages, not the first page over and over')
  assert.equal(last.mode, 'snapshot')
  assert.equal(s.standing(now.t).messages.length, total)
  assert.equal(s.cursor?.snapshot, undefined, 'the cursor is an ordinary one once the snapshot is complete')
  assert.equal(pullOf(index, ME, s.cursor).mode, 'delta')
})

test('a restart in the middle of a snapshot starts the snapshot again (its keys were only in memory)', () => {
  const dir = fs.mkdtempSync(path.join(root, 'midsnap-'))
  const s = new MailboxState(ME)
  s.receive(page([item(notice('000000000601', 'message', { text: 'p1', level: 'info' }))], { mode: 'snapshot', more: true, rev: 5 }), wall)
  assert.deepEqual(s.cursor, { source: ORIGIN, rev: 5, snapshot: true })
  saveState(dir, s.toJSON())
  assert.equal(new MailboxState(ME, loadState(dir)).cursor, null)
})

test('pages are budgeted in bytes, not characters: multi-byte text stays under the answer cap', () => {
  const index = new MailboxIndex({ source: ORIGIN })
  for (let i = 0; i < 150; i++) index.apply(entry(notice(`4${String(i).padStart(11, '0')}`, 'message', { text: '漢'.repeat(mailboxConstants.MAX_MESSAGE_CHARS), level: 'info' })))
  let cursor: { source: string, rev: number } | null = null
  let seen = 0
  for (let p = 0; p < 10; p++) {
    const a = index.pull(ME, cursor)
    const bytes = encodePullResponse(a.head, a.items)
    assert.ok(bytes.length <= mailboxConstants.MAX_PULL_RESPONSE_BYTES, `page of ${bytes.length} bytes`)
    seen += a.items.length
    cursor = { source: a.head.source, rev: a.head.rev }
    if (!a.head.more) break
  }
  assert.equal(seen, 150)
})
