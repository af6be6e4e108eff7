import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FrameDecoder, requestFrame } from '../../src/mailbox/pull-stream.ts'

/**
 * The length-prefixed framing of `/astra/mailbox-pull/1.1.0` (src/mailbox/pull-stream.ts): frames
 * split across chunks or packed several to a chunk come out whole and in order; an oversized
 * frame or an overlong length prefix is refused before its body is buffered.
 */

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill)

test('several frames in one chunk come out whole and in order, empty ones included', () => {
  const d = new FrameDecoder(1024)
  const chunk = Buffer.concat([requestFrame(bytes(3, 1)), requestFrame(new Uint8Array(0)), requestFrame(bytes(200, 2))])
  const frames = d.decode(chunk)
  assert.deepEqual(frames.map(f => f.length), [3, 0, 200], 'three frames, lengths as sent')
  assert.ok(frames[2]!.every(b => b === 2), 'third frame body intact')
})

test('a frame split at every byte boundary, prefix included, is reassembled', () => {
  const body = Uint8Array.from({ length: 300 }, (_, i) => i % 251)
  const wire = requestFrame(body)
  assert.equal(wire.length, 302, '300 needs a 2-byte varint prefix')
  for (let cut = 1; cut < wire.length; cut++) {
    const d = new FrameDecoder(1024)
    const first = d.decode(wire.subarray(0, cut))
    const second = d.decode(wire.subarray(cut))
    assert.equal(first.length, 0, `cut at ${cut}: nothing before the whole frame arrived`)
    assert.equal(second.length, 1, `cut at ${cut}: one frame after`)
    assert.deepEqual([...second[0]!], [...body], `cut at ${cut}: body intact`)
  }
})

test('a chunk that is a Uint8ArrayList-like (subarray()) is read too, and the rest carries over', () => {
  const d = new FrameDecoder(1024)
  const wire = Buffer.concat([requestFrame(bytes(10, 7)), requestFrame(bytes(20, 8))])
  const frames1 = d.decode({ subarray: () => wire.subarray(0, 15) })
  assert.deepEqual(frames1.map(f => f.length), [10])
  const frames2 = d.decode(wire.subarray(15))
  assert.deepEqual(frames2.map(f => f.length), [20])
})

test('a frame over the limit is refused from its prefix alone; an overlong prefix too', () => {
  const d = new FrameDecoder(100)
  assert.throws(() => d.decode(requestFrame(bytes(101, 0)).subarray(0, 2)), (err: Error) => {
    assert.equal(err.name, 'InvalidDataLengthError')
    assert.match(err.message, /frame of 101 bytes exceeds 100/)
    return true
  })
  assert.throws(() => new FrameDecoder(100).decode(Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x01)), /length prefix longer than 4 bytes/)
  // Exactly at the limit is fine.
  assert.equal(new FrameDecoder(100).decode(requestFrame(bytes(100, 0)))[0]!.length, 100)
})
