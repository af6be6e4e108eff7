import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { LogStore, type LogEntry } from '../../src/clusterlog/store.ts'
import { formatVersion } from '../../src/clusterlog/hlc.ts'
import { MAX_CLOCK_DRIFT_MS } from '../../src/clusterlog/constants.ts'
import { FakeClock } from '../../src/util/time.ts'
import { fakePeerId } from '../helpers/heartbeat.ts'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-clusterlog-unit-'))
after(() => { fs.rmSync(root, { recursive: true, force: true }) })

let n = 0
function open (peer = 0, clock = new FakeClock(), file?: string): LogStore {
  return LogStore.open({ file: file ?? path.join(root, `s${n++}`, 'cluster-log.sqlite'), peerId: fakePeerId(peer), clock })
}

/** Everything `from` holds beyond `to`'s vector, as a peer would receive it in batches of 3. */
function sync (from: LogStore, to: LogStore): void {
  for (;;) {
    const batch: LogEntry[] = []
    for (const e of from.missing(to.versionVector())) {
      batch.push(e)
      if (batch.length === 3) break
    }
    if (batch.length === 0) return
    const r = to.apply(batch)
    assert.deepEqual(r.rejected, [])
  }
}

function state (s: LogStore): unknown {
  return ['app', 'notice'].flatMap(kind => s.list(kind, { includeDeleted: true }).map(e => [kind, e.key, e.value, e.deleted, e.version]))
}

const text = (v: unknown): string => JSON.stringify(v)

test('write, get, list, tombstones and the change feed', () => {
  const s = open()
  try {
    const a = s.write('app', 'a', text({ replicas: 1 }))
    s.write('app', 'b', text({ replicas: 2 }))
    assert.deepEqual([a.kind, a.key, a.value, a.deleted, a.rev, a.origin], ['app', 'a', { replicas: 1 }, false, 1, fakePeerId(0)])
    const del = s.write('app', 'a', undefined)
    assert.equal(del.deleted, true)
    assert.equal(del.value, undefined)
    assert.ok(del.version > a.version)
    assert.deepEqual(s.get('app', 'a'), del, 'a delete leaves a tombstone, not nothing')
    assert.deepEqual(s.list('app').map(e => e.key), ['b'])
    assert.deepEqual(s.list('app', { includeDeleted: true }).map(e => [e.key, e.deleted]), [['a', true], ['b', false]])
    assert.equal(s.revision, 3)
    assert.deepEqual(s.changesSince(0, 100).map(e => [e.key, e.rev]), [['b', 2], ['a', 3]], 'compacted: each object once at its latest rev')
    assert.deepEqual(s.changesSince(2, 100).map(e => e.key), ['a'])
    assert.equal(s.get('notice', 'a'), undefined)
    assert.equal(s.entryCount, 3)
  } finally {
    s.close()
  }
})

test('reopening keeps objects, high-water marks, revision and origin; versions keep growing after a clock step back', () => {
  const clock = new FakeClock(1_700_000_000_000)
  const file = path.join(root, 'reopen', 'cluster-log.sqlite')
  const other = open(2)
  other.write('notice', 'n1', text('hello'))
  const s1 = open(1, clock, file)
  s1.write('app', 'x', text(1))
  const last = s1.write('app', 'x', text(2))
  sync(other, s1)
  const origin = s1.origin
  const vv = s1.versionVector()
  s1.close()
  other.close()

  clock.advance(-3_600_000) // the wall clock went back an hour across the restart
  const s2 = open(1, clock, file)
  try {
    assert.equal(s2.origin, origin)
    assert.deepEqual(s2.versionVector(), vv)
    assert.equal(s2.revision, 3)
    assert.equal(s2.entryCount, 3)
    assert.deepEqual(s2.get('app', 'x')?.value, 2)
    assert.deepEqual(s2.get('notice', 'n1')?.value, 'hello')
    const next = s2.write('app', 'x', text(3))
    assert.ok(next.version > last.version, 'a write after restart still wins over the ones before it')
    assert.equal(s2.highWater(origin), 3, 'own numbering continues')
  } finally {
    s2.close()
  }
})

test('LWW merge: replicas applying the same writes in any order and batching converge', () => {
  const clocks = [new FakeClock(1_700_000_000_000), new FakeClock(1_700_000_000_000), new FakeClock(1_700_000_000_500)]
  const writers = clocks.map((c, i) => open(10 + i, c))
  // Concurrent writes to the same keys from three replicas, deletes included.
  for (let round = 0; round < 4; round++) {
    writers.forEach((w, i) => {
      w.write('app', 'shared', text({ by: i, round }))
      w.write('app', `own-${i}`, text({ round }))
      if (round === 2 && i === 1) w.write('app', 'shared', undefined)
      w.write('notice', `n${round % 2}`, text(`${i}/${round}`))
      clocks[i]?.advance(i === 2 ? 0 : 1)
    })
  }
  const all = writers.map(w => [...w.missing(new Map())])
  const expected = (() => {
    const s = open(20)
    for (const batch of all) s.apply(batch)
    const st = state(s)
    s.close()
    return st
  })()

  // Interleavings: origin by origin in several orders, one at a time round-robin, reversed
  // batches with duplicates, and pairwise gossip between the writers themselves.
  const orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0]]
  for (const order of orders) {
    const s = open(21)
    for (const i of order) s.apply(all[i] ?? [])
    assert.deepEqual(state(s), expected)
    s.close()
  }
  const rr = open(22)
  for (let k = 0; k < Math.max(...all.map(a => a.length)); k++) {
    for (const i of [2, 0, 1]) {
      const e = all[i]?.[k]
      if (e != null) rr.apply([e, e])
    }
  }
  assert.deepEqual(state(rr), expected)
  rr.close()

  sync(writers[0] as LogStore, writers[1] as LogStore)
  sync(writers[2] as LogStore, writers[1] as LogStore)
  sync(writers[1] as LogStore, writers[0] as LogStore)
  sync(writers[1] as LogStore, writers[2] as LogStore)
  for (const w of writers) {
    assert.deepEqual(state(w), expected)
    w.close()
  }
  const shared = (expected as Array<[string, string, unknown, boolean, string]>).find(e => e[0] === 'app' && e[1] === 'shared')
  assert.ok(shared != null && shared[4].includes(fakePeerId(12)), 'the replica whose clock is ahead wins the concurrent writes')
})

test('superseded values are pruned but stay in the log; a replica syncing only from stubs still converges', () => {
  const a = open(30)
  const b = open(31)
  const c = open(32)
  try {
    a.write('app', 'k', text('from a'))
    sync(a, b)
    b.write('app', 'k', text('from b'))
    sync(b, a) // a's own entry is now superseded and pruned
    const fromA = [...a.missing(new Map())]
    assert.deepEqual(fromA.map(e => [e.seq, e.pruned, e.value]), [[1, true, undefined], [1, false, '"from b"']])
    // c receives a's pruned entry first: no value to install, the winner follows.
    c.apply(fromA.slice(0, 1))
    assert.equal(c.get('app', 'k'), undefined)
    c.apply(fromA.slice(1))
    assert.deepEqual(c.get('app', 'k')?.value, 'from b')
    assert.deepEqual(state(c), state(b))
  } finally {
    a.close(); b.close(); c.close()
  }
})

test('entries with gaps, skewed clocks or a foreign version are refused without touching the store', () => {
  const clock = new FakeClock(1_700_000_000_000)
  const src = open(40, new FakeClock(1_700_000_000_000))
  const dst = open(41, clock)
  try {
    src.write('app', 'a', text(1))
    src.write('app', 'b', text(2))
    const [e1, e2] = [...src.missing(new Map())] as [LogEntry, LogEntry]
    assert.deepEqual(dst.apply([e2]).rejected, [{ origin: src.origin, seq: 2, reason: 'gap' }])
    assert.equal(dst.highWater(src.origin), 0)
    assert.equal(dst.apply([e1, e2]).applied, 2)

    const future: LogEntry = {
      ...e1, seq: 3, key: 'c', version: formatVersion({ wall: clock.now() + MAX_CLOCK_DRIFT_MS + 1_000, counter: 0, origin: src.origin })
    }
    const after = { ...future, seq: 4, version: formatVersion({ wall: clock.now(), counter: 5, origin: src.origin }) }
    const r = dst.apply([future, after])
    assert.deepEqual(r.rejected, [{ origin: src.origin, seq: 3, reason: 'clock_skew' }], 'the rest of that origin waits')
    assert.equal(r.applied, 0)
    assert.equal(dst.highWater(src.origin), 2)
    assert.equal(dst.get('app', 'c'), undefined)
    const forged = { ...future, version: formatVersion({ wall: clock.now(), counter: 0, origin: dst.origin }) }
    assert.deepEqual(dst.apply([forged]).rejected.map(x => x.reason), ['bad_version'])
  } finally {
    src.close(); dst.close()
  }
})

test('a corrupt, foreign, locked or newer-schema file gives a clear error, not a crash', () => {
  const dir = path.join(root, 'bad')
  fs.mkdirSync(dir, { recursive: true })
  const garbage = path.join(dir, 'garbage.sqlite')
  fs.writeFileSync(garbage, Buffer.alloc(16_384, 0x5a))
  assert.throws(() => open(50, undefined, garbage), { name: 'LogStoreError', code: 'ERR_CLUSTERLOG_CORRUPT' })

  const file = path.join(dir, 'locked.sqlite')
  const s = open(51, undefined, file)
  assert.throws(() => open(51, undefined, file), { name: 'LogStoreError', code: 'ERR_CLUSTERLOG_LOCKED' })
  s.close()

  const db = new DatabaseSync(file)
  db.exec('UPDATE schema_version SET version = 99')
  db.close()
  assert.throws(() => open(51, undefined, file), { name: 'LogStoreError', code: 'ERR_CLUSTERLOG_SCHEMA' })
})

test('authors: recorded with each write, replicated with the entry; a database from before authors gains the column', () => {
  const file = path.join(root, `s${n++}`, 'cluster-log.sqlite')
  const old = open(0, new FakeClock(), file)
  old.write('notice', 'before', '{"v":0}')
  old.close()
  // An older astrad's file: no author column.
  const db = new DatabaseSync(file)
  db.exec('ALTER TABLE entries DROP COLUMN author')
  db.close()

  const a = open(0, new FakeClock(), file)
  assert.equal(a.get('notice', 'before')?.author, undefined, 'entries from before have no author')
  assert.equal(a.write('notice', 'n1', '{"v":1}', 'alice').author, 'alice')
  assert.equal(a.get('notice', 'n1')?.author, 'alice')
  assert.equal(a.write('notice', 'n1', undefined, 'bob').author, 'bob', 'a delete records its author')
  const b = open(1)
  sync(a, b)
  assert.equal(b.get('notice', 'n1')?.author, 'bob')
  assert.equal(b.get('notice', 'before')?.author, undefined)
  assert.deepEqual([...b.missing(new Map())].map(e => e.author), [undefined, 'alice', 'bob'])
  a.close()
  b.close()
})
