import { test } from 'node:test'
import assert from 'node:assert/strict'
import { OnlineList } from '../../src/membership/online-list.ts'
import { FakeClock } from '../../src/util/time.ts'
import { heartbeat, fakePeerId } from '../helpers/heartbeat.ts'

const T = { suspectAfterMs: 2250, deadAfterMs: 2800, deadAfterDisconnectMs: 1500, forgetAfterMs: 600_000 }

test('a new node is alive and announced; a load-only update is not announced', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  assert.equal(list.ingest(heartbeat({ seq: 1 }))?.state, 'alive')
  clock.advance(1000)
  assert.equal(list.ingest(heartbeat({ seq: 2, cpuUtil: 0.9, inflight: 10 })), undefined)
  const rec = list.get(fakePeerId(0))
  assert.equal(rec?.hb.cpuUtil, 0.9, 'load figures are still recorded')
  assert.equal(rec?.hb.inflight, 10)
})

test('a node that is cordoned or uncordoned is announced at once', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  assert.equal(list.ingest(heartbeat({ seq: 2, cordoned: true }))?.hb.cordoned, true)
  assert.equal(list.ingest(heartbeat({ seq: 3, cordoned: true })), undefined)
  assert.equal(list.ingest(heartbeat({ seq: 4 }))?.hb.cordoned, false)
})

test('silence makes a node suspect after 2 missed heartbeats and dead after 2.8 s', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  clock.advance(2249)
  assert.deepEqual(list.tick(), [])
  clock.advance(1)
  assert.deepEqual(list.tick().map(r => r.state), ['suspect'])
  clock.advance(549)
  assert.deepEqual(list.tick(), [])
  clock.advance(1)
  assert.deepEqual(list.tick().map(r => r.state), ['dead'])
  assert.deepEqual(list.tick(), [], 'dead is reported once')
})

test('a heartbeat after suspicion brings the node back to alive', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  clock.advance(2500)
  list.tick()
  assert.equal(list.get(fakePeerId(0))?.state, 'suspect')
  assert.equal(list.ingest(heartbeat({ seq: 2 }))?.state, 'alive')
})

test('a restarted node (new incarnation, seq from 0) is alive again after being dead', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 50 }))
  clock.advance(3000)
  list.tick()
  assert.equal(list.get(fakePeerId(0))?.state, 'dead')
  assert.equal(list.ingest(heartbeat({ seq: 0, incarnation: 1_800_000_000_000 }))?.state, 'alive')
})

test('old and duplicate heartbeats change nothing', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 5, state: 'draining' }))
  assert.equal(list.ingest(heartbeat({ seq: 4, state: 'alive' })), undefined)
  assert.equal(list.ingest(heartbeat({ seq: 5, state: 'alive' })), undefined)
  assert.equal(list.get(fakePeerId(0))?.state, 'draining')
})

test('draining and left are announced; a left node is never marked suspect or dead', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  assert.equal(list.ingest(heartbeat({ seq: 2, state: 'draining' }))?.state, 'draining')
  assert.equal(list.ingest(heartbeat({ seq: 3, state: 'left' }))?.state, 'left')
  clock.advance(60_000)
  assert.deepEqual(list.tick(), [])
  assert.equal(list.get(fakePeerId(0))?.state, 'left')
})

test('a draining node that closes its connection stays draining until its `left` arrives (dead if none does)', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  list.ingest(heartbeat({ seq: 2, state: 'draining' }))
  assert.equal(list.disconnected(fakePeerId(0)), undefined, 'no change: draining nodes close their connections')
  clock.advance(100)
  assert.deepEqual(list.tick(), [])
  assert.equal(list.ingest(heartbeat({ seq: 3, state: 'left' }))?.state, 'left', 'the `left` validated after the close')

  const lost = new OnlineList(clock, T)
  lost.ingest(heartbeat({ seq: 1, state: 'draining' }))
  lost.disconnected(fakePeerId(0))
  clock.advance(1500)
  assert.deepEqual(lost.tick().map(r => r.state), ['dead'], 'no `left` ever came')
})

test('a closed connection makes a node suspect at once and dead 1.5 s later unless it speaks', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ seq: 1 }))
  clock.advance(300)
  assert.equal(list.disconnected(fakePeerId(0))?.state, 'suspect')
  clock.advance(1499)
  assert.deepEqual(list.tick(), [])
  clock.advance(1)
  assert.deepEqual(list.tick().map(r => r.state), ['dead'])

  const list2 = new OnlineList(clock, T)
  list2.ingest(heartbeat({ seq: 1 }))
  list2.disconnected(fakePeerId(0))
  clock.advance(400)
  assert.equal(list2.ingest(heartbeat({ seq: 2 }))?.state, 'alive', 'it reconnected and spoke')
  clock.advance(1500)
  assert.deepEqual(list2.tick(), [], 'the old disconnect no longer counts')
})

test('dead and left nodes are forgotten after forgetAfterMs', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, { ...T, forgetAfterMs: 10_000 })
  list.ingest(heartbeat({ seq: 1 }))
  clock.advance(3000)
  list.tick()
  clock.advance(10_000)
  list.tick()
  assert.equal(list.size, 0)
})

test('merge adopts newer versions only, so two lists converge whatever the order', () => {
  const clock = new FakeClock()
  const a = new OnlineList(clock, T)
  const b = new OnlineList(clock, T)
  const events = [
    { hb: heartbeat({ peerId: fakePeerId(1), seq: 1 }), state: 'alive' as const, ageMs: 0 },
    { hb: heartbeat({ peerId: fakePeerId(1), seq: 1 }), state: 'dead' as const, ageMs: 2900 },
    { hb: heartbeat({ peerId: fakePeerId(1), seq: 2 }), state: 'alive' as const, ageMs: 10 },
    { hb: heartbeat({ peerId: fakePeerId(2), seq: 7, state: 'draining' }), state: 'draining' as const, ageMs: 5 },
    { hb: heartbeat({ peerId: fakePeerId(2), seq: 6 }), state: 'suspect' as const, ageMs: 2300 }
  ]
  for (const e of events) a.merge(e)
  for (const e of [...events].reverse()) b.merge(e)
  const view = (l: OnlineList): string[] => l.all().map(r => `${r.hb.peerId}:${r.hb.seq}:${r.state}`).sort()
  assert.deepEqual(view(a), view(b))
  assert.equal(a.get(fakePeerId(1))?.state, 'alive')
  assert.equal(a.get(fakePeerId(2))?.state, 'draining')
})

test('a record merged with its age keeps the sender\'s silence for later ticks', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.merge({ hb: heartbeat({ seq: 1 }), state: 'alive', ageMs: 2000 })
  clock.advance(300)
  assert.deepEqual(list.tick().map(r => r.state), ['suspect'])
})

test('counts by state', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  list.ingest(heartbeat({ peerId: fakePeerId(1) }))
  list.ingest(heartbeat({ peerId: fakePeerId(2), state: 'draining' }))
  assert.deepEqual(list.countByState(), { alive: 1, suspect: 0, draining: 1, dead: 0, left: 0 })
})

test('nothing forged sticks: a claim with an inflated version is overturned by the node\'s fresher records (scheduler view)', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  const inc = 1_700_000_000_000
  list.merge({ hb: heartbeat({ incarnation: inc, seq: 10 }), state: 'alive', ageMs: 0 })
  // A forged (or stale) digest: the node left, one incarnation later.
  const forged = { hb: heartbeat({ incarnation: inc + 1, seq: 0, state: 'left' }), state: 'left' as const, ageMs: 0 }
  assert.equal(list.merge(forged)?.state, 'left', 'a newer version is taken at first')
  clock.advance(1000)
  assert.equal(list.merge({ hb: heartbeat({ incarnation: inc, seq: 11 }), state: 'alive', ageMs: 0 }), undefined,
    'a record heard within the margin proves nothing yet')
  clock.advance(2000)
  const back = list.merge({ hb: heartbeat({ incarnation: inc, seq: 13 }), state: 'alive', ageMs: 100 })
  assert.equal(back?.state, 'alive', 'the node was heard well after the claim: reinstated, whatever the claim\'s incarnation')
  assert.equal(back?.hb.incarnation, inc)
  clock.advance(5000)
  list.merge({ hb: heartbeat({ incarnation: inc, seq: 18 }), state: 'alive', ageMs: 0 })
  // The stale claim, passed on again by a resource that still holds it, cannot come back.
  assert.equal(list.merge({ ...forged, ageMs: 8000 }), undefined)
  assert.equal(list.get(fakePeerId(0))?.state, 'alive')
})

test('nothing forged sticks: a resource that hears a node takes its state from the node alone', () => {
  const clock = new FakeClock()
  const list = new OnlineList(clock, T)
  const inc = 1_700_000_000_000
  list.ingest(heartbeat({ incarnation: inc, seq: 1 }))
  clock.advance(500)
  assert.equal(list.merge({ hb: heartbeat({ incarnation: inc + 1, seq: 0, state: 'left' }), state: 'left', ageMs: 0 }), undefined,
    'a digest about a node we hear is ignored')
  assert.equal(list.merge({ hb: heartbeat({ incarnation: inc, seq: 900 }), state: 'dead', ageMs: 0 }), undefined)
  assert.equal(list.get(fakePeerId(0))?.state, 'alive')

  // Not heard for a while (partition): a claim is taken; the node's own later beats refute it.
  clock.advance(3000)
  list.tick()
  assert.equal(list.merge({ hb: heartbeat({ incarnation: inc + 1, seq: 0, state: 'left' }), state: 'left', ageMs: 0 })?.state, 'left')
  clock.advance(500)
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 2 })), undefined, 'a beat moments after the claim waits')
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 2 })), undefined, 'a duplicate is nothing')
  clock.advance(2000)
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 3 }))?.state, 'alive', 'the node\'s own later beat reinstates it')
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 2 })), undefined, 'and its older beats stay old')

  // A `left` the node says itself is final.
  clock.advance(1000)
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 4, state: 'left' }))?.state, 'left')
  clock.advance(5000)
  assert.equal(list.ingest(heartbeat({ incarnation: inc, seq: 3 })), undefined)
  assert.equal(list.get(fakePeerId(0))?.state, 'left')
})
