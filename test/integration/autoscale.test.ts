import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import http from 'node:http'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { operatorAuth, operatorFetch } from '../helpers/operator.ts'
import { LoadSet } from '../helpers/load.ts'
import { postJson } from '../helpers/http.ts'
import { VAD_MODEL, vadInputs } from '../helpers/pipeline-models.ts'
import type { Daemon } from '../../src/daemon/index.ts'
import type { AppStatus } from '../../src/placement/index.ts'

/**
 * Autoscaling on a real daemon (libp2p host, ledger, onnxruntime replicas, KServe over HTTP):
 * closed-loop load on an autoscaled app raises its replicas above the floor, and when the load
 * stops they fall back to minReplicas with no failed request on the way; an app scaled to zero
 * serves its first request (held while a replica starts); a pipeline stage scales like an app.
 */

const cluster = new TestCluster()
const loads = new LoadSet()
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
after(async () => { await loads.stopAll(); agent.destroy(); await cluster.cleanup() })

async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

const post = async (d: Daemon, path: string, body: string, signal: AbortSignal): Promise<number> => (await postJson(agent, `${d.rpcAddress!.host}:${d.rpcAddress!.port}`, path, body, signal)).status

function statusOf (d: Daemon, app: string): AppStatus | undefined {
  return d.placer?.status().find(s => s.name === app)
}

const describe = (s: AppStatus | undefined): string => s == null ? 'no status' : `desired ${s.desired} placed ${s.placed} ready ${s.ready} (${s.autoscaling?.reason ?? 'no decision'}; load ${s.autoscaling?.load ?? '-'})`

let d: Daemon
let model: string

test('an autoscaled app rises with closed-loop load and falls back to minReplicas with no failed request', async () => {
  d = await cluster.start({ roles: ['node', 'resource', 'scheduler'], cores: 8 })
  const bytes = fs.readFileSync(VAD_MODEL)
  model = (await d.transfer.add(once(bytes), bytes.length, 'vad', undefined, await operatorAuth(cluster, d, 'POST', '/v1/models'))).id
  const spec = { name: 'auto', model, autoscaling: { minReplicas: 1, maxReplicas: 4, targetOngoingRequests: 1, upscaleDelayMs: 200, downscaleDelayMs: 1_500 } }
  const dep = await operatorFetch(cluster, d, 'POST', '/v1/apps', spec)
  assert.equal(dep.status, 201, `deploy: ${JSON.stringify(dep.body)}`)
  await waitFor('the floor of 1 replica ready', () => statusOf(d, 'auto')?.ready === 1, 60_000)

  // 6 clients, each with one request in flight at a time: ~6 in flight, target 1 each.
  const body = JSON.stringify({ inputs: vadInputs(16, 1) })
  const load = loads.start(async (_i, _w, signal) => await post(d, '/v2/models/auto/infer', body, signal), { concurrency: 6, maxMs: 120_000 })
  let seen: AppStatus | undefined
  await waitFor('replicas to rise above the floor, all ready', () => {
    seen = statusOf(d, 'auto')
    return seen != null && seen.desired >= 2 && seen.ready === seen.desired
  }, 60_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${describe(seen)}`) })
  // The last decision may be an up or (the machine's speed swings, the window is short) a step down.
  assert.match(seen!.autoscaling?.reason ?? '', /^load [\d.]+ \/ target 1 → \d+.*: (up after 200 ms|down after 1500 ms)/)
  assert.ok(seen!.desired <= 4, 'within maxReplicas')
  const rose = seen!.desired
  const during = await load.stop()

  await waitFor('replicas to fall back to minReplicas', () => {
    seen = statusOf(d, 'auto')
    return seen?.desired === 1 && seen.placed === 1
  }, 60_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${describe(seen)}`) })
  assert.match(seen!.autoscaling?.reason ?? '', /down after 1500 ms/)
  assert.deepEqual([...during.keys()], [200], `every request answered 200 while scaling (rose to ${rose}): ${JSON.stringify([...during])}`)

  // The load the decisions follow is exported.
  const metrics = await (await fetch(`http://${d.rpcAddress!.host}:${d.rpcAddress!.port}/metrics`)).text()
  assert.match(metrics, /astrad_autoscale_desired_replicas\{app="auto"\} 1/)
  assert.match(metrics, /astrad_autoscale_decisions_total\{app="auto",direction="up"\} [1-9]/)
  assert.match(metrics, /astrad_autoscale_decisions_total\{app="auto",direction="down"\} [1-9]/)
})

test('an app scaled to zero serves its first request, held while a replica starts, then goes back to zero', async () => {
  const spec = { name: 'zero', model, autoscaling: { minReplicas: 0, maxReplicas: 2, downscaleDelayMs: 1_000 } }
  const dep = await operatorFetch(cluster, d, 'POST', '/v1/apps', spec)
  assert.equal(dep.status, 201, `deploy: ${JSON.stringify(dep.body)}`)
  // Nothing placed while nothing asks.
  await new Promise(resolve => setTimeout(resolve, 1_500))
  assert.equal(statusOf(d, 'zero')?.placed, 0, describe(statusOf(d, 'zero')))
  const ready = await fetch(`http://${d.rpcAddress!.host}:${d.rpcAddress!.port}/v2/models/zero/ready`)
  assert.equal(ready.status, 503, 'not ready at zero')

  const res = await fetch(`http://${d.rpcAddress!.host}:${d.rpcAddress!.port}/v2/models/zero/infer`, { method: 'POST', body: JSON.stringify({ inputs: vadInputs(1, 2) }), signal: AbortSignal.timeout(60_000) })
  const text = await res.text()
  assert.equal(res.status, 200, `the first request after zero: ${text}`)
  assert.equal(JSON.parse(text).outputs.find((o: { name: string }) => o.name === 'output').shape.join(','), '1,1')
  assert.match(statusOf(d, 'zero')?.autoscaling?.reason ?? '', /scale from zero/)
  let seen: AppStatus | undefined
  await waitFor('back to zero once idle', () => {
    seen = statusOf(d, 'zero')
    return seen?.desired === 0 && seen.placed === 0
  }, 30_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${describe(seen)}`) })
  // A deadline shorter than a replica's start: 504, not a hang.
  const short = await fetch(`http://${d.rpcAddress!.host}:${d.rpcAddress!.port}/v2/models/zero/infer`, { method: 'POST', headers: { 'astrad-timeout-ms': '1' }, body: JSON.stringify({ inputs: vadInputs(1, 2) }) })
  assert.equal(short.status, 504, await short.text())
})

test('a pipeline stage autoscales like an app', async () => {
  const spec = {
    name: 'pipe',
    stages: { vad: { model, autoscaling: { minReplicas: 0, maxReplicas: 2, downscaleDelayMs: 60_000 } } },
    steps: [{ stage: 'vad' }]
  }
  const dep = await operatorFetch(cluster, d, 'POST', '/v1/apps', spec)
  assert.equal(dep.status, 201, `deploy: ${JSON.stringify(dep.body)}`)
  const res = await fetch(`http://${d.rpcAddress!.host}:${d.rpcAddress!.port}/v2/models/pipe/infer`, { method: 'POST', body: JSON.stringify({ inputs: vadInputs(1, 3) }), signal: AbortSignal.timeout(60_000) })
  assert.equal(res.status, 200, await res.text())
  assert.equal(statusOf(d, 'pipe.vad')?.desired, 1, describe(statusOf(d, 'pipe.vad')))
})
