import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import ort from 'onnxruntime-node'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { operatorAuth, operatorFetch } from '../helpers/operator.ts'
import { VAD_MODEL, gateModel, vadInputs } from '../helpers/pipeline-models.ts'
import type { Daemon } from '../../src/daemon/index.ts'

/**
 * Fusion on real daemons: a scheduler (resource,scheduler) and two node daemons over libp2p. A
 * plain sequence (Silero VAD → gate) whose stages both have a replica on every node runs as one
 * chained call on `/astra/infer-chain/1.0.0` — and answers exactly what onnxruntime gives for the
 * two models in sequence; when one stage sits on a node the other does not, the stages are
 * routed one by one (same answers); a stage failing inside a chain is answered with its step and
 * stage named, as when routed alone.
 */

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })
async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

let sched: Daemon
const url = (): string => `http://${sched.rpcAddress!.host}:${sched.rpcAddress!.port}`
const metric = async (series: string): Promise<number> => {
  const text = await (await fetch(`${url()}/metrics`)).text()
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line == null ? 0 : Number(line.slice(series.length + 1))
}

async function reference (inputs: ReturnType<typeof vadInputs>, threshold: number): Promise<{ prob: number[], speech: number[] }> {
  const batch = inputs[0]!.shape[0]!
  const vad = await ort.InferenceSession.create(VAD_MODEL)
  const gate = await ort.InferenceSession.create(gateModel(threshold))
  try {
    const v = await vad.run({
      input: new ort.Tensor('float32', Float32Array.from(inputs[0]!.data), [batch, 512]),
      state: new ort.Tensor('float32', new Float32Array(2 * batch * 128), [2, batch, 128]),
      sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), [])
    })
    const g = await gate.run({ x: v.output! })
    return { prob: [...(v.output!.data as Float32Array)], speech: [...(g.y!.data as Float32Array)] }
  } finally {
    await vad.release()
    await gate.release()
  }
}

async function infer (name: string, inputs: unknown): Promise<{ status: number, json: any }> {
  const res = await fetch(`${url()}/v2/models/${name}/infer`, { method: 'POST', body: JSON.stringify({ inputs }), signal: AbortSignal.timeout(30_000) })
  const text = await res.text()
  let json: any = text
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, json }
}

const out = (json: any, name: string): number[] => json.outputs.find((o: any) => o.name === name)?.data

test('a sequence with both stages on every node runs as one chained call per request, with onnxruntime\'s numbers', async () => {
  sched = await cluster.start({ roles: ['resource', 'scheduler'] })
  const boot = cluster.addr(sched)
  const nodes = [await cluster.start({ roles: ['node'], bootstrap: [boot], cores: 4 }), await cluster.start({ roles: ['node'], bootstrap: [boot], cores: 4 })]
  const add = async (d: Daemon, bytes: Uint8Array, name: string): Promise<string> => (await d.transfer.add(once(bytes), bytes.length, name, undefined, await operatorAuth(cluster, d, 'POST', '/v1/models'))).id
  const vad = await add(nodes[0]!, fs.readFileSync(VAD_MODEL), 'vad')
  const gate = await add(nodes[0]!, gateModel(0.05), 'gate')
  const spec = (name: string, gateReplicas: number): unknown => ({
    name,
    stages: { vad: { model: vad, replicas: 2 }, gate: { model: gate, replicas: gateReplicas } },
    steps: [{ stage: 'vad' }, { stage: 'gate', inputs: { x: 'vad.output' } }],
    outputs: { speech: 'gate.y', prob: 'vad.output' }
  })
  const dep = await operatorFetch(cluster, sched, 'POST', '/v1/apps', spec('fused', 2))
  assert.equal(dep.status, 201, JSON.stringify(dep.body))
  await waitFor('both stages ready on both nodes', async () => {
    const st = sched.pipelines?.status().find(p => p.name === 'fused')
    return st?.ready === true && st.stages.vad?.ready === 2 && st.stages.gate?.ready === 2
  }, 60_000)

  for (let i = 0; i < 4; i++) {
    const inputs = vadInputs(3, i)
    const r = await infer('fused', inputs)
    assert.equal(r.status, 200, `request ${i}: ${JSON.stringify(r.json)}`)
    const ref = await reference(inputs, 0.05)
    assert.deepEqual(out(r.json, 'prob'), ref.prob, `prob of request ${i}`)
    assert.deepEqual(out(r.json, 'speech'), ref.speech, `speech of request ${i}`)
    assert.equal(r.json.model_version, '1')
  }
  assert.equal(await metric('astrad_pipeline_fused_calls_total{pipeline="fused",result="ok"}'), 4, 'every request ran as one chained call')
  assert.equal(await metric('astrad_pipeline_fused_calls_total{pipeline="fused",result="fallback"}'), 0)

  // A stage failing inside the chain: a state whose batch (1) is not the input's (2) makes the
  // VAD model fail in onnxruntime (the shapes each match the declared ones, so the edge lets it in).
  const bad = vadInputs(2, 0)
  bad[1] = { name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: new Array(256).fill(0) }
  const failed = await infer('fused', bad)
  assert.ok(failed.status === 500 || failed.status === 400, `status ${failed.status}: ${JSON.stringify(failed.json)}`)
  assert.match(failed.json.error, /^pipeline 'fused' step 'vad' \(stage 'vad'\): /)
  assert.equal(await metric('astrad_pipeline_fused_calls_total{pipeline="fused",result="failed"}'), 1)

  // One gate replica for two VAD replicas: no fusion (the other VAD node would idle), same answers.
  const dep2 = await operatorFetch(cluster, sched, 'POST', '/v1/apps', spec('uneven', 1))
  assert.equal(dep2.status, 201, JSON.stringify(dep2.body))
  await waitFor('uneven: two VAD replicas and one gate ready', async () => {
    const st = sched.pipelines?.status().find(p => p.name === 'uneven')
    return st?.ready === true && st.stages.vad?.ready === 2 && st.stages.gate?.ready === 1
  }, 60_000)
  const inputs = vadInputs(2, 7)
  const r = await infer('uneven', inputs)
  assert.equal(r.status, 200, JSON.stringify(r.json))
  const ref = await reference(inputs, 0.05)
  assert.deepEqual(out(r.json, 'speech'), ref.speech)
  assert.equal(await metric('astrad_pipeline_fused_calls_total{pipeline="uneven",result="ok"}'), 0, 'routed stage by stage')
  assert.ok(await metric('astrad_pipeline_step_duration_seconds_count{pipeline="uneven",step="gate"}') >= 1)
})
