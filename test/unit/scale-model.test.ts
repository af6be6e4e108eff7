import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { simulate, DEFAULT_SIM } from '../../bench/scale/model-sim.ts'
import { calibrate, costsAt } from '../../bench/scale/model-calibrate.ts'
import { compare } from '../../bench/scale/model.ts'
import { stalenessMs, resourcesNeeded, digestBytesInPerS, type Design } from '../../bench/scale/model-formulas.ts'
import { DEAD_AFTER_MS, HEARTBEAT_INTERVAL_MS, DIGEST_COALESCE_MS } from '../../src/membership/constants.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

// A small cluster with heavy churn (10 % of the nodes leave and return per minute), so every
// kind of event happens often in a short window. Seeded: the same run every time.
const params = { ...DEFAULT_SIM, nodes: 3_000, resources: 3, schedulers: 2, churnPerNodePerS: 0.1 / 60, warmupMs: 8_000, windowMs: 9_000, restartAfterMs: 5_000 }

test('the sharded simulation keeps every scheduler view whole and true, within the timers\' bounds', () => {
  const r = simulate(params)
  const where = `N=${params.nodes} R=${params.resources}: events ${JSON.stringify(r.events)}, views ${r.viewSizes.join(',')}`
  assert.ok(r.events.crashes > 5 && r.events.drains > 5 && r.events.rejoins > 5, `churn happened (${where})`)
  assert.deepEqual(r.viewSizes, [params.nodes, params.nodes], `every scheduler lists every node (${where})`)
  assert.equal(r.missing, 0, `no node missing or wrong in a view at the end (${where})`)
  assert.equal(r.falseSuspects, 0, `no beating node judged suspect or dead (${where})`)
  assert.equal(r.snapshotsOverCap, 0, `every shard's snapshot fits the pull cap (largest ${r.largestSnapshotBytes} B)`)
  const bound = stalenessMs(0)
  const crash = r.staleness.crashDead
  assert.ok(crash.length > 0, `crashes were seen dead in every view (${where})`)
  assert.ok(Math.max(...crash) <= bound.crashMax, `crash → dead ≤ ${bound.crashMax} ms in every view; worst ${Math.max(...crash)} (${crash.join(',')})`)
  // The last beat can be at most one (jittered) period before the crash.
  const earliest = DEAD_AFTER_MS - HEARTBEAT_INTERVAL_MS * (1 + params.jitter)
  assert.ok(Math.min(...crash) >= earliest, `no crash seen dead before ${earliest} ms of silence could pass; earliest ${Math.min(...crash)}`)
  for (const [name, xs] of [['drain', r.staleness.drainDraining], ['return', r.staleness.rejoinAlive]] as const) {
    assert.ok(xs.length > 0, `${name} events were seen in every view`)
    assert.ok(Math.max(...xs) <= DIGEST_COALESCE_MS + 1, `${name} reaches every view within one coalescing delay (+1 ms step); worst ${Math.max(...xs)}`)
  }
})

test('the model predicts the simulation\'s bytes and staleness within the bench\'s tolerance', () => {
  const r = simulate(params)
  const u = calibrate(1_000)
  const checks = compare(r, n => costsAt(u, { ...u, calibrationNodes: 2_000 }, n))
  const bytes = checks.filter(c => c.kind !== 'cpu')
  assert.ok(bytes.length >= 9, `checks made: ${bytes.map(c => c.quantity).join('; ')}`)
  for (const c of bytes) {
    // At 3,000 nodes the staleness means rest on tens of samples: checked loosely here, tightly
    // at 100,000 nodes by the bench.
    const tol = c.kind === 'staleness' ? 0.25 : 0.15
    assert.ok(Math.abs(c.ratio - 1) <= tol, `${c.quantity}: model ${c.model} vs simulation ${c.sim} (ratio ${c.ratio}) outside ±${tol * 100} %`)
  }
})

test('model formulas: staleness from the timers, resources grow with nodes, digests with churn', () => {
  const s = stalenessMs(5)
  assert.equal(s.announced, DIGEST_COALESCE_MS + 5)
  assert.equal(s.crashMax, 2_800 + 100 + 20 + 5)
  assert.ok(s.crashMean < s.crashMax)
  const u = calibrate(1_000)
  const cost = (): typeof u => u
  const d: Design = { name: 'fixed', usPerHeartbeat: () => 100, bytesPerConnectedNode: 0 }
  const r10k = resourcesNeeded(10_000, 2, 1e-4, cost, d)
  const r100k = resourcesNeeded(100_000, 2, 1e-4, cost, d)
  assert.ok(Number.isFinite(r10k) && r100k > r10k, `resources needed: 10k → ${r10k}, 100k → ${r100k}`)
  const c = { nodes: 100_000, resources: 10, schedulers: 2, churnPerNodePerS: 1e-4 }
  const one = digestBytesInPerS(c, 140)
  const two = digestBytesInPerS({ ...c, churnPerNodePerS: 2e-4 }, 140)
  assert.ok(two > 1.9 * one && two < 2.1 * one, `digest bytes follow churn: ${one} → ${two}`)
})

test('bench:scale refuses a bad flag or part with exit 2 and a line naming it', () => {
  for (const [args, names] of [[['--only', 'nope'], '--only'], [['--bogus'], 'bogus'], [['--json'], 'json']] as const) {
    const r = spawnSync(process.execPath, ['bench/scale.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
    assert.equal(r.status, 2, `node bench/scale.ts ${args.join(' ')}: exit ${r.status}, stderr: ${r.stderr.slice(0, 300)}`)
    assert.ok(r.stderr.includes(names), `stderr names ${names}: ${r.stderr.slice(0, 300)}`)
    assert.ok(!r.stderr.includes('    at '), `no stack trace: ${r.stderr.slice(0, 300)}`)
  }
})
