import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import ort from 'onnxruntime-node'
import type { Daemon } from '../../src/daemon/index.ts'
import { decodeInferResponse } from '../../src/serving/kserve/index.ts'
import { encodeModel, OnnxDataType } from '../../src/demo/index.ts'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { operatorAuth, operatorFetch, rpcUrl, type Answer } from '../helpers/operator.ts'
import { VAD_MODEL, energyModel, gateModel, scaleModel, vadInputs } from '../helpers/pipeline-models.ts'
import { LoadSet } from '../helpers/load.ts'

/**
 * Pipeline apps (docs/pipelines.md) on one in-process daemon (node, resource, scheduler): each
 * router kind of KServe's InferenceGraph (sequence, ensemble, switch, split) answers over the
 * KServe v2 endpoint with exactly the numbers onnxruntime gives when the test runs the same
 * models in sequence itself; metadata, readiness, output selection, the binary extension, hidden
 * and exposed stages, stage failures, deadlines, bad specs and removal.
 */

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })

/** Silero VAD's tensors of a request from vadInputs(), as onnxruntime feeds. */
type Feeds = Record<string, ort.Tensor>

/** `y = float(a * b)` of two FP32 [batch, 1] tensors: a final step reading both ensemble branches. */
function mulModel (): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'mul',
      nodes: [{ opType: 'Mul', inputs: ['a', 'b'], outputs: ['y'] }],
      initializers: [],
      inputs: [{ name: 'a', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }, { name: 'b', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }],
      outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }]
    }
  })
}

/** `y = float(x)` with x INT64 [batch, 1]: a model whose input no FP32 tensor may feed. */
function castModel (): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'cast',
      nodes: [{ opType: 'Cast', inputs: ['x'], outputs: ['y'], attributes: [{ name: 'to', int: OnnxDataType.FLOAT }] }],
      initializers: [],
      inputs: [{ name: 'x', elemType: OnnxDataType.INT64, shape: ['batch', 1] }],
      outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }]
    }
  })
}

let d: Daemon
/** Model bytes by role, their ids in the cluster, and an onnxruntime session of each here. */
const bytes: Record<string, Uint8Array> = {}
const ids: Record<string, string> = {}
const sessions: Record<string, ort.InferenceSession> = {}
/** The gate's threshold: between the VAD probabilities of the rows of vadInputs(3, 1). */
let threshold = 0

before(async () => {
  d = await cluster.start({ roles: ['node', 'resource', 'scheduler'], cores: 8 })
  await waitFor('the daemon ready', () => d.ready)
  bytes.vad = new Uint8Array(fs.readFileSync(VAD_MODEL))
  // The daemon's replicas run with these options (src/inference/worker.ts, threads 1): the same
  // here, so that the numbers may be compared exactly.
  const options: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' }
  sessions.vad = await ort.InferenceSession.create(bytes.vad, options)
  const probs = [...(await sessions.vad.run(vadFeeds(vadInputs(3, 1)))).output!.data as Float32Array]
  assert.ok(Math.min(...probs) < Math.max(...probs), `the rows of vadInputs(3, 1) give different probabilities: ${probs.join(', ')}`)
  threshold = (Math.min(...probs) + Math.max(...probs)) / 2
  Object.assign(bytes, { gate: gateModel(threshold), two: scaleModel(2), three: scaleModel(3), energy: energyModel(), mul: mulModel(), cast: castModel() })
  for (const name of ['gate', 'two', 'three', 'energy', 'mul', 'cast']) sessions[name] = await ort.InferenceSession.create(bytes[name]!, options)
  for (const [name, b] of Object.entries(bytes)) ids[name] = await addModel(name, b)
})
after(async () => { await Promise.all(Object.values(sessions).map(async s => { await s.release() })) })

async function addModel (name: string, data: Uint8Array): Promise<string> {
  const target = `/v1/models?name=${name}.onnx`
  const res = await fetch(rpcUrl(d) + target, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'astrad-operator': await operatorAuth(cluster, d, 'POST', target, data) },
    body: data,
    signal: AbortSignal.timeout(30_000)
  })
  const text = await res.text()
  assert.equal(res.status, 201, `adding model ${name}: ${text}`)
  return (JSON.parse(text) as { id: string }).id
}

function vadFeeds (inputs: ReturnType<typeof vadInputs>): Feeds {
  const [input, state] = inputs
  return {
    input: new ort.Tensor('float32', Float32Array.from(input!.data), input!.shape),
    state: new ort.Tensor('float32', Float32Array.from(state!.data), state!.shape),
    sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), [])
  }
}

/** Runs model `name` here; outputs as plain number arrays. */
async function direct (name: string, feeds: Feeds): Promise<Record<string, number[]>> {
  const out = await sessions[name]!.run(feeds)
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, [...t.data as Float32Array]]))
}

const f32 = (data: number[], shape: number[]): ort.Tensor => new ort.Tensor('float32', Float32Array.from(data), shape)

async function deploy (spec: unknown): Promise<Answer> {
  return await operatorFetch(cluster, d, 'POST', '/v1/apps', spec)
}

async function mustDeploy (spec: { name: string, [key: string]: unknown }): Promise<any> {
  const r = await deploy(spec)
  assert.ok(r.status === 201 || r.status === 200, `deploy ${spec.name}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

async function remove (name: string): Promise<Answer> {
  return await operatorFetch(cluster, d, 'DELETE', `/v1/apps/${name}`)
}

async function appList (): Promise<{ apps: any[], pipelines: any[] }> {
  const r = await operatorFetch(cluster, d, 'GET', '/v1/apps', undefined, { sign: false })
  assert.equal(r.status, 200, `GET /v1/apps: ${JSON.stringify(r.body)}`)
  return r.body
}

/** Waits until `app ls` says the pipeline is ready; fails with the last status it listed. */
async function waitReady (name: string): Promise<any> {
  return await waitFor(`pipeline ${name} ready`, async () => {
    const p = (await appList()).pipelines?.find(x => x.name === name)
    if (p?.status?.ready !== true) throw new Error(`app ls lists ${name} as ${JSON.stringify(p ?? null)}`)
    const r = await fetch(`${rpcUrl(d)}/v2/models/${name}/ready`)
    if (r.status !== 200) throw new Error(`app ls says ready, GET /v2/models/${name}/ready answers ${r.status}`)
    return p
  }, 60_000)
}

/** Removes a pipeline and waits until its stage apps and their replicas are gone. */
async function removePipeline (name: string): Promise<void> {
  const r = await remove(name)
  assert.equal(r.status, 200, `app rm ${name}: ${JSON.stringify(r.body)}`)
  await waitFor(`the stage apps and replicas of ${name} gone`, async () => {
    const ls = await appList()
    const left = ls.apps.filter(a => a.spec.name.startsWith(`${name}.`)).map(a => a.spec.name)
    const replicas = (d.ledger?.all() ?? []).filter(x => x.app.startsWith(`${name}.`)).map(x => `${x.app}:${x.state}`)
    const listed = (ls.pipelines ?? []).some(p => p.name === name)
    if (left.length > 0 || replicas.length > 0 || listed) throw new Error(`pipeline listed: ${String(listed)}; stage apps left: ${left.join(', ')}; replicas left: ${replicas.join(', ')}`)
    return true
  })
}

interface Inferred { status: number, json: any, text: string }

async function infer (model: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<Inferred> {
  const res = await fetch(`${rpcUrl(d)}/v2/models/${model}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs)
  })
  const text = await res.text()
  let json: any
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.status, json, text }
}

async function mustInfer (model: string, body: unknown, what: string): Promise<Record<string, { datatype: string, shape: number[], data: number[] }>> {
  const r = await infer(model, body)
  assert.equal(r.status, 200, `${what}: POST /v2/models/${model}/infer answered ${r.status}: ${r.text.slice(0, 500)}`)
  return Object.fromEntries((r.json.outputs as any[]).map(o => [o.name, o]))
}

/** One stage of `replicas` replicas of model `role` with one thread on one core. */
const stage = (role: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ model: ids[role], replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1, ...extra })

const vadStep = { name: 'vad', stage: 'vad', inputs: { input: '$request.input', state: '$request.state', sr: '$request.sr' } }

/** The sequence pipeline, kept deployed until the removal test (made once the model ids are known). */
const seqSpec = (): { name: string, [key: string]: unknown } => ({
  name: 'seq',
  stages: { vad: stage('vad', { expose: true }), gate: stage('gate') },
  steps: [vadStep, { name: 'gate', stage: 'gate', inputs: { x: 'vad.output' } }],
  outputs: { speech: 'gate.y', prob: 'vad.output' }
})
/** Set once the sequence test deployed `seq`: the tests using it fail at once without it. */
let seqDeployed = false
async function seqReady (): Promise<void> {
  assert.ok(seqDeployed, 'pipeline seq was not deployed (see the sequence test)')
  await waitReady('seq')
}

test('sequence: VAD then a gate on its output answer exactly what onnxruntime gives run in sequence', async () => {
  const dep = await mustDeploy(seqSpec())
  seqDeployed = true
  assert.equal(dep.change, 'created', JSON.stringify(dep))
  assert.deepEqual(dep.stages, { vad: 'created', gate: 'created' })
  assert.equal(dep.pipeline.spec.name, 'seq')
  assert.deepEqual(Object.keys(dep.pipeline.stages).sort(), ['gate', 'vad'])
  assert.equal(dep.pipeline.stages.vad.generation, 1)
  const listed = await waitReady('seq')
  assert.deepEqual(Object.keys(listed.status.stages).sort(), ['gate', 'vad'])
  for (const [s, st] of Object.entries<any>(listed.status.stages)) {
    assert.deepEqual({ app: st.app, desired: st.desired, placed: st.placed, ready: st.ready }, { app: `seq.${s}`, desired: 1, placed: 1, ready: 1 }, `stage ${s}`)
  }
  // Each stage is an ordinary app named {pipeline}.{stage}, marked as the pipeline's.
  const apps = (await appList()).apps.filter(a => a.spec.name.startsWith('seq.'))
  assert.deepEqual(apps.map(a => [a.spec.name, a.pipeline]), [['seq.gate', { name: 'seq', stage: 'gate' }], ['seq.vad', { name: 'seq', stage: 'vad' }]])
  // `status --json` lists the pipeline too.
  // `status --json` lists it with its readiness and stages (docs/pipelines.md: name, generation, ready, stages).
  const status = await operatorFetch(cluster, d, 'GET', '/v1/status', undefined, { sign: false })
  const inStatus = status.body.pipelines?.find((p: any) => p.name === 'seq')
  assert.equal(inStatus?.ready, true, `GET /v1/status pipelines: ${JSON.stringify(status.body.pipelines)}`)
  assert.deepEqual(Object.keys(inStatus.stages).sort(), ['gate', 'vad'], `GET /v1/status pipelines: ${JSON.stringify(status.body.pipelines)}`)
  assert.equal(inStatus.stages.vad.app, 'seq.vad')

  for (const [batch, seed] of [[3, 1], [1, 0], [2, 7]] as const) {
    const inputs = vadInputs(batch, seed)
    const vad = await direct('vad', vadFeeds(inputs))
    const gate = await direct('gate', { x: f32(vad.output!, [batch, 1]) })
    const out = await mustInfer('seq', { inputs }, `batch ${batch} seed ${seed}`)
    assert.deepEqual(Object.keys(out).sort(), ['prob', 'speech'])
    assert.deepEqual(out.prob, { name: 'prob', datatype: 'FP32', shape: [batch, 1], data: vad.output }, `prob, batch ${batch} seed ${seed}`)
    assert.deepEqual(out.speech, { name: 'speech', datatype: 'FP32', shape: [batch, 1], data: gate.y }, `speech, batch ${batch} seed ${seed}`)
  }
  const whole = await infer('seq', { inputs: vadInputs(1, 0) })
  assert.equal(whole.json?.model_name, 'seq', whole.text.slice(0, 300))
  assert.equal(whole.json?.model_version, String(dep.pipeline.generation), 'the KServe version is the pipeline\'s generation')
  // The gate's threshold lies between the rows' probabilities: the answer has both 0 and 1.
  const mixed = await mustInfer('seq', { inputs: vadInputs(3, 1) }, 'mixed rows')
  assert.deepEqual([...new Set(mixed.speech!.data)].sort(), [0, 1], `speech ${JSON.stringify(mixed.speech!.data)} with threshold ${threshold}`)
})

test('metadata, readiness, the client\'s output list, the binary extension, hidden and exposed stages, a failing stage', async () => {
  await seqReady()
  // Inputs and outputs as onnxruntime declares them (symbolic dimensions are -1).
  const spec = (m: ort.InferenceSession.ValueMetadata, name = m.name): { name: string, datatype: string, shape: number[] } => {
    assert.ok(m.isTensor)
    return { name, datatype: m.type === 'int64' ? 'INT64' : 'FP32', shape: m.shape.map(x => typeof x === 'number' ? x : -1) }
  }
  const meta = await waitFor('pipeline seq metadata with inputs and outputs', async () => {
    const r = await fetch(`${rpcUrl(d)}/v2/models/seq`)
    const body = await r.json() as any
    if (r.status !== 200 || body.inputs == null || body.outputs == null) throw new Error(`GET /v2/models/seq: ${r.status} ${JSON.stringify(body)}`)
    return body
  })
  assert.equal(meta.name, 'seq')
  assert.equal(meta.platform, 'astrad_pipeline')
  assert.ok(Array.isArray(meta.versions) && meta.versions.length > 0, `versions: ${JSON.stringify(meta.versions)}`)
  const byName = (list: any[]): any[] => [...list].sort((a, b) => a.name.localeCompare(b.name))
  assert.deepEqual(byName(meta.inputs), byName(sessions.vad!.inputMetadata.map(m => spec(m))), 'pipeline inputs: the VAD stage\'s $request inputs')
  const vadOut = sessions.vad!.outputMetadata.find(m => m.name === 'output')!
  const gateOut = sessions.gate!.outputMetadata.find(m => m.name === 'y')!
  assert.deepEqual(byName(meta.outputs), byName([spec(vadOut, 'prob'), spec(gateOut, 'speech')]), 'pipeline outputs: gate.y as speech, vad.output as prob')

  assert.equal((await fetch(`${rpcUrl(d)}/v2/models/seq/ready`)).status, 200)
  assert.equal((await fetch(`${rpcUrl(d)}/v2/models/nosuch/ready`)).status, 404)

  const inputs = vadInputs(2, 3)
  const vad = await direct('vad', vadFeeds(inputs))
  const gate = await direct('gate', { x: f32(vad.output!, [2, 1]) })
  // The client's `outputs` list picks among the pipeline's outputs.
  const only = await mustInfer('seq', { inputs, outputs: [{ name: 'prob' }] }, 'outputs [prob]')
  assert.deepEqual(Object.keys(only), ['prob'])
  assert.deepEqual(only.prob!.data, vad.output)

  // Asking for a stage's own output name, or for none the pipeline has: 400 naming it.
  for (const name of ['output', 'nope']) {
    const r = await infer('seq', { inputs, outputs: [{ name }] })
    assert.equal(r.status, 400, `outputs [${name}]: ${r.text}`)
    assert.match(r.json?.error ?? '', new RegExp(`'${name}'`))
  }
  // A request without an input a step reads from $request: 400 naming it.
  const noSr = await infer('seq', { inputs: inputs.slice(0, 2) })
  assert.equal(noSr.status, 400, `no sr: ${noSr.text}`)
  assert.match(noSr.json?.error ?? '', /'sr'/)

  // The binary extension: inputs and outputs as raw little-endian bytes.
  const parts = [Buffer.from(Float32Array.from(inputs[0]!.data).buffer), Buffer.from(Float32Array.from(inputs[1]!.data).buffer), Buffer.from(BigInt64Array.from([16000n]).buffer)]
  const header = Buffer.from(JSON.stringify({
    inputs: inputs.map((t, i) => ({ name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: parts[i]!.length } })),
    outputs: [{ name: 'speech', parameters: { binary_data: true } }, { name: 'prob', parameters: { binary_data: true } }]
  }))
  const bin = await fetch(`${rpcUrl(d)}/v2/models/seq/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
    body: Buffer.concat([header, ...parts]),
    signal: AbortSignal.timeout(30_000)
  })
  const binBody = new Uint8Array(await bin.arrayBuffer())
  assert.equal(bin.status, 200, `binary request: ${Buffer.from(binBody).toString().slice(0, 500)}`)
  const decoded = decodeInferResponse(binBody, bin.headers.get('inference-header-content-length') ?? undefined)
  const outs = Object.fromEntries(decoded.outputs.map(o => [o.name, o]))
  assert.deepEqual(Object.keys(outs).sort(), ['prob', 'speech'])
  assert.deepEqual(outs.prob!.values, vad.output, 'binary prob')
  assert.deepEqual(outs.speech!.values, gate.y, 'binary speech')
  assert.deepEqual(outs.speech!.shape, [2, 1])

  // A hidden stage is not served by its app name; an exposed one is.
  const hidden = await infer('seq.gate', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }] })
  assert.equal(hidden.status, 404, `hidden stage seq.gate: ${hidden.text}`)
  const exposed = await mustInfer('seq.vad', { inputs }, 'exposed stage seq.vad')
  assert.deepEqual(exposed.output!.data, vad.output)

  // A request the VAD model fails on (10 samples: onnxruntime's Pad refuses it): the pipeline
  // answers with the stage's own status, and says which step and stage failed.
  const bad = [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: new Array(10).fill(0.1) }, ...vadInputs(1, 0).slice(1)]
  const stageAnswer = await infer('seq.vad', { inputs: bad })
  assert.ok(stageAnswer.status >= 400, `the VAD stage itself refuses 10 samples: ${stageAnswer.status} ${stageAnswer.text}`)
  const failed = await infer('seq', { inputs: bad })
  assert.equal(failed.status, stageAnswer.status, `pipeline answer ${failed.text}; the stage's own: ${stageAnswer.text}`)
  assert.deepEqual(Object.keys(failed.json ?? {}), ['error'], failed.text)
  assert.match(failed.json.error, /^pipeline 'seq' step 'vad' \(stage 'vad'\): /)
  // And it serves on.
  await mustInfer('seq', { inputs }, 'after a failed request')

  // /metrics: on one daemon both stages are on the same node, so the sequence runs fused (one
  // chained call, timed as step "fused"); the failed step counted; the pipeline as a model.
  const metrics = await (await fetch(`${rpcUrl(d)}/metrics`)).text()
  const sample = (re: RegExp): number => Number(metrics.split('\n').find(l => re.test(l))?.split(' ').pop() ?? NaN)
  assert.ok(sample(/^astrad_pipeline_fused_calls_total\{pipeline="seq",result="ok"\} /) >= 1, 'seq ran as a chained call')
  assert.ok(sample(/^astrad_pipeline_step_duration_seconds_count\{pipeline="seq",step="fused"\} /) >= 1, 'the chained calls timed')
  assert.ok(sample(/^astrad_pipeline_step_failures_total\{pipeline="seq",step="vad",code="[^"]+"\} /) >= 1, 'the failed vad step counted')
  assert.ok(sample(/^astrad_inference_request_success\{model="seq",version="1"\} /) >= 1, 'successes of pipeline seq, version 1')
})

test('ensemble: VAD and energy read the same request in parallel; without outputs both sinks answer; stage-by-stage failures and deadlines name the step; a last step may read both', async () => {
  const spec = {
    name: 'ens',
    stages: { vad: stage('vad'), energy: stage('energy') },
    steps: [vadStep, { name: 'energy', stage: 'energy', inputs: { input: '$request.input' } }]
  }
  const dep = await mustDeploy(spec)
  assert.deepEqual(dep.stages, { vad: 'created', energy: 'created' })
  await waitReady('ens')
  const inputs = vadInputs(2, 5)
  const vad = await direct('vad', vadFeeds(inputs))
  const energy = await direct('energy', { input: f32(inputs[0]!.data, [2, 512]) })
  const out = await mustInfer('ens', { inputs }, 'ensemble of two sinks')
  assert.deepEqual(Object.keys(out).sort(), ['energy.energy', 'vad.output', 'vad.stateN'])
  assert.deepEqual(out['vad.output']!.data, vad.output)
  assert.deepEqual(out['vad.stateN']!.data, vad.stateN)
  assert.deepEqual(out['energy.energy']!.data, energy.energy)
  assert.deepEqual(out['energy.energy']!.shape, [2, 1])
  // Stage by stage (an ensemble is never fused): a failing stage and a deadline name the step.
  const bad = [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: new Array(10).fill(0.1) }, ...vadInputs(1, 0).slice(1)]
  const failed = await infer('ens', { inputs: bad })
  assert.ok(failed.status >= 400, `10 samples: ${failed.text}`)
  assert.match(failed.json?.error ?? '', /^pipeline 'ens' step 'vad' \(stage 'vad'\): /, failed.text)
  const late = await infer('ens', { inputs }, { 'astrad-timeout-ms': '1' }, 15_000)
  assert.equal(late.status, 504, `astrad-timeout-ms 1: ${late.text}`)
  // The step's deadline error, or the endpoint's own when its timer fires first (1 ms: a race).
  assert.match(late.json?.error ?? '', /^pipeline 'ens' step '(vad|energy)' \(stage '(vad|energy)'\): |deadline/, late.text)

  // Concurrent requests each get their own numbers (no tensor of one request in another's answer).
  const seeds = Array.from({ length: 12 }, (_, i) => 100 + i)
  const answers = await Promise.all(seeds.map(async seed => await mustInfer('ens', { inputs: vadInputs(1, seed) }, `concurrent request seed ${seed}`)))
  for (const [i, seed] of seeds.entries()) {
    const own = vadInputs(1, seed)
    assert.deepEqual(answers[i]!['vad.output']!.data, (await direct('vad', vadFeeds(own))).output, `vad.output of concurrent request seed ${seed}`)
    assert.deepEqual(answers[i]!['energy.energy']!.data, (await direct('energy', { input: f32(own[0]!.data, [1, 512]) })).energy, `energy of concurrent request seed ${seed}`)
  }

  // The same pipeline with a stage added and a last step reading both branches: the old stages
  // are unchanged; the one sink's outputs answer under their own names.
  const joined = {
    ...spec,
    stages: { ...spec.stages, mul: stage('mul') },
    steps: [...spec.steps, { name: 'both', stage: 'mul', inputs: { a: 'vad.output', b: 'energy.energy' } }]
  }
  const redep = await mustDeploy(joined)
  assert.deepEqual(redep.stages, { vad: 'unchanged', energy: 'unchanged', mul: 'created' }, JSON.stringify(redep))
  assert.equal(redep.pipeline.stages.vad.generation, dep.pipeline.stages.vad.generation)
  assert.equal(redep.pipeline.stages.vad.changedAt, dep.pipeline.stages.vad.changedAt, 'an unchanged stage keeps its changedAt')
  await waitReady('ens')
  const mul = await direct('mul', { a: f32(vad.output!, [2, 1]), b: f32(energy.energy!, [2, 1]) })
  const both = await mustInfer('ens', { inputs }, 'ensemble joined by a last step')
  assert.deepEqual(Object.keys(both), ['y'])
  assert.deepEqual(both.y!.data, mul.y)

  // Back to the first spec: the stage left out goes (its app and replica), the others stay.
  const back = await mustDeploy(spec)
  assert.deepEqual(back.stages, { vad: 'unchanged', energy: 'unchanged' }, JSON.stringify(back))
  await waitFor('stage app ens.mul and its replica gone', async () => {
    const left = (await appList()).apps.filter(a => a.spec.name === 'ens.mul').length + (d.ledger?.all() ?? []).filter(r => r.app === 'ens.mul').length
    if (left > 0) throw new Error(`ens.mul: ${left} app entries and replicas left`)
    return true
  })
  await waitReady('ens')
  const again = await mustInfer('ens', { inputs }, 'ensemble after the last step was removed')
  assert.deepEqual(Object.keys(again).sort(), ['energy.energy', 'vad.output', 'vad.stateN'])
  assert.deepEqual(again['vad.output']!.data, vad.output)
  await removePipeline('ens')
})

const x = (v: number[]): { inputs: unknown[] } => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [v.length, 1], data: v }] })

test('switch by a request parameter: the first case that holds, 400 naming the step when none does, then the default', async () => {
  const cases = [
    { when: { parameter: 'lang', op: '==', value: 'en' }, stage: 'two' },
    { when: { parameter: 'n', op: '>', value: 5 }, stage: 'three' }
  ]
  const spec = {
    name: 'sw',
    stages: { two: stage('two'), three: stage('three') },
    steps: [{ name: 'pick', switch: cases, inputs: { x: '$request.x' } }]
  }
  await mustDeploy(spec)
  await waitReady('sw')
  const v = [0.25, -1.5]
  const two = (await direct('two', { x: f32(v, [2, 1]) })).y
  const three = (await direct('three', { x: f32(v, [2, 1]) })).y
  const ask = async (parameters: Record<string, unknown> | undefined, what: string): Promise<number[]> =>
    (await mustInfer('sw', { ...x(v), ...(parameters != null ? { parameters } : {}) }, what)).y!.data
  assert.deepEqual(await ask({ lang: 'en' }, 'lang en'), two)
  assert.deepEqual(await ask({ lang: 'en', n: 9 }, 'lang en and n 9: the first case'), two)
  assert.deepEqual(await ask({ lang: 'fr', n: 9 }, 'n 9'), three)
  const none = await infer('sw', { ...x(v), parameters: { lang: 'fr', n: 1 } })
  assert.equal(none.status, 400, `no case holds and no default: ${none.text}`)
  assert.match(none.json?.error ?? '', /pick/, 'the error names the switch step')
  assert.equal((await infer('sw', x(v))).status, 400, 'no parameters at all, no default')

  // With a default last, the same requests take it.
  const redep = await mustDeploy({ ...spec, steps: [{ name: 'pick', switch: [...cases, { stage: 'three' }], inputs: { x: '$request.x' } }] })
  assert.deepEqual(redep.stages, { two: 'unchanged', three: 'unchanged' }, JSON.stringify(redep))
  await waitFor('the new steps in force', async () => (await infer('sw', x(v))).status === 200)
  assert.equal((await infer('sw', x(v))).json?.model_version, '2', 'rewiring bumps the pipeline\'s version')
  assert.deepEqual(await ask(undefined, 'no parameters: default'), three)
  assert.deepEqual(await ask({ lang: 'de' }, 'lang de: default'), three)
  assert.deepEqual(await ask({ lang: 'en' }, 'lang en still'), two)
  await removePipeline('sw')
})

test('switch by a tensor condition: VAD output above the threshold goes to one stage, below to the default; the reducers over a batch', async () => {
  const t = 0.01
  const spec = {
    name: 'swt',
    stages: { vad: stage('vad'), two: stage('two'), three: stage('three') },
    steps: [vadStep, { name: 'route', switch: [{ when: { tensor: 'vad.output', op: '>', value: t }, stage: 'two' }, { stage: 'three' }], inputs: { x: 'vad.output' } }]
  }
  await mustDeploy(spec)
  await waitReady('swt')
  const loud = vadInputs(1, 2)
  const quiet = [{ ...loud[0]!, data: new Array(512).fill(0) }, ...loud.slice(1)]
  for (const [inputs, expected, what] of [[loud, 'two', 'loud'], [quiet, 'three', 'quiet']] as const) {
    const prob = (await direct('vad', vadFeeds(inputs))).output!
    assert.equal(prob[0]! > t, expected === 'two', `${what}: VAD probability ${prob[0]} vs ${t}`)
    const y = (await direct(expected, { x: f32(prob, [1, 1]) })).y
    const out = await mustInfer('swt', { inputs }, what)
    assert.deepEqual(Object.keys(out), ['y'])
    assert.deepEqual(out.y!.data, y, `${what} goes to stage ${expected}`)
  }

  // Reducers over a batch whose rows straddle the threshold: any/max hold, all/min do not, mean
  // as the rows' mean says. Only the steps change: the pipeline's version says when it is in force.
  const rows = vadInputs(3, 1)
  const probs = (await direct('vad', vadFeeds(rows))).output!
  const mean = probs.reduce((a, b) => a + b, 0) / probs.length
  assert.ok(Math.min(...probs) < threshold && threshold < Math.max(...probs), `rows ${probs.join(', ')} straddle ${threshold}`)
  const expected: Record<string, boolean> = { any: true, all: false, max: true, min: false, mean: mean > threshold }
  for (const [reduce, holds] of Object.entries(expected)) {
    const dep = await mustDeploy({ ...spec, steps: [vadStep, { name: 'route', switch: [{ when: { tensor: 'vad.output', op: '>', value: threshold, reduce }, stage: 'two' }, { stage: 'three' }], inputs: { x: 'vad.output' } }] })
    const version = String(dep.pipeline.generation)
    const out = await waitFor(`reduce ${reduce} in force (version ${version})`, async () => {
      const r = await infer('swt', { inputs: rows })
      if (r.status !== 200 || r.json.model_version !== version) throw new Error(`${r.status} version ${String(r.json?.model_version)}: ${r.text.slice(0, 200)}`)
      return r.json.outputs[0]
    })
    const y = (await direct(holds ? 'two' : 'three', { x: f32(probs, [3, 1]) })).y
    assert.deepEqual(out.data, y, `reduce ${reduce} over ${probs.join(', ')} (mean ${mean}) > ${threshold} should ${holds ? '' : 'not '}hold`)
  }
  await removePipeline('swt')
})

test('split 3:1: of 40 requests exactly 30 go to one stage and 10 to the other', async () => {
  await mustDeploy({
    name: 'canary',
    stages: { two: stage('two'), three: stage('three') },
    // inputs left out: the first step reads "$request" (x passes under its own name)
    steps: [{ name: 'divide', split: [{ stage: 'two', weight: 3 }, { stage: 'three', weight: 1 }] }]
  })
  await waitReady('canary')
  const seen = new Map<number, number>()
  for (let i = 0; i < 40; i++) {
    const y = (await mustInfer('canary', x([1]), `request ${i} (so far ${JSON.stringify([...seen])})`)).y!.data[0]!
    seen.set(y, (seen.get(y) ?? 0) + 1)
  }
  assert.deepEqual([...seen].sort((a, b) => a[0] - b[0]), [[2, 30], [3, 10]], 'answers by value (2: stage two, 3: stage three)')

  // Stage three scaled to 0: its case has no ready replica and is skipped, no request fails.
  const scaled = await mustDeploy({
    name: 'canary',
    stages: { two: stage('two'), three: stage('three', { replicas: 0 }) },
    steps: [{ name: 'divide', split: [{ stage: 'two', weight: 3 }, { stage: 'three', weight: 1 }] }]
  })
  assert.deepEqual(scaled.stages, { two: 'unchanged', three: 'scaled' }, JSON.stringify(scaled))
  await waitFor('no replica of canary.three left', async () => {
    const left = (d.ledger?.all() ?? []).filter(r => r.app === 'canary.three').map(r => r.state)
    if (left.length > 0) throw new Error(`canary.three replicas: ${left.join(', ')}`)
    return true
  })
  assert.equal((await fetch(`${rpcUrl(d)}/v2/models/canary/ready`)).status, 200, 'ready: one weighted case has a ready replica')
  const only: number[] = []
  for (let i = 0; i < 8; i++) only.push((await mustInfer('canary', x([1]), `request ${i} with stage three at 0 replicas`)).y!.data[0]!)
  assert.deepEqual(only, new Array(8).fill(2), 'every request went to stage two')
  await removePipeline('canary')
})

test('bad specs are refused with 400 naming the stage or step and the field; nothing is deployed', async () => {
  await seqReady() // its stages' signatures are known: the wiring is checked at deploy
  // A plain app whose model takes INT64 (and whose name a pipeline may not take).
  const plain = await deploy({ name: 'plain', model: ids.cast, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1 })
  assert.equal(plain.status, 201, JSON.stringify(plain.body))
  await waitFor('the plain app ready (its signature known)', async () => {
    const a = (await appList()).apps.find(x => x.spec.name === 'plain')
    if (a?.status?.ready !== 1) throw new Error(`app ls: ${JSON.stringify(a)}`)
    return true
  })
  // Every spec below is valid but for the one thing its case names (each stage is used by a step).
  const base = { stages: { two: stage('two'), three: stage('three') } }
  const one = { stages: { two: stage('two') } }
  const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`s${i}`, stage('two')]))
  const cases: Array<[string, Record<string, unknown>, RegExp[]]> = [
    ['a step calls an unknown stage', { ...one, steps: [{ name: 'first', stage: 'two' }, { name: 'second', stage: 'nosuch' }] }, [/step 'second'/, /stage/, /nosuch/]],
    ['a step reads a later step (a cycle)', { ...base, steps: [{ name: 'early', stage: 'two', inputs: { x: 'late.y' } }, { name: 'late', stage: 'three', inputs: { x: 'early.y' } }] }, [/step 'early'/, /inputs\.x/, /late/]],
    ['a step reads an unknown step', { ...one, steps: [{ name: 'first', stage: 'two', inputs: { x: 'ghost.y' } }] }, [/step 'first'/, /inputs\.x/, /ghost/]],
    ['two steps share a name', { ...base, steps: [{ name: 'twice', stage: 'two' }, { name: 'twice', stage: 'three' }] }, [/twice/, /name/]],
    ['a switch default not last', { ...base, steps: [{ name: 'pick', switch: [{ stage: 'two' }, { when: { parameter: 'a', op: '==', value: 1 }, stage: 'three' }] }] }, [/step 'pick'/, /switch/, /default|when/]],
    ['split weights all 0', { ...base, steps: [{ name: 'divide', split: [{ stage: 'two', weight: 0 }, { stage: 'three', weight: 0 }] }] }, [/step 'divide'/, /weight/]],
    ['17 stages', { stages: many, steps: Object.keys(many).map(st => ({ name: st, stage: st })) }, [/stages/, /16/]],
    ['a stage name with a dot', { stages: { 'a.b': stage('two') }, steps: [{ name: 'first', stage: 'a.b' }] }, [/a\.b/]],
    ['a stage with a model not in the cluster', { stages: { ghost: { ...stage('two'), model: 'f'.repeat(64) } }, steps: [{ name: 'first', stage: 'ghost' }] }, [/ghost/, /model/]],
    ['a pipeline named like an existing app', { name: 'plain', ...one, steps: [{ name: 'first', stage: 'two' }] }, [/plain/, /name/]],
    ['a mapping to an input the model does not have', { stages: { vad: stage('vad'), gate: stage('gate') }, steps: [vadStep, { name: 'gate', stage: 'gate', inputs: { x: 'vad.output', nope: 'vad.output' } }] }, [/step 'gate'/, /inputs\.nope/]],
    ['a reference to an output the model does not have', { stages: { vad: stage('vad'), gate: stage('gate') }, steps: [vadStep, { name: 'gate', stage: 'gate', inputs: { x: 'vad.nothing' } }] }, [/step 'gate'/, /inputs\.x/, /nothing/]],
    ['FP32 into an INT64 input', { stages: { vad: stage('vad'), cast: stage('cast') }, steps: [vadStep, { name: 'tocast', stage: 'cast', inputs: { x: 'vad.output' } }] }, [/step 'tocast'/, /inputs\.x/, /INT64/]]
  ]
  for (const [what, spec, patterns] of cases) {
    const r = await deploy({ name: 'bad', ...spec })
    if (process.env.PIPELINE_TEST_SHOW === '1') console.log(what, '→', r.status, r.body?.error)
    assert.equal(r.status, 400, `${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
    for (const p of patterns) assert.match(r.body?.error ?? '', p, `${what}: the error names ${String(p)}`)
  }
  // A plain app may not take a pipeline stage's name.
  const clash = await deploy({ name: 'seq.vad', model: ids.two, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1 })
  assert.equal(clash.status, 400, `plain app seq.vad: ${JSON.stringify(clash.body)}`)
  assert.match(clash.body?.error ?? '', /seq/)

  const ls = await appList()
  assert.deepEqual(ls.apps.map(a => a.spec.name).filter(n => !n.startsWith('seq.')), ['plain'], 'no app from a refused spec')
  assert.deepEqual(ls.pipelines.map(p => p.name), ['seq'], 'no pipeline from a refused spec')
  assert.equal(ls.apps.find(a => a.spec.name === 'seq.vad')?.spec.model, ids.vad, 'seq.vad untouched')
  const rm = await remove('plain')
  assert.equal(rm.status, 200, JSON.stringify(rm.body))
})

test('wiring checked once the replicas load: a model not loaded anywhere yet is deployed, then the pipeline is not ready and answers 500 naming the step and field', async () => {
  // A model no replica has loaded: its signature is unknown at deploy time.
  const five = await addModel('five', scaleModel(5))
  const dep = await deploy({ name: 'late', stages: { five: { ...stage('two'), model: five } }, steps: [{ name: 'first', stage: 'five', inputs: { x: '$request.x', nope: '$request.x' } }] })
  assert.equal(dep.status, 201, `deploy with the signature unknown: ${JSON.stringify(dep.body)}`)
  const listed = await waitFor('the stage loaded and the wiring problem reported', async () => {
    const p = (await appList()).pipelines.find(x => x.name === 'late')
    const st = p?.status
    if (st?.stages?.five?.ready !== 1 || st.lastError == null) throw new Error(`app ls lists late as ${JSON.stringify(p ?? null)}`)
    return p
  })
  assert.equal(listed.status.ready, false, JSON.stringify(listed.status))
  assert.match(listed.status.lastError, /first/, 'lastError names the step')
  assert.match(listed.status.lastError, /nope/, 'lastError names the field')
  assert.equal((await fetch(`${rpcUrl(d)}/v2/models/late/ready`)).status, 503)
  const r = await infer('late', x([1]))
  assert.equal(r.status, 500, r.text)
  assert.match(r.json?.error ?? '', /first/, 'the answer names the step')
  assert.match(r.json?.error ?? '', /nope/, 'the answer names the field')
  await removePipeline('late')
})

test('one name space: a pipeline may not take another pipeline\'s stage app name, nor give a stage the name of another pipeline', async () => {
  // docs/pipelines.md, "Removing and naming": a pipeline cannot take a name an app holds for one
  // of its stages. Either way round, one of the two would be shadowed on the KServe endpoint.
  await seqReady()
  const one = { stages: { two: stage('two') } }
  const made: string[] = []
  try {
    const asStage = await deploy({ name: 'seq.vad', ...one, steps: [{ name: 'first', stage: 'two' }] })
    if (asStage.status < 300) made.push('seq.vad')
    assert.equal(asStage.status, 400, `a pipeline named seq.vad (the stage app of seq's stage vad): ${JSON.stringify(asStage.body)}`)
    assert.match(asStage.body?.error ?? '', /seq\.vad/)

    const dotted = await deploy({ name: 'x.two', stages: { two: stage('two', { replicas: 0 }) }, steps: [{ name: 'first', stage: 'two' }] })
    assert.equal(dotted.status, 201, `pipeline x.two: ${JSON.stringify(dotted.body)}`)
    made.push('x.two')
    const owner = await deploy({ name: 'x', ...one, steps: [{ name: 'first', stage: 'two' }] })
    if (owner.status < 300) made.push('x')
    assert.equal(owner.status, 400, `a pipeline x whose stage two would run as app x.two, the name of pipeline x.two: ${JSON.stringify(owner.body)}`)
    assert.match(owner.body?.error ?? '', /x\.two/)
  } finally {
    // Whatever was wrongly accepted goes, so the tests after this one see only seq.
    for (const name of made.reverse()) await remove(name)
  }
})

test('rolling one stage of a fused sequence under load: no request fails; the other stage keeps its replica', async () => {
  await seqReady()
  const replicasOf = (app: string): string[] => (d.ledger?.all() ?? []).filter(r => r.app === app).map(r => `${r.replica} ${r.state}`).sort()
  const vadBefore = replicasOf('seq.vad')
  assert.equal(vadBefore.length, 1, `seq.vad replicas: ${vadBefore.join(', ')}`)
  const loads = new LoadSet()
  const refusals: string[] = []
  try {
    const l = loads.start(async (i, w, signal) => {
      const r = await fetch(`${rpcUrl(d)}/v2/models/seq/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: vadInputs(1, w * 1000 + i) }), signal })
      const text = await r.text()
      if (r.status !== 200 && refusals.length < 5) refusals.push(`${r.status} ${text.slice(0, 300)}`)
      return r.status
    }, { concurrency: 4, maxMs: 60_000 })
    await waitFor('load running', () => l.done() > 20)
    const base = seqSpec() as unknown as { stages: Record<string, unknown> }
    const dep = await mustDeploy({ ...seqSpec(), stages: { ...base.stages, gate: stage('gate', { maxQueue: 65 }) } })
    assert.deepEqual(dep.stages, { vad: 'unchanged', gate: 'rolled' }, JSON.stringify(dep))
    await waitFor('seq.gate rolled: generation 2 ready, no old replica', async () => {
      const a = (await appList()).apps.find(x => x.spec.name === 'seq.gate')
      if (!(a?.generation === 2 && a.status?.ready === 1 && a.status.old === 0)) throw new Error(`app ls: ${JSON.stringify(a)}; replicas ${replicasOf('seq.gate').join(', ')}`)
      return true
    })
    const at = l.done()
    await waitFor('load continues after the roll', () => l.done() > at + 20)
    const statuses = await l.stop()
    assert.deepEqual([...statuses.keys()], [200], `statuses during the roll: ${JSON.stringify([...statuses])}; first refusals: ${refusals.join(' | ')}`)
  } finally {
    await loads.stopAll()
  }
  assert.deepEqual(replicasOf('seq.vad'), vadBefore, 'the VAD stage\'s replica untouched')
  await waitReady('seq')
})

test('a deadline shorter than the pipeline takes: 504, no hang; the next request is served', async () => {
  await seqReady()
  const inputs = vadInputs(64, 4)
  const r = await infer('seq', { inputs }, { 'astrad-timeout-ms': '1' }, 15_000)
  assert.equal(r.status, 504, `astrad-timeout-ms 1: ${r.status} ${r.text.slice(0, 300)}`)
  // The step whose call the deadline cut, or the endpoint's own deadline when its timer fires first.
  assert.match(r.json?.error ?? '', /^pipeline 'seq' step 'vad' \(stage 'vad'\): |deadline/, r.text)
  await mustInfer('seq', { inputs: vadInputs(1, 0) }, 'after the deadline')
})

test('app rm: a stage app is refused; the pipeline goes with its stage apps and their replicas', async () => {
  await seqReady()
  const stageRm = await remove('seq.vad')
  assert.equal(stageRm.status, 400, `app rm seq.vad: ${JSON.stringify(stageRm.body)}`)
  assert.match(stageRm.body?.error ?? '', /seq/, 'the refusal names the pipeline')
  assert.ok((await appList()).apps.some(a => a.spec.name === 'seq.vad'), 'seq.vad still there')
  await removePipeline('seq')
  const gone = await infer('seq', { inputs: vadInputs(1, 0) })
  assert.equal(gone.status, 404, `a removed pipeline: ${gone.text}`)
  assert.equal((await fetch(`${rpcUrl(d)}/v2/models/seq/ready`)).status, 404)
  assert.equal((await remove('seq')).status, 404, 'removing it again')
})
