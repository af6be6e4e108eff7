import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import { ProcessCluster, requireBinary, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { LoadSet } from '../helpers/load.ts'
import { postJson } from '../helpers/http.ts'
import { VAD_MODEL, vadInputs } from '../helpers/pipeline-models.ts'

/**
 * Autoscaling under churn with real `dist/astrad` processes: an autoscaled app scaling up under
 * load loses a node to kill -9 in the middle of it; the owner re-places what the node held,
 * reaches the count the load asks for on the nodes left, and every request is answered 200
 * (requests cut off on the killed node are retried on another, and the load — counted at the
 * router, not on the nodes — does not drop because a node died).
 */

const cluster = new ProcessCluster()
const loads = new LoadSet()
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
before(() => { requireBinary() })
after(async () => { await loads.stopAll(); agent.destroy(); await cluster.cleanup() })

const post = async (rpc: string, body: string, signal: AbortSignal): Promise<number> => (await postJson(agent, rpc, '/v2/models/auto/infer', body, signal)).status

test('a node killed during a scale-up: the app converges on the nodes left and no request fails', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  const nodes: DaemonProcess[] = []
  for (const name of ['n1', 'n2', 'n3']) nodes.push(await cluster.start(name, ['--role', 'node', '--bootstrap', boot, '--cores', '2']))
  const added = await cluster.cli(['model', 'add', VAD_MODEL, '--json', '--rpc', nodes[0]!.rpc])
  assert.equal(added.code, 0, added.stderr)
  const model = JSON.parse(added.stdout).id as string
  // Pre-pulled everywhere (docs/autoscaling.md): a scale-up costs a placement and a load, and
  // the kill below cannot take the model's only copy with it.
  for (const n of nodes.slice(1)) {
    const pulled = await cluster.cli(['model', 'pull', model, '--rpc', n.rpc])
    assert.equal(pulled.code, 0, `pull on ${n.name}: ${pulled.stderr}`)
  }
  const specFile = path.join(cluster.root, 'auto.json')
  // One replica placed per second: the scale-up is still going when the node dies.
  fs.writeFileSync(specFile, JSON.stringify({ name: 'auto', model, resources: { cpu: 1 }, autoscaling: { minReplicas: 1, maxReplicas: 4, targetOngoingRequests: 1, upscaleDelayMs: 200, downscaleDelayMs: 600_000, maxReplicasPerSecond: 1 } }))
  const dep = await cluster.cli(['app', 'deploy', specFile, '--rpc', res.rpc])
  assert.equal(dep.code, 0, dep.stderr)

  const appStatus = async (): Promise<any> => {
    const out = await cluster.cli(['app', 'ls', '--json', '--rpc', res.rpc])
    assert.equal(out.code, 0, out.stderr)
    return JSON.parse(out.stdout).apps.find((a: any) => a.spec.name === 'auto')?.status
  }
  let last: any
  const seen = (): string => JSON.stringify(last ?? null)
  await waitFor('the floor replica ready', async () => (last = await appStatus())?.ready === 1, 60_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${seen()}`) })

  const body = JSON.stringify({ inputs: vadInputs(16, 1) })
  const load = loads.start(async (_i, _w, signal) => await post(res.rpc, body, signal), { concurrency: 8, maxMs: 150_000 })
  // Mid scale-up: two replicas ready on two nodes, more wanted. (With no ready replica left an
  // app whose floor is above zero answers 503 at once, as documented; one ready elsewhere takes
  // the retries.)
  let byName = new Map<string, number>()
  await waitFor('the scale-up under way: desired above 2, two nodes with a ready replica', async () => {
    last = await appStatus()
    if (!(last?.desired > 2 && last.ready >= 2)) return false
    byName = new Map((await res.status()).nodes.map((n: any) => [n.name, n.replicas]))
    return nodes.filter(n => (byName.get(n.name) ?? 0) > 0).length >= 2
  }, 60_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${seen()}`) })
  const victim = nodes.filter(n => (byName.get(n.name) ?? 0) > 0).at(-1)!
  victim.child.kill('SIGKILL')
  await victim.exited

  const survivors = nodes.filter(n => n !== victim)
  await waitFor('the app to converge on the nodes left: ready = desired ≥ 2', async () => {
    last = await appStatus()
    if (last == null || last.ready !== last.desired || last.desired < 2 || last.placed !== last.desired) return false
    const s = await res.status()
    const onSurvivors = s.nodes.filter((n: any) => survivors.some(v => v.name === n.name)).reduce((sum: number, n: any) => sum + n.replicas, 0)
    return onSurvivors === last.ready
  }, 90_000).catch((err: Error) => { throw new Error(`${err.message}; last: ${seen()}`) })
  assert.ok(last.desired <= 4, `within maxReplicas: ${seen()}`)
  const statuses = await load.stop()
  assert.deepEqual([...statuses.keys()], [200], `statuses around the kill: ${JSON.stringify([...statuses])}`)
  assert.match(last.autoscaling?.reason ?? '', /up after 200 ms/, seen())
})
