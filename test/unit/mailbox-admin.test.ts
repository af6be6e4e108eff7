import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryLog } from '../helpers/memory-log.ts'
import { RequestError } from '../../src/util/errors.ts'
import { FakeClock } from '../../src/util/time.ts'
import { NoticeAdmin, NoticeError, type Member } from '../../src/mailbox/admin.ts'
import { inboxKey, inboxKind, noticeKind, type Notice } from '../../src/mailbox/notice.ts'
import { MAX_EXPIRY_MS } from '../../src/mailbox/constants.ts'
import { modelKind } from '../../src/transfer/kinds.ts'

/**
 * NoticeAdmin against an in-memory cluster log (values checked with their kind's schema, as the
 * real one does) and a fixed online list.
 */


const peer = (c: string): string => `12D3KooW${'A'.repeat(43)}${c}`

function fleet (): Member[] {
  const m = (c: string, name: string, cell: string, state: Member['state'] = 'alive', roles: Member['roles'] = ['node']): Member =>
    ({ peerId: peer(c), name, cell, roles, state, mailboxCursor: 0 })
  return [
    m('a', 'alpha', 'a'),
    m('b', 'beta', 'a'),
    m('c', 'gamma', 'b', 'suspect'),
    m('d', 'delta', 'b', 'draining'),
    m('e', 'omega', 'a', 'dead'),
    m('f', 'res', 'a', 'alive', ['resource']),
    m('g', 'twin', 'b'),
    m('h', 'twin', 'b'),
    m('i', 'left-one', 'a', 'left')
  ]
}

function setup (members = fleet()): { admin: NoticeAdmin, log: MemoryLog, members: Member[], clock: FakeClock } {
  const log = new MemoryLog()
  const clock = new FakeClock()
  const admin = new NoticeAdmin({ clusterLog: () => log, members: async () => members, self: () => 'ops-1', clock })
  return { admin, log, members, clock }
}

const MODEL_A = 'ab12cd34' + '0'.repeat(56)
const MODEL_B = 'ab12cd34' + 'f'.repeat(56)
const MODEL_C = '77'.repeat(32)

async function refused (p: Promise<unknown>, code: string, status: number, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof NoticeError, `a NoticeError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    assert.equal(err.status, status, err.message)
    if (message != null) assert.match(err.message, message)
    return true
  })
}

/** Every live node of the fleet (node role; alive, suspect, draining). */
const LIVE = 6

test('a public notice is one put with revision, state, times and author; the view counts its targets', async () => {
  const { admin, log, clock } = setup()
  const v = await admin.publish({ kind: 'message', data: { text: 'maintenance tonight 22:00' } })
  assert.equal(log.puts.length, 1)
  assert.deepEqual(log.puts[0], { kind: 'notice', key: v.id })
  assert.match(v.id, /^[0-9a-f]{12}$/)
  const stored = log.notice(v.id) as Notice
  assert.deepEqual(stored, {
    id: v.id,
    kind: 'message',
    data: { text: 'maintenance tonight 22:00', level: 'info' },
    audience: { cells: null, canary: null, node: null },
    state: 'published',
    revision: 1,
    createdAt: clock.now(),
    updatedAt: clock.now(),
    expiresAt: null,
    by: 'ops-1'
  })
  assert.equal(v.private, false)
  assert.equal(v.targets, LIVE)
  assert.equal(v.applied, 0)
  assert.equal(v.audienceText, 'all')
})

test('unknown kinds and malformed data are refused with the reason, nothing written', async () => {
  const { admin, log } = setup()
  log.seed('model', MODEL_A, {})
  log.seed('model', MODEL_B, {})
  log.seed('model', MODEL_C, {})
  const cases: Array<[unknown, unknown, RegExp, string?]> = [
    ['shout', {}, /unknown notice kind "shout" \(kinds: bandwidth, drain, preload, message, config\)/],
    ['message', [], /message data must be a JSON object/],
    ['message', null, /message data must be a JSON object/],
    ['message', {}, /a message needs text/],
    ['message', { text: '   ' }, /a message needs text/],
    ['message', { text: 'x'.repeat(2001) }, /2001 characters; at most 2000/],
    ['message', { text: 'hi', level: 'loud' }, /level must be info or warn/],
    ['message', { text: 'hi', config: { logLevel: 'debug' } }, /message data: unknown key 'config' \(allowed: text, level\)/],
    ['bandwidth', {}, /needs an upload or a download cap/],
    ['bandwidth', { upload: 'none', download: null }, /needs an upload or a download cap/],
    ['bandwidth', { upload: 'fast' }, /bandwidth\.upload: expected a rate such as 25MB\/s/],
    ['bandwidth', { upload: 0 }, /bandwidth\.upload: expected 1 to 2\^40/],
    ['bandwidth', { upload: 1.5 }, /bandwidth\.upload/],
    ['bandwidth', { download: '2TB/s' }, /bandwidth\.download: rate '2TB\/s' is too large/],
    ['bandwidth', { upload: true }, /bandwidth\.upload/],
    ['bandwidth', { upload: '1MB/s', config: 1 }, /unknown key 'config' \(allowed: upload, download\)/],
    ['drain', {}, /a drain for every node needs --data '\{"all":true\}'; target it with --cells, --canary or --node/],
    ['drain', { all: false }, /a drain for every node needs/],
    ['drain', { all: 'yes' }, /all must be true or false/],
    ['drain', { reason: 7, all: true }, /reason must be a string/],
    ['preload', {}, /model must be a model id or its first 8\+ hex digits/],
    ['preload', { model: 'ab12cd3' }, /model must be a model id or its first 8\+ hex digits/],
    ['preload', { model: 'ab12cd34' }, /ab12cd34 matches 2 models/, 'ERR_AMBIGUOUS'],
    ['preload', { model: 'deadbeef' }, /no model deadbeef in the cluster/],
    ['config', {}, /needs at least one setting \(allowed: logLevel, cacheSize\)/],
    ['config', { logLevel: 'debug', cacheMB: 5 }, /config data: unknown key 'cacheMB' \(allowed: logLevel, cacheSize\)/],
    ['config', { logLevel: 'loud' }, /config\.logLevel: expected one of fatal, error, warn, info, debug, trace, silent/],
    ['config', { cacheSize: 'lots' }, /config\.cacheSize: expected a size/],
    ['config', { cacheSize: -1 }, /config\.cacheSize/]
  ]
  for (const [kind, data, re, code] of cases) {
    await refused(admin.publish({ kind: kind as string, data }), code ?? 'ERR_BAD_NOTICE', 400, re)
  }
  assert.equal(log.puts.length, 0)
})

test('operator forms are stored normalised: rates and sizes in bytes, model prefixes as full ids', async () => {
  const { admin, log } = setup()
  log.seed('model', MODEL_A, {})
  log.seed('model', MODEL_C, {})
  const bw = await admin.publish({ kind: 'bandwidth', data: { upload: '200Mbit/s', download: 'none' } })
  assert.deepEqual(log.notice(bw.id)?.data, { upload: 25_000_000, download: null })
  const bw2 = await admin.publish({ kind: 'bandwidth', data: { download: 1_000_000 } })
  assert.deepEqual(log.notice(bw2.id)?.data, { upload: null, download: 1_000_000 })
  const pre = await admin.publish({ kind: 'preload', data: { model: '7777777777' } })
  assert.deepEqual(log.notice(pre.id)?.data, { model: MODEL_C })
  const full = await admin.publish({ kind: 'preload', data: { model: MODEL_A.toUpperCase() } })
  assert.deepEqual(log.notice(full.id)?.data, { model: MODEL_A })
  const cfg = await admin.publish({ kind: 'config', data: { cacheSize: '2GiB', logLevel: 'debug' } })
  assert.deepEqual(log.notice(cfg.id)?.data, { logLevel: 'debug', cacheSize: 2 * 1024 ** 3 })
  const warn = await admin.publish({ kind: 'message', data: { text: 'disk swap at 22:00', level: 'warn' } })
  assert.deepEqual(log.notice(warn.id)?.data, { text: 'disk swap at 22:00', level: 'warn' })
  const drain = await admin.publish({ kind: 'drain', data: { reason: 'rebuild', all: true } })
  assert.deepEqual(log.notice(drain.id)?.data, { reason: 'rebuild', all: true })
})

test('canary and private nodes resolve by name or peer id against live nodes; bad ones are named', async () => {
  const { admin, log, members } = setup()
  const m = new Map(members.map(x => [x.name, x]))
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ canary: ['alpha', 'nosuch'] }, 'ERR_UNKNOWN_NODE', /canary: unknown node 'nosuch' \(known nodes: alpha, beta, delta, gamma, twin\)/],
    [{ nodes: ['nosuch'] }, 'ERR_UNKNOWN_NODE', /nodes: unknown node 'nosuch'/],
    [{ canary: ['omega'] }, 'ERR_UNKNOWN_NODE', /node 'omega' is dead; a notice can only target live nodes/],
    [{ canary: ['left-one'] }, 'ERR_UNKNOWN_NODE', /is left/],
    [{ canary: ['res'] }, 'ERR_UNKNOWN_NODE', /'res' has no node role/],
    [{ canary: ['twin'] }, 'ERR_AMBIGUOUS', new RegExp(`'twin' is ambiguous \\(2 nodes: ${peer('g')}, ${peer('h')}\\); give the peer id`)],
    [{ canary: ['alpha', 'gamma'], cells: ['a'] }, 'ERR_BAD_NOTICE', /canary node 'gamma' is in cell 'b', not in cells a/],
    [{ canary: [] }, 'ERR_BAD_NOTICE', /canary is empty/],
    [{ canary: 'alpha' }, 'ERR_BAD_NOTICE', /canary must be a list of strings/],
    [{ cells: [''] }, 'ERR_BAD_NOTICE', /cells has an empty entry/],
    [{ cells: ['x'.repeat(65)] }, 'ERR_BAD_NOTICE', /longer than 64 characters/],
    [{ nodes: ['alpha'], canary: ['beta'] }, 'ERR_BAD_NOTICE', /nodes cannot be combined with canary or cells/],
    [{ nodes: ['alpha'], cells: ['a'] }, 'ERR_BAD_NOTICE', /nodes cannot be combined/],
    [{ canary: Array.from({ length: 1001 }, () => 'alpha') }, 'ERR_BAD_NOTICE', /1001 entries; at most 1000/]
  ]
  for (const [audience, code, re] of cases) {
    await refused(admin.publish({ kind: 'message', data: { text: 'hi' }, ...audience }), code, 400, re)
  }
  assert.equal(log.puts.length, 0)

  const v = await admin.publish({ kind: 'message', data: { text: 'hi' }, canary: ['alpha', m.get('alpha')?.peerId as string, peer('g'), 'gamma'], cells: ['b', 'a', 'b'] })
  const stored = log.notice(v.id) as Notice
  assert.deepEqual(stored.audience, { cells: ['b', 'a'], canary: [peer('a'), peer('g'), peer('c')], node: null })
  assert.equal(stored.state, 'canary')
  assert.equal(v.audienceText, 'canary: alpha,twin,gamma')
  assert.deepEqual(v.nodes, [{ peerId: peer('a'), name: 'alpha' }, { peerId: peer('g'), name: 'twin' }, { peerId: peer('c'), name: 'gamma' }])
  assert.equal(v.targets, 3, 'only the whitelist while in canary')
})

test('expiry: durations, dates and epochs; the past and beyond a year are refused', async () => {
  const { admin, log, clock } = setup()
  const now = clock.now()
  const at = async (expires: string | number): Promise<number | null> => (await admin.publish({ kind: 'message', data: { text: 'x' }, expires })).expiresAt
  assert.equal(await at('90s'), now + 90_000)
  assert.equal(await at('30m'), now + 30 * 60_000)
  assert.equal(await at('2h'), now + 2 * 3_600_000)
  assert.equal(await at('7d'), now + 7 * 86_400_000)
  const iso = new Date(now + 3_600_000).toISOString()
  assert.equal(await at(iso), now + 3_600_000)
  assert.equal(await at(now + 5000), now + 5000)
  assert.equal(await at(String(now + 6000)), now + 6000)
  assert.equal(log.notice((await admin.list())[0]?.id as string)?.expiresAt, now + 6000)
  const puts = log.puts.length
  for (const [expires, re] of [
    ['0s', /expiry '0s' is in the past/],
    [new Date(now - 60_000).toISOString(), /is in the past/],
    [now - 1, /is in the past/],
    [0, /is in the past/],
    ['400d', /more than 366 days away/],
    [now + MAX_EXPIRY_MS + 1, /more than 366 days away/],
    ['soon', /'soon' is not a duration \(90s, 30m, 2h, 7d\), an ISO-8601 date-time or ms since the epoch/],
    ['2h30', /not a duration/]
  ] as Array<[string | number, RegExp]>) {
    await refused(admin.publish({ kind: 'message', data: { text: 'x' }, expires }), 'ERR_BAD_NOTICE', 400, re)
  }
  assert.equal(log.puts.length, puts)
})

test('a private notice is one put per addressed node, each copy for its node, all at one revision; listed as one view', async () => {
  const { admin, log } = setup()
  await admin.publish({ kind: 'message', data: { text: 'first' } })
  const v = await admin.publish({ kind: 'drain', data: { reason: 'disk' }, nodes: ['alpha', 'gamma', peer('a')] })
  assert.equal(log.puts.length, 1 + 2, 'one write for the public notice, one per node for the private one')
  assert.deepEqual(log.puts.slice(1).map(p => p.kind), ['inbox', 'inbox'])
  for (const c of ['a', 'c']) {
    const copy = log.inbox(peer(c), v.id) as Notice
    assert.deepEqual(copy.audience, { cells: null, canary: null, node: peer(c) })
    assert.equal(copy.revision, 2)
    assert.equal(copy.state, 'published')
  }
  assert.equal(log.notice(v.id), undefined, 'not in the public mailbox')
  assert.equal(v.private, true)
  assert.equal(v.audienceText, 'private: alpha,gamma')
  assert.deepEqual(v.audience, { cells: null, canary: null, node: null })
  assert.equal(v.targets, 2)
  const list = await admin.list()
  assert.equal(list.length, 2)
  assert.deepEqual(list.map(x => [x.private, x.targets]), [[true, 2], [false, LIVE]])

  // Changes go to every copy, at one new revision.
  const edited = await admin.edit(v.id, { reason: 'disk swap', all: false })
  assert.equal(edited.revision, 3)
  assert.deepEqual([log.inbox(peer('a'), v.id)?.data, log.inbox(peer('c'), v.id)?.revision], [{ reason: 'disk swap', all: false }, 3])
  await refused(admin.promote(v.id), 'ERR_STATE', 409, /is published; only canary notices can be promoted/)
  await refused(admin.setCanary(v.id, ['beta']), 'ERR_STATE', 409)
  const recalled = await admin.recall(v.id)
  assert.equal(recalled.state, 'recalled')
  assert.equal(log.puts.length, 3 + 2 + 2)
  for (const c of ['a', 'c']) assert.deepEqual([log.inbox(peer(c), v.id)?.state, log.inbox(peer(c), v.id)?.data, log.inbox(peer(c), v.id)?.revision], ['recalled', null, 4])
})

test('states: canary → whitelist change → published → stopped → recalled, wrong-state operations are 409', async () => {
  const { admin, log } = setup()
  const v = await admin.publish({ kind: 'message', data: { text: 'new model tonight' }, canary: ['alpha'] })
  assert.equal(v.state, 'canary')
  assert.equal(v.audienceText, 'canary: alpha')
  assert.equal(v.targets, 1)

  const c = await admin.setCanary(v.id.slice(0, 6), ['beta', 'gamma'])
  assert.deepEqual(log.notice(v.id)?.audience.canary, [peer('b'), peer('c')])
  assert.equal(c.revision, 2)
  assert.equal(c.audienceText, 'canary: beta,gamma')
  await refused(admin.setCanary(v.id, ['nosuch']), 'ERR_UNKNOWN_NODE', 400)
  await refused(admin.setCanary(v.id, []), 'ERR_BAD_NOTICE', 400)

  const e = await admin.edit(v.id, { text: 'new model at 22:00', level: 'warn' })
  assert.equal(e.state, 'canary')
  assert.deepEqual(log.notice(v.id)?.data, { text: 'new model at 22:00', level: 'warn' })
  await refused(admin.edit(v.id, { text: '' }), 'ERR_BAD_NOTICE', 400, /needs text/)
  await refused(admin.edit(v.id, undefined), 'ERR_BAD_NOTICE', 400, /give the new data/)

  const p = await admin.promote(v.id)
  assert.equal(p.state, 'published')
  assert.deepEqual(log.notice(v.id)?.audience, { cells: null, canary: null, node: null })
  assert.equal(p.targets, LIVE)
  assert.equal(p.audienceText, 'all')
  await refused(admin.promote(v.id), 'ERR_STATE', 409, new RegExp(`notice ${v.id} is published; only canary notices can be promoted`))
  await refused(admin.setCanary(v.id, ['alpha']), 'ERR_STATE', 409, /only canary notices have a whitelist to change/)

  const s = await admin.stop(v.id)
  assert.equal(s.state, 'stopped')
  await refused(admin.stop(v.id), 'ERR_STATE', 409, /is stopped; only canary or published notices can be stopped/)
  await refused(admin.edit(v.id, { text: 'x' }), 'ERR_STATE', 409, new RegExp(`^notice ${v.id} is stopped; only canary or published notices can be edited$`))
  await refused(admin.promote(v.id), 'ERR_STATE', 409)

  const r = await admin.recall(v.id)
  assert.equal(r.state, 'recalled')
  assert.equal(r.data, null)
  const stored = log.entries.get(`notice\u0000${v.id}`)
  assert.equal(stored?.deleted, false, 'a tombstone record, not a delete')
  assert.deepEqual([(stored?.value as Notice).state, (stored?.value as Notice).data], ['recalled', null])
  assert.equal(log.deletes, 0)
  await refused(admin.recall(v.id), 'ERR_STATE', 409, /is already recalled/)
  await refused(admin.stop(v.id), 'ERR_STATE', 409)
  await refused(admin.edit(v.id, { text: 'x' }), 'ERR_STATE', 409)

  // Recall from canary and from published directly.
  const a = await admin.publish({ kind: 'message', data: { text: 'a' }, canary: ['alpha'] })
  assert.equal((await admin.recall(a.id)).state, 'recalled')
  const b = await admin.publish({ kind: 'message', data: { text: 'b' } })
  assert.equal((await admin.recall(b.id)).state, 'recalled')
})

test('revisions grow with every write across notices, public and private, and past other writers', async () => {
  const { admin, log } = setup()
  const revs: number[] = []
  const a = await admin.publish({ kind: 'message', data: { text: 'a' }, canary: ['alpha'] })
  revs.push(a.revision)
  revs.push((await admin.setCanary(a.id, ['beta'])).revision)
  revs.push((await admin.publish({ kind: 'drain', data: {}, nodes: ['beta', 'delta'] })).revision)
  revs.push((await admin.promote(a.id)).revision)
  revs.push((await admin.edit(a.id, { text: 'a2' })).revision)
  revs.push((await admin.stop(a.id)).revision)
  revs.push((await admin.recall(a.id)).revision)
  assert.deepEqual(revs, [1, 2, 3, 4, 5, 6, 7])
  // A recalled notice's revision still counts, and so does a write of another daemon.
  revs.push((await admin.publish({ kind: 'message', data: { text: 'b' } })).revision)
  assert.equal(revs.at(-1), 8)
  log.seed('inbox', inboxKey(peer('a'), 'ffffffffffff'), { ...(log.notice(a.id) as Notice), id: 'ffffffffffff', revision: 41, audience: { cells: null, canary: null, node: peer('a') } })
  assert.equal((await admin.publish({ kind: 'message', data: { text: 'c' } })).revision, 42)
  // Concurrent writes of this daemon take turns: no two share a revision.
  const many = await Promise.all(Array.from({ length: 5 }, async (_, i) => await admin.publish({ kind: 'message', data: { text: `m${i}` } })))
  assert.deepEqual(many.map(v => v.revision).sort((x, y) => x - y), [43, 44, 45, 46, 47])
})

test('applied counts the targets whose heartbeat cursor reached the current revision', async () => {
  const { admin, members } = setup()
  const v = await admin.publish({ kind: 'message', data: { text: 'x' }, cells: ['b'] })
  assert.equal(v.audienceText, 'cells: b')
  assert.equal(v.targets, 4, 'gamma, delta, twin, twin')
  const byName = (n: string): Member[] => members.filter(m => m.name === n)
  for (const m of [...byName('gamma'), ...byName('twin')]) m.mailboxCursor = v.revision
  for (const m of [...byName('alpha'), ...byName('omega')]) m.mailboxCursor = 100 // not targets
  let got = await admin.get(v.id)
  assert.deepEqual([got.targets, got.applied], [4, 3])
  const [summary] = await admin.summaries()
  assert.deepEqual(summary, { id: v.id, kind: 'message', state: 'published', audience: 'cells: b', targets: 4, applied: 3, left: 0, expiresAt: null, revision: v.revision })
  // An edit is a new revision: nobody has applied it yet.
  const e = await admin.edit(v.id, { text: 'y' })
  assert.equal(e.applied, 0)
  for (const m of byName('delta')) m.mailboxCursor = e.revision + 5
  got = await admin.get(v.id)
  assert.deepEqual([got.targets, got.applied], [4, 1])
  // A node leaving routing by dying stops being a target.
  for (const m of byName('delta')) m.state = 'dead'
  got = await admin.get(v.id)
  assert.deepEqual([got.targets, got.applied], [3, 0])
})

test('a drain notice whose target applied it and left counts as applied (its targets exit); one that left without applying does not', async () => {
  const { admin, members } = setup()
  const byName = (n: string): Member => members.find(m => m.name === n) as Member
  const drain = await admin.publish({ kind: 'drain', data: { reason: 'kernel' }, nodes: ['alpha'] })
  assert.deepEqual([drain.targets, drain.applied, drain.left], [1, 0, 0], 'published')
  byName('alpha').mailboxCursor = drain.revision
  byName('alpha').state = 'draining'
  let got = await admin.get(drain.id)
  assert.deepEqual([got.targets, got.applied, got.left], [1, 1, 0], 'applied, draining')
  byName('alpha').state = 'left'
  got = await admin.get(drain.id)
  assert.deepEqual([got.targets, got.applied, got.left], [1, 1, 1], 'applied, then left: not 0/0')
  const [summary] = await admin.summaries()
  assert.deepEqual([summary?.targets, summary?.applied, summary?.left], [1, 1, 1])

  // A public drain of cell b: delta applies and leaves, gamma leaves without applying.
  const cell = await admin.publish({ kind: 'drain', data: { all: true }, cells: ['b'] })
  assert.equal(cell.targets, 4, 'gamma, delta, twin, twin')
  byName('delta').mailboxCursor = cell.revision
  byName('delta').state = 'left'
  byName('gamma').state = 'left'
  got = await admin.get(cell.id)
  assert.deepEqual([got.targets, got.applied, got.left], [3, 1, 1], 'delta counted, gamma not')
})

test('ids resolve from a unique prefix of 4+ digits; short, unknown and ambiguous ones are refused', async () => {
  const { admin, log, clock } = setup()
  const base = { kind: 'message', data: { text: 'x', level: 'info' }, audience: { cells: null, canary: null, node: null }, state: 'published', createdAt: clock.now(), updatedAt: clock.now(), expiresAt: null, by: 'other' }
  log.seed('notice', 'abcd11111111', { ...base, id: 'abcd11111111', revision: 1 })
  log.seed('notice', 'abcd22222222', { ...base, id: 'abcd22222222', revision: 2, createdAt: clock.now() + 1 })
  assert.equal((await admin.get('abcd1')).id, 'abcd11111111')
  assert.equal((await admin.get('ABCD22222222')).id, 'abcd22222222')
  await refused(admin.get('abcd'), 'ERR_AMBIGUOUS', 400, /abcd matches 2 notices \(abcd11111111, abcd22222222\); give more digits/)
  await refused(admin.get('abc'), 'ERR_BAD_NOTICE', 400, /12 hex digits, or a unique prefix of 4 or more/)
  await refused(admin.get('not-an-id'), 'ERR_BAD_NOTICE', 400)
  await refused(admin.get('0123456789abc'), 'ERR_BAD_NOTICE', 400)
  await refused(admin.get('9999'), 'ERR_NOT_FOUND', 404, /no notice 9999/)
  await refused(admin.recall('abcd'), 'ERR_AMBIGUOUS', 400)
  assert.equal((await admin.recall('abcd2')).state, 'recalled')
  assert.deepEqual((await admin.list()).map(v => v.id), ['abcd22222222', 'abcd11111111'], 'newest first')
})

test('audience text names at most five nodes in summaries', async () => {
  const { admin } = setup()
  const v = await admin.publish({ kind: 'drain', data: {}, nodes: ['alpha', 'beta', 'gamma', 'delta', peer('g'), peer('h')] })
  assert.equal(v.audienceText, 'private: alpha,beta,gamma,delta,twin +1 more')
  assert.equal(v.nodes?.length, 6)
  assert.equal((await admin.summaries())[0]?.audience, 'private: alpha,beta,gamma,delta,twin +1 more')
})

test('a drain promoted from canary must be meant for every node', async () => {
  const { admin } = setup()
  const v = await admin.publish({ kind: 'drain', data: { reason: 'kernel' }, canary: ['alpha'] })
  await refused(admin.promote(v.id), 'ERR_BAD_NOTICE', 400, /would drain every node: edit it with --data '\{"all":true\}' first/)
  await admin.edit(v.id, { reason: 'kernel', all: true })
  assert.equal((await admin.promote(v.id)).state, 'published')
  const inCell = await admin.publish({ kind: 'drain', data: {}, canary: ['gamma'], cells: ['b'] })
  assert.equal((await admin.promote(inCell.id)).audienceText, 'cells: b')
})

test('an expired notice cannot be promoted, edited or given a new whitelist; it can be recalled', async () => {
  const { admin, clock } = setup()
  const v = await admin.publish({ kind: 'message', data: { text: 'x' }, canary: ['alpha'], expires: '1m' })
  clock.advance(60_000)
  await refused(admin.promote(v.id), 'ERR_STATE', 409, /expired at .* and cannot be promoted; publish a new one/)
  await refused(admin.edit(v.id, { text: 'y' }), 'ERR_STATE', 409, /expired/)
  await refused(admin.setCanary(v.id, ['beta']), 'ERR_STATE', 409, /expired/)
  assert.equal((await admin.recall(v.id)).state, 'recalled')
})

test('an unreachable cluster log is a 503 with the reason, for reads and writes', async () => {
  const { admin, log } = setup()
  const v = await admin.publish({ kind: 'message', data: { text: 'x' } })
  log.down = true
  await refused(admin.list(), 'ERR_NO_RESOURCE', 503, /cluster log unavailable: no cluster-log resource is connected/)
  await refused(admin.get(v.id), 'ERR_NO_RESOURCE', 503)
  await refused(admin.summaries(), 'ERR_NO_RESOURCE', 503)
  await refused(admin.publish({ kind: 'message', data: { text: 'y' } }), 'ERR_NO_RESOURCE', 503)
  await refused(admin.recall(v.id), 'ERR_NO_RESOURCE', 503)
})

test('an unavailable online list is a 503 for a canary publish and for reads', async () => {
  const log = new MemoryLog()
  const admin = new NoticeAdmin({ clusterLog: () => log, members: async () => { throw new RequestError('no resource to pull the online list from', 'ERR_NO_RESOURCE') }, self: () => 'ops' })
  await refused(admin.publish({ kind: 'message', data: { text: 'x' }, canary: ['alpha'] }), 'ERR_NO_RESOURCE', 503, /cannot read the online list/)
  // A public notice needs no online list to be written; its view then counts no targets.
  const v = await admin.publish({ kind: 'message', data: { text: 'x' } })
  assert.deepEqual([v.targets, v.applied], [0, 0])
  await refused(admin.list(), 'ERR_NO_RESOURCE', 503)
})

test('a private write that fails part-way says so; repeating the command completes every copy', async () => {
  const { admin, log } = setup()
  log.failPutsAfter = 1
  await refused(admin.publish({ kind: 'drain', data: {}, nodes: ['alpha', 'beta', 'gamma'] }), 'ERR_NO_RESOURCE', 503, /is published for 1 of 3 nodes, then the write failed: .*repeat the command \(or recall/)
  log.failPutsAfter = undefined
  const [v] = await admin.list()
  assert.ok(v != null)
  assert.equal(v.targets, 1, 'one copy landed')
  log.failPutsAfter = 0
  await refused(admin.recall(v.id), 'ERR_NO_RESOURCE', 503)
  log.failPutsAfter = undefined
  assert.equal((await admin.recall(v.id)).state, 'recalled')

  // A recall that reached only some copies is completed by repeating it.
  const w = await admin.publish({ kind: 'drain', data: {}, nodes: ['alpha', 'beta', 'gamma'] })
  log.failPutsAfter = 2
  await refused(admin.recall(w.id), 'ERR_NO_RESOURCE', 503, /is recalled for 2 of 3 nodes/)
  log.failPutsAfter = undefined
  const r = await admin.recall(w.id)
  const copies = ['a', 'b', 'c'].map(c => log.inbox(peer(c), w.id) as Notice)
  assert.deepEqual(copies.map(c => [c.state, c.revision]), [['recalled', r.revision], ['recalled', r.revision], ['recalled', r.revision]])
  await refused(admin.recall(w.id), 'ERR_STATE', 409, /already recalled/)
})

test('the notices it writes pass the kinds the nodes read with', async () => {
  const { admin, log } = setup()
  await admin.publish({ kind: 'bandwidth', data: { upload: '25MB/s' }, canary: ['alpha', 'beta'], cells: ['a'], expires: '2h' })
  await admin.publish({ kind: 'config', data: { logLevel: 'warn' }, nodes: ['delta'] })
  for (const e of log.entries.values()) {
    const kind = e.kind === 'notice' ? noticeKind : e.kind === 'inbox' ? inboxKind : modelKind
    assert.ok(kind.schema.safeParse(e.value).success, `${e.kind}/${e.key}`)
  }
})
