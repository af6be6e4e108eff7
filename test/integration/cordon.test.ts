import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { TestCluster, waitFor } from '../helpers/cluster.ts'

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })

const TOKEN = 'cordon-token'

async function post (rpc: { host: string, port: number }, route: string, token?: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`http://${rpc.host}:${rpc.port}${route}`, {
    method: 'POST', headers: token != null ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(10_000)
  })
  return { status: res.status, body: await res.json() }
}

test('cordon: the node\'s own token-protected RPC port, refused without the node role, in the heartbeat, kept across a restart', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'], name: 'res' })
  const node = await cluster.start({ roles: ['node'], name: 'n1', bootstrap: [cluster.addr(res)], rpcToken: TOKEN })
  const id = node.host.peerId.toString()
  await waitFor('n1 alive at the resource', () => res.view?.list.get(id)?.state === 'alive')

  assert.equal((await post(node.rpcAddress!, '/v1/cordon')).status, 401, 'no token, no cordon')
  assert.equal(node.ledger?.cordoned, false)
  const refused = await post(res.rpcAddress!, '/v1/cordon')
  assert.equal(refused.status, 409)
  assert.equal(refused.body.code, 'ERR_NOT_NODE')

  const cordoned = await post(node.rpcAddress!, '/v1/cordon', TOKEN)
  assert.equal(cordoned.status, 200, JSON.stringify(cordoned.body))
  assert.deepEqual(cordoned.body, { name: 'n1', cordoned: true, replicas: 0 })
  assert.equal(node.ledger?.snapshot().cordoned, true)
  assert.equal(node.ledger?.snapshot().accepting, false)
  const file = path.join(node.config.dataDir, 'cordon.json')
  assert.ok(fs.existsSync(file), 'saved in the data dir')
  await waitFor('the resource sees n1 cordoned in its heartbeat', () => res.view?.list.get(id)?.hb.cordoned === true, 10_000)
  assert.equal((await post(node.rpcAddress!, '/v1/cordon', TOKEN)).status, 200, 'cordoning twice is fine')

  // Restart on the same data dir: cordoned from the start.
  await node.stop()
  const again = await cluster.start({ roles: ['node'], name: 'n1', dataDir: node.config.dataDir, bootstrap: [cluster.addr(res)], rpcToken: TOKEN })
  assert.equal(again.ledger?.cordoned, true)
  assert.throws(() => again.ledger?.reserve({
    replica: 'a/1/x', app: 'a', generation: 1, model: 'a'.repeat(64), resources: { cpu: 1, gpu: 0 }, threads: 1, maxQueue: 1, owner: 's'
  }), { code: 'ERR_CORDONED' })
  await waitFor('the resource sees the restarted n1 cordoned', () => {
    const rec = res.view?.list.get(id)
    return rec?.state === 'alive' && rec.hb.cordoned
  }, 10_000)

  const lifted = await post(again.rpcAddress!, '/v1/uncordon', TOKEN)
  assert.deepEqual(lifted.body, { name: 'n1', cordoned: false, replicas: 0 })
  assert.equal(fs.existsSync(file), false, 'uncordon removes the file')
  assert.equal(again.ledger?.snapshot().accepting, true)
  await waitFor('the resource sees n1 uncordoned', () => res.view?.list.get(id)?.hb.cordoned === false, 10_000)
})
