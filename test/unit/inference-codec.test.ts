import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  copyForTransfer, decodeBytesElements, elementCount, encodeBytesElements, rawToTyped, scanBytesElements, transferable, typedToRaw
} from '../../src/inference/codec.ts'
import { ORT_TO_DATATYPE, TYPED_ARRAY, datatypeFromOrt, ortTypeOf } from '../../src/inference/datatypes.ts'
import { DATATYPES, DATATYPE_SIZE, InvalidInferRequestError } from '../../src/serving/types.ts'

/** Little-endian bytes of a typed array (what a client sends). */
function bytesOf (view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}

describe('datatype mapping', () => {
  test('onnxruntime type names map to KServe datatypes', () => {
    assert.equal(datatypeFromOrt('float32'), 'FP32')
    assert.equal(datatypeFromOrt('int64'), 'INT64')
    assert.equal(datatypeFromOrt('float16'), 'FP16')
    assert.equal(datatypeFromOrt('bool'), 'BOOL')
    assert.equal(datatypeFromOrt('string'), 'BYTES')
    assert.equal(datatypeFromOrt('uint8'), 'UINT8')
    assert.equal(datatypeFromOrt('float64'), 'FP64')
    // onnxruntime's 4-bit types have no KServe name; nor has anything else.
    assert.equal(datatypeFromOrt('int4'), undefined)
    assert.equal(datatypeFromOrt('toString'), undefined)
  })

  test('one to one over all KServe datatypes, typed arrays of the right element size', () => {
    assert.equal(Object.keys(ORT_TO_DATATYPE).length, DATATYPES.length)
    for (const dt of DATATYPES) {
      assert.equal(datatypeFromOrt(ortTypeOf(dt)), dt)
      if (dt !== 'BYTES') assert.equal(TYPED_ARRAY[dt].BYTES_PER_ELEMENT, DATATYPE_SIZE[dt], dt)
    }
  })
})

describe('raw bytes ↔ onnxruntime data', () => {
  test('elementCount: a scalar has one element, a zero dimension none', () => {
    assert.equal(elementCount([]), 1)
    assert.equal(elementCount([2, 3, 4]), 24)
    assert.equal(elementCount([5, 0]), 0)
  })

  test('FP32: aligned bytes become a view over the same memory, no copy', () => {
    const values = Float32Array.from([1.5, -2, 3.25])
    const raw = bytesOf(values)
    const typed = rawToTyped('FP32', raw)
    assert.ok(typed instanceof Float32Array)
    assert.equal(typed.buffer, values.buffer)
    assert.deepEqual([...typed], [1.5, -2, 3.25])
    assert.equal(typedToRaw('FP32', typed).buffer, values.buffer)
  })

  test('misaligned bytes (a view at an odd offset) are copied into an aligned array', () => {
    const backing = new Uint8Array(13)
    backing.set(bytesOf(Float32Array.from([7, 8, 9])), 1)
    const typed = rawToTyped('FP32', backing.subarray(1))
    assert.ok(typed instanceof Float32Array)
    assert.notEqual(typed.buffer, backing.buffer)
    assert.deepEqual([...typed], [7, 8, 9])
  })

  test('INT64 ↔ BigInt64Array, little-endian, full range', () => {
    const raw = new Uint8Array(24)
    const view = new DataView(raw.buffer)
    view.setBigInt64(0, 16000n, true)
    view.setBigInt64(8, -1n, true)
    view.setBigInt64(16, 2n ** 62n + 1n, true)
    const typed = rawToTyped('INT64', raw)
    assert.ok(typed instanceof BigInt64Array)
    assert.deepEqual([...typed], [16000n, -1n, 2n ** 62n + 1n])
    assert.deepEqual(typedToRaw('INT64', typed), raw)
    assert.ok(rawToTyped('UINT64', raw) instanceof BigUint64Array)
  })

  test('FP16 travels as its raw bits in a Uint16Array; a Float16Array output gives the same bytes', () => {
    const raw = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c]) // 1.0, -2.0, +Infinity
    const typed = rawToTyped('FP16', raw)
    assert.ok(typed instanceof Uint16Array)
    assert.deepEqual([...typed], [0x3c00, 0xc000, 0x7c00])
    assert.deepEqual(typedToRaw('FP16', typed), raw)
    const F16 = (globalThis as { Float16Array?: new (values: number[]) => ArrayBufferView }).Float16Array
    if (F16 !== undefined) assert.deepEqual(typedToRaw('FP16', new F16([1, -2, Infinity])), raw)
  })

  test('BOOL ↔ one byte per element', () => {
    const raw = new Uint8Array([1, 0, 1, 1])
    const typed = rawToTyped('BOOL', raw)
    assert.ok(typed instanceof Uint8Array)
    assert.deepEqual([...typed], [1, 0, 1, 1])
    assert.deepEqual(typedToRaw('BOOL', typed), raw)
  })

  test('BYTES ↔ strings, in the KServe layout (u32 LE length, then the bytes)', () => {
    const strings = ['héllo', '', '日本', 'x'.repeat(300)]
    const raw = encodeBytesElements(strings)
    assert.deepEqual([...raw.subarray(0, 10)], [6, 0, 0, 0, 0x68, 0xc3, 0xa9, 0x6c, 0x6c, 0x6f])
    assert.deepEqual(rawToTyped('BYTES', raw), strings)
    assert.deepEqual(typedToRaw('BYTES', strings), raw)
    assert.deepEqual(decodeBytesElements(raw).map(e => e.byteLength), [6, 0, 6, 300])
    assert.deepEqual(scanBytesElements(raw), { count: 4 })
    assert.deepEqual(rawToTyped('BYTES', new Uint8Array(0)), [])
  })

  test('broken data is refused with InvalidInferRequestError', () => {
    assert.throws(() => rawToTyped('FP32', new Uint8Array(6)), InvalidInferRequestError)
    assert.throws(() => rawToTyped('BYTES', new Uint8Array([9, 0, 0, 0, 1])), InvalidInferRequestError)
    assert.ok('error' in scanBytesElements(new Uint8Array([1, 0])))
    assert.ok('error' in scanBytesElements(encodeBytesElements([new Uint8Array([0xc3])])))
    assert.throws(() => typedToRaw('FP32', Float64Array.from([1])), TypeError)
    assert.throws(() => typedToRaw('BYTES', [1, 2]), TypeError)
  })
})

describe('transfer to a worker', () => {
  test('bytes spanning a whole ArrayBuffer are moved as they are', () => {
    const bytes = new Uint8Array(16)
    const { bytes: sent, buffer } = transferable(bytes)
    assert.equal(sent, bytes)
    assert.equal(buffer, bytes.buffer)
  })

  test('a view of a larger buffer (a Node Buffer from the pool, a body slice) is copied exactly', () => {
    const body = Buffer.from('header:payload')
    const view = body.subarray(7)
    const { bytes: sent, buffer } = transferable(view)
    assert.notEqual(buffer, body.buffer)
    assert.equal(buffer.byteLength, view.byteLength)
    assert.equal(Buffer.from(sent).toString(), 'payload')
    // Transferring the copy leaves the sender's bytes intact.
    structuredClone(sent, { transfer: [buffer] })
    assert.equal(body.toString(), 'header:payload')
  })

  test('a SharedArrayBuffer is never handed over', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(8))
    shared[0] = 42
    const { bytes: sent, buffer } = transferable(shared)
    assert.ok(buffer instanceof ArrayBuffer)
    assert.equal(sent[0], 42)
  })

  test('copyForTransfer always copies, even a whole buffer', () => {
    const bytes = Uint8Array.from([1, 2, 3])
    const { bytes: sent, buffer } = copyForTransfer(bytes)
    assert.notEqual(buffer, bytes.buffer)
    assert.deepEqual(sent, bytes)
  })
})
