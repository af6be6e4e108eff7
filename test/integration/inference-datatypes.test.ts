import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { encodeBytesElements, decodeBytesElements } from '../../src/inference/codec.ts'
import { createPool, type InferencePool } from '../../src/inference/index.ts'
import { encodeModel, type OnnxDataType, type OnnxValueInfo } from '../../src/demo/index.ts'
import type { Tensor } from '../../src/serving/types.ts'
import { silentLogger } from '../../src/util/logger.ts'

// Every datatype through a real worker and session: a generated model whose outputs are
// simple functions of its inputs (Identity, Not, Neg), so the bytes that come back show that
// raw → typed array → onnxruntime → raw kept every value and the right datatype.

/** TensorProto.DataType (onnx.proto); the demo writer names only FLOAT and INT64. */
const ONNX = { UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13 } as const

function value (name: string, type: number, shape: Array<number | string>): OnnxValueInfo {
  return { name, elemType: type as OnnxDataType, shape }
}

/** in_X → out_X through `op` for each case. */
const CASES = [
  { name: 'f16', type: ONNX.FLOAT16, op: 'Identity' },
  { name: 'f64', type: ONNX.DOUBLE, op: 'Neg' },
  { name: 'b', type: ONNX.BOOL, op: 'Not' },
  { name: 'i64', type: ONNX.INT64, op: 'Neg' },
  { name: 'u64', type: ONNX.UINT64, op: 'Identity' },
  { name: 'i8', type: ONNX.INT8, op: 'Neg' },
  { name: 'u8', type: ONNX.UINT8, op: 'Identity' },
  { name: 'i16', type: ONNX.INT16, op: 'Identity' },
  { name: 'u16', type: ONNX.UINT16, op: 'Identity' },
  { name: 'i32', type: ONNX.INT32, op: 'Neg' },
  { name: 'u32', type: ONNX.UINT32, op: 'Identity' },
  { name: 's', type: ONNX.STRING, op: 'Identity' }
] as const

function model (): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'datatypes',
      nodes: CASES.map(c => ({ opType: c.op, inputs: [`in_${c.name}`], outputs: [`out_${c.name}`] })),
      initializers: [],
      inputs: CASES.map(c => value(`in_${c.name}`, c.type, ['n'])),
      outputs: CASES.map(c => value(`out_${c.name}`, c.type, ['n']))
    }
  })
}

function bytesOf (view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}

let dir: string
let pool: InferencePool

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'astrad-datatypes-'))
  await writeFile(join(dir, 'datatypes.onnx'), model())
  pool = await createPool({ logger: silentLogger() }, { modelPath: join(dir, 'datatypes.onnx'), name: 'types', workers: 1, maxQueue: 1 })
})
after(async () => {
  await pool.close()
  await rm(dir, { recursive: true, force: true })
})

test('the signature names every onnxruntime type by its KServe datatype', () => {
  assert.deepEqual(pool.signature.inputs.map(i => [i.name, i.datatype, i.shape]), [
    ['in_f16', 'FP16', [-1]], ['in_f64', 'FP64', [-1]], ['in_b', 'BOOL', [-1]], ['in_i64', 'INT64', [-1]],
    ['in_u64', 'UINT64', [-1]], ['in_i8', 'INT8', [-1]], ['in_u8', 'UINT8', [-1]], ['in_i16', 'INT16', [-1]],
    ['in_u16', 'UINT16', [-1]], ['in_i32', 'INT32', [-1]], ['in_u32', 'UINT32', [-1]], ['in_s', 'BYTES', [-1]]
  ])
})

test('INT64, FP16, BOOL, BYTES and the rest round-trip through a worker with their values', async () => {
  const n = 3
  const raw: Record<string, Uint8Array> = {
    f16: bytesOf(Uint16Array.of(0x3c00, 0xc000, 0x7e00)), // 1, -2, NaN (bits kept by Identity)
    f64: bytesOf(Float64Array.of(1.5, -0, 1e300)),
    b: Uint8Array.of(1, 0, 1),
    i64: bytesOf(BigInt64Array.of(16000n, -(2n ** 62n), 0n)),
    u64: bytesOf(BigUint64Array.of(2n ** 64n - 1n, 0n, 42n)),
    i8: bytesOf(Int8Array.of(-128 + 1, 0, 127)),
    u8: Uint8Array.of(0, 128, 255),
    i16: bytesOf(Int16Array.of(-32768, 0, 32767)),
    u16: bytesOf(Uint16Array.of(0, 1, 65535)),
    i32: bytesOf(Int32Array.of(-5, 0, 2 ** 31 - 1)),
    u32: bytesOf(Uint32Array.of(0, 7, 2 ** 32 - 1)),
    s: encodeBytesElements(['héllo', '', '日本語'])
  }
  const inputs: Tensor[] = pool.signature.inputs.map(spec => ({
    name: spec.name, datatype: spec.datatype, shape: [n], data: raw[spec.name.slice(3)]!.slice()
  }))
  const { outputs } = await pool.infer({ inputs, deadline: Date.now() + 5000 })
  const out = Object.fromEntries(outputs.map(o => [o.name.slice(4), o]))
  for (const o of outputs) assert.deepEqual(o.shape, [n], o.name)
  assert.deepEqual(outputs.map(o => o.datatype), pool.signature.outputs.map(o => o.datatype))

  const view = <T>(Typed: new (b: ArrayBufferLike, o: number, l: number) => T, t: Tensor, size: number): T =>
    new Typed(t.data.buffer, t.data.byteOffset, t.data.byteLength / size)
  assert.deepEqual(out.f16!.data, raw.f16)
  assert.deepEqual([...view(Float64Array, out.f64!, 8)], [-1.5, 0, -1e300])
  assert.deepEqual([...out.b!.data], [0, 1, 0])
  assert.deepEqual([...view(BigInt64Array, out.i64!, 8)], [-16000n, 2n ** 62n, 0n])
  assert.deepEqual(out.u64!.data, raw.u64)
  assert.deepEqual([...view(Int8Array, out.i8!, 1)], [127, 0, -127])
  assert.deepEqual(out.u8!.data, raw.u8)
  assert.deepEqual(out.i16!.data, raw.i16)
  assert.deepEqual(out.u16!.data, raw.u16)
  assert.deepEqual([...view(Int32Array, out.i32!, 4)], [5, 0, -(2 ** 31 - 1)])
  assert.deepEqual(out.u32!.data, raw.u32)
  assert.deepEqual(decodeBytesElements(out.s!.data).map(e => Buffer.from(e).toString()), ['héllo', '', '日本語'])
})

test('an empty batch (a dimension of 0) runs too', async () => {
  const inputs: Tensor[] = pool.signature.inputs.map(spec => ({ name: spec.name, datatype: spec.datatype, shape: [0], data: new Uint8Array(0) }))
  const { outputs } = await pool.infer({ inputs, deadline: Date.now() + 5000 })
  assert.ok(outputs.every(o => o.shape[0] === 0 && o.data.byteLength === 0))
})
