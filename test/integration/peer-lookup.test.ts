import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { peerIdFromString } from '@libp2p/peer-id'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { operatorAuth, operatorFetch } from '../helpers/operator.ts'
import { demoModel, DEMO_EXAMPLE_INPUT } from '../../src/demo/index.ts'
import { PeerLookup } from '../../src/p2p/index.ts'

/**
 * A scheduler-only daemon (as deploy/k8s runs them) and a node that only bootstrapped to the
 * resource have never met; heartbeats carry no addresses. The scheduler must still reserve on
 * the node and send it inference: libp2p's dialer asks the resources for the node's addresses
 * (`/astra/peer/1.0.0`). Before that existed such a scheduler placed nothing ("no node with cpu
 * 1 gpu 0 free") — found by bench:autoscale.
 */

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })
async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

test('a scheduler-only daemon places on and routes to a node it never met, through the resource\'s addresses', async () => {
  const res = await cluster.start({ roles: ['resource'] })
  const boot = cluster.addr(res)
  const sched = await cluster.start({ roles: ['scheduler'], bootstrap: [boot] })
  const node = await cluster.start({ roles: ['node'], bootstrap: [boot], cores: 2 })
  assert.equal(sched.host.getConnections(node.host.peerId).length, 0, 'the scheduler and the node have not met')
  const bytes = demoModel()
  const id = (await node.transfer.add(once(bytes), bytes.length, 'demo', undefined, await operatorAuth(cluster, node, 'POST', '/v1/models'))).id
  const dep = await operatorFetch(cluster, sched, 'POST', '/v1/apps', { name: 'demo', model: id, replicas: 1 })
  assert.equal(dep.status, 201, JSON.stringify(dep.body))
  await waitFor('the replica ready on the node', () => sched.placer?.status()[0]?.ready === 1, 30_000)
    .catch((err: Error) => { throw new Error(`${err.message}; last: ${JSON.stringify(sched.placer?.status())}`) })
  const a = sched.rpcAddress!
  const r = await fetch(`http://${a.host}:${a.port}/v2/models/demo/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [...DEMO_EXAMPLE_INPUT] }] }) })
  assert.equal(r.status, 200, await r.text())

  // A peer no resource is connected to: not found, promptly, no hang.
  const lookup = new PeerLookup()
  lookup.attach(sched.host, async () => true)
  const stranger = peerIdFromString('12D3KooWGRUVh7T4qTrCtcV6ZbyPhcd7Am2a1BL1J8Y2dM4VJY1S')
  await assert.rejects(lookup.findPeer(stranger, { signal: AbortSignal.timeout(10_000) }), { name: 'NotFoundError' })
  const found = await lookup.findPeer(node.host.peerId, { signal: AbortSignal.timeout(10_000) })
  assert.ok(found.multiaddrs.some(m => m.toString().includes('/tcp/')), `the node's TCP address: ${found.multiaddrs.map(String).join(' ')}`)
})
