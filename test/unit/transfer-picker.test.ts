import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PiecePicker } from '../../src/transfer/picker.ts'
import { Bitfield } from '../../src/transfer/bitfield.ts'
import { SHUFFLED_PIECES } from '../../src/transfer/constants.ts'
import { seededRandom as rng } from '../../src/util/random.ts'

function take (picker: PiecePicker, have: Bitfield, n: number, peer: Bitfield | 'complete' = 'complete'): number[] {
  const out: number[] = []
  const serving = new Set<number>()
  for (let k = 0; k < n; k++) {
    const p = picker.next(peer, serving)
    if (p === undefined) break
    picker.started(p)
    serving.add(p)
    out.push(p)
  }
  return out
}

test('the first pieces are shuffled: many downloaders starting together ask for different pieces', () => {
  const firsts = new Set<number>()
  const orders: string[] = []
  for (let seed = 1; seed <= 50; seed++) {
    const have = new Bitfield(256)
    const picker = new PiecePicker(have, { random: rng(seed) })
    // Availability is uniform at cold start (only the seed holds anything).
    picker.setAvailability(new Array(256).fill(1))
    const order = take(picker, have, SHUFFLED_PIECES)
    firsts.add(order[0]!)
    orders.push(order.join(','))
  }
  // 50 downloaders: sequential order would give 1 distinct first piece; shuffled gives many.
  assert.ok(firsts.size >= 35, `${firsts.size} distinct first pieces among 50 downloaders`)
  assert.equal(new Set(orders).size, 50)
})

test('shuffled pieces ignore rarity; afterwards the rarest piece comes first', () => {
  const have = new Bitfield(10)
  const picker = new PiecePicker(have, { random: rng(7) })
  const counts = [5, 5, 5, 1, 5, 2, 5, 5, 3, 5]
  picker.setAvailability(counts)
  assert.equal(picker.phase, 'shuffled')
  const shuffled = take(picker, have, SHUFFLED_PIECES)
  assert.equal(shuffled.length, SHUFFLED_PIECES)
  assert.equal(picker.phase, 'rarest')
  // Remaining pieces come out in rarity order: 3 (1 holder), 5 (2), 8 (3), then the 5s.
  const rest = take(picker, have, 10 - SHUFFLED_PIECES)
  const rare = [3, 5, 8].filter(p => !shuffled.includes(p))
  assert.deepEqual(rest.slice(0, rare.length), rare)
  for (let i = 1; i < rest.length; i++) assert.ok(counts[rest[i]!]! >= counts[rest[i - 1]!]!, `order ${rest.join(',')}`)
})

test('only pieces the peer has and we lack are picked', () => {
  const have = new Bitfield(8)
  have.set(0); have.set(1)
  const picker = new PiecePicker(have, { random: rng(3) })
  const peer = new Bitfield(8)
  peer.set(1); peer.set(4); peer.set(6)
  const picked = take(picker, have, 8, peer)
  assert.deepEqual(picked.sort(), [4, 6])
  // Nothing new to offer and both in flight: endgame may duplicate onto this peer only
  // pieces it is not already serving.
  assert.equal(picker.next(peer, new Set([4, 6])), undefined)
})

test('endgame duplicates in-flight pieces, fewest duplicates first, never onto the same peer', () => {
  const have = new Bitfield(3)
  const picker = new PiecePicker(have, { random: rng(11) })
  const a = take(picker, have, 3)
  assert.equal(a.length, 3)
  assert.equal(picker.phase, 'endgame')
  // Peer B serves nothing yet: gets a duplicate of one in-flight piece.
  const d1 = picker.next('complete', new Set())
  assert.ok(d1 !== undefined)
  picker.started(d1)
  // Next duplicate goes to a piece with fewer requests than d1 (now 2).
  const d2 = picker.next('complete', new Set([d1]))
  assert.ok(d2 !== undefined && d2 !== d1)
  assert.equal(picker.requests(d1), 2)
  // When a piece lands, it is never picked again.
  have.set(d1)
  picker.finished(d1); picker.finished(d1)
  for (let i = 0; i < 20; i++) assert.notEqual(picker.next('complete'), d1)
})

test('a complete model yields nothing', () => {
  const have = Bitfield.full(4)
  const picker = new PiecePicker(have)
  assert.equal(picker.next('complete'), undefined)
})

test('no duplicate before every missing piece is requested; in the endgame at most two copies of a piece', () => {
  const have = new Bitfield(4)
  const picker = new PiecePicker(have, { random: rng(5) })
  const a = new Bitfield(4)
  a.set(0); a.set(1)
  // Peer A's two pieces requested; pieces 2 and 3 are still unrequested elsewhere.
  for (const p of take(picker, have, 2, a)) assert.ok(p === 0 || p === 1)
  assert.equal(picker.next(a, new Set()), undefined, 'no duplicate before the endgame')
  const fresh = picker.next('complete', new Set([0, 1]))
  assert.ok(fresh === 2 || fresh === 3, 'a peer with new pieces still gets them')
  picker.started(fresh)
  const rest = take(picker, have, 1, 'complete')
  assert.ok(rest.length === 1 && rest[0] !== fresh && rest[0]! >= 2, 'the other of pieces 2 and 3')
  assert.equal(picker.phase, 'endgame')
  // Now duplicates: each in-flight piece gets at most one more copy.
  const dups = new Set<number>()
  for (let i = 0; i < 10; i++) {
    const d = picker.next('complete', new Set())
    if (d === undefined) break
    picker.started(d)
    dups.add(d)
  }
  for (const p of [0, 1, 2, 3]) assert.ok(picker.requests(p) <= 2, `piece ${p} has ${picker.requests(p)} copies in flight`)
  assert.equal(dups.size, 4)
})
