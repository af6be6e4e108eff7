import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import ort from 'onnxruntime-node'
import {
  DEMO_APP, DEMO_EXAMPLE_INPUT, DEMO_INPUT, DEMO_OUTPUT, DEMO_CLASSES,
  demoModel, demoReference, demoCurl, demoRequestBody, encodeModel, floatTensor, OnnxDataType
} from '../../src/demo/index.ts'

/**
 * SHA-256 of the demo model's bytes. The bytes determine the demo's model id, which nodes of
 * every astrad version must agree on: if this test fails, the model changed. Change it only on
 * purpose (and expect a cluster of mixed versions to deploy two different demos).
 */
const DEMO_SHA256 = 'b9d4063855d78f867ac04afe3c7f57571d4c2fe17ad00e344964d296973d562e'

const TOLERANCE = 1e-5

function rowsOf (data: Float32Array, cols: number): number[][] {
  const rows: number[][] = []
  for (let i = 0; i < data.length; i += cols) rows.push(Array.from(data.subarray(i, i + cols)))
  return rows
}

async function run (session: ort.InferenceSession, rows: number[][]): Promise<{ dims: readonly number[], rows: number[][] }> {
  const x = new ort.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, 4])
  const out = await session.run({ [DEMO_INPUT]: x })
  const p = out[DEMO_OUTPUT]
  assert.ok(p !== undefined, `output '${DEMO_OUTPUT}' missing`)
  assert.equal(p.type, 'float32')
  return { dims: p.dims, rows: rowsOf(p.data as Float32Array, DEMO_CLASSES) }
}

function assertClose (actual: number[][], expected: number[][]): void {
  assert.equal(actual.length, expected.length)
  actual.forEach((row, r) => {
    const want = expected[r] as number[]
    assert.equal(row.length, want.length)
    row.forEach((v, k) => {
      assert.ok(Math.abs(v - (want[k] as number)) <= TOLERANCE, `row ${r} class ${k}: onnxruntime ${v}, reference ${want[k]}`)
    })
  })
}

test('demo model bytes are deterministic and pinned', () => {
  const a = demoModel()
  const b = demoModel()
  assert.deepEqual(a, b)
  assert.notEqual(a, b, 'each call returns its own copy')
  assert.equal(crypto.createHash('sha256').update(a).digest('hex'), DEMO_SHA256)
})

test('onnxruntime loads the demo model with a symbolic batch dimension', async () => {
  const session = await ort.InferenceSession.create(demoModel())
  try {
    assert.deepEqual(session.inputNames, [DEMO_INPUT])
    assert.deepEqual(session.outputNames, [DEMO_OUTPUT])
    const input = session.inputMetadata[0]
    const output = session.outputMetadata[0]
    assert.ok(input?.isTensor === true && output?.isTensor === true)
    assert.equal(input.type, 'float32')
    assert.deepEqual(input.shape, ['batch', 4])
    assert.deepEqual(output.shape, ['batch', DEMO_CLASSES])
  } finally {
    await session.release()
  }
})

test('onnxruntime answers what demoReference computes, for batch 1 and batch 3', async () => {
  const session = await ort.InferenceSession.create(demoModel())
  try {
    const one = [[...DEMO_EXAMPLE_INPUT]]
    const r1 = await run(session, one)
    assert.deepEqual(r1.dims, [1, DEMO_CLASSES])
    assertClose(r1.rows, demoReference(one))

    const three = [[1, 2, 3, 4], [-1, 0.5, -2, 3], [0.1, -0.2, 0.3, -0.4]]
    const r3 = await run(session, three)
    assert.deepEqual(r3.dims, [3, DEMO_CLASSES])
    assertClose(r3.rows, demoReference(three))

    for (const row of [...r1.rows, ...r3.rows]) {
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) <= TOLERANCE, `row ${row.join(', ')} sums to 1`)
      assert.ok(row.every(p => p > 0 && p < 1))
    }
    // Not a constant function: different rows give different winning classes.
    const winners = new Set(r3.rows.map(row => row.indexOf(Math.max(...row))))
    assert.ok(winners.size >= 2, 'the demo separates its inputs')
  } finally {
    await session.release()
  }
})

test('demoReference rejects a row of the wrong width', () => {
  assert.throws(() => demoReference([[1, 2, 3]]), RangeError)
})

test('demoCurl is one line that posts the KServe v2 JSON body for the example row', () => {
  const cmd = demoCurl({ host: '127.0.0.1', port: 7070 })
  assert.equal(cmd, `curl -s http://127.0.0.1:7070/v2/models/${DEMO_APP}/infer -H 'content-type: application/json' -d '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1.25,2,0.75]}]}'`)
  assert.ok(!cmd.includes('\n'))
  const body = JSON.parse(demoRequestBody())
  assert.deepEqual(body.inputs[0].data, [...DEMO_EXAMPLE_INPUT])
  // Wildcard and IPv6 listen addresses become URLs curl can reach.
  assert.ok(demoCurl({ host: '0.0.0.0', port: 7070 }).includes('http://127.0.0.1:7070/'))
  assert.ok(demoCurl({ host: '::1', port: 8080 }).includes('http://[::1]:8080/'))
})

test('the writer encodes ints attributes, negative ints and fixed dims the way onnxruntime reads them', async () => {
  // Transpose (perm = [1, 0]) of a [2, 3] initializer, plus the input, then Softmax over
  // axis -2 (not the default -1, so a wrongly encoded negative int64 changes the answer).
  const bytes = encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'test',
    graph: {
      name: 'g',
      nodes: [
        { opType: 'Transpose', inputs: ['a'], outputs: ['t'], attributes: [{ name: 'perm', ints: [1, 0] }] },
        { opType: 'Add', inputs: ['t', 'b'], outputs: ['s'] },
        { opType: 'Softmax', inputs: ['s'], outputs: ['y'], attributes: [{ name: 'axis', int: -2 }] }
      ],
      initializers: [floatTensor('a', [2, 3], [1, 2, 3, 4, 5, 6])],
      inputs: [{ name: 'b', elemType: OnnxDataType.FLOAT, shape: [3, 2] }],
      outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: [3, 2] }]
    }
  })
  const session = await ort.InferenceSession.create(bytes)
  try {
    const meta = session.inputMetadata[0]
    assert.deepEqual(meta?.isTensor === true ? meta.shape : null, [3, 2])
    const out = await session.run({ b: new ort.Tensor('float32', new Float32Array(6).fill(0.5), [3, 2]) })
    // Transposed + 0.5: [[1.5, 4.5], [2.5, 5.5], [3.5, 6.5]]; each column is softmax(0, 1, 2).
    const e = [1, Math.E, Math.E ** 2]
    const sum = e[0]! + e[1]! + e[2]!
    const want = e.flatMap(v => [v / sum, v / sum])
    const got = Array.from(out.y?.data as Float32Array)
    assert.equal(got.length, 6)
    got.forEach((v, i) => { assert.ok(Math.abs(v - (want[i] as number)) <= TOLERANCE, `y[${i}] = ${v}, want ${want[i]}`) })
  } finally {
    await session.release()
  }
  assert.throws(() => floatTensor('bad', [2, 2], [1, 2, 3]), RangeError)
})
