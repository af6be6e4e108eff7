import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Ledger, parseAppSpec, needsRoll, rendezvousOwner, type Reservation } from '../../src/placement/index.ts'

const MODEL = 'a'.repeat(64)

function reservation (i: number, cpu = 1, owner = 's'): Reservation {
  return { replica: `app/1/${i}`, app: 'app', generation: 1, model: MODEL, resources: { cpu, gpu: 0 }, threads: 1, maxQueue: 8, owner }
}

test('app spec: defaults, cells give the replica count, bad specs name the key', () => {
  const s = parseAppSpec({ name: 'vad', model: MODEL, replicas: 2, resources: { cpu: 1, gpu: 0 } })
  assert.deepEqual(s, { name: 'vad', model: MODEL, replicas: 2, resources: { cpu: 1, gpu: 0 }, timeoutMs: 30_000, maxQueue: 64, threads: 1, routing: 'measured' })
  assert.equal(parseAppSpec({ name: 'x', model: MODEL, resources: { cpu: 1, gpu: 0 }, cells: { a: 2, b: 1 } }).replicas, 3)
  // Resources may be left out: cpu = threads (a core per worker thread), gpu = 0.
  assert.deepEqual(parseAppSpec({ name: 'vad', model: MODEL, replicas: 1 }).resources, { cpu: 1, gpu: 0 })
  assert.deepEqual(parseAppSpec({ name: 'vad', model: MODEL, replicas: 1, threads: 4 }).resources, { cpu: 4, gpu: 0 })
  assert.deepEqual(parseAppSpec({ name: 'vad', model: MODEL, replicas: 1, resources: { cpu: 0.5 } }).resources, { cpu: 0.5, gpu: 0 })
  assert.deepEqual(parseAppSpec({ name: 'vad', model: MODEL, replicas: 1, resources: { gpu: 1 } }).resources, { cpu: 1, gpu: 1 })
  const bad: Array<[unknown, RegExp]> = [
    [{ name: 'Vad', model: MODEL, replicas: 1, resources: { cpu: 1, gpu: 0 } }, /name/],
    [{ name: 'vad', model: 'xyz', replicas: 1, resources: { cpu: 1, gpu: 0 } }, /model/],
    [{ name: 'vad', model: MODEL, replicas: -1, resources: { cpu: 1, gpu: 0 } }, /replicas/],
    [{ name: 'vad', model: MODEL, resources: { cpu: 1, gpu: 0 } }, /replicas/],
    [{ name: 'vad', model: MODEL, replicas: 2, resources: { cpu: 1, gpu: 0 }, cells: { a: 1 } }, /cells/],
    [{ name: 'vad', model: MODEL, replicas: 1, resources: { cpu: 0, gpu: 0 } }, /resources/],
    [{ name: 'vad', model: MODEL, replicas: 1, resources: { cpu: 'two' } }, /^app spec: resources\.cpu must be a number from 0 to 4096 \(got "two"\)$/],
    [{ name: 'vad', model: MODEL, replicas: 1, resources: { gpu: 0.5 } }, /^app spec: resources\.gpu must be an integer \(got 0\.5\)$/],
    [{ name: 'vad', model: MODEL, replicas: 1, cells: { '': 1 } }, /^app spec: cells key "" must have at least 1 character/],
    [{ name: 'vad', model: MODEL, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 0 }, /threads/],
    [{ name: 'vad', model: MODEL, replicas: 1, resources: { cpu: 1, gpu: 0 }, colour: 'red' }, /colour|Unrecognized/],
    ['not an object', /^app spec: must be a JSON object \(got "not an object"\)$/]
  ]
  for (const [input, re] of bad) {
    assert.throws(() => parseAppSpec(input), (err: Error & { code?: string }) => err.name === 'InvalidAppError' && err.code === 'ERR_INVALID_APP' && re.test(err.message), JSON.stringify(input))
  }
})

test('app spec: model, resources, threads or queue roll the app; replicas and timeouts only scale', () => {
  const a = parseAppSpec({ name: 'vad', model: MODEL, replicas: 2, resources: { cpu: 1, gpu: 0 } })
  assert.equal(needsRoll(a, { ...a, replicas: 5 }), false)
  assert.equal(needsRoll(a, { ...a, timeoutMs: 5 }), false)
  assert.equal(needsRoll(a, { ...a, cells: { x: 2 } }), false)
  assert.equal(needsRoll(a, { ...a, model: 'b'.repeat(64) }), true)
  assert.equal(needsRoll(a, { ...a, threads: 2 }), true)
  assert.equal(needsRoll(a, { ...a, resources: { cpu: 2, gpu: 0 } }), true)
  assert.equal(needsRoll(a, { ...a, maxQueue: 1 }), true)
})

test('ledger: accepts within capacity, rejects beyond with a code, releases free the room', () => {
  const ledger = new Ledger({ cpu: 2, gpu: 0 })
  const v0 = ledger.version
  ledger.reserve(reservation(1, 0.5))
  ledger.reserve(reservation(2, 1.5))
  assert.ok(ledger.version > v0)
  assert.throws(() => ledger.reserve(reservation(3, 0.1)), { name: 'ReservationRejectedError', code: 'ERR_NO_CAPACITY' })
  assert.throws(() => ledger.reserve(reservation(1, 0)), { code: 'ERR_DUPLICATE' })
  assert.throws(() => ledger.reserve({ ...reservation(4), resources: { cpu: 0, gpu: 1 } }), { code: 'ERR_NO_CAPACITY' })
  assert.equal(ledger.release('app/1/2'), true)
  assert.equal(ledger.release('app/1/2'), false)
  ledger.reserve(reservation(3, 1.5))
  assert.deepEqual(ledger.used(), { cpu: 2, gpu: 0 })
  // Ten reservations of 0.1 fit in 1 core although 0.1 × 10 ≠ 1 in floating point.
  const small = new Ledger({ cpu: 1, gpu: 0 })
  for (let i = 0; i < 10; i++) small.reserve(reservation(i, 0.1))
  assert.throws(() => small.reserve(reservation(10, 0.1)), { code: 'ERR_NO_CAPACITY' })
})

test('ledger: a draining node accepts nothing; states and ready counts are tracked', () => {
  const ledger = new Ledger({ cpu: 4, gpu: 0 })
  const events: string[] = []
  ledger.onChange(e => events.push(`${e.type}:${e.replica.replica}`))
  ledger.reserve(reservation(1))
  ledger.setState('app/1/1', 'ready', { signature: { inputs: [], outputs: [] } })
  assert.equal(ledger.readyCount(), 1)
  assert.deepEqual(ledger.snapshot().replicas[0]?.signature, { inputs: [], outputs: [] })
  ledger.setAccepting(false)
  assert.throws(() => ledger.reserve(reservation(2)), { code: 'ERR_DRAINING' })
  assert.equal(ledger.snapshot().accepting, false)
  ledger.release('app/1/1')
  assert.deepEqual(events, ['reserved:app/1/1', 'state:app/1/1', 'released:app/1/1'])
})

test('ledger: a cordoned node refuses new reservations with ERR_CORDONED and keeps the replicas it holds; uncordon lifts it', () => {
  const ledger = new Ledger({ cpu: 4, gpu: 0 })
  ledger.reserve(reservation(1))
  ledger.setState('app/1/1', 'ready')
  const v0 = ledger.version
  ledger.setCordoned(true)
  assert.ok(ledger.version > v0, 'the version moves, so schedulers re-read the ledger')
  assert.throws(() => ledger.reserve(reservation(2)), { name: 'ReservationRejectedError', code: 'ERR_CORDONED' })
  const snap = ledger.snapshot()
  assert.equal(snap.cordoned, true)
  assert.equal(snap.accepting, false, 'schedulers (also older ones) skip it')
  assert.deepEqual(snap.replicas.map(r => [r.replica, r.state]), [['app/1/1', 'ready']], 'the replica it holds stays placed')
  assert.equal(ledger.readyCount(), 1)
  ledger.setCordoned(false)
  assert.equal(ledger.snapshot().accepting, true)
  assert.equal(ledger.snapshot().cordoned, false)
  ledger.reserve(reservation(2))
  assert.equal(ledger.all().length, 2)
  // A draining node stays refused when uncordoned: the two states are separate.
  ledger.setAccepting(false)
  ledger.setCordoned(true)
  ledger.setCordoned(false)
  assert.throws(() => ledger.reserve(reservation(3)), { code: 'ERR_DRAINING' })
})

test('ledger: 8 schedulers reserving concurrently never overcommit a node', async () => {
  // Each scheduler works from a stale view (it believes the node is empty) and fires
  // reservations at random moments; the ledger alone decides.
  for (let round = 0; round < 20; round++) {
    const capacity = 1 + (round % 7)
    const ledger = new Ledger({ cpu: capacity, gpu: round % 3 })
    let accepted = 0
    let rejected = 0
    await Promise.all(Array.from({ length: 8 }, async (_, s) => {
      for (let i = 0; i < 6; i++) {
        await new Promise(resolve => setTimeout(resolve, Math.random() * 3))
        const cpu = [0.25, 0.5, 1, 2][(s + i + round) % 4]!
        const gpu = (s + i) % 5 === 0 ? 1 : 0
        try {
          ledger.reserve({ ...reservation(s * 100 + i, cpu, `s${s}`), resources: { cpu, gpu } })
          accepted++
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_NO_CAPACITY')
          rejected++
        }
        const used = ledger.used()
        assert.ok(used.cpu <= capacity + 1e-9, `cpu ${used.cpu} > ${capacity}`)
        assert.ok(used.gpu <= round % 3, `gpu ${used.gpu} > ${round % 3}`)
        if (Math.random() < 0.2) {
          const victim = ledger.all()[0]
          if (victim != null) ledger.release(victim.replica)
        }
      }
    }))
    assert.equal(accepted + rejected, 48)
    assert.ok(rejected > 0, 'the race produced conflicts')
  }
})

test('rendezvous: every scheduler computes the same owner; a death moves only its apps', () => {
  const schedulers = Array.from({ length: 5 }, (_, i) => `12D3KooScheduler${i}`)
  const apps = Array.from({ length: 200 }, (_, i) => `app-${i}`)
  const owners = new Map(apps.map(a => [a, rendezvousOwner(a, schedulers)]))
  assert.equal(rendezvousOwner('app-1', [...schedulers].reverse()), owners.get('app-1'))
  const perOwner = new Map<string, number>()
  for (const o of owners.values()) perOwner.set(o!, (perOwner.get(o!) ?? 0) + 1)
  for (const n of perOwner.values()) assert.ok(n > 20 && n < 70, `balanced: ${[...perOwner.values()].join(',')}`)
  const dead = schedulers[2]!
  const rest = schedulers.filter(s => s !== dead)
  for (const a of apps) {
    const before = owners.get(a)
    const after = rendezvousOwner(a, rest)
    if (before !== dead) assert.equal(after, before)
    else assert.notEqual(after, dead)
  }
  assert.equal(rendezvousOwner('x', []), undefined)
})
