import { test } from 'node:test'
import assert from 'node:assert/strict'
import { encodeHave, decodeHave, type Have } from '../../src/transfer/have.ts'
import { Tracker, decodeHolders } from '../../src/transfer/tracker.ts'
import { Bitfield } from '../../src/transfer/bitfield.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { FakeClock } from '../../src/util/time.ts'
import { HAVE_EXPIRY_MS } from '../../src/transfer/constants.ts'
import { fakePeerId } from '../helpers/heartbeat.ts'
import type { Host } from '../../src/p2p/index.ts'

const ID = 'ab'.repeat(32)

function bits (n: number, set: number[]): Bitfield {
  const b = new Bitfield(n)
  for (const i of set) b.set(i)
  return b
}

test('have messages round-trip: complete, partial, removed; garbage is a DecodeError', () => {
  const cases: Have[] = [
    { incarnation: 1_700_000_000_000, seq: 3, id: ID, pieces: 10, have: null },
    { incarnation: 1, seq: 4, id: ID, pieces: 10, have: bits(10, [0, 9]) },
    { incarnation: 1, seq: 5, id: ID, pieces: 1, have: undefined }
  ]
  for (const h of cases) {
    const back = decodeHave(encodeHave(h))
    assert.equal(back.id, h.id)
    assert.equal(back.seq, h.seq)
    if (h.have instanceof Bitfield) assert.deepEqual([...(back.have as Bitfield).indices()], [...h.have.indices()])
    else assert.equal(back.have, h.have)
  }
  // A full bitfield is sent as "complete": 8,192 pieces would not fit otherwise.
  assert.equal(decodeHave(encodeHave({ incarnation: 1, seq: 1, id: ID, pieces: 3, have: Bitfield.full(3) })).have, null)
  const good = encodeHave(cases[1]!)
  for (const bad of [good.subarray(0, 20), new Uint8Array([9, ...good.subarray(1)]), new Uint8Array(3000), new Uint8Array([...good, 0])]) {
    assert.throws(() => decodeHave(bad), { name: 'DecodeError' })
  }
})

function tracker (clock = new FakeClock(0), live?: (p: string) => boolean): Tracker {
  const libp2p = { getConnections: () => [] } as unknown as Host
  return new Tracker({ libp2p, logger: silentLogger(), clock, isLive: live })
}

test('tracker: availability counts, newest announcement wins, removal and expiry', () => {
  const clock = new FakeClock(0)
  const t = tracker(clock)
  const [a, b, c] = [fakePeerId(1), fakePeerId(2), fakePeerId(3)]
  t.ingest(a, { incarnation: 1, seq: 1, id: ID, pieces: 4, have: null })
  t.ingest(b, { incarnation: 1, seq: 2, id: ID, pieces: 4, have: bits(4, [0, 1]) })
  t.ingest(b, { incarnation: 1, seq: 1, id: ID, pieces: 4, have: bits(4, []) }) // stale: ignored
  t.ingest(c, { incarnation: 1, seq: 1, id: ID, pieces: 5, have: null }) // wrong piece count: refused
  const ans = decodeHolders(t.holders(ID, 10), 4)
  assert.deepEqual([...ans.availability], [2, 2, 1, 1])
  assert.equal(ans.holders.length, 2)
  assert.deepEqual(t.summary().models, [{ id: ID, complete: 1, partial: 1 }])
  t.ingest(a, { incarnation: 1, seq: 2, id: ID, pieces: 4, have: undefined })
  assert.deepEqual([...decodeHolders(t.holders(ID, 10), 4).availability], [1, 1, 0, 0])
  clock.advance(HAVE_EXPIRY_MS + 1)
  ;(t as unknown as { sweep: () => void }).sweep()
  assert.equal(t.holders(ID, 10).holders.length, 0)
  assert.deepEqual(t.summary().models, [])
})

test('tracker: dead holders are never offered; the asker is excluded', () => {
  const dead = new Set<string>()
  const t = tracker(new FakeClock(0), p => !dead.has(p))
  const peers = [1, 2, 3].map(i => fakePeerId(i))
  for (const p of peers) t.ingest(p, { incarnation: 1, seq: 1, id: ID, pieces: 2, have: null })
  dead.add(peers[0]!)
  const ans = t.holders(ID, 10, peers[1])
  assert.deepEqual(ans.holders.map(h => h.peer), [peers[2]])
  assert.deepEqual([...decodeHolders(ans, 2).availability], [2, 2])
})

test('tracker: a random subset weighted towards holders of rare pieces', () => {
  const t = tracker()
  const pieces = 64
  // 40 holders of the same common half; one partial holder has the only copies of the rare half.
  const common = Array.from({ length: 32 }, (_, i) => i)
  const rare = Array.from({ length: 32 }, (_, i) => i + 32)
  for (let i = 0; i < 40; i++) t.ingest(fakePeerId(100 + i), { incarnation: 1, seq: 1, id: ID, pieces, have: bits(pieces, common) })
  const rareHolder = fakePeerId(99)
  t.ingest(rareHolder, { incarnation: 1, seq: 1, id: ID, pieces, have: bits(pieces, rare) })
  let rareOffered = 0
  const firstPeers = new Set<string>()
  for (let q = 0; q < 200; q++) {
    const ans = t.holders(ID, 5)
    assert.equal(ans.holders.length, 5)
    if (ans.holders.some(h => h.peer === rareHolder)) rareOffered++
    firstPeers.add(ans.holders[0]!.peer)
  }
  // Uniform sampling would offer it in 5/41 ≈ 12 % of answers; weighting makes it nearly always.
  assert.ok(rareOffered > 160, `rare holder offered in ${rareOffered}/200 answers`)
  // Answers still differ between askers (load spreads over the common holders).
  assert.ok(firstPeers.size > 5, `${firstPeers.size} distinct first holders`)
})
