import { test } from 'node:test'
import assert from 'node:assert/strict'
import { NaiveSwrr, Swrr, routingConstants } from '../../src/routing/index.ts'
import { seededRandom as rng } from '../../src/util/random.ts'

function withWeights (weights: Record<string, number>): Swrr {
  const s = new Swrr()
  for (const [id, w] of Object.entries(weights)) s.set(id, w)
  return s
}

function picks (s: { pick: () => string | undefined }, n: number): string {
  return Array.from({ length: n }, () => s.pick() ?? '-').join(' ')
}

test("nginx's vectors: {5,1,1} gives a a b a c a a, and repeats", () => {
  assert.equal(picks(withWeights({ a: 5, b: 1, c: 1 }), 14), 'a a b a c a a a a b a c a a')
  assert.equal(picks(withWeights({ a: 4, b: 2, c: 1 }), 7), 'a b a c a b a')
  assert.equal(picks(withWeights({ a: 2, b: 1 }), 6), 'a b a a b a')
  assert.equal(picks(withWeights({ a: 1, b: 1, c: 1 }), 6), 'a b c a b c')
})

test('ties go to the node added first; a re-added node goes last', () => {
  assert.equal(picks(withWeights({ b: 1, a: 1 }), 4), 'b a b a')
  const s = withWeights({ a: 1, b: 1, c: 1 })
  s.delete('a')
  s.set('a', 1)
  assert.equal(picks(s, 6), 'b c a b c a')
})

test('real weights follow the sequence of the integers they are proportional to', () => {
  assert.equal(picks(withWeights({ a: 0.5, b: 0.1, c: 0.1 }), 7), 'a a b a c a a')
  assert.equal(picks(withWeights({ a: 2.5e3, b: 500, c: 500 }), 7), 'a a b a c a a')
})

test('over one cycle of W picks every node is picked exactly its weight in times', () => {
  const weights: Record<string, number> = { a: 7, b: 3, c: 11, d: 1, e: 5 }
  const s = withWeights(weights)
  const total = Object.values(weights).reduce((x, y) => x + y, 0)
  for (let cycle = 0; cycle < 3; cycle++) {
    const counts: Record<string, number> = {}
    for (let i = 0; i < total; i++) {
      const id = s.pick() as string
      counts[id] = (counts[id] ?? 0) + 1
    }
    assert.deepEqual(counts, weights)
  }
})

test('skipped nodes neither gain current weight nor count in the total (nginx down/tried peers)', () => {
  const s = withWeights({ a: 5, b: 1, c: 1 })
  const ref = new NaiveSwrr()
  for (const [id, w] of Object.entries({ a: 5, b: 1, c: 1 })) ref.set(id, w)
  s.pick(); ref.pick()
  const before = new Map(s.currents())
  assert.equal(s.pick(new Set(['a'])), ref.pick(new Set(['a'])))
  assert.equal(new Map(s.currents()).get('a'), before.get('a'), "a skipped node's current weight is unchanged")
  assert.deepEqual(s.currents(), ref.currents())
  // A predicate skips the same way as a set (nginx asks about every peer).
  assert.equal(s.pick((id) => id === 'b'), ref.pick(new Set(['b'])))
  assert.deepEqual(s.currents(), ref.currents())
})

test('a down node is left out until it is up again, with its current weight frozen', () => {
  const s = withWeights({ a: 1, b: 1 })
  s.setDown('a', true)
  assert.equal(s.isDown('a'), true)
  assert.equal(picks(s, 3), 'b b b')
  s.setDown('a', false)
  assert.equal(picks(s, 4), 'a b a b')
})

test('nothing to pick: empty, all down, all skipped, all refused', () => {
  const s = new Swrr()
  assert.equal(s.pick(), undefined)
  s.set('a', 1)
  s.set('b', 2)
  assert.equal(s.pick(['a', 'b']), undefined)
  assert.equal(s.pick(undefined, () => false), undefined)
  s.setDown('a', true)
  s.setDown('b', true)
  assert.equal(s.pick(), undefined)
  assert.equal(s.size, 2)
})

test('a refused winner sits the pick out and the next node is asked (max_conns)', () => {
  const s = withWeights({ a: 5, b: 1, c: 1 })
  const asked: string[] = []
  const got = s.pick(undefined, (id) => { asked.push(id); return id !== 'a' })
  assert.equal(got, 'b')
  assert.deepEqual(asked, ['a', 'b'])
})

test('weights must be positive finite numbers', () => {
  const s = new Swrr()
  for (const bad of [0, -1, NaN, Infinity, -Infinity]) assert.throws(() => { s.set('a', bad) }, RangeError)
  assert.equal(s.size, 0)
})

/**
 * The proof that the O(log n) pick is nginx's: random weight sets (integer and real), random
 * sets, weight changes, deletes, downs, skips and refusals between picks, 10,000+ picks each,
 * compared pick by pick and current weight by current weight with nginx's loop.
 */
test('randomized equivalence with nginx’s O(n) loop (picks and current weights)', () => {
  let compared = 0
  for (let seed = 1; seed <= 60; seed++) {
    const random = rng(seed)
    const fast = new Swrr()
    const ref = new NaiveSwrr()
    const ids: string[] = []
    let next = 0
    const weight = (): number => random() < 0.5 ? 1 + Math.floor(random() * 10) : 0.001 + random() * 100
    const add = (): void => {
      const id = `n${next++}`
      const w = weight()
      fast.set(id, w)
      ref.set(id, w)
      ids.push(id)
    }
    const size = seed % 10 === 0 ? 300 : 1 + Math.floor(random() * 40)
    for (let i = 0; i < size; i++) add()
    const steps = seed % 10 === 0 ? 20_000 : 10_000
    for (let k = 0; k < steps; k++) {
      const x = random()
      const any = ids[Math.floor(random() * ids.length)]
      if (x < 0.01 && any != null) {
        const w = weight()
        fast.set(any, w)
        ref.set(any, w)
      } else if (x < 0.014 && any != null) {
        fast.delete(any)
        ref.delete(any)
        ids.splice(ids.indexOf(any), 1)
      } else if (x < 0.02) {
        add()
      } else if (x < 0.026 && any != null) {
        const down = random() < 0.6
        fast.setDown(any, down)
        ref.setDown(any, down)
      }
      let skip: string[] | undefined
      if (random() < 0.1 && ids.length > 0) skip = ids.filter(() => random() < 0.2)
      let accept: ((id: string) => boolean) | undefined
      if (random() < 0.1) {
        const refused = new Set(ids.filter(() => random() < 0.3))
        accept = (id) => !refused.has(id)
      }
      const a = fast.pick(skip, accept)
      const b = ref.pick(skip, accept)
      assert.equal(a, b, `seed ${seed}, pick ${k}`)
      compared++
    }
    assert.deepEqual(fast.currents(), ref.currents(), `seed ${seed}: current weights`)
  }
  assert.equal(compared, 660_000)
})

test('equivalence holds across a rebase of the linear representation (2^21 picks)', () => {
  const weights = [3, 0.7, 1000, 1, 42.5]
  const fast = new Swrr()
  const ref = new NaiveSwrr()
  weights.forEach((w, i) => { fast.set(`n${i}`, w); ref.set(`n${i}`, w) })
  const total = routingConstants.REBASE_PICKS + 50_000
  for (let k = 0; k < total; k++) {
    if (k === routingConstants.REBASE_PICKS - 10) { fast.set('n1', 5); ref.set('n1', 5) }
    if (fast.pick() !== ref.pick()) assert.fail(`pick ${k} differs`)
  }
  assert.deepEqual(fast.currents(), ref.currents())
})

test('a pick replays O(log n) certificates amortized, not O(n)', () => {
  const random = rng(7)
  const n = 4096
  const s = new Swrr()
  for (let i = 0; i < n; i++) s.set(`n${i}`, 0.5 + random() * 99.5)
  for (let i = 0; i < 10_000; i++) s.pick()
  s.events = 0
  const picksCount = 20_000
  for (let i = 0; i < picksCount; i++) s.pick()
  const perPick = s.events / picksCount
  assert.ok(perPick < 4 * Math.log2(n), `${perPick} certificate replays per pick at n = ${n}`)
})
