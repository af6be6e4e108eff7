import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import type { Host } from '../../src/p2p/index.ts'
import { readClusterSecret, type Trust } from '../../src/trust/index.ts'
import { encodeHeartbeat, heartbeatTopic } from '../../src/membership/heartbeat.ts'
import { TestCluster, waitFor, stateIn } from '../helpers/cluster.ts'
import { heartbeat } from '../helpers/heartbeat.ts'
import { testHost } from '../helpers/member-host.ts'

const cluster = new TestCluster()
const hosts: Host[] = []
const trusts: Trust[] = []
after(async () => {
  await Promise.allSettled(hosts.map(async h => { await h.stop() }))
  await Promise.allSettled(trusts.map(async t => { await t.detach() }))
  await cluster.cleanup()
})

// Regression: gossipsub's default IP-colocation score ignored every peer beyond ~14 per source
// IP, so a cell behind one NAT went silently dead while connected (found by bench:membership).
test('24 nodes behind one IP address are all listed alive', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'] })
  const target = multiaddr(cluster.addr(res))
  // Cluster members: the network key and a node certificate each (heartbeats claim the node role).
  const secret = await readClusterSecret(await cluster.clusterKey())
  for (let i = 0; i < 24; i++) {
    const { host, trust } = await testHost(secret, ['node'], [])
    hosts.push(host)
    if (trust != null) trusts.push(trust)
    await host.start()
  }
  // All dial at once from 127.0.0.1, as a NAT'd cell does after a resource restart. On a busy
  // machine 24 Noise handshakes at once in one process can outlast the upgrade timeout: a
  // refused dial is tried again, as a daemon's bootstrap re-dial would.
  await Promise.all(hosts.map(async (h, i) => {
    await waitFor(`host ${i} connected to the resource`, async () => { await h.dial(target); return true }, undefined, 250)
  }))
  const beat = async (seq: number): Promise<void> => {
    await Promise.all(hosts.map(async h => {
      const id = h.peerId.toString()
      await h.services.pubsub.publish(heartbeatTopic(id, 1), encodeHeartbeat(heartbeat({ peerId: id, seq, name: `nat-${id.slice(-4)}` })))
    }))
  }
  let seq = 0
  await waitFor('all 24 alive', async () => {
    await beat(seq++)
    return hosts.every(h => stateIn(res, h.peerId.toString()) === 'alive')
  })
  assert.equal(res.view?.list.countByState().alive, 25)
})
