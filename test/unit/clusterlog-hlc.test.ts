import { test } from 'node:test'
import assert from 'node:assert/strict'
import { HybridClock, ClockSkewError, formatVersion, parseVersion, compareTimestamps, compareVersions, type Timestamp } from '../../src/clusterlog/hlc.ts'
import { MAX_CLOCK_DRIFT_MS, MAX_HLC_COUNTER } from '../../src/clusterlog/constants.ts'
import { FakeClock } from '../../src/util/time.ts'
import { fakePeerId } from '../helpers/heartbeat.ts'

const A = `${fakePeerId(1)}:0000000a`
const B = `${fakePeerId(2)}:0000000b`

test('now() follows the physical clock and stays strictly monotonic when it stalls or steps back', () => {
  const physical = new FakeClock(1_700_000_000_000)
  const hlc = new HybridClock(A, { physical })
  const t1 = hlc.now()
  assert.deepEqual(t1, { wall: 1_700_000_000_000, counter: 0, origin: A })
  const t2 = hlc.now()
  assert.deepEqual([t2.wall, t2.counter], [1_700_000_000_000, 1], 'same millisecond: the counter ticks')
  physical.advance(-5_000)
  const t3 = hlc.now()
  assert.ok(compareTimestamps(t3, t2) > 0, 'a clock stepping back does not make versions go back')
  assert.equal(t3.wall, 1_700_000_000_000)
  physical.advance(10_000)
  const t4 = hlc.now()
  assert.deepEqual([t4.wall, t4.counter], [1_700_000_005_000, 0], 'the physical clock takes over again once ahead')
})

test('receive() moves the clock past a remote timestamp; the next local event orders after it', () => {
  const physical = new FakeClock(1_700_000_000_000)
  const hlc = new HybridClock(A, { physical })
  hlc.now()
  const remote: Timestamp = { wall: 1_700_000_030_000, counter: 7, origin: B }
  hlc.receive(remote)
  const next = hlc.now()
  assert.ok(compareTimestamps(next, remote) > 0)
  assert.equal(next.wall, remote.wall, 'the wall part is the max seen, not local time plus skew')
  // An older remote timestamp never moves the clock back.
  hlc.receive({ wall: 1_600_000_000_000, counter: 0, origin: B })
  assert.ok(compareTimestamps(hlc.now(), next) > 0)
})

test('a remote clock more than the drift cap ahead is refused and leaves our clock alone', () => {
  const physical = new FakeClock(1_700_000_000_000)
  const hlc = new HybridClock(A, { physical })
  const before = hlc.now()
  assert.throws(() => { hlc.receive({ wall: 1_700_000_000_000 + MAX_CLOCK_DRIFT_MS + 1, counter: 0, origin: B }) },
    (err: Error) => err instanceof ClockSkewError && err.name === 'ClockSkewError' && (err as ClockSkewError).code === 'ERR_CLOCK_SKEW')
  assert.deepEqual(hlc.last, before)
  hlc.receive({ wall: 1_700_000_000_000 + MAX_CLOCK_DRIFT_MS, counter: 0, origin: B })
  assert.equal(hlc.last.wall, 1_700_000_000_000 + MAX_CLOCK_DRIFT_MS, 'exactly at the cap is accepted')
})

test('counter overflow moves the wall part on instead of wrapping', () => {
  const physical = new FakeClock(1_700_000_000_000)
  const hlc = new HybridClock(A, { physical })
  let prev = formatVersion(hlc.now())
  for (let i = 0; i < MAX_HLC_COUNTER + 10; i++) {
    const v = formatVersion(hlc.now())
    assert.ok(compareVersions(v, prev) > 0)
    prev = v
  }
  assert.equal(parseVersion(prev).wall, 1_700_000_000_001)
})

test('the string order of versions is the timestamp order (wall, counter, origin)', () => {
  const stamps: Timestamp[] = []
  for (const wall of [0, 9, 10, 1_700_000_000_000, 1_700_000_000_001]) {
    for (const counter of [0, 1, 10, MAX_HLC_COUNTER]) {
      for (const origin of [A, B]) stamps.push({ wall, counter, origin })
    }
  }
  for (const a of stamps) {
    assert.deepEqual(parseVersion(formatVersion(a)), a)
    for (const b of stamps) {
      assert.equal(Math.sign(compareVersions(formatVersion(a), formatVersion(b))), Math.sign(compareTimestamps(a, b)))
    }
  }
  assert.throws(() => parseVersion('1700000000000-00000-nope'), { name: 'DecodeError' })
  assert.throws(() => parseVersion(`1700000000000-99999-${A}`), { name: 'DecodeError' }, 'counter above the cap')
})
