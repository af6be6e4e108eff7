import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AppLoadMeter, Autoscaler, LoadBoard, encodeLoad, decodeLoad } from '../../src/autoscale/index.ts'
import { FakeClock } from '../../src/util/time.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { parseAppSpec, type AppRecord } from '../../src/placement/index.ts'

/**
 * Autoscaling's decisions without a cluster: the load meter's time average, the board's sum
 * over schedulers, the scaler's delays and hysteresis, the spec's checks, the wire's refusals.
 * The cluster behaviour (replicas rising and falling under real load, scale from zero, a node
 * killed mid-scale-up) is in test/integration/autoscale.test.ts.
 */

const MODEL = 'a'.repeat(64)

function record (autoscaling: Record<string, number>, generation = 1): AppRecord {
  return { spec: parseAppSpec({ name: 'app', model: MODEL, autoscaling }), generation, deployedAt: 1, deployedBy: 'x' }
}

test('the meter gives the time-averaged requests in flight per app, per window', () => {
  let t = 0
  const meter = new AppLoadMeter(() => t)
  const a = meter.begin('a')
  t = 500
  const b = meter.begin('a')
  t = 1000
  assert.deepEqual(meter.sample(), new Map([['a', 1.5]]), '1 for a second plus 1 for half of it')
  a()
  t = 1500
  b()
  t = 2000
  assert.deepEqual(meter.sample(), new Map([['a', 0.5]]), 'one in flight for half of the window')
  assert.equal(meter.current('a'), 0)
  assert.deepEqual(meter.sample(), new Map(), 'an idle app drops out')
})

test('the board sums fresh reports of every scheduler and forgets stale ones', () => {
  const board = new LoadBoard(3_000)
  board.set('s1', 1_000, new Map([['a', 2]]), new Map())
  board.set('s2', 2_000, new Map([['a', 3], ['b', 1]]), new Map([['a', { desired: 3, load: 5, reason: 'r', decidedAt: 1 }]]))
  assert.equal(board.total('a', 2_500), 5)
  assert.equal(board.total('a', 4_500), 3, 's1 went quiet 3.5 s ago')
  assert.equal(board.decision('a', 4_500)?.desired, 3)
  assert.equal(board.decision('a', 9_000), undefined)
})

test('the scaler: up after its delay, down only after a whole window of needing less, never outside the bounds', () => {
  const clock = new FakeClock(0)
  const board = new LoadBoard(3_500)
  const scaler = new Autoscaler({ board, clock, logger: silentLogger() })
  const rec = record({ minReplicas: 1, maxReplicas: 5, targetOngoingRequests: 2, upscaleDelayMs: 1_000, downscaleDelayMs: 5_000 })
  const step = (load: number, ms: number, current?: number): number => {
    clock.advance(ms)
    board.set('s1', clock.now(), new Map([['app', load]]), new Map())
    return scaler.desired(rec, current ?? 0)
  }
  assert.equal(step(0, 0, 1), 1, 'starts from what is placed')
  assert.equal(step(7, 500), 1, 'wants 4 from now')
  assert.equal(step(7, 600), 1, 'wanted for 0.6 s only')
  assert.equal(step(7, 400), 4, 'wanted 4 for 1 s')
  assert.match(scaler.decision('app')!.reason, /load 7\.0 \/ target 2 → 4: up after 1000 ms/)
  assert.equal(step(40, 1_100), 4, 'wants more again: the delay starts again')
  assert.equal(step(40, 1_000), 5, 'capped at maxReplicas')
  assert.match(scaler.decision('app')!.reason, /→ 20 \(bounds 1\.\.5\)/)
  // A dip for less than the window, then steady: no flapping.
  for (let i = 0; i < 4; i++) assert.equal(step(1, 1_000), 5, `dip ${i}`)
  assert.equal(step(10, 1_000), 5, 'back up')
  for (let i = 0; i < 4; i++) assert.equal(step(3, 1_000), 5, `lower ${i}`)
  assert.equal(step(5, 1_000), 5, 'still inside the window')
  assert.equal(step(5, 1_100), 3, 'the most wanted over the window (5 → 3), not the last one')
  assert.equal(step(0, 6_000), 3)
  assert.equal(step(0, 5_000), 1, 'down to minReplicas, never below')
})

test('the scaler scales from zero at once when a request waits, and keeps the count across a redeploy within new bounds', () => {
  const clock = new FakeClock(0)
  const board = new LoadBoard(3_500)
  const scaler = new Autoscaler({ board, clock, logger: silentLogger() })
  const zero = record({ minReplicas: 0, maxReplicas: 4, upscaleDelayMs: 10_000, downscaleDelayMs: 1_000 })
  assert.equal(scaler.desired(zero, 0), 0)
  assert.equal(scaler.desired(zero, 0, 1), 1, 'one held request: one replica, no delay')
  assert.match(scaler.decision('app')!.reason, /scale from zero/)
  assert.equal(scaler.desired(zero, 1), 1, 'idle: the window starts')
  clock.advance(1_000)
  assert.equal(scaler.desired(zero, 1), 0, 'idle for the window: back to zero')
  // A redeploy with bounds 2..3 moves the count into them.
  const narrowed = record({ minReplicas: 2, maxReplicas: 3 }, 2)
  assert.equal(scaler.desired(narrowed, 0), 2)
  assert.match(scaler.decision('app')!.reason, /bounds changed to 2\.\.3/)
  // Another owner took the app: forgotten here.
  scaler.retain(new Set())
  assert.equal(scaler.decision('app'), undefined)
})

test('autoscaling specs: bounds, defaults, and what cannot be combined', () => {
  const s = parseAppSpec({ name: 'a', model: MODEL, autoscaling: { minReplicas: 1, maxReplicas: 4 } })
  assert.equal(s.replicas, 1, 'starts at minReplicas')
  assert.deepEqual(s.autoscaling, { minReplicas: 1, maxReplicas: 4, targetOngoingRequests: 2, upscaleDelayMs: 1_000, downscaleDelayMs: 30_000, maxReplicasPerSecond: 4 })
  assert.throws(() => parseAppSpec({ name: 'a', model: MODEL, autoscaling: { minReplicas: 3, maxReplicas: 2 } }), /autoscaling\.maxReplicas \(2\) is below autoscaling\.minReplicas \(3\)/)
  assert.throws(() => parseAppSpec({ name: 'a', model: MODEL, replicas: 9, autoscaling: { minReplicas: 1, maxReplicas: 2 } }), /replicas \(9\) is outside autoscaling's 1\.\.2/)
  assert.throws(() => parseAppSpec({ name: 'a', model: MODEL, cells: { x: 1 }, autoscaling: { minReplicas: 1, maxReplicas: 2 } }), /autoscaling and cells cannot be combined/)
  assert.throws(() => parseAppSpec({ name: 'a', model: MODEL, autoscaling: { minReplicas: 0, maxReplicas: 2, targetOngoingRequests: 0 } }), /autoscaling\.targetOngoingRequests/)
  assert.throws(() => parseAppSpec({ name: 'a', model: MODEL, autoscaling: { minReplicas: 0, maxReplicas: 2, burst: 1 } }), /burst/)
})

test('load messages round-trip and malformed ones are refused', () => {
  const m = decodeLoad(encodeLoad(new Map([['a', 1.23456]]), new Map([['a', { desired: 2, load: 1.2, reason: 'r', decidedAt: 5 }]])))
  assert.deepEqual(m.apps, new Map([['a', 1.235]]))
  assert.deepEqual(m.decisions.get('a'), { desired: 2, load: 1.2, reason: 'r', decidedAt: 5 })
  const enc = (x: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(x))
  assert.throws(() => decodeLoad(enc({ v: 2, apps: [], decisions: [] })))
  assert.throws(() => decodeLoad(enc({ v: 1, apps: [['A B', 1]], decisions: [] })))
  assert.throws(() => decodeLoad(enc({ v: 1, apps: [['a', -1]], decisions: [] })))
  assert.throws(() => decodeLoad(new Uint8Array([0xff, 0xfe])))
  assert.throws(() => decodeLoad(new Uint8Array(200 * 1024)))
})
