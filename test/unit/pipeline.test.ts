import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  parsePipelineSpec, compilePipeline, checkWiring, pipelineSignature, runPipeline, SplitPicker, stageApps,
  type StageCaller, type PipelineRecord
} from '../../src/pipeline/index.ts'
import { MAX_HELD_BYTES, MAX_PARALLEL_CALLS, MAX_STAGES } from '../../src/pipeline/constants.ts'
import { QueueFullError, type InferRequest, type InferResult, type ModelSignature, type Tensor } from '../../src/serving/types.ts'

/**
 * Pipelines without a cluster: the spec's normal form and its refusals (each naming the field),
 * the compiled plan, the wiring checks against model signatures, and the executor's scheduling
 * with stages that are plain functions (the real stages, on a real daemon, are in
 * test/integration/pipeline.test.ts and test/e2e/pipeline.test.ts).
 */

const M1 = 'a'.repeat(64)
const M2 = 'b'.repeat(64)
const M3 = 'c'.repeat(64)

function refused (spec: unknown, pattern: RegExp): void {
  assert.throws(() => parsePipelineSpec(spec), (err: Error) => {
    assert.equal((err as { code?: string }).code, 'ERR_INVALID_APP', err.message)
    assert.match(err.message, pattern)
    return true
  })
}

const base = {
  name: 'p',
  stages: { a: { model: M1, replicas: 1 }, b: { model: M2, replicas: 2, threads: 2 } },
  steps: [{ stage: 'a' }, { stage: 'b' }]
}

test('a spec in normal form: names, sequence inputs, stage defaults', () => {
  const spec = parsePipelineSpec(base)
  assert.deepEqual(spec.steps, [{ name: 'a', stage: 'a', inputs: '$request' }, { name: 'b', stage: 'b', inputs: 'a' }])
  assert.deepEqual(spec.stages.b, { model: M2, replicas: 2, resources: { cpu: 2, gpu: 0 }, timeoutMs: 30_000, maxQueue: 64, threads: 2, routing: 'measured', expose: false })
  const record: PipelineRecord = { spec, generation: 3, stages: { a: { generation: 1, changedAt: 5 }, b: { generation: 2, changedAt: 7 } }, deployedAt: 9, deployedBy: 'x' }
  const apps = stageApps(record)
  assert.deepEqual(apps.map(a => [a.spec.name, a.generation, a.deployedAt, a.pipeline?.stage]), [['p.a', 1, 5, 'a'], ['p.b', 2, 7, 'b']])
})

test('bad specs are refused, naming the stage or step and the field', () => {
  refused({ ...base, steps: [{ stage: 'a' }, { stage: 'zz' }] }, /step 'zz' stage: no stage 'zz'/)
  refused({ ...base, steps: [{ stage: 'a', inputs: { x: 'b.y' } }, { stage: 'b' }] }, /step 'a' inputs\.x: 'b\.y' reads step 'b', which comes later.*cycle/)
  refused({ ...base, steps: [{ stage: 'a', inputs: { x: 'a.y' } }, { stage: 'b' }] }, /reads the step itself/)
  refused({ ...base, steps: [{ stage: 'a' }, { stage: 'b' }, { name: 'a', stage: 'b' }] }, /steps\[2\]\.name: two steps are named 'a'/)
  refused({ ...base, steps: [{ stage: 'a' }, { name: 's', switch: [{ stage: 'a' }, { stage: 'b', when: { parameter: 'k', value: 1 } }] }] }, /step 's' switch\[0\]: a case without "when" is the default and must come last/)
  refused({ ...base, steps: [{ name: 's', split: [{ stage: 'a', weight: 0 }, { stage: 'b', weight: 0 }] }] }, /step 's' split: at least one weight/)
  refused({ ...base, steps: [{ stage: 'a', split: [{ stage: 'b', weight: 1 }] }] }, /exactly one of "stage", "switch" or "split" \(got stage and split\)/)
  refused({ ...base, steps: [{ inputs: '$request' }] }, /steps\[0\]: .*got none/)
  refused({ ...base, steps: [{ stage: 'a' }] }, /stages\.b: no step uses this stage/)
  refused({ ...base, stages: { 'a.b': { model: M1, replicas: 1 } }, steps: [{ stage: 'a.b' }] }, /stages\.a\.b: a stage name .*no '\.'/)
  refused({ ...base, stages: { ...base.stages, a: { model: M1, replicas: -1 } } }, /stages\.a: replicas/)
  refused({ ...base, stages: { ...base.stages, a: { replicas: 1 } } }, /stages\.a: model/)
  refused({ ...base, outputs: { y: 'nope.y' } }, /outputs\.y: 'nope\.y' reads no step 'nope'/)
  refused({ ...base, outputs: { y: 'b' } }, /outputs\.y: 'b' must name a tensor/)
  refused({ ...base, name: 'x'.repeat(62) }, /longer than 63 characters/)
  refused({ ...base, steps: [] }, /steps/)
  const many = Object.fromEntries(Array.from({ length: MAX_STAGES + 1 }, (_, i) => [`s${i}`, { model: M1, replicas: 1 }]))
  refused({ name: 'p', stages: many, steps: Object.keys(many).map(s => ({ stage: s })) }, /at most 16 stages/)
  refused({ ...base, stages: {} }, /at least one stage/)
  // A step whose outputs nothing reads is refused once outputs are explicit (it would run for nothing).
  assert.throws(() => compilePipeline(parsePipelineSpec({ ...base, steps: [{ stage: 'a', inputs: '$request' }, { stage: 'b', inputs: '$request' }], outputs: { y: 'b.y' } })), /step 'a': nothing reads its outputs/)
})

test('the plan: dependencies, and only the outputs something reads are asked of a stage', () => {
  const plan = compilePipeline(parsePipelineSpec({
    name: 'p',
    stages: { a: { model: M1, replicas: 1 }, b: { model: M2, replicas: 1 }, c: { model: M3, replicas: 1 } },
    steps: [
      { stage: 'a', inputs: '$request' },
      { stage: 'b', inputs: { x: '$request.x' } },
      { name: 'pick', switch: [{ when: { tensor: 'a.score', op: '>', value: 0.5 }, stage: 'c' }, { stage: 'b' }], inputs: { x: 'b.y' } }
    ],
    outputs: { out: 'pick.y', score: 'a.score' }
  }))
  assert.deepEqual(plan.byName.get('pick')!.deps.sort(), ['a', 'b'])
  assert.deepEqual([...plan.byName.get('a')!.wanted!], ['score'])
  assert.deepEqual([...plan.byName.get('b')!.wanted!], ['y'])
  assert.deepEqual(plan.sinks, ['pick'])
  // Default outputs: every sink's outputs, whole.
  const ens = compilePipeline(parsePipelineSpec({ ...base, steps: [{ stage: 'a', inputs: '$request' }, { stage: 'b', inputs: '$request' }] }))
  assert.deepEqual(ens.sinks, ['a', 'b'])
  assert.equal(ens.byName.get('a')!.wanted, null)
})

const f32 = (name: string, shape: number[]): { name: string, datatype: 'FP32', shape: number[] } => ({ name, datatype: 'FP32', shape })
const SIGS: Record<string, ModelSignature> = {
  a: { inputs: [f32('x', [-1, 4])], outputs: [f32('score', [-1, 1]), f32('emb', [-1, 8])] },
  b: { inputs: [f32('x', [-1, 1])], outputs: [f32('y', [-1, 1])] },
  c: { inputs: [f32('x', [-1, 1])], outputs: [{ name: 'y', datatype: 'INT64', shape: [-1, 1] }] }
}

test('wiring against signatures: names, datatypes, shapes, unfed inputs, disagreeing cases', () => {
  const spec = (steps: unknown[], outputs?: Record<string, string>): ReturnType<typeof parsePipelineSpec> => parsePipelineSpec({
    name: 'p', stages: { a: { model: M1, replicas: 1 }, b: { model: M2, replicas: 1 }, c: { model: M3, replicas: 1 } }, steps, ...(outputs != null ? { outputs } : {})
  })
  const good = compilePipeline(spec([{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.score' } }, { stage: 'c', inputs: { x: 'b.y' } }]))
  assert.deepEqual(checkWiring(good, s => SIGS[s]), { problems: [], complete: true })
  assert.deepEqual(checkWiring(good, s => s === 'a' ? SIGS.a : undefined), { problems: [], complete: false })
  const sig = pipelineSignature(good, s => SIGS[s])!
  assert.deepEqual(sig.inputs, [f32('x', [-1, 4])])
  assert.deepEqual(sig.outputs, [{ name: 'y', datatype: 'INT64', shape: [-1, 1] }])
  assert.equal(pipelineSignature(good, s => s === 'a' ? SIGS.a : undefined), undefined)

  const problems = (steps: unknown[], outputs?: Record<string, string>): string[] => checkWiring(compilePipeline(spec(steps, outputs)), s => SIGS[s]).problems
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.nope' } }, { stage: 'c', inputs: { x: 'b.y' } }]).join('\n'), /step 'b' inputs\.x: step 'a' has no output 'nope' \(outputs: score, emb\)/)
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: { z: 'a.score' } }, { stage: 'c', inputs: { x: 'b.y' } }]).join('\n'), /step 'b' inputs\.z: stage 'b' \(model bbbbbbbbbbbb\) has no input 'z'/)
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: { z: 'a.score' } }, { stage: 'c', inputs: { x: 'b.y' } }]).join('\n'), /step 'b' inputs: .* input\(s\) x are fed by nothing/)
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.emb' } }, { stage: 'c', inputs: { x: 'b.y' } }]).join('\n'), /step 'b' inputs\.x: gets shape \[-1, 8\] but the input 'x' takes \[-1, 1\]/)
  assert.match(problems([{ stage: 'a' }, { stage: 'c', inputs: { x: 'a.score' } }, { stage: 'b', inputs: { x: 'c.y' } }]).join('\n'), /step 'b' inputs\.x: gets INT64 but the input 'x' takes FP32/)
  assert.match(problems([{ stage: 'a' }, { name: 's', split: [{ stage: 'b', weight: 1 }, { stage: 'c', weight: 1 }], inputs: { x: 'a.score' } }]).join('\n'), /step 's': output 'y' is FP32 \[-1, 1\] from stage 'b'.* but INT64 \[-1, 1\] from stage 'c'/)
  assert.match(problems([{ stage: 'a', inputs: { x: '$request.x' } }, { stage: 'b', inputs: { x: '$request.x' } }, { stage: 'c', inputs: { x: 'b.y' } }], { s: 'a.score', y: 'c.y' }).join('\n'), /request input 'x' must be FP32 \[-1, 1\] here but FP32 \[-1, 4\]/)
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.score' } }, { stage: 'c', inputs: { x: 'b.y' } }], { o: 'c.nope' }).join('\n'), /outputs\.o: step 'c' has no output 'nope'/)
  assert.match(problems([{ stage: 'a' }, { stage: 'b', inputs: 'a' }, { stage: 'c', inputs: { x: 'b.y' } }]).join('\n'), /step 'b' inputs: .* input 'x' is not among step 'a''s outputs/)
})

// --- the executor, with stages that are plain functions ---

function tensor (name: string, values: number[], shape = [values.length]): Tensor {
  return { name, datatype: 'FP32', shape, data: new Uint8Array(Float32Array.from(values).buffer) }
}
function values (t: Tensor | undefined): number[] {
  assert.ok(t != null, 'tensor present')
  return [...new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4)]
}

type StageFn = (req: InferRequest) => Tensor[] | Promise<Tensor[]>

class FakeStages implements StageCaller {
  calls: Array<{ stage: string, req: InferRequest }> = []
  inflight = 0
  maxInflight = 0
  aborted = 0
  notReady = new Set<string>()
  private readonly fns: Record<string, StageFn>
  constructor (fns: Record<string, StageFn>) {
    this.fns = fns
  }
  async call (stage: string, req: InferRequest, signal: AbortSignal): Promise<InferResult> {
    this.calls.push({ stage, req })
    this.inflight++
    this.maxInflight = Math.max(this.maxInflight, this.inflight)
    signal.addEventListener('abort', () => { this.aborted++ }, { once: true })
    try {
      await new Promise(resolve => setImmediate(resolve))
      const outputs = await this.fns[stage]!(req)
      return { model: stage, outputs: req.outputs != null ? outputs.filter(t => req.outputs!.includes(t.name)) : outputs, queueMs: 1, computeMs: 2 }
    } finally {
      this.inflight--
    }
  }

  ready = (stage: string): boolean => !this.notReady.has(stage)
  signature = (): undefined => undefined
}

const req = (inputs: Tensor[], extra: Partial<InferRequest> = {}): InferRequest => ({ inputs, deadline: Date.now() + 10_000, ...extra })
const scale = (k: number): StageFn => r => [tensor('y', values(r.inputs.find(t => t.name === 'x')).map(v => v * k))]

test('a sequence passes tensors on, asks each stage only for what is read, and runs each step once', async () => {
  const stages = new FakeStages({ a: r => [tensor('score', [values(r.inputs[0])[0]! + 1]), tensor('emb', new Array(8).fill(0))], b: scale(10) })
  const plan = compilePipeline(parsePipelineSpec({ ...base, steps: [{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.score' } }], outputs: { out: 'b.y', score: 'a.score' } }))
  const out = await runPipeline(plan, req([tensor('x', [1, 2, 3, 4])]), stages, new SplitPicker(), 'k', undefined)
  assert.deepEqual(out.outputs.map(t => [t.name, values(t)]), [['out', [20]], ['score', [2]]])
  assert.deepEqual(stages.calls.map(c => [c.stage, c.req.outputs]), [['a', ['score']], ['b', ['y']]])
  assert.equal(out.computeMs, 4)
})

test('an ensemble runs its steps at once, at most MAX_PARALLEL_CALLS in flight, and returns every sink', async () => {
  const n = MAX_PARALLEL_CALLS + 4
  const stagesSpec = Object.fromEntries(Array.from({ length: n }, (_, i) => [`s${i}`, { model: M1, replicas: 1 }]))
  const fns = Object.fromEntries(Array.from({ length: n }, (_, i) => [`s${i}`, scale(i)]))
  const stages = new FakeStages(fns)
  const plan = compilePipeline(parsePipelineSpec({ name: 'e', stages: stagesSpec, steps: Object.keys(stagesSpec).map(s => ({ stage: s, inputs: '$request' })) }))
  const out = await runPipeline(plan, req([tensor('x', [1])]), stages, new SplitPicker(), 'k', undefined)
  assert.equal(stages.maxInflight, MAX_PARALLEL_CALLS, 'ran in parallel, bounded')
  assert.deepEqual(out.outputs.map(t => [t.name, values(t)[0]]), Array.from({ length: n }, (_, i) => [`s${i}.y`, i]))
  // The client's outputs list picks among them; an unknown name is the client's error.
  const picked = await runPipeline(plan, req([tensor('x', [1])], { outputs: ['s3.y'] }), stages, new SplitPicker(), 'k', undefined)
  assert.deepEqual(picked.outputs.map(t => t.name), ['s3.y'])
  await assert.rejects(runPipeline(plan, req([tensor('x', [1])], { outputs: ['nope'] }), stages, new SplitPicker(), 'k', undefined), { status: 400, message: /has no output 'nope'/ })
})

test('a failed stage fails the request with its step, stage and status; calls in flight are cancelled', async () => {
  let release!: () => void
  const slow = new Promise<void>(resolve => { release = resolve })
  const stages = new FakeStages({ a: async () => { await slow; return [tensor('y', [1])] }, b: () => { throw new QueueFullError('queue full on n2') } })
  const plan = compilePipeline(parsePipelineSpec({ ...base, steps: [{ stage: 'a', inputs: '$request' }, { stage: 'b', inputs: '$request' }] }))
  await assert.rejects(runPipeline(plan, req([tensor('x', [1])]), stages, new SplitPicker(), 'k', undefined), (err: Error & { status?: number, code?: string }) => {
    assert.equal(err.status, 429)
    assert.equal(err.code, 'ERR_QUEUE_FULL')
    assert.match(err.message, /^pipeline 'p' step 'b' \(stage 'b'\): queue full on n2$/)
    return true
  })
  assert.equal(stages.aborted, 2, 'the step still running was told to stop')
  release()
})

test('switch on a parameter or a reduced tensor; no match and no default is a 400 naming the step', async () => {
  const stages = new FakeStages({ a: r => [tensor('score', values(r.inputs[0]))], b: scale(2), c: scale(3) })
  const spec = parsePipelineSpec({
    name: 'p',
    stages: { a: { model: M1, replicas: 1 }, b: { model: M2, replicas: 1 }, c: { model: M3, replicas: 1 } },
    steps: [
      { stage: 'a', inputs: '$request' },
      { name: 'by-param', switch: [{ when: { parameter: 'lang', value: 'en' }, stage: 'b' }, { when: { parameter: 'n', op: '>=', value: 5 }, stage: 'c' }], inputs: { x: '$request.x' } },
      { name: 'by-tensor', switch: [{ when: { tensor: 'a.score', op: '>', value: 0.5, reduce: 'mean' }, stage: 'c' }, { stage: 'b' }], inputs: { x: '$request.x' } }
    ],
    outputs: { p: 'by-param.y', t: 'by-tensor.y' }
  })
  const plan = compilePipeline(spec)
  const run = async (x: number[], parameters?: Record<string, string | number | boolean>): Promise<number[]> => {
    const out = await runPipeline(plan, req([tensor('x', x)], parameters != null ? { parameters } : {}), stages, new SplitPicker(), 'k', undefined)
    return out.outputs.map(t => values(t)[0]!)
  }
  assert.deepEqual(await run([1, 0], { lang: 'en' }), [2, 2], 'lang en → b; mean 0.5 is not > 0.5 → default b')
  assert.deepEqual(await run([1, 0.2], { n: 7 }), [3, 3], 'n ≥ 5 → c; mean 0.6 > 0.5 → c')
  await assert.rejects(run([1], { lang: 'fr' }), { status: 400, message: /step 'by-param': no switch case matched/ })
})

test('a split divides requests exactly by weight, and skips a case without a ready replica', async () => {
  const stages = new FakeStages({ a: scale(1), b: scale(2) })
  const plan = compilePipeline(parsePipelineSpec({ ...base, steps: [{ name: 's', split: [{ stage: 'a', weight: 3 }, { stage: 'b', weight: 1 }] }] }))
  const picker = new SplitPicker()
  const count = async (n: number): Promise<Record<string, number>> => {
    const seen: Record<string, number> = {}
    for (let i = 0; i < n; i++) {
      const out = await runPipeline(plan, req([tensor('x', [1])]), stages, picker, 'k', undefined)
      const v = String(values(out.outputs[0])[0])
      seen[v] = (seen[v] ?? 0) + 1
    }
    return seen
  }
  assert.deepEqual(await count(40), { 1: 30, 2: 10 })
  stages.notReady.add('a')
  assert.deepEqual(await count(8), { 2: 8 }, 'the case without a ready replica sits out')
})

test('the request has the inputs a step reads, and tensors held between stages are bounded', async () => {
  const stages = new FakeStages({ a: () => [{ name: 'big', datatype: 'UINT8', shape: [MAX_HELD_BYTES], data: new Uint8Array(MAX_HELD_BYTES) }], b: scale(1) })
  const plan = compilePipeline(parsePipelineSpec({ ...base, steps: [{ stage: 'a', inputs: { x: '$request.x' } }, { stage: 'b', inputs: { x: 'a.big' } }] }))
  await assert.rejects(runPipeline(plan, req([tensor('q', [1])]), stages, new SplitPicker(), 'k', undefined), { status: 400, message: /step 'a' reads input 'x', which the request does not have \(it has: q\)/ })
  await assert.rejects(runPipeline(plan, req([tensor('x', [1])]), stages, new SplitPicker(), 'k', undefined), { status: 413, message: /step 'a': the request's tensors between stages reached/ })
})

test('fusion: plain sequences fuse into one chain; switches, splits, ensembles and unknown signatures do not', async () => {
  const { fusePlan } = await import('../../src/pipeline/fusion.ts')
  const sig = (s: string): ModelSignature | undefined => SIGS[s]
  const three = { a: { model: M1, replicas: 1 }, b: { model: M2, replicas: 1 }, c: { model: M3, replicas: 1 } }
  const seq = compilePipeline(parsePipelineSpec({ name: 'p', stages: three, steps: [{ stage: 'a' }, { stage: 'b', inputs: { x: 'a.score' } }, { stage: 'c', inputs: 'b' }], outputs: { y: 'c.y', s: 'a.score' } }))
  assert.deepEqual(fusePlan(seq, sig), {
    steps: [
      { app: 'p.a', inputs: [['x', -1, 'x']], outputs: ['score'] },
      { app: 'p.b', inputs: [['x', 0, 'score']] },
      { app: 'p.c', inputs: [['x', 1, 'x']], outputs: ['y'] }
    ],
    returns: [0, 2]
  })
  assert.equal(fusePlan(seq, s => s === 'c' ? undefined : sig(s)), undefined, 'a whole-source step needs its model\'s inputs')
  const ensemble = compilePipeline(parsePipelineSpec({ name: 'p', stages: three, steps: [{ stage: 'a' }, { stage: 'b', inputs: '$request' }, { stage: 'c', inputs: { x: 'a.score' } }] }))
  assert.equal(fusePlan(ensemble, sig), undefined, 'parallel steps are not serialised')
  const split = compilePipeline(parsePipelineSpec({ name: 'p', stages: three, steps: [{ stage: 'a' }, { name: 's', split: [{ stage: 'b', weight: 1 }, { stage: 'c', weight: 1 }], inputs: { x: 'a.score' } }] }))
  assert.equal(fusePlan(split, sig), undefined)
  const single = compilePipeline(parsePipelineSpec({ name: 'p', stages: { a: three.a }, steps: [{ stage: 'a' }] }))
  assert.equal(fusePlan(single, sig), undefined, 'one stage: nothing to save')
})
