import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { FakeClock } from '../../src/util/time.ts'
import { TokenBucket, RateMeter, TransferLimits, defaultBurst } from '../../src/transfer/limiter.ts'
import { linkSpeedBps, defaultRouteInterface } from '../../src/transfer/probe.ts'
import { AUTO_INTERIM_BPS } from '../../src/transfer/constants.ts'

/**
 * Token bucket math, the rate meter and the precedence of limits, on a fake clock with
 * node:test's mocked setTimeout (both advanced together); one real-time accuracy check.
 */

const KiB = 1024

/** A fake clock whose time also drives the mocked timers the bucket arms. */
function fakeTime (t: TestContext): { clock: FakeClock, advance: (ms: number) => Promise<void> } {
  const clock = new FakeClock(0)
  t.mock.timers.enable({ apis: ['setTimeout'] })
  return {
    clock,
    advance: async (ms: number) => {
      clock.advance(ms)
      t.mock.timers.tick(ms)
      await flush()
    }
  }
}

/** Lets resolved takes run their continuations (setImmediate is not mocked). */
async function flush (): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise(resolve => setImmediate(resolve))
}

/** A take whose settlement can be checked without awaiting it. */
function track (p: Promise<void>): { done: boolean, error?: unknown, promise: Promise<void> } {
  const s: { done: boolean, error?: unknown, promise: Promise<void> } = { done: false, promise: p }
  p.then(() => { s.done = true }, (err: unknown) => { s.done = true; s.error = err })
  return s
}

test('default burst: max(64 KiB, 50 ms of the rate)', () => {
  assert.equal(defaultBurst(1_000_000), 64 * KiB)
  assert.equal(defaultBurst(20_000_000), 1_000_000)
  assert.equal(defaultBurst(Infinity), Infinity)
})

test('a bucket grants its burst at once, then exactly at its rate', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1_000_000, clock })
  await b.take(64 * KiB) // the full burst, immediately
  const next = track(b.take(100_000))
  await advance(99)
  assert.equal(next.done, false, '100 kB at 1 MB/s takes 100 ms')
  await advance(1)
  assert.equal(next.done, true)
})

test('rate is respected over 10 s windows (within ±5 %), with jittery timers', async (t) => {
  const { clock, advance } = fakeTime(t)
  const rate = 25_000_000
  const b = new TokenBucket({ rate, clock })
  const meter = new RateMeter(10_000, clock)
  let stop = false
  let granted = 0
  const pump = (async () => {
    while (!stop) {
      await b.take(64 * KiB)
      granted += 64 * KiB
      meter.add(64 * KiB)
    }
  })()
  let seed = 7
  const random = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const rates: number[] = []
  for (let elapsed = 0; elapsed < 30_000;) {
    const step = 1 + Math.floor(random() * 20) // timers firing 0–20 ms late
    await advance(step)
    elapsed += step
    assert.ok(granted <= defaultBurst(rate) + rate * elapsed / 1000 + 64 * KiB, `granted ${granted} after ${elapsed} ms`)
    if (elapsed >= 10_000 && rates.length < Math.floor(elapsed / 10_000)) rates.push(meter.rate())
  }
  stop = true
  b.setRate(Infinity)
  await pump
  assert.equal(rates.length, 3)
  for (const r of rates) assert.ok(Math.abs(r / rate - 1) < 0.05, `10 s window rate ${r} vs limit ${rate}`)
  // In fact far tighter than the requirement: lateness is carried over, not lost.
  for (const r of rates) assert.ok(Math.abs(r / rate - 1) < 0.01, `10 s window rate ${r} vs limit ${rate}`)
})

test('waiters are served in FIFO order, a small take does not overtake a large one', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock })
  await b.take(1000)
  const order: string[] = []
  const big = b.take(3000).then(() => { order.push('big') })
  const small = b.take(1).then(() => { order.push('small') })
  const mid = b.take(500).then(() => { order.push('mid') })
  assert.equal(b.waiting, 3)
  await advance(2999)
  assert.deepEqual(order, [])
  await advance(1)
  assert.deepEqual(order, ['big'])
  await advance(501)
  await Promise.all([big, small, mid])
  assert.deepEqual(order, ['big', 'small', 'mid'])
})

test('n larger than the burst waits proportionally', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock })
  const big = track(b.take(5000)) // 1000 in the bucket + 4 s
  await advance(3999)
  assert.equal(big.done, false)
  await advance(1)
  assert.equal(big.done, true)
  // Idle time refills only up to the burst.
  await advance(60_000)
  await b.take(1000)
  const after = track(b.take(1))
  await flush()
  assert.equal(after.done, false)
})

test('setRate takes effect for a waiter at once', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock })
  await b.take(1000)
  const w = track(b.take(10_000)) // 10 s at 1 kB/s
  await advance(2000) // 2,000 accrued
  b.setRate(8000) // the remaining 8,000 now take 1 s
  assert.equal(b.rate, 8000)
  await advance(999)
  assert.equal(w.done, false)
  await advance(1)
  assert.equal(w.done, true)
  // Slowing down re-times the waiter too.
  const w2 = track(b.take(1000))
  b.setRate(100)
  await advance(9_999)
  assert.equal(w2.done, false)
  await advance(1)
  assert.equal(w2.done, true)
})

test('Infinity is unlimited: takes resolve at once, and setRate(Infinity) releases every waiter', async (t) => {
  const { clock } = fakeTime(t)
  const free = new TokenBucket({ rate: Infinity, clock })
  for (let i = 0; i < 10; i++) await free.take(1e12)
  const b = new TokenBucket({ rate: 10, burst: 10, clock })
  await b.take(10)
  const waiters = [track(b.take(1e6)), track(b.take(5)), track(b.take(1e9))]
  await flush()
  assert.ok(waiters.every(w => !w.done))
  b.setRate(Infinity)
  await flush()
  assert.ok(waiters.every(w => w.done && w.error === undefined))
  // Back to a limit: starts with one burst (10 bytes here), not with an infinite reserve.
  b.setRate(1000)
  await b.take(10)
  const w = track(b.take(1))
  await flush()
  assert.equal(w.done, false)
})

test('abort rejects with the signal reason and borrows nothing', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock })
  await b.take(1000)
  const controller = new AbortController()
  const reason = new Error('peer gone')
  const a = track(b.take(5000, controller.signal))
  const next = track(b.take(1000))
  await advance(500)
  controller.abort(reason)
  await flush()
  assert.equal(a.error, reason)
  assert.equal(b.waiting, 1)
  // The next take is served as if the aborted one had never been queued: 1,000 at 1 kB/s from t=0.
  await advance(499)
  assert.equal(next.done, false)
  await advance(1)
  assert.equal(next.done, true)

  // Aborting a waiter behind the head leaves the head's timing alone.
  await b.take(0)
  const head = track(b.take(1000))
  const c2 = new AbortController()
  const behind = track(b.take(1000, c2.signal))
  c2.abort(new Error('x'))
  await advance(999)
  assert.equal(head.done, false)
  await advance(1)
  assert.equal(head.done, true)
  assert.ok(behind.error instanceof Error)

  // An already aborted signal rejects at once, even on an unlimited bucket.
  await assert.rejects(new TokenBucket({ rate: Infinity }).take(1, AbortSignal.abort(reason)), err => err === reason)
})

test('bad arguments are RangeErrors', async () => {
  for (const rate of [0, -1, Number.NaN]) assert.throws(() => new TokenBucket({ rate }), RangeError)
  assert.throws(() => new TokenBucket({ rate: 1, burst: 0 }), RangeError)
  const b = new TokenBucket({ rate: 1000 })
  assert.throws(() => { b.setRate(0) }, RangeError)
  for (const n of [-1, Number.NaN, Infinity]) await assert.rejects(b.take(n), RangeError)
  assert.throws(() => new RateMeter(0), RangeError)
  assert.throws(() => { new RateMeter().add(-5) }, RangeError)
})

test('RateMeter: bytes/s over the last window, by age while young, decaying when idle', () => {
  const clock = new FakeClock(0)
  clock.advance(50) // adds mid-slot, not on the 100 ms slot edges
  const m = new RateMeter(10_000, clock)
  for (let i = 0; i < 20; i++) { clock.advance(100); m.add(100_000) } // 2 s at 1 MB/s
  assert.ok(Math.abs(m.rate() / 1e6 - 1) < 0.01, `young meter: ${m.rate()}`)
  for (let i = 0; i < 180; i++) { clock.advance(100); m.add(100_000) } // 20 s in all
  assert.ok(Math.abs(m.rate() / 1e6 - 1) < 0.01, `steady: ${m.rate()}`)
  clock.advance(5_000)
  assert.ok(Math.abs(m.rate() / 0.5e6 - 1) < 0.02, `half the window idle: ${m.rate()}`)
  clock.advance(5_050)
  assert.equal(m.rate(), 0)
  assert.equal(m.total, 20_000_000)
})

test('limits: a flag is the node limit; unlimited is none', () => {
  const l = new TransferLimits({ upload: 5_000_000, download: 'unlimited' })
  assert.deepEqual(l.state(), {
    upload: { limit: 5_000_000, source: 'flag', node: 5_000_000, cluster: null, measured: null },
    download: { limit: null, source: 'unlimited', node: null, cluster: null, measured: null }
  })
  assert.equal(l.upload.rate, 5_000_000)
  assert.equal(l.download.rate, Infinity)
  // A measurement does not touch directions that are not auto.
  l.setMeasured({ upload: 100_000_000, download: 100_000_000 })
  assert.equal(l.state().upload.limit, 5_000_000)
  assert.equal(l.state().upload.measured, null)
  assert.equal(l.state().download.source, 'unlimited')
})

test('limits: auto is the interim rate while probing, then a share of the measured capacity', () => {
  const l = new TransferLimits({ upload: 'auto', download: 'auto' })
  assert.deepEqual(l.state().upload, { limit: AUTO_INTERIM_BPS, source: 'probing', node: null, cluster: null, measured: null })
  assert.equal(l.upload.rate, AUTO_INTERIM_BPS)
  l.setMeasured({ download: 100_000_000 })
  assert.deepEqual(l.state().download, { limit: 50_000_000, source: 'auto', node: 50_000_000, cluster: null, measured: 100_000_000 })
  assert.equal(l.download.rate, 50_000_000)
  assert.equal(l.state().upload.source, 'probing', 'the other direction still probing')
  const quarter = new TransferLimits({ upload: 'auto', download: 'auto' }, {}).autoDirections()
  assert.deepEqual(quarter, ['upload', 'download'])
  const l2 = new TransferLimits({ upload: 'auto', download: 1000, autoShare: 0.25 })
  l2.setMeasured({ upload: 1_000_000 })
  assert.equal(l2.state().upload.limit, 250_000)
  assert.deepEqual(l2.autoDirections(), ['upload'])
})

test('limits: the cluster cap applies when lower than the node limit; min(node, cluster)', () => {
  const l = new TransferLimits({ upload: 5_000_000, download: 'unlimited' })
  l.setCluster({ upload: 2_000_000, download: 3_000_000 })
  assert.deepEqual(l.state().upload, { limit: 2_000_000, source: 'cluster', node: 5_000_000, cluster: 2_000_000, measured: null })
  assert.deepEqual(l.state().download, { limit: 3_000_000, source: 'cluster', node: null, cluster: 3_000_000, measured: null })
  assert.equal(l.upload.rate, 2_000_000)
  assert.equal(l.download.rate, 3_000_000)
  l.setCluster({ upload: 10_000_000, download: null })
  assert.deepEqual(l.state().upload, { limit: 5_000_000, source: 'flag', node: 5_000_000, cluster: 10_000_000, measured: null })
  assert.equal(l.state().download.source, 'unlimited')
  assert.equal(l.download.rate, Infinity)
  l.setCluster(undefined)
  assert.equal(l.state().upload.cluster, null)

  const a = new TransferLimits({ upload: 'auto', download: 'auto' })
  a.setCluster({ upload: 1_000_000, download: 100_000_000 })
  assert.equal(a.state().upload.source, 'cluster', 'cap below the interim')
  assert.equal(a.state().download.source, 'probing', 'cap above the interim')
  assert.equal(a.state().download.limit, AUTO_INTERIM_BPS)
  a.setMeasured({ upload: 100_000_000, download: 100_000_000 })
  assert.deepEqual(a.state().upload, { limit: 1_000_000, source: 'cluster', node: 50_000_000, cluster: 1_000_000, measured: 100_000_000 })
  assert.deepEqual(a.state().download, { limit: 50_000_000, source: 'auto', node: 50_000_000, cluster: 100_000_000, measured: 100_000_000 })
})

test('limits: onChange fires on changes only; changes reach waiters at once', async (t) => {
  const { clock } = fakeTime(t)
  const l = new TransferLimits({ upload: 'unlimited', download: 'unlimited' }, { clock })
  let calls = 0
  const off = l.onChange(() => { calls++ })
  l.setCluster({ download: 1000 })
  assert.equal(calls, 1)
  l.setCluster({ download: 1000 })
  assert.equal(calls, 1, 'same cap again: no event')
  await l.download.take(64 * KiB) // the burst
  const w = track(l.download.take(1_000_000)) // ~16 min at the cap
  await flush()
  assert.equal(w.done, false)
  l.setCluster(undefined)
  await flush()
  assert.equal(w.done, true, 'lifting the cap released the waiter')
  assert.equal(calls, 2)
  off()
  l.setCluster({ upload: 5 })
  assert.equal(calls, 2)
})

test('limits: bad settings and caps are clear errors', () => {
  assert.throws(() => new TransferLimits({ upload: -1, download: 'auto' }), { name: 'ConfigError', code: 'ERR_CONFIG', key: 'uploadLimit' })
  assert.throws(() => new TransferLimits({ upload: 'auto', download: 'fast' as never }), { name: 'ConfigError', key: 'downloadLimit' })
  assert.throws(() => new TransferLimits({ upload: 'auto', download: 'auto', autoShare: 0 }), RangeError)
  assert.throws(() => new TransferLimits({ upload: 'auto', download: 'auto', autoShare: 1.5 }), RangeError)
  const l = new TransferLimits({ upload: 'auto', download: 'auto' })
  assert.throws(() => { l.setCluster({ upload: 0 }) }, RangeError)
  assert.throws(() => { l.setMeasured({ upload: Number.NaN }) }, RangeError)
  assert.equal(l.state().upload.source, 'probing', 'a rejected update changes nothing')
})

test('linkSpeedBps: speed of the default-route NIC; undefined for virtual NICs and no route', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-link-'))
  try {
    const proc = path.join(root, 'proc')
    const sys = path.join(root, 'sys')
    fs.mkdirSync(path.join(proc, 'net'), { recursive: true })
    const nic = (name: string, speed?: string): void => {
      fs.mkdirSync(path.join(sys, 'class/net', name), { recursive: true })
      if (speed != null) fs.writeFileSync(path.join(sys, 'class/net', name, 'speed'), `${speed}\n`)
    }
    nic('eth0', '1000')
    nic('ens5', '25000')
    nic('veth1', '-1')
    nic('br0')
    const header = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n'
    fs.writeFileSync(path.join(proc, 'net/route'), header +
      'eth0\t00000000\t0100A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n' +
      'ens5\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n' +
      'ens5\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n')
    const opts = { procDir: proc, sysDir: sys }
    assert.equal(defaultRouteInterface(proc), 'ens5', 'lowest metric wins')
    assert.equal(linkSpeedBps(opts), 25_000 * 1e6 / 8)
    fs.writeFileSync(path.join(proc, 'net/route'), header + 'veth1\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n')
    assert.equal(linkSpeedBps(opts), undefined, 'speed -1')
    fs.writeFileSync(path.join(proc, 'net/route'), header + 'br0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n')
    assert.equal(linkSpeedBps(opts), undefined, 'no speed file')
    // No IPv4 default route: the IPv6 one (the kernel's reject route on lo is not one).
    fs.writeFileSync(path.join(proc, 'net/route'), header)
    const zeros = '0'.repeat(32)
    fs.writeFileSync(path.join(proc, 'net/ipv6_route'),
      `${zeros} 00 ${zeros} 00 ${zeros} ffffffff 00000001 00000000 00200200       lo\n` +
      `${zeros} 00 ${zeros} 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n`)
    assert.equal(linkSpeedBps(opts), 1000 * 1e6 / 8)
    fs.writeFileSync(path.join(proc, 'net/ipv6_route'), `${zeros} 00 ${zeros} 00 ${zeros} ffffffff 00000001 00000000 00200200       lo\n`)
    assert.equal(linkSpeedBps(opts), undefined, 'no default route')
    assert.equal(linkSpeedBps({ procDir: path.join(root, 'missing'), sysDir: sys }), undefined)
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
  // On this machine: a number or undefined, never a throw.
  const here = linkSpeedBps()
  assert.ok(here === undefined || (Number.isFinite(here) && here > 0))
})

test('real time: a 20 MB/s bucket pulled in 64 KiB chunks for 1 s (loose sanity bound only)', async (t) => {
  const rate = 20_000_000
  const b = new TokenBucket({ rate })
  const start = performance.now()
  let bytes = 0
  while (performance.now() - start < 1000) {
    await b.take(64 * KiB)
    bytes += 64 * KiB
  }
  const seconds = (performance.now() - start) / 1000
  const ratio = bytes / seconds / rate
  const steady = (bytes - defaultBurst(rate)) / seconds / rate
  t.diagnostic(`measured/limit ${ratio.toFixed(4)} (incl. the initial 1 MB burst), ${steady.toFixed(4)} without it`)
  assert.ok(steady > 0.5 && steady < 1.5, `ratio ${steady}`)
})

test('a wait longer than setTimeout can arm (24.8 days) is re-armed, not fired early', async (t) => {
  const { clock, advance } = fakeTime(t)
  const b = new TokenBucket({ rate: 1, burst: 1, clock })
  await b.take(1)
  const w = track(b.take(3e9)) // 3e9 s at 1 B/s
  await advance(2 ** 31 - 1)
  assert.equal(w.done, false)
  b.setRate(Infinity)
  await flush()
  assert.equal(w.done, true)
})
