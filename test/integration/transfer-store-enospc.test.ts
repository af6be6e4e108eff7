import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Registry } from 'prom-client'
import { PieceStore, type StoreEvent } from '../../src/transfer/store.ts'
import { buildManifest, manifestId, type Manifest } from '../../src/transfer/manifest.ts'
import { Download, type DownloadStore } from '../../src/transfer/downloader.ts'
import { PieceServer } from '../../src/transfer/piece-protocol.ts'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { silentLogger } from '../../src/util/logger.ts'
import { FakeClock } from '../../src/util/time.ts'
import { waitFor } from '../helpers/wait.ts'

/*
 * A real full disk: a 12 MiB tmpfs (we run as root in CI). Where mounting is not allowed the
 * tests are skipped with the reason.
 */
const MiB = 1024 * 1024
const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-store-enospc-'))
let skip: string | undefined
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', mnt], { stdio: 'pipe' })
} catch (err) {
  const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim().split('\n')[0]
  skip = `cannot mount a 12 MiB tmpfs to fill (needs root or CAP_SYS_ADMIN): ${stderr !== undefined && stderr !== '' ? stderr : (err as Error).message}`
}
after(() => {
  if (skip === undefined) {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' })
    } catch {
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' })
    }
  }
  fs.rmSync(mnt, { recursive: true, force: true })
})

async function * chunks (data: Uint8Array, size = 1_000_003): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.length; off += size) yield data.subarray(off, off + size)
}

async function manifestOf (data: Uint8Array): Promise<Manifest> {
  return await buildManifest(chunks(data), data.length, () => {})
}

function files (dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []
}

/** Writes `file` until the filesystem refuses (ENOSPC); returns the bytes written. */
function fill (file: string): number {
  const fd = fs.openSync(file, 'w')
  const block = Buffer.alloc(64 * 1024, 7)
  let total = 0
  try {
    for (let i = 0; i < 1024; i++) { // at most 64 MiB: bounded even if the fs is not the tmpfs
      try {
        total += fs.writeSync(fd, block)
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOSPC') return total
        throw err
      }
    }
    throw new Error(`${file}: wrote 64 MiB without ENOSPC`)
  } finally {
    fs.closeSync(fd)
  }
}

test('a full disk gives StoreFullError: the temp file is gone, nothing is marked complete, the store works again after a remove', async t => {
  if (skip !== undefined) { t.skip(skip); return }
  const dir = path.join(mnt, 'models')
  const filler = path.join(mnt, 'filler')
  const registry = new Registry()
  // Watermark 1.0: only a real ENOSPC (or bytes that plainly do not fit) stops a write here.
  const store = new PieceStore({ logger: silentLogger(), clock: new FakeClock(), registry }, { dir, highWatermark: 1, lowWatermark: 1 })
  await store.open()
  try {
    const a = await store.importModel(chunks(randomBytes(5 * MiB)), 5 * MiB)
    const unpin = store.pin(a.id, 'replica:r1')
    const bBytes = randomBytes(5 * MiB) // pieces of 4 MiB and 1 MiB
    const bm = await manifestOf(bBytes)
    const b = manifestId(bm)
    await store.addModel(bm)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))

    // Piece 0 of b starts while there is room; then another process fills the disk.
    const w = store.beginPiece(b, 0)
    await w.write(bBytes.subarray(0, MiB))
    // A full batch is written while the next one fills (write() does not wait for the disk):
    // wait until that first MiB is in the temp file, so the disk fills after it.
    const tmpSize = (): number => files(path.join(dir, b, 'pieces')).reduce((n, f) => n + fs.statSync(path.join(dir, b, 'pieces', f)).size, 0)
    await waitFor('the first MiB of piece 0 on disk', () => tmpSize() === MiB, 10_000)
      .catch((err: Error) => { throw new Error(`${err.message}: temp file has ${tmpSize()} bytes`) })
    const filled = fill(filler)
    assert.ok(filled > 0 && filled < 12 * MiB, `filler wrote ${filled} bytes`)
    let failure: unknown
    try {
      for (let off = MiB; off < 4 * MiB; off += 256 * 1024) await w.write(bBytes.subarray(off, off + 256 * 1024))
      await w.commit()
    } catch (err) {
      failure = err
    }
    assert.ok(failure != null, 'writing into a full disk failed')
    assert.equal((failure as Error).name, 'StoreFullError')
    assert.equal((failure as { code?: string }).code, 'ERR_NO_SPACE')
    assert.equal(((failure as Error).cause as { code?: string } | undefined)?.code, 'ENOSPC')
    await w.abort()
    assert.deepEqual(files(path.join(dir, b, 'pieces')), [], 'the temp file was removed')
    assert.equal(store.get(b)?.complete, false)
    assert.equal(store.get(b)?.have.size, 0)
    assert.deepEqual(store.list().filter(m => m.complete).map(m => m.id), [a.id], 'only the model that was complete before')
    assert.deepEqual(events, [])

    // Registering another model on the full disk (the failed piece freed its bytes: fill them
    // too): a clear error and no half-made dir.
    fill(filler + '2')
    const cm = await manifestOf(randomBytes(5 * MiB))
    await assert.rejects(store.addModel(cm), { name: 'StoreFullError', code: 'ERR_NO_SPACE' })
    assert.equal(fs.existsSync(path.join(dir, manifestId(cm))), false)
    assert.equal(store.get(manifestId(cm)), undefined)
    assert.match(await registry.metrics(), /astrad_store_errors_total\{reason="no_space"\} [2-9]/)

    // Freeing a's 5 MiB makes room for b: the store was never broken.
    unpin()
    await store.remove(a.id)
    fs.rmSync(filler + '2')
    for (const index of [0, 1]) {
      const wi = store.beginPiece(b, index)
      await wi.write(bBytes.subarray(index * 4 * MiB, Math.min(bBytes.length, (index + 1) * 4 * MiB)))
      assert.equal(await wi.commit(), true)
    }
    assert.equal(store.get(b)?.complete, true)
    const back: Buffer[] = []
    for await (const c of store.readModel(b)) back.push(c)
    assert.ok(Buffer.concat(back).equals(bBytes))
    assert.deepEqual(files(path.join(dir, b, 'pieces')), ['0', '1'])
  } finally {
    await store.close()
    fs.rmSync(filler, { force: true })
    fs.rmSync(filler + '2', { force: true })
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('on a small disk the high watermark evicts the least recently used model; with nothing evictable writes go on until the hard limit, then fail cleanly', async t => {
  if (skip !== undefined) { t.skip(skip); return }
  const dir = path.join(mnt, 'models-wm')
  const clock = new FakeClock()
  // 50 % of 12 MiB: one 4 MiB model fits, two do not.
  const store = new PieceStore({ logger: silentLogger(), clock }, { dir, highWatermark: 0.5, lowWatermark: 0.3 })
  await store.open()
  try {
    const a = await store.importModel(chunks(randomBytes(4 * MiB)), 4 * MiB)
    clock.advance(60_000)
    const events: StoreEvent[] = []
    store.onChange(e => events.push(e))
    const bBytes = randomBytes(4 * MiB)
    const b = await store.importModel(chunks(bBytes), 4 * MiB)
    assert.deepEqual(events, [{ type: 'removed', id: a.id, reason: 'evicted' }, { type: 'added', id: b.id }, { type: 'complete', id: b.id }])
    assert.deepEqual(store.list().map(m => m.id), [b.id])
    const u = store.usage()
    assert.equal(u.fsSize, 12 * MiB)
    assert.ok(u.fsSize - u.fsFree <= 6 * MiB, `${u.fsSize - u.fsFree} bytes used`)

    // Nothing evictable (b is pinned): the watermark cannot be met, but the disk has room, so
    // the write goes ahead (a disk filled by others must not stop every download)…
    store.pin(b.id, 'replica:r1')
    const c = await store.importModel(chunks(randomBytes(4 * MiB)), 4 * MiB)
    store.pin(c.id, 'replica:r2')
    // …until the hard limit (98 %): then the import fails cleanly.
    events.length = 0
    await assert.rejects(store.importModel(chunks(randomBytes(4 * MiB)), 4 * MiB), { name: 'StoreFullError', code: 'ERR_NO_SPACE' })
    assert.deepEqual(events, [])
    assert.deepEqual(files(dir).sort(), [b.id, c.id].sort(), 'no staging dir left behind')
    assert.deepEqual(store.list().map(m => [m.id, m.complete]).sort(), [[b.id, true], [c.id, true]].sort())
    const back: Buffer[] = []
    for await (const c of store.readModel(b.id)) back.push(c)
    assert.ok(Buffer.concat(back).equals(bBytes))
  } finally {
    await store.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a pull whose piece write hits ENOSPC fails at once with ERR_NO_SPACE and leaves no partial piece (issue 16)', async t => {
  if (skip !== undefined) { t.skip(skip); return }
  const dir = path.join(mnt, 'models-pull')
  const filler = path.join(mnt, 'filler-pull')
  const seedDir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-enospc-seed-'))
  const hosts: Host[] = []
  const seedStore = new PieceStore({ logger: silentLogger(), clock: new FakeClock() }, { dir: seedDir })
  const store = new PieceStore({ logger: silentLogger(), clock: new FakeClock() }, { dir, highWatermark: 1, lowWatermark: 1 })
  let server: PieceServer | undefined
  let download: Download | undefined
  try {
    await seedStore.open()
    await store.open()
    const data = randomBytes(8 * MiB) // two pieces of 4 MiB
    const model = await seedStore.importModel(chunks(data), data.length)
    const [seed, puller] = await Promise.all([0, 1].map(async () => {
      const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
      await h.start()
      hosts.push(h)
      return h
    }))
    server = new PieceServer({ libp2p: seed!, source: { manifest: id => seedStore.get(id)?.manifest, has: (id, i) => seedStore.has(id, i), readPiece: (id, i, o, l) => seedStore.readPiece(id, i, o, l) }, logger: silentLogger() })
    await server.start()

    // The real store on the 12 MiB tmpfs; once the first bytes of a piece are on disk another
    // process fills the disk, so the piece's next write gets a real ENOSPC.
    let filled = 0
    let attempts = 0
    const onDisk: DownloadStore = {
      addModel: async m => await store.addModel(m),
      pin: (id, owner) => store.pin(id, owner),
      beginPiece: (id, index) => {
        attempts++
        const w = store.beginPiece(id, index)
        return {
          write: async chunk => {
            await w.write(chunk)
            if (filled === 0) filled = fill(filler)
          },
          commit: async () => await w.commit(),
          abort: async () => { await w.abort() }
        }
      }
    }
    const pieces = model.manifest.pieces.length
    download = new Download({
      libp2p: puller!,
      store: onDisk,
      holders: async () => ({ pieces, holders: [{ peer: seed!.peerId, addrs: seed!.getMultiaddrs().map(a => a.toString()), have: 'complete' as const }], availability: new Uint16Array(pieces).fill(1) }),
      logger: silentLogger()
    }, model.manifest, model.id, 'enospc')
    let failure: unknown
    const ran = download.run().catch((err: unknown) => { failure = err })
    await waitFor('the pull ended', () => download!.info().state !== 'downloading')
    await ran
    const info = download.info()
    assert.ok(filled > 0, 'the disk was filled during the pull')
    assert.equal(info.state, 'failed', `pull state; info: ${JSON.stringify(info)}`)
    assert.equal((failure as { code?: string }).code, 'ERR_NO_SPACE', `pull error: ${String(failure)}`)
    assert.equal(info.errorCode, 'ERR_NO_SPACE', 'the code is in the transfer info (astrad model pull shows it)')
    assert.match(info.error ?? '', /full/, 'the message says the disk is full')
    // At most one attempt per lane before it stopped; not a retry loop until the no-progress timeout.
    assert.ok(attempts <= 2 * pieces, `piece attempts: ${attempts}`)
    // The other lane's piece may still be aborting when run() settles (it does not wait for every
    // lane's clean-up): its temp file must go, within a bounded wait.
    let left: string[] = []
    await waitFor('no partial piece file left behind', () => (left = files(path.join(dir, model.id, 'pieces'))).length === 0, 10_000)
      .catch((err: Error) => { throw new Error(`${err.message}: ${left.join(', ')}`) })
    assert.equal(store.get(model.id)?.have.size, 0)
  } finally {
    download?.abort()
    await server?.stop()
    await Promise.all(hosts.map(async h => { await h.stop() }))
    await store.close()
    await seedStore.close()
    fs.rmSync(filler, { force: true })
    fs.rmSync(dir, { recursive: true, force: true })
    fs.rmSync(seedDir, { recursive: true, force: true })
  }
})
