import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Registry } from 'prom-client'
import { PieceStore, type StoreEvent } from '../../src/transfer/store.ts'
import { Scrubber } from '../../src/transfer/scrub.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { resolveConfig } from '../../src/config/index.ts'
import { ConfigError } from '../../src/util/errors.ts'

/**
 * Integrity of stored pieces with a real store on disk: the scrub finds a piece that rotted
 * without its file changing (bit rot keeps the mtime), and a piece whose file changed since it
 * was verified is re-hashed before a single byte of it is served.
 */

const MiB = 1024 * 1024
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-scrub-unit-'))
after(() => { fs.rmSync(root, { recursive: true, force: true }) })
let n = 0

// 9 MiB: pieces of 4 MiB, 4 MiB and 1 MiB.
const NINE = randomBytes(9 * MiB)

async function * chunks (data: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.length; off += MiB) yield data.subarray(off, off + MiB)
}

async function openStore (registry?: Registry): Promise<{ store: PieceStore, id: string, pieceFile: (i: number) => string, events: StoreEvent[] }> {
  const dir = path.join(root, `s${n++}`)
  const store = new PieceStore({ logger: silentLogger(), registry }, { dir })
  await store.open()
  const m = await store.importModel(chunks(NINE), NINE.length)
  const events: StoreEvent[] = []
  store.onChange(e => events.push(e))
  return { store, id: m.id, pieceFile: i => path.join(dir, m.id, 'pieces', String(i)), events }
}

/** Flips one byte in place and puts the old mtime back: what bit rot looks like to stat(). */
function rot (file: string): void {
  const st = fs.statSync(file)
  const fd = fs.openSync(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, 1000)
    b[0] = b[0]! ^ 0x5a
    fs.writeSync(fd, b, 0, 1, 1000)
  } finally {
    fs.closeSync(fd)
  }
  fs.utimesSync(file, st.atime, st.mtime)
}

/** Rewrites a file in place with other bytes and a later mtime (a write by something else). */
function overwrite (file: string, data: Uint8Array): void {
  const st = fs.statSync(file)
  const fd = fs.openSync(file, 'r+')
  try {
    fs.writeSync(fd, data, 0, data.length, 0)
  } finally {
    fs.closeSync(fd)
  }
  // Coarse file timestamps could leave the mtime unchanged within one tick: move it on.
  fs.utimesSync(file, st.atime, new Date(st.mtimeMs + 5_000))
}

async function readAll (source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of source) parts.push(c)
  return Buffer.concat(parts)
}

async function metric (registry: Registry, name: string, label: string): Promise<number> {
  const text = await registry.getSingleMetricAsString(name)
  const m = new RegExp(label === '' ? `^${name} (\\d+)` : `${label}} (\\d+)`, 'm').exec(text)
  return m != null ? Number(m[1]) : 0
}

test('verifyPiece: a good piece is ok; a rotted one (same mtime) is dropped, counted, announced; a missing file too', async () => {
  const registry = new Registry()
  const { store, id, pieceFile, events } = await openStore(registry)
  try {
    assert.equal(await store.verifyPiece(id, 0), 'ok', 'step: verify an untouched piece')
    rot(pieceFile(1))
    assert.equal(await store.verifyPiece(id, 1), 'rotten', 'step: verify the rotted piece')
    const m = store.get(id)!
    assert.equal(m.complete, false, 'the model is incomplete after the drop')
    assert.equal(m.have.has(1), false)
    assert.equal(m.haveBytes, NINE.length - 4 * MiB)
    assert.equal(fs.existsSync(pieceFile(1)), false, 'the rotten file is deleted')
    assert.deepEqual(events, [{ type: 'rotten', id, index: 1, found: 'scrub' }])
    assert.equal(await metric(registry, 'astrad_store_rotten_pieces_total', 'found="scrub"'), 1)
    // Asked again: no longer held.
    assert.equal(await store.verifyPiece(id, 1), 'gone')
    fs.unlinkSync(pieceFile(2))
    assert.equal(await store.verifyPiece(id, 2), 'rotten', 'step: verify a piece whose file vanished')
    assert.equal(store.get(id)!.have.size, 1)
    // A piece written again (as a download would) is held and good.
    const w = store.beginPiece(id, 1)
    await w.write(NINE.subarray(4 * MiB, 8 * MiB))
    assert.equal(await w.commit(), true)
    assert.equal(await store.verifyPiece(id, 1), 'ok')
  } finally {
    await store.close()
  }
})

test('a piece whose file changed since it was verified is re-hashed before serving: bad bytes are never served', async () => {
  const registry = new Registry()
  const { store, id, pieceFile, events } = await openStore(registry)
  try {
    overwrite(pieceFile(0), randomBytes(4 * MiB))
    let served = 0
    await assert.rejects(async () => {
      for await (const c of store.readPiece(id, 0)) served += c.length
    }, { name: 'PieceMissingError', code: 'ERR_NO_PIECE' }, 'step: read the changed piece')
    assert.equal(served, 0, 'not one byte of the changed piece came out')
    assert.equal(store.has(id, 0), false, 'the changed piece is dropped')
    assert.deepEqual(events, [{ type: 'rotten', id, index: 0, found: 'serve' }])
    assert.equal(await metric(registry, 'astrad_store_rotten_pieces_total', 'found="serve"'), 1)

    // Touched but identical (a backup tool restoring the same bytes): re-hashed once, served.
    const st = fs.statSync(pieceFile(1))
    fs.utimesSync(pieceFile(1), st.atime, new Date(st.mtimeMs + 5_000))
    assert.ok((await readAll(store.readPiece(id, 1))).equals(NINE.subarray(4 * MiB, 8 * MiB)), 'step: read the touched piece')
    assert.equal(store.has(id, 1), true)
    // A range of a replaced file (new inode, wrong bytes) is refused too.
    const tmp = pieceFile(2) + '.x'
    fs.writeFileSync(tmp, randomBytes(MiB))
    fs.renameSync(tmp, pieceFile(2))
    await assert.rejects(readAll(store.readPiece(id, 2, 100, 200)), { code: 'ERR_NO_PIECE' }, 'step: read a range of the replaced piece')
    assert.equal(store.has(id, 2), false)
  } finally {
    await store.close()
  }
})

test('the scrub walks every held piece at its rate, finds rot, and keeps going; stop ends it', async () => {
  const registry = new Registry()
  const { store, id, pieceFile, events } = await openStore(registry)
  const scrub = new Scrubber({ store, logger: silentLogger(), registry }, { rateBps: 64 * MiB, intervalMs: 0 })
  try {
    rot(pieceFile(2))
    scrub.start()
    scrub.start()
    for (let i = 0; i < 600 && scrub.stats.passes < 2; i++) await new Promise(resolve => setTimeout(resolve, 50))
    assert.ok(scrub.stats.passes >= 2, `step: two passes; seen ${JSON.stringify(scrub.stats)}`)
    assert.equal(scrub.stats.rotten, 1)
    assert.ok(scrub.stats.ok >= 3, `good pieces re-hashed: ${scrub.stats.ok}`)
    assert.deepEqual(events, [{ type: 'rotten', id, index: 2, found: 'scrub' }])
    assert.ok(await metric(registry, 'astrad_transfer_scrub_bytes_total', '') >= 8 * MiB)
  } finally {
    await scrub.stop()
    await scrub.stop()
    await store.close()
  }
  assert.throws(() => new Scrubber({ store, logger: silentLogger() }, { rateBps: 0 }), RangeError)
})

test('the scrub re-hashes only pieces whose last hash is older than its interval: fresh ones wait, old ones (by mtime at open) are due', async () => {
  const first = await openStore()
  const dir = path.dirname(path.dirname(first.pieceFile(0)))
  const storeDir = path.dirname(dir)
  const fresh = new Scrubber({ store: first.store, logger: silentLogger() }, { rateBps: 64 * MiB, intervalMs: 3600_000 })
  try {
    rot(first.pieceFile(1))
    fresh.start()
    // Just imported (hashed while written): nothing is due for an hour, however many passes run.
    for (let i = 0; i < 600 && fresh.stats.passes < 1; i++) await new Promise(resolve => setTimeout(resolve, 20))
    assert.ok(fresh.stats.passes >= 1, `step: a first pass; seen ${JSON.stringify(fresh.stats)}`)
    assert.deepEqual({ ok: fresh.stats.ok, rotten: fresh.stats.rotten }, { ok: 0, rotten: 0 }, 'fresh pieces are not re-hashed')
    assert.deepEqual(first.events, [])
  } finally {
    await fresh.stop()
    await first.store.close()
  }
  // Pieces written two hours ago (their mtime, as a restarted node finds them) are due.
  const twoHoursAgo = (Date.now() - 2 * 3600_000) / 1000
  for (const name of fs.readdirSync(path.dirname(first.pieceFile(0)))) fs.utimesSync(path.join(path.dirname(first.pieceFile(0)), name), twoHoursAgo, twoHoursAgo)
  const store = new PieceStore({ logger: silentLogger() }, { dir: storeDir })
  await store.open()
  const events: StoreEvent[] = []
  store.onChange(e => events.push(e))
  const scrub = new Scrubber({ store, logger: silentLogger() }, { rateBps: 64 * MiB, intervalMs: 3600_000 })
  try {
    scrub.start()
    const started = Date.now()
    for (let i = 0; i < 600 && scrub.stats.passes < 1; i++) await new Promise(resolve => setTimeout(resolve, 50))
    assert.ok(scrub.stats.passes >= 1, `step: a pass after reopening; seen ${JSON.stringify(scrub.stats)}`)
    // Every piece once: 2 good + 1 rotten; the good ones are fresh again (the next pass is an hour off).
    assert.deepEqual({ ok: scrub.stats.ok, rotten: scrub.stats.rotten }, { ok: 2, rotten: 1 }, `old pieces re-hashed once each; events ${JSON.stringify(events)}`)
    assert.ok((store.hashedAt(first.id, 0) ?? 0) >= started, `piece 0's hash time moved to now: ${store.hashedAt(first.id, 0)}`)
    assert.equal(store.hashedAt(first.id, 1), undefined, 'the rotten piece is no longer held')
    assert.deepEqual(events.map(e => e.type === 'rotten' ? e.index : -1), [1])
  } finally {
    await scrub.stop()
    await store.close()
  }
  assert.throws(() => new Scrubber({ store, logger: silentLogger() }, { rateBps: 1, intervalMs: -1 }), RangeError)
})

test('--scrub-interval: a duration or 0; anything else is refused naming the flag', () => {
  assert.equal(resolveConfig({ flags: { scrubInterval: '12h' }, env: {} }).scrubInterval, 12 * 3600_000)
  assert.equal(resolveConfig({ flags: {}, env: { ASTRAD_SCRUB_INTERVAL: '0' } }).scrubInterval, 0)
  assert.equal(resolveConfig({ flags: { scrubInterval: '90s' }, env: {} }).scrubInterval, 90_000)
  assert.equal(resolveConfig({ flags: {}, env: {} }).scrubInterval, undefined, 'unset: the transfer default applies')
  for (const bad of ['soon', '12', '-1h', '99999d']) {
    assert.throws(() => resolveConfig({ flags: { scrubInterval: bad }, env: {} }), (err: unknown) => err instanceof ConfigError && err.key.includes('scrub-interval'), bad)
  }
})

test('--scrub-rate: a rate, or off; anything else is refused naming the flag', () => {
  assert.equal(resolveConfig({ flags: { scrubRate: '16MB/s' }, env: {} }).scrubRate, 16_000_000)
  assert.equal(resolveConfig({ flags: {}, env: { ASTRAD_SCRUB_RATE: 'off' } }).scrubRate, 0)
  assert.equal(resolveConfig({ flags: {}, env: {} }).scrubRate, undefined, 'unset: the transfer default applies')
  assert.throws(() => resolveConfig({ flags: { scrubRate: 'fast' }, env: {} }), (err: unknown) => err instanceof ConfigError && err.key.includes('scrub-rate'))
})
