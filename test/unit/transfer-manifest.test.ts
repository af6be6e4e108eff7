import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { pieceSizeFor, pieceLength, buildManifest, manifestId, canonicalManifest, parseManifest, type Manifest } from '../../src/transfer/manifest.ts'
import { Bitfield } from '../../src/transfer/bitfield.ts'
import { MIN_PIECE_SIZE, MAX_PIECE_SIZE } from '../../src/transfer/constants.ts'

const MiB = 1024 * 1024

test('piece size scales with the file: 4 MiB floor, 64 MiB ceiling, ~1,100 pieces for 70 GB', () => {
  assert.equal(pieceSizeFor(1), MIN_PIECE_SIZE)
  assert.equal(pieceSizeFor(2_411_724), MIN_PIECE_SIZE)
  assert.equal(pieceSizeFor(1024 * MiB), 4 * MiB) // 256 pieces
  assert.equal(pieceSizeFor(4096 * MiB), 4 * MiB) // exactly 1,024 pieces
  assert.equal(pieceSizeFor(4096 * MiB + 1), 8 * MiB)
  const seventy = 70e9
  assert.equal(pieceSizeFor(seventy), MAX_PIECE_SIZE)
  const n = Math.ceil(seventy / MAX_PIECE_SIZE)
  assert.ok(n > 1000 && n < 1200, `${n} pieces`)
  assert.throws(() => pieceSizeFor(0), RangeError)
  assert.throws(() => pieceSizeFor(600 * 1024 ** 3), RangeError)
})

test('piece lengths: the last piece holds the remainder', () => {
  const m = { size: 9 * MiB + 5, pieceSize: 4 * MiB }
  assert.equal(pieceLength(m, 0), 4 * MiB)
  assert.equal(pieceLength(m, 2), MiB + 5)
  assert.throws(() => pieceLength(m, 3), RangeError)
  assert.throws(() => pieceLength(m, -1), RangeError)
})

async function * chunks (data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

test('buildManifest hashes every piece and the whole file, whatever the chunking', async () => {
  const data = Buffer.alloc(9 * MiB + 12345)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 13)) & 0xff
  const seen: Array<{ index: number, len: number }> = []
  const a = await buildManifest(chunks(data, 65536), data.length, (index, piece, sha) => {
    assert.equal(sha, createHash('sha256').update(piece).digest('hex'))
    seen.push({ index, len: piece.length })
  })
  const b = await buildManifest(chunks(data, 1_000_003), data.length, () => {})
  assert.deepEqual(a, b)
  assert.equal(a.pieces.length, 3)
  assert.deepEqual(seen.map(s => s.len), [4 * MiB, 4 * MiB, MiB + 12345])
  assert.equal(a.sha256, createHash('sha256').update(data).digest('hex'))
  assert.equal(manifestId(a), manifestId(b))
  assert.equal(manifestId(a), createHash('sha256').update(canonicalManifest(a)).digest('hex'))
  // One byte different → another id.
  data[5] = data[5]! ^ 1
  const c = await buildManifest(chunks(data, 65536), data.length, () => {})
  assert.notEqual(manifestId(c), manifestId(a))
})

test('buildManifest refuses a stream shorter or longer than declared', async () => {
  const data = Buffer.alloc(1000, 7)
  await assert.rejects(buildManifest(chunks(data, 100), 1001, () => {}), { name: 'DecodeError' })
  await assert.rejects(buildManifest(chunks(data, 100), 999, () => {}), { name: 'DecodeError' })
})

test('parseManifest validates untrusted manifests', async () => {
  const m = await buildManifest(chunks(Buffer.alloc(100, 1), 10), 100, () => {})
  assert.deepEqual(parseManifest(JSON.parse(canonicalManifest(m))), m)
  const bad: Array<Partial<Manifest> | unknown> = [
    { ...m, pieces: [] },
    { ...m, pieces: [...m.pieces, m.pieces[0]] },
    { ...m, pieceSize: 1000 },
    { ...m, sha256: 'xyz' },
    { ...m, size: -1 },
    { ...m, extra: 1 },
    null,
    'manifest'
  ]
  for (const b of bad) assert.throws(() => parseManifest(b), { name: 'DecodeError' })
})

test('bitfield: set, clear, count, base64 round trip, spare bits refused', () => {
  const b = new Bitfield(11)
  b.set(0); b.set(7); b.set(10); b.set(10)
  assert.equal(b.size, 3)
  assert.ok(b.has(7) && !b.has(8) && !b.has(11) && !b.has(-1))
  const c = Bitfield.fromBase64(11, b.toBase64())
  assert.deepEqual([...c.indices()], [0, 7, 10])
  c.clear(7)
  assert.equal(c.size, 2)
  assert.ok(Bitfield.full(11).complete)
  assert.throws(() => new Bitfield(11, new Uint8Array([0, 0x1f])), { name: 'DecodeError' })
  assert.throws(() => new Bitfield(11, new Uint8Array([0])), { name: 'DecodeError' })
  assert.throws(() => b.set(11), RangeError)
})
