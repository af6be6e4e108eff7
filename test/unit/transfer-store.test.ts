import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Registry } from 'prom-client'
import { PieceStore, type PieceStoreInit, type StoreEvent } from '../../src/transfer/store.ts'
import { buildManifest, canonicalManifest, manifestId, type Manifest } from '../../src/transfer/manifest.ts'
import { MIN_PIECE_SIZE, PIECE_CHUNK_BYTES } from '../../src/transfer/constants.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { FakeClock } from '../../src/util/time.ts'

const MiB = 1024 * 1024
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-store-unit-'))
after(() => { fs.rmSync(root, { recursive: true, force: true }) })

let n = 0
const freshDir = (): string => path.join(root, `s${n++}`)

function makeStore (dir: string, init: Omit<PieceStoreInit, 'dir'> = {}, clock = new FakeClock(), registry?: Registry): PieceStore {
  return new PieceStore({ logger: silentLogger(), clock, registry }, { dir, ...init })
}

/** The bytes in chunks of an odd size, so chunk and piece boundaries do not line up. */
async function * chunks (data: Uint8Array, size = 1_000_003): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.length; off += size) yield data.subarray(off, off + size)
}

async function collect (source: AsyncIterable<Uint8Array>): Promise<{ data: Buffer, sizes: number[] }> {
  const parts: Uint8Array[] = []
  for await (const c of source) parts.push(c)
  return { data: Buffer.concat(parts), sizes: parts.map(p => p.length) }
}

async function manifestOf (data: Uint8Array): Promise<Manifest> {
  return await buildManifest(chunks(data), data.length, () => {})
}

function piece (data: Uint8Array, m: Manifest, index: number): Uint8Array {
  return data.subarray(index * m.pieceSize, Math.min(m.size, (index + 1) * m.pieceSize))
}

async function writePiece (store: PieceStore, id: string, data: Uint8Array, m: Manifest, index: number): Promise<boolean> {
  const w = store.beginPiece(id, index)
  for await (const c of chunks(piece(data, m, index), 300_001)) await w.write(c)
  return await w.commit()
}

function files (dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []
}

// 9 MiB: pieces of 4 MiB, 4 MiB and 1 MiB.
const NINE = randomBytes(9 * MiB)

test('import, then read back identical bytes; the id is the manifest id; re-import is idempotent; bad input is refused', async () => {
  const dir = freshDir()
  const registry = new Registry()
  const store = makeStore(dir, {}, new FakeClock(), registry)
  await store.open()
  try {
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const m = await store.importModel(chunks(NINE), NINE.length)
    const expected = await manifestOf(NINE)
    assert.equal(m.id, manifestId(expected))
    assert.deepEqual(m.manifest, expected)
    assert.equal(expected.pieceSize, MIN_PIECE_SIZE)
    assert.equal(m.manifest.pieces.length, 3)
    assert.equal(m.complete, true)
    assert.equal(m.haveBytes, NINE.length)
    assert.deepEqual(events, [{ type: 'added', id: m.id }, { type: 'complete', id: m.id }])

    // On disk: the canonical manifest and exact piece files; no staging left.
    assert.deepEqual(files(dir), [m.id])
    assert.equal(fs.readFileSync(path.join(dir, m.id, 'manifest.json'), 'utf8'), canonicalManifest(expected))
    assert.deepEqual(files(path.join(dir, m.id, 'pieces')), ['0', '1', '2'])
    assert.equal(fs.statSync(path.join(dir, m.id, 'pieces', '2')).size, 1 * MiB)

    const whole = await collect(store.readModel(m.id))
    assert.ok(whole.data.equals(NINE), 'the model reads back byte for byte')
    assert.ok(whole.sizes.every(s => s <= PIECE_CHUNK_BYTES))
    const range = await collect(store.readPiece(m.id, 1, 1000, 600_000))
    assert.ok(range.data.equals(NINE.subarray(4 * MiB + 1000, 4 * MiB + 601_000)))
    assert.equal(store.has(m.id, 2), true)
    assert.equal(store.has(m.id, 3), false)
    assert.throws(() => store.readPiece(m.id, 1, 4 * MiB - 10, 11), RangeError)
    assert.throws(() => store.readPiece(m.id, 3), RangeError)
    assert.equal(store.usage().bytes, NINE.length)
    assert.ok(store.usage().fsSize > 0)

    // The same bytes again: same id, nothing new.
    events.length = 0
    const again = await store.importModel(chunks(NINE, 4 * MiB), NINE.length)
    assert.equal(again.id, m.id)
    assert.equal(again.complete, true)
    assert.deepEqual(events, [])
    assert.deepEqual(files(dir), [m.id])
    assert.equal(store.list().length, 1)

    // A stream shorter or longer than declared, an invalid size: DecodeError, nothing kept.
    await assert.rejects(store.importModel(chunks(NINE.subarray(0, 5 * MiB)), 6 * MiB), { name: 'DecodeError', code: 'ERR_DECODE' })
    await assert.rejects(store.importModel(chunks(NINE), 5 * MiB), { name: 'DecodeError' })
    await assert.rejects(store.importModel(chunks(NINE), 0), { name: 'DecodeError' })
    await assert.rejects(store.addModel({ ...expected, pieces: expected.pieces.slice(1) }), { name: 'DecodeError' })
    // An aborted import removes its staging dir.
    const ac = new AbortController()
    async function * slow (): AsyncGenerator<Uint8Array> {
      yield NINE.subarray(0, 5 * MiB)
      ac.abort()
      await new Promise(() => {}) // a source that never delivers again
    }
    await assert.rejects(store.importModel(slow(), 6 * MiB, { signal: ac.signal }), { name: 'AbortError' })
    assert.deepEqual(files(dir), [m.id], 'no staging dir is left behind')
    assert.equal(store.usage().bytes, NINE.length)

    const metrics = await registry.metrics()
    assert.match(metrics, /astrad_store_bytes 9437184/)
    assert.match(metrics, /astrad_store_models\{state="complete"\} 1/)
  } finally {
    await store.close()
  }
})

test('a download resumes after a restart: verified pieces kept, temp and staging files cleaned, last use kept', async () => {
  const dir = freshDir()
  const clock = new FakeClock(1_700_000_000_000)
  const m = await manifestOf(NINE)
  const id = manifestId(m)
  let store = makeStore(dir, {}, clock)
  await store.open()
  const events: StoreEvent[] = []
  store.onChange(() => { throw new Error('a broken listener') })
  store.onChange(e => events.push(e))
  const added = await store.addModel(m)
  assert.equal(added.id, id)
  assert.equal(added.complete, false)
  assert.equal(added.have.size, 0)
  assert.equal((await store.addModel(m)).id, id, 'addModel is idempotent')
  assert.equal(await writePiece(store, id, NINE, m, 0), true)
  // Half of piece 1 arrives, then the daemon stops.
  const w = store.beginPiece(id, 1)
  await w.write(piece(NINE, m, 1).subarray(0, MiB))
  assert.equal(w.bytes, MiB)
  assert.equal(files(path.join(dir, id, 'pieces')).length, 2, 'piece 0 and a temp file')
  await store.close()
  await assert.rejects(w.commit(), { name: 'LifecycleError' })
  assert.deepEqual(files(path.join(dir, id, 'pieces')), ['0'], 'close removed the temp file')
  assert.deepEqual(events, [{ type: 'added', id }, { type: 'piece', id, index: 0 }])

  // Leftovers of a crash: a temp piece, an import staging dir.
  fs.writeFileSync(path.join(dir, id, 'pieces', '.2.deadbeef.tmp'), 'partial')
  fs.mkdirSync(path.join(dir, '.import-abc123', 'pieces'), { recursive: true })
  fs.writeFileSync(path.join(dir, '.import-abc123', 'pieces', '0'), 'x')

  clock.advance(3_600_000)
  store = makeStore(dir, {}, clock)
  await store.open()
  try {
    const resumed = store.get(id)
    assert.ok(resumed != null)
    assert.deepEqual([...resumed.have.indices()], [0])
    assert.equal(resumed.haveBytes, 4 * MiB)
    assert.equal(resumed.complete, false)
    assert.equal(resumed.lastUsed, 1_700_000_000_000, 'last use survives the restart')
    assert.deepEqual(files(path.join(dir, id, 'pieces')), ['0'])
    assert.deepEqual(files(dir), [id])
    assert.throws(() => store.readModel(id), { name: 'ModelIncompleteError', code: 'ERR_INCOMPLETE' })
    assert.throws(() => store.readPiece(id, 1), { name: 'PieceMissingError', code: 'ERR_NO_PIECE' })

    events.length = 0
    store.onChange(e => events.push(e))
    assert.equal(await writePiece(store, id, NINE, m, 2), true)
    assert.equal(await writePiece(store, id, NINE, m, 1), true)
    assert.deepEqual(events, [{ type: 'piece', id, index: 2 }, { type: 'piece', id, index: 1 }, { type: 'complete', id }])
    assert.equal(store.get(id)?.complete, true)
    assert.ok((await collect(store.readModel(id))).data.equals(NINE))
    assert.equal(store.get(id)?.lastUsed, clock.now())
  } finally {
    await store.close()
  }
  // The read was a use: written to disk (at most once a minute) and read back at open.
  store = makeStore(dir, {}, clock)
  await store.open()
  assert.equal(store.get(id)?.lastUsed, clock.now())
  await store.close()
})

test('a corrupt, long or short piece is rejected and nothing is stored', async () => {
  const dir = freshDir()
  const registry = new Registry()
  const store = makeStore(dir, {}, new FakeClock(), registry)
  await store.open()
  try {
    const m = await manifestOf(NINE)
    const id = manifestId(m)
    await store.addModel(m)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const pieces = path.join(dir, id, 'pieces')

    const bad = Buffer.from(piece(NINE, m, 0))
    bad[12345] = bad[12345]! ^ 1
    const w1 = store.beginPiece(id, 0)
    await w1.write(bad)
    await assert.rejects(w1.commit(), { name: 'PieceHashError', code: 'ERR_PIECE_HASH' })
    await w1.abort() // the downloader aborts after a failure: harmless
    assert.equal(store.has(id, 0), false)
    assert.deepEqual(files(pieces), [], 'the temp file is gone')

    const w2 = store.beginPiece(id, 2)
    await w2.write(piece(NINE, m, 2))
    await assert.rejects(w2.write(new Uint8Array(1)), { name: 'PieceHashError' }, 'a byte past the piece is refused')
    await assert.rejects(w2.commit(), { name: 'PieceHashError' })
    assert.deepEqual(files(pieces), [])

    const w3 = store.beginPiece(id, 1)
    await w3.write(piece(NINE, m, 1).subarray(0, MiB))
    await assert.rejects(w3.commit(), { name: 'PieceHashError' })
    assert.deepEqual(files(pieces), [])

    assert.equal(store.get(id)?.have.size, 0)
    assert.equal(store.usage().bytes, 0)
    assert.deepEqual(events, [])
    assert.throws(() => store.beginPiece(id, 3), RangeError)
    assert.throws(() => store.beginPiece('0'.repeat(64), 0), { name: 'ModelNotFoundError', code: 'ERR_NOT_FOUND' })
    assert.match(await registry.metrics(), /astrad_store_errors_total\{reason="hash"\} 3/)
  } finally {
    await store.close()
  }
})

test('the same piece committed twice at once (endgame) is stored once', async () => {
  const dir = freshDir()
  const store = makeStore(dir)
  await store.open()
  try {
    const m = await manifestOf(NINE)
    const id = manifestId(m)
    await store.addModel(m)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const a = store.beginPiece(id, 1)
    const b = store.beginPiece(id, 1)
    const bytes = piece(NINE, m, 1)
    await Promise.all([a.write(bytes.subarray(0, 2 * MiB)), b.write(bytes.subarray(0, 3 * MiB))])
    await Promise.all([a.write(bytes.subarray(2 * MiB)), b.write(bytes.subarray(3 * MiB))])
    const results = await Promise.all([a.commit(), b.commit()])
    assert.deepEqual(results.sort(), [false, true])
    // A third copy finishing later is dropped too.
    assert.equal(await writePiece(store, id, NINE, m, 1), false)
    assert.deepEqual(events, [{ type: 'piece', id, index: 1 }])
    assert.equal(store.get(id)?.haveBytes, 4 * MiB)
    assert.equal(store.usage().bytes, 4 * MiB)
    assert.deepEqual(files(path.join(dir, id, 'pieces')), ['1'])
    assert.ok((await collect(store.readPiece(id, 1))).data.equals(bytes))
  } finally {
    await store.close()
  }
})

test('at open, wrong-size pieces, stray files and model dirs with a bad manifest are removed', async () => {
  const dir = freshDir()
  const m = await manifestOf(NINE)
  const id = manifestId(m)
  let store = makeStore(dir)
  await store.open()
  await store.addModel(m)
  assert.equal(await writePiece(store, id, NINE, m, 0), true)
  assert.equal(await writePiece(store, id, NINE, m, 2), true)
  await store.close()

  fs.truncateSync(path.join(dir, id, 'pieces', '0'), 1000)
  fs.writeFileSync(path.join(dir, id, 'pieces', '7'), 'out of range')
  fs.writeFileSync(path.join(dir, id, 'pieces', 'junk'), 'x')
  const other = await manifestOf(NINE.subarray(0, 5 * MiB))
  const otherId = manifestId(other)
  const bad = [
    // Not JSON.
    [otherId, '{"version":1,'],
    // A valid manifest under another model's id.
    ['a'.repeat(64), canonicalManifest(other)],
    // Valid JSON, not a manifest.
    ['b'.repeat(64), JSON.stringify({ hello: 'world' })]
  ] as const
  for (const [name, text] of bad) {
    fs.mkdirSync(path.join(dir, name, 'pieces'), { recursive: true })
    fs.writeFileSync(path.join(dir, name, 'manifest.json'), text)
  }
  fs.mkdirSync(path.join(dir, 'c'.repeat(64), 'pieces'), { recursive: true }) // no manifest at all
  fs.mkdirSync(path.join(dir, 'lost+found')) // not an id: not ours, left alone

  store = makeStore(dir)
  await store.open()
  try {
    assert.deepEqual(store.list().map(s => s.id), [id])
    assert.deepEqual([...store.get(id)!.have.indices()], [2], 'the truncated piece no longer counts')
    assert.equal(store.usage().bytes, MiB)
    assert.deepEqual(files(path.join(dir, id, 'pieces')), ['2'])
    assert.deepEqual(files(dir), [id, 'lost+found'].sort())
  } finally {
    await store.close()
  }
})

test('a pin blocks remove and eviction; remove frees the copy', async () => {
  const dir = freshDir()
  const store = makeStore(dir, { maxBytes: 6 * MiB })
  await store.open()
  try {
    const a = await store.importModel(chunks(NINE.subarray(0, 5 * MiB)), 5 * MiB)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const unpin = store.pin(a.id, 'replica:r1')
    store.pin(a.id, 'replica:r1') // an owner pins once
    const unpin2 = store.pin(a.id, 'download')
    assert.deepEqual(store.get(a.id)?.pinnedBy.sort(), ['download', 'replica:r1'])
    await assert.rejects(store.remove(a.id), (err: Error & { code?: string, owners?: string[] }) => {
      assert.equal(err.name, 'ModelPinnedError')
      assert.equal(err.code, 'ERR_PINNED')
      assert.deepEqual(err.owners?.sort(), ['download', 'replica:r1'])
      return true
    })
    // Another 5 MiB would need a's space: it is pinned, so it is not evicted.
    await assert.rejects(store.importModel(chunks(NINE.subarray(MiB, 6 * MiB)), 5 * MiB), { name: 'StoreFullError', code: 'ERR_NO_SPACE' })
    await assert.rejects(store.ensureSpace(2 * MiB), { name: 'StoreFullError' })
    assert.equal(store.get(a.id)?.complete, true)
    assert.deepEqual(files(dir), [a.id], 'the refused import left no staging dir')
    assert.equal(store.usage().bytes, 5 * MiB)

    unpin()
    unpin()
    await assert.rejects(store.remove(a.id), { name: 'ModelPinnedError' })
    unpin2()
    assert.deepEqual(store.get(a.id)?.pinnedBy, [])
    await store.remove(a.id)
    assert.deepEqual(events, [{ type: 'removed', id: a.id, reason: 'rm' }])
    assert.equal(store.get(a.id), undefined)
    assert.equal(store.has(a.id, 0), false)
    assert.deepEqual(files(dir), [])
    assert.equal(store.usage().bytes, 0)
    await assert.rejects(store.remove(a.id), { name: 'ModelNotFoundError', code: 'ERR_NOT_FOUND' })
    assert.throws(() => store.readPiece(a.id, 0), { name: 'PieceMissingError' })
  } finally {
    await store.close()
  }
})

test('over maxBytes the least recently used unpinned model is evicted, never the one being written', async () => {
  const dir = freshDir()
  const clock = new FakeClock()
  const registry = new Registry()
  const store = makeStore(dir, { maxBytes: 3 * MiB + 10 }, clock, registry)
  await store.open()
  try {
    const models = []
    for (let i = 0; i < 3; i++) {
      models.push(await store.importModel(chunks(NINE.subarray(i * MiB, (i + 1) * MiB)), MiB))
      clock.advance(60_000)
    }
    const [a, b, c] = models as [typeof models[0], typeof models[0], typeof models[0]]
    store.pin(a.id, 'replica:r1') // oldest, but pinned
    await collect(store.readPiece(b.id, 0)) // b is used again: c is now the least recently used
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))

    const d = await store.importModel(chunks(NINE.subarray(5 * MiB, 6 * MiB)), MiB)
    assert.deepEqual(events.filter(e => e.type === 'removed'), [{ type: 'removed', id: c.id, reason: 'evicted' }])
    assert.deepEqual(store.list().map(s => s.id).sort(), [a.id, b.id, d.id].sort())
    assert.equal(fs.existsSync(path.join(dir, c.id)), false)
    assert.equal(store.usage().bytes, 3 * MiB)

    // A partial model being written: its own pieces never evict it; b (LRU, unpinned) goes.
    const big = await manifestOf(NINE.subarray(0, 5 * MiB))
    const bigId = manifestId(big)
    clock.advance(60_000)
    await store.addModel(big)
    clock.advance(60_000)
    store.touch(d.id)
    events.length = 0
    const w = store.beginPiece(bigId, 1) // 1 MiB
    await w.write(piece(NINE, big, 1))
    assert.equal(await w.commit(), true)
    assert.deepEqual(events.filter(e => e.type === 'removed').map(e => e.id), [b.id])
    // 4 more MiB cannot fit next to the pinned a (1 MiB) and big's 1 MiB without evicting d and
    // big itself; big is the model being written, so this fails and evicts nothing.
    events.length = 0
    const w0 = store.beginPiece(bigId, 0)
    await assert.rejects(w0.write(piece(NINE, big, 0).subarray(0, 1000)), { name: 'StoreFullError', code: 'ERR_NO_SPACE' })
    await assert.rejects(w0.commit(), { name: 'StoreFullError' })
    assert.deepEqual(events, [])
    assert.deepEqual(files(path.join(dir, bigId, 'pieces')), ['1'])
    assert.match(await registry.metrics(), /astrad_store_evictions_total 2/)
  } finally {
    await store.close()
  }
})

test('removing a model while a piece is being written fails that commit and leaves nothing', async () => {
  const dir = freshDir()
  const store = makeStore(dir)
  await store.open()
  try {
    const m = await manifestOf(NINE)
    const id = manifestId(m)
    await store.addModel(m)
    const w = store.beginPiece(id, 0)
    await w.write(piece(NINE, m, 0).subarray(0, MiB))
    await store.remove(id)
    await assert.rejects(w.write(piece(NINE, m, 0).subarray(MiB)), { name: 'ModelNotFoundError' })
    await assert.rejects(w.commit(), { name: 'ModelNotFoundError', code: 'ERR_NOT_FOUND' })
    assert.deepEqual(files(dir), [])
    // Registered again, it starts from nothing.
    assert.equal((await store.addModel(m)).have.size, 0)
    assert.equal(await writePiece(store, id, NINE, m, 2), true)
  } finally {
    await store.close()
  }
})

test('lifecycle: nothing works before open or after close; open twice fails; close twice is fine', async () => {
  const dir = freshDir()
  const m = await manifestOf(NINE.subarray(0, MiB))
  const id = manifestId(m)
  const store = makeStore(dir)
  const lifecycle = { name: 'LifecycleError', code: 'ERR_LIFECYCLE' }
  const calls = (): Array<() => unknown> => [
    () => store.get(id),
    () => store.list(),
    () => store.has(id, 0),
    () => store.beginPiece(id, 0),
    () => store.readPiece(id, 0),
    () => store.readModel(id),
    () => store.pin(id, 'x'),
    () => store.touch(id),
    () => store.usage()
  ]
  for (const call of calls()) assert.throws(call, lifecycle)
  await assert.rejects(store.addModel(m), lifecycle)
  await assert.rejects(store.remove(id), lifecycle)
  await assert.rejects(store.ensureSpace(1), lifecycle)
  await assert.rejects(store.importModel(chunks(NINE.subarray(0, MiB)), MiB), lifecycle)

  await store.open()
  await assert.rejects(store.open(), lifecycle)
  await store.addModel(m)
  const w = store.beginPiece(id, 0)
  await w.write(NINE.subarray(0, 1000))
  await store.close()
  await store.close()
  assert.deepEqual(files(path.join(dir, id, 'pieces')), [], 'close aborted the writer and removed its temp file')
  await assert.rejects(w.commit(), lifecycle)
  await w.abort()
  for (const call of calls()) assert.throws(call, lifecycle)
  await assert.rejects(store.addModel(m), lifecycle)
  await assert.rejects(store.open(), lifecycle)

  // A store never opened can be closed.
  await makeStore(freshDir()).close()
  assert.throws(() => makeStore(freshDir(), { maxBytes: 0 }), { name: 'ConfigError' })
  assert.throws(() => makeStore(freshDir(), { highWatermark: 0.5, lowWatermark: 0.7 }), { name: 'ConfigError' })
})

test('a model with a piece being written is not evicted for another model', async () => {
  const dir = freshDir()
  const clock = new FakeClock()
  const store = makeStore(dir, { maxBytes: 2 * MiB + 10 }, clock)
  await store.open()
  try {
    const xBytes = NINE.subarray(0, MiB)
    const xm = await manifestOf(xBytes)
    const x = manifestId(xm)
    await store.addModel(xm) // oldest and unpinned, but a writer is busy with it
    const wx = store.beginPiece(x, 0)
    await wx.write(xBytes.subarray(0, 1000))
    clock.advance(60_000)
    const y = await store.importModel(chunks(NINE.subarray(MiB, 2 * MiB)), MiB)
    clock.advance(60_000)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const z = await store.importModel(chunks(NINE.subarray(2 * MiB, 3 * MiB)), MiB)
    assert.deepEqual(events.filter(e => e.type === 'removed'), [{ type: 'removed', id: y.id, reason: 'evicted' }])
    await wx.write(xBytes.subarray(1000))
    assert.equal(await wx.commit(), true)
    assert.deepEqual(store.list().map(s => [s.id, s.complete]).sort(), [[x, true], [z.id, true]].sort())
  } finally {
    await store.close()
  }
})

test('a cache size set at run time (a config notice) evicts least recently used models at once; none lifts it', async () => {
  const dir = freshDir()
  const clock = new FakeClock()
  const store = makeStore(dir, {}, clock)
  await store.open()
  try {
    const models = []
    for (let i = 0; i < 3; i++) {
      models.push(await store.importModel(chunks(NINE.subarray(i * MiB, (i + 1) * MiB)), MiB))
      clock.advance(60_000)
    }
    const removed: string[] = []
    store.onChange(e => { if (e.type === 'removed') removed.push(e.id) })
    store.setMaxBytes(2 * MiB)
    for (let i = 0; i < 200 && removed.length < 2; i++) await new Promise(resolve => setTimeout(resolve, 10))
    // Down to 90 % of 2 MiB: the two least recently used go.
    assert.deepEqual(removed, [models[0]!.id, models[1]!.id])
    assert.equal(store.usage().maxBytes, 2 * MiB)
    store.setMaxBytes(undefined)
    assert.equal(store.usage().maxBytes, null)
    assert.throws(() => { store.setMaxBytes(0) }, { name: 'ConfigError' })
  } finally {
    await store.close()
  }
})
