import { test } from 'node:test'
import assert from 'node:assert/strict'
import { encodeHeartbeat, decodeHeartbeat, heartbeatTopic } from '../../src/membership/heartbeat.ts'
import { encodeRecords, decodeRecords } from '../../src/membership/records.ts'
import { HEARTBEAT_VERSION, MAX_HEARTBEAT_BYTES } from '../../src/membership/constants.ts'
import { DecodeError } from '../../src/util/errors.ts'
import { heartbeat, fakePeerId } from '../helpers/heartbeat.ts'

test('a heartbeat round-trips and stays under 512 bytes even with the longest labels', () => {
  const hb = heartbeat({ roles: ['node', 'scheduler'], name: 'x'.repeat(63), cell: 'c'.repeat(63), gpus: 8, gpuPerf: 2.5, cpuUtil: 0.1234, inflight: 70000 })
  const bytes = encodeHeartbeat(hb)
  assert.ok(bytes.length < MAX_HEARTBEAT_BYTES, `${bytes.length} bytes`)
  const back = decodeHeartbeat(bytes)
  assert.deepEqual({ ...back, cpuUtil: 0 }, { ...hb, cpuUtil: 0 })
  assert.ok(Math.abs(back.cpuUtil - 0.1234) < 1e-4)
})

test('a cordoned heartbeat says so (version 3, flags byte); without flags version 2 is written and read', () => {
  const hb = heartbeat({ cordoned: true })
  const bytes = encodeHeartbeat(hb)
  assert.equal(bytes[0], HEARTBEAT_VERSION)
  assert.deepEqual(decodeHeartbeat(bytes), hb)
  // Version 2 is version 3 without the flags byte after the state; with no flag set it is what
  // is written, so daemons older than version 3 keep reading every node that is not cordoned.
  const v2 = new Uint8Array([2, bytes[1]!, ...bytes.subarray(3)])
  assert.deepEqual(decodeHeartbeat(v2), { ...hb, cordoned: false })
  assert.deepEqual(encodeHeartbeat({ ...hb, cordoned: false }), v2)
  const recs = [{ hb, state: 'alive' as const, lastSeen: 0, changedAt: 0 }]
  assert.equal(decodeRecords(encodeRecords(recs, 0), 1)[0]?.hb.cordoned, true)
})

test('malformed heartbeats are DecodeErrors, never crashes', () => {
  const good = encodeHeartbeat(heartbeat())
  const cases: Uint8Array[] = [
    new Uint8Array(0),
    good.subarray(0, good.length - 1),
    new Uint8Array([...good, 0]),
    new Uint8Array([9, ...good.subarray(1)]),
    new Uint8Array(MAX_HEARTBEAT_BYTES + 1)
  ]
  const badState = good.slice(); badState[1] = 7; cases.push(badState)
  const badPeer = encodeHeartbeat(heartbeat({ peerId: 'not-a-peer-id-0OIl'.repeat(3) })); cases.push(badPeer)
  for (let i = 0; i < 200; i++) {
    const fuzz = good.slice()
    fuzz[Math.floor(Math.random() * fuzz.length)] = Math.floor(Math.random() * 256)
    try { decodeHeartbeat(fuzz) } catch (err) { assert.ok(err instanceof DecodeError, String(err)) }
  }
  for (const c of cases) assert.throws(() => decodeHeartbeat(c), (e: unknown) => e instanceof DecodeError)
})

test('records round-trip with ages and refuse too many records', () => {
  const now = 5_000_000
  const recs = [1, 2, 3].map(i => ({ hb: heartbeat({ peerId: fakePeerId(i), seq: i }), state: 'suspect' as const, lastSeen: now - i * 100, changedAt: now }))
  const back = decodeRecords(encodeRecords(recs, now), 10)
  assert.deepEqual(back.map(r => [r.hb.peerId, r.state, r.ageMs]), recs.map(r => [r.hb.peerId, 'suspect', now - r.lastSeen]))
  assert.throws(() => decodeRecords(encodeRecords(recs, now), 2), (e: unknown) => e instanceof DecodeError)
})

test('the heartbeat topic is stable per peer and within the shard count', () => {
  assert.equal(heartbeatTopic(fakePeerId(1), 1), 'astra/hb/1/0')
  const t = heartbeatTopic(fakePeerId(1), 16)
  assert.equal(heartbeatTopic(fakePeerId(1), 16), t)
  assert.match(t, /^astra\/hb\/1\/(\d|1[0-5])$/)
})
