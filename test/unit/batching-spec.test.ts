import assert from 'node:assert/strict'
import { test } from 'node:test'
import { unbatchableReason } from '../../src/batching/index.ts'
import { InvalidAppError, needsRoll, parseAppSpec, type AppListEntry } from '../../src/placement/index.ts'
import { appKind } from '../../src/placement/app.ts'
import { parsePipelineSpec, stageNeedsRoll } from '../../src/pipeline/spec.ts'
import { renderApps } from '../../src/cli/commands/app.ts'

const MODEL = 'a'.repeat(64)
const base = { name: 'mlp', model: MODEL, replicas: 1 }

function problem (batching: unknown): string {
  try {
    parseAppSpec({ ...base, batching })
  } catch (err) {
    assert.ok(err instanceof InvalidAppError, String(err))
    return err.message
  }
  assert.fail(`batching ${JSON.stringify(batching)} was accepted`)
}

test('batching is off unless asked for; the block gets its defaults', () => {
  assert.equal(parseAppSpec(base).batching, undefined)
  assert.deepEqual(parseAppSpec({ ...base, batching: { maxBatchSize: 8 } }).batching, { maxBatchSize: 8, maxQueueDelayMs: 0 })
  assert.deepEqual(parseAppSpec({ ...base, batching: { maxBatchSize: 32, preferredBatchSizes: [8, 16, 32], maxQueueDelayMs: 5 } }).batching,
    { maxBatchSize: 32, preferredBatchSizes: [8, 16, 32], maxQueueDelayMs: 5 })
})

test('a bad batching block is refused with the field named', () => {
  assert.match(problem({ maxBatchSize: 1 }), /batching\.maxBatchSize must be ≥ 2 \(got 1\)/)
  assert.match(problem({ maxBatchSize: 100_000 }), /batching\.maxBatchSize must be ≤ 1024/)
  assert.match(problem({ maxBatchSize: 2.5 }), /batching\.maxBatchSize must be an integer/)
  assert.match(problem({}), /batching\.maxBatchSize is required/)
  assert.match(problem({ maxBatchSize: 8, maxQueueDelayMs: -1 }), /batching\.maxQueueDelayMs must be ≥ 0/)
  assert.match(problem({ maxBatchSize: 8, maxQueueDelayMs: 5_000 }), /batching\.maxQueueDelayMs must be ≤ 1000/)
  assert.match(problem({ maxBatchSize: 8, preferredBatchSizes: [4, 16] }), /batching\.preferredBatchSizes\.1 must be ≤ maxBatchSize \(8\)/)
  assert.match(problem({ maxBatchSize: 8, preferredBatchSizes: [4, 2] }), /batching\.preferredBatchSizes\.1 must be above the size before it \(4\)/)
  assert.match(problem({ maxBatchSize: 8, preferredBatchSizes: [] }), /batching\.preferredBatchSizes must have at least 1/)
  assert.match(problem({ maxBatchSize: 8, maxDelay: 3 }), /batching has unknown key "maxDelay"/)
  assert.match(problem('yes'), /batching must be a JSON object/)
})

test('changing the batching block rolls the app (replicas load it); the same block does not', () => {
  const off = parseAppSpec(base)
  const on = parseAppSpec({ ...base, batching: { maxBatchSize: 8 } })
  const same = parseAppSpec({ ...base, batching: { maxBatchSize: 8, maxQueueDelayMs: 0 } })
  const delay = parseAppSpec({ ...base, batching: { maxBatchSize: 8, maxQueueDelayMs: 2 } })
  assert.equal(needsRoll(off, on), true)
  assert.equal(needsRoll(on, same), false)
  assert.equal(needsRoll(on, delay), true)
  assert.equal(needsRoll(on, off), true)
})

test('the stored app record keeps the block (cluster log schema)', () => {
  const spec = parseAppSpec({ ...base, batching: { maxBatchSize: 8, preferredBatchSizes: [4] } })
  const parsed = appKind.schema.safeParse({ spec, generation: 1, deployedAt: 0, deployedBy: 'op' })
  assert.ok(parsed.success, parsed.error?.message)
  assert.deepEqual((parsed.data as { spec: { batching?: unknown } }).spec.batching, spec.batching)
})

test('a pipeline stage takes a batching block too, checked by the same rules', () => {
  const p = parsePipelineSpec({
    name: 'p',
    stages: { a: { model: MODEL, replicas: 1, batching: { maxBatchSize: 4 } }, b: { model: MODEL, replicas: 1 } },
    steps: [{ stage: 'a', inputs: '$request' }, { stage: 'b', inputs: 'a' }]
  })
  assert.deepEqual(p.stages.a!.batching, { maxBatchSize: 4, maxQueueDelayMs: 0 })
  assert.equal(p.stages.b!.batching, undefined)
  assert.equal(stageNeedsRoll(p.stages.a!, { ...p.stages.a!, batching: undefined }), true)
  assert.throws(() => parsePipelineSpec({
    name: 'p', stages: { a: { model: MODEL, replicas: 1, batching: { maxBatchSize: 0 } } }, steps: [{ stage: 'a', inputs: '$request' }]
  }), /stages\.a: batching\.maxBatchSize must be ≥ 2/)
})

test('a model batches only with axis 0 variable in every input and output, and no BYTES', () => {
  const f32 = (name: string, shape: number[]): { name: string, datatype: 'FP32', shape: number[] } => ({ name, datatype: 'FP32', shape })
  assert.equal(unbatchableReason({ inputs: [f32('x', [-1, 4])], outputs: [f32('y', [-1, 2])] }), undefined)
  assert.match(unbatchableReason({ inputs: [f32('x', [-1, 4]), f32('state', [2, -1, 128])], outputs: [f32('y', [-1, 2])] })!, /input 'state' has shape \[2, -1, 128\]/)
  assert.match(unbatchableReason({ inputs: [f32('x', [-1, 4])], outputs: [f32('y', [1, 2])] })!, /output 'y'/)
  assert.match(unbatchableReason({ inputs: [f32('sr', [])], outputs: [f32('y', [-1])] })!, /input 'sr' has shape \[\]/)
  assert.match(unbatchableReason({ inputs: [{ name: 't', datatype: 'BYTES', shape: [-1] }], outputs: [f32('y', [-1])] })!, /input 't' is BYTES/)
})

test('app ls shows each app\'s batching block in its BATCH column', () => {
  const entry = (name: string, batching?: unknown): AppListEntry => ({
    spec: parseAppSpec({ ...base, name, ...(batching != null ? { batching } : {}) }), generation: 1, deployedAt: Date.now(), via: 'op'
  }) as AppListEntry
  const text = renderApps([entry('off'), entry('on', { maxBatchSize: 32, preferredBatchSizes: [8, 16], maxQueueDelayMs: 2 })])
  const [header, off, on] = text.split('\n')
  const col = header!.indexOf('BATCH')
  assert.ok(col > 0, header)
  assert.match(off!.slice(col), /^- /)
  assert.match(on!.slice(col), /^32 \[8,16\] 2ms/)
})
