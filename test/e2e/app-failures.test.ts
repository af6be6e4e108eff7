import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { ProcessCluster, requireBinary, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { sequenceOutputModel, SEQUENCE_OUTPUT } from '../helpers/onnx-models.ts'
import { demoModel } from '../../src/demo/index.ts'

/**
 * A replica that cannot load, end to end with real `dist/astrad` processes (a scheduler and a
 * node, so the reason crosses the reserve protocol): a model whose output is a sequence, not a
 * tensor. The node's reason is what `app ls` and `status` show, and it stays while the node is
 * backed off; `app rm` and a deploy of a good model under the same name serve.
 */

const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

const APP = 'seq'
/** Loads here take well under a second; the machine may be 5x slower under load. */
const DEADLINE_MS = 90_000

async function appEntry (p: DaemonProcess): Promise<any> {
  const out = await cluster.cli(['app', 'ls', '--json', '--rpc', p.rpc])
  assert.equal(out.code, 0, `app ls: ${out.stderr}`)
  return JSON.parse(out.stdout).apps.find((a: any) => a.spec.name === APP)
}

async function addModel (p: DaemonProcess, file: string, bytes: Uint8Array): Promise<string> {
  fs.writeFileSync(file, bytes)
  const added = await cluster.cli(['model', 'add', file, '--json', '--rpc', p.rpc])
  assert.equal(added.code, 0, `model add ${file}: ${added.stderr}`)
  return JSON.parse(added.stdout).id
}

async function deploy (p: DaemonProcess, spec: unknown): Promise<void> {
  const file = path.join(cluster.root, `${APP}.json`)
  fs.writeFileSync(file, JSON.stringify(spec))
  const dep = await cluster.cli(['app', 'deploy', file, '--rpc', p.rpc])
  assert.equal(dep.code, 0, `app deploy ${JSON.stringify(spec)}: ${dep.stderr}`)
}

test('a model with a non-tensor output: app ls and status show the node\'s reason; rm and a good model serve', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const node = await cluster.start('n1', ['--role', 'node', '--bootstrap', await cluster.addr(res), '--cores', '1'])
  await waitFor('n1 in the scheduler\'s view', async () => (await res.status()).nodes.some((n: any) => n.name === 'n1' && n.state === 'alive'), DEADLINE_MS, 200)
  const bad = await addModel(node, path.join(cluster.root, 'sequence.onnx'), sequenceOutputModel())
  // No resources in the spec: the defaults (cpu = threads = 1, gpu 0) fit the 1-core node.
  await deploy(res, { name: APP, model: bad, replicas: 1 })

  const reason = `replica failed to load on n1: output '${SEQUENCE_OUTPUT}' is a sequence or map, not a tensor`
  let seen: unknown
  await waitFor('the load failure in app ls', async () => {
    seen = (await appEntry(res))?.status?.lastError
    return seen === reason
  }, DEADLINE_MS, 200).catch((err: Error) => { throw new Error(`${err.message}; last lastError seen: ${JSON.stringify(seen)}\n--- n1 ---\n${node.log().slice(-2000)}`) })
  // It stays the note over several reconcile rounds (1 s each) while n1 is backed off; the
  // ledger of n1 holds no replica meanwhile.
  for (let i = 0; i < 4; i++) {
    await new Promise(resolve => setTimeout(resolve, 1_000))
    const entry = await appEntry(res)
    assert.equal(entry?.status?.lastError, reason, `app ls, round ${i}`)
    assert.equal(entry?.status?.ready, 0)
  }
  const st = await res.status()
  assert.equal(st.apps.find((a: any) => a.name === APP)?.lastError, reason, 'status --json')
  const text = await cluster.cli(['app', 'ls', '--rpc', res.rpc])
  assert.ok(text.stdout.includes(reason), `app ls shows the whole reason:\n${text.stdout}`)

  // Fixed: rm, then a good model under the same name is served and the note is gone.
  const rm = await cluster.cli(['app', 'rm', APP, '--rpc', res.rpc])
  assert.equal(rm.code, 0, `app rm: ${rm.stderr}`)
  const good = await addModel(node, path.join(cluster.root, 'demo.onnx'), demoModel())
  await deploy(res, { name: APP, model: good, replicas: 1 })
  await waitFor('the good model ready', async () => {
    seen = (await appEntry(res))?.status
    return (seen as any)?.ready === 1
  }, DEADLINE_MS, 200).catch((err: Error) => { throw new Error(`${err.message}; last status seen: ${JSON.stringify(seen)}`) })
  assert.equal((await appEntry(res))?.status?.lastError, undefined, 'no stale note once ready')
})
