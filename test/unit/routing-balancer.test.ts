import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Balancer, NaiveSwrr, measuredWeight, type NodeLoad } from '../../src/routing/index.ts'
import { FakeClock } from '../../src/util/time.ts'

/** A load whose `cores` is the weight under `byCores` (the weight function used below). */
function load (cores: number, extra: Partial<NodeLoad> = {}): NodeLoad {
  return { cores, gpus: 0, gpuPerf: 1, cpuUtil: 0.5, gpuUtil: 0, inflight: 0, ...extra }
}
const byCores = (l: NodeLoad): number => l.cores

function counts (b: Balancer, n: number, exclude?: ReadonlySet<string>): Record<string, number> {
  const out: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const id = b.pick(exclude) ?? '-'
    out[id] = (out[id] ?? 0) + 1
  }
  return out
}

test('picks follow the SWRR order of the weight function (nginx {5,1,1})', () => {
  const b = new Balancer({ weight: byCores })
  b.update([{ id: 'a', load: load(5) }, { id: 'b', load: load(1) }, { id: 'c', load: load(1) }])
  assert.equal(Array.from({ length: 7 }, () => b.pick()).join(' '), 'a a b a c a a')
  assert.deepEqual(b.states().map(s => [s.id, s.weight, s.ejected]), [['a', 5, false], ['b', 1, false], ['c', 1, false]])
})

test('an update keeps the SWRR position of nodes that stay and forgets nodes that left', () => {
  const b = new Balancer({ weight: byCores })
  const ref = new NaiveSwrr()
  const set = [{ id: 'a', load: load(5) }, { id: 'b', load: load(1) }, { id: 'c', load: load(1) }]
  b.update(set)
  for (const e of set) ref.set(e.id, e.load.cores)
  for (let i = 0; i < 3; i++) assert.equal(b.pick(), ref.pick())
  b.update(set) // the same weights again (the 3 s refresh): the sequence goes on, not restarts
  for (let i = 0; i < 4; i++) assert.equal(b.pick(), ref.pick())
  b.update([{ id: 'a', load: load(5) }, { id: 'c', load: load(1) }])
  ref.delete('b')
  assert.equal(b.size, 2)
  for (let i = 0; i < 12; i++) assert.equal(b.pick(), ref.pick())
})

test('excluded nodes (a retry) are not picked and do not gain weight meanwhile', () => {
  const b = new Balancer({ weight: byCores })
  const ref = new NaiveSwrr()
  b.update([{ id: 'a', load: load(3) }, { id: 'b', load: load(2) }, { id: 'c', load: load(1) }])
  ref.set('a', 3); ref.set('b', 2); ref.set('c', 1)
  const exclude = new Set(['a'])
  for (let i = 0; i < 5; i++) assert.equal(b.pick(exclude), ref.pick(exclude))
  assert.equal(counts(b, 30, new Set(['a', 'b'])).c, 30)
  assert.equal(b.pick(new Set(['a', 'b', 'c'])), undefined)
})

test('ejection: maxFails failures within failTimeoutMs take a node out, then it is tried again', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: byCores, clock, maxFails: 2, failTimeoutMs: 10_000 })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  b.failure('a')
  clock.advance(5_000)
  assert.equal(b.states()[0]?.ejected, false, 'one failure of two')
  b.failure('a')
  assert.equal(b.states()[0]?.ejected, true)
  assert.deepEqual(counts(b, 20), { b: 20 })
  clock.advance(9_999)
  assert.deepEqual(counts(b, 20), { b: 20 })
  clock.advance(1)
  assert.deepEqual(counts(b, 20), { a: 10, b: 10 }, 'back after fail_timeout')
  // Back on probation: a single failure ejects it again at once (nginx), however late it comes.
  clock.advance(3_000)
  b.failure('a')
  assert.equal(b.states()[0]?.ejected, true)
  assert.deepEqual(counts(b, 6), { b: 6 })
  clock.advance(10_000)
  b.pick()
  b.success('a')
  b.failure('a')
  assert.equal(b.states()[0]?.ejected, false, 'a success ends the probation and clears the count')
})

test('ejection: failures further apart than failTimeoutMs do not add up; maxFails 0 never ejects', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: byCores, clock, maxFails: 2, failTimeoutMs: 10_000 })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  for (let i = 0; i < 5; i++) {
    b.failure('a')
    assert.equal(b.states()[0]?.ejected, false, `failure ${i + 1}`)
    clock.advance(10_001)
  }
  const never = new Balancer({ weight: byCores, clock, maxFails: 0 })
  never.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  for (let i = 0; i < 100; i++) never.failure('a')
  assert.equal(never.states()[0]?.ejected, false)
})

test('when every node left is ejected, pick fails open to the one whose ejection ends first', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: byCores, clock, maxFails: 1, failTimeoutMs: 10_000 })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  b.failure('a')
  clock.advance(1_000)
  b.failure('b')
  assert.equal(b.pick(), 'a')
  assert.equal(b.pick(new Set(['a'])), 'b')
  assert.equal(b.pick(new Set(['a', 'b'])), undefined)
})

test('slow start: a node that joins ramps from 1 % to its full weight over slowStartMs', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: byCores, clock, slowStartMs: 10_000 })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  assert.equal(b.states().some(s => s.starting), false, 'the first set starts at full weight')
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }, { id: 'c', load: load(1) }])
  const share = (): number => (counts(b, 3_000).c ?? 0) / 3_000
  assert.ok(share() < 0.02, 'about 1 % of a weight of 1 against 2')
  clock.advance(5_000)
  assert.ok(Math.abs(share() - 0.5 / 2.5) < 0.01, 'half its weight after half the ramp')
  assert.equal(b.states()[2]?.starting, true)
  assert.ok(Math.abs((b.states()[2]?.weight ?? 0) - 0.5) < 1e-9)
  clock.advance(5_000)
  assert.ok(Math.abs(share() - 1 / 3) < 0.01, 'full weight after slowStartMs')
  assert.equal(b.states()[2]?.starting, false)
})

test('slow start also follows an ejection', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: byCores, clock, maxFails: 1, failTimeoutMs: 1_000, slowStartMs: 10_000 })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(1) }])
  b.failure('a')
  clock.advance(1_000)
  const firstShare = (counts(b, 2_000).a ?? 0) / 2_000
  assert.ok(firstShare > 0 && firstShare < 0.03, String(firstShare))
  assert.equal(b.states()[0]?.starting, true)
})

test('measured capacity: a node computing 5 × slower gets about a fifth of the weight', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: measuredWeight, clock })
  const set = [{ id: 'fast', load: load(8) }, { id: 'slow', load: load(8) }]
  b.update(set)
  assert.deepEqual(b.states().map(s => s.weight), [8, 8], 'reported capacity before any answer')
  for (let i = 0; i < 200; i++) {
    clock.advance(10)
    b.success('fast', 20)
    b.success('slow', 100)
  }
  b.update(set)
  const [fast, slow] = b.states().map(s => s.weight) as [number, number]
  assert.ok(Math.abs(fast / slow - 5) < 1e-6, `${fast} / ${slow}`)
  assert.ok(Math.abs(fast + slow - 16) < 1e-6, 'calibrated to the reported unit')
})

test('measured capacity: a node that answers too rarely keeps its last measurement, then drops it', () => {
  const clock = new FakeClock()
  const b = new Balancer({ weight: measuredWeight, clock })
  const set = [{ id: 'a', load: load(8) }, { id: 'b', load: load(8) }]
  b.update(set)
  for (let i = 0; i < 50; i++) { clock.advance(20); b.success('a', 10); b.success('b', 40) }
  b.update(set)
  const measured = b.states().map(s => s.weight)
  clock.advance(20_000)
  b.update(set)
  assert.deepEqual(b.states().map(s => s.weight), measured, 'no new answers: the measurement stands')
  clock.advance(11_000)
  b.update(set)
  assert.deepEqual(b.states().map(s => s.weight), [8, 8], 'too old: back to the reported capacity')
})

test('in-flight limit: a node at maxInflightPerSlot × slots is passed over; all at it, still routed', () => {
  const inflight = new Map<string, number>()
  const b = new Balancer({ weight: byCores, inflight: (id) => inflight.get(id) ?? 0, maxInflightPerSlot: 2 })
  b.update([{ id: 'a', load: load(4) }, { id: 'b', load: load(1) }])
  inflight.set('a', 8)
  assert.deepEqual(counts(b, 5), { b: 5 })
  inflight.set('a', 7)
  assert.equal(counts(b, 5).a, 4)
  inflight.set('a', 8)
  inflight.set('b', 2)
  assert.equal(Object.values(counts(b, 5)).reduce((x, y) => x + y, 0), 5, 'every node full: picks still answer')
})

test('a weight function that returns garbage does not stop routing', () => {
  const b = new Balancer({ weight: (l) => l.cores === 1 ? NaN : l.cores })
  b.update([{ id: 'a', load: load(1) }, { id: 'b', load: load(4) }])
  const c = counts(b, 100)
  assert.equal((c.a ?? 0) + (c.b ?? 0), 100)
  assert.ok((c.b ?? 0) > 95)
})

test('options are validated', () => {
  assert.throws(() => new Balancer({ maxFails: -1 }), RangeError)
  assert.throws(() => new Balancer({ failTimeoutMs: NaN }), RangeError)
  assert.throws(() => new Balancer({ slowStartMs: Infinity }), RangeError)
  assert.equal(new Balancer().pick(), undefined, 'an empty set picks nothing')
})
