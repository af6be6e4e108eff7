import { test } from 'node:test'
import assert from 'node:assert/strict'
import { UploadSlots } from '../../src/transfer/upload-slots.ts'
import { encodeSwarmHave, decodeSwarmHave } from '../../src/transfer/swarm-have.ts'
import { MAX_SWARM_HAVE_BYTES } from '../../src/transfer/constants.ts'

/** Upload slots: a few at once, the rest in a queue that is fair between peers. */

const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

test('slots are granted at once up to the limit; the rest wait and get a slot as one is released', async () => {
  const slots = new UploadSlots({ slots: 2, maxQueued: 10, maxWaitMs: 60_000 })
  const r1 = await slots.acquire('a')
  const r2 = await slots.acquire('b')
  assert.equal(slots.inUse, 2)
  const got: Array<() => void> = []
  const p = slots.acquire('c').then(r => { got.push(r) })
  await tick()
  assert.equal(got.length, 0, 'the third waits')
  assert.equal(slots.waiting, 1)
  r1()
  r1() // twice is once
  await p
  assert.equal(got.length, 1)
  assert.equal(slots.inUse, 2)
  assert.equal(slots.waiting, 0)
  r2()
  got[0]!()
  assert.equal(slots.inUse, 0)
})

test('the queue is round robin over peers: one peer\'s pipeline cannot take every slot', async () => {
  const slots = new UploadSlots({ slots: 1, maxQueued: 10, maxWaitMs: 60_000 })
  const first = await slots.acquire('x')
  const order: string[] = []
  const waits = [['a', 1], ['a', 2], ['a', 3], ['b', 1], ['c', 1]].map(async ([peer, n]) => {
    const release = await slots.acquire(String(peer))
    order.push(`${String(peer)}${String(n)}`)
    await tick()
    release()
  })
  await tick()
  first()
  await Promise.all(waits)
  assert.deepEqual(order, ['a1', 'b1', 'c1', 'a2', 'a3'])
})

test('a full queue or a long wait is ERR_BUSY (the peer asks elsewhere); an abort leaves the queue', async () => {
  const slots = new UploadSlots({ slots: 1, maxQueued: 1, maxWaitMs: 50 })
  const held = await slots.acquire('a')
  const waiting = slots.acquire('b')
  await assert.rejects(slots.acquire('c'), { code: 'ERR_BUSY' }, 'step: a second waiter over maxQueued')
  await assert.rejects(waiting, { code: 'ERR_BUSY' }, 'step: the waiter past maxWaitMs')
  assert.equal(slots.waiting, 0)
  const controller = new AbortController()
  const aborted = slots.acquire('d', controller.signal)
  controller.abort(new Error('gone'))
  await assert.rejects(aborted, /gone/)
  assert.equal(slots.waiting, 0)
  held()
  assert.equal(slots.inUse, 0)
  // Nothing waits any more: the next one is granted at once.
  const again = await slots.acquire('e')
  again()
  assert.throws(() => new UploadSlots({ slots: 0, maxQueued: 1, maxWaitMs: 1 }), RangeError)
})

test('direct have message: round trip; malformed ones are refused', () => {
  const id = 'ab'.repeat(32)
  const bits = new Uint8Array([0b1010_0000, 0xff])
  const m = decodeSwarmHave(encodeSwarmHave({ id, bitfield: bits }))
  assert.equal(m.id, id)
  assert.deepEqual([...m.bitfield], [...bits])
  const bytes = encodeSwarmHave({ id, bitfield: bits })
  assert.throws(() => decodeSwarmHave(bytes.subarray(0, 10)), { name: 'DecodeError' })
  assert.throws(() => decodeSwarmHave(bytes.subarray(0, bytes.length - 1)), { name: 'DecodeError' })
  const v2 = bytes.slice()
  v2[0] = 2
  assert.throws(() => decodeSwarmHave(v2), { name: 'DecodeError' })
  assert.throws(() => encodeSwarmHave({ id: 'zz', bitfield: bits }), RangeError)
  assert.throws(() => encodeSwarmHave({ id, bitfield: new Uint8Array(MAX_SWARM_HAVE_BYTES) }), RangeError)
})
