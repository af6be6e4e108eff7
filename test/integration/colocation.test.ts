import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { encodeHeartbeat, heartbeatTopic } from '../../src/membership/heartbeat.ts'
import { TestCluster, waitFor, stateIn } from '../helpers/cluster.ts'
import { heartbeat } from '../helpers/heartbeat.ts'

const cluster = new TestCluster()
const hosts: Host[] = []
after(async () => {
  await Promise.allSettled(hosts.map(async h => { await h.stop() }))
  await cluster.cleanup()
})

// Regression: gossipsub's default IP-colocation score ignored every peer beyond ~14 per source
// IP, so a cell behind one NAT went silently dead while connected (found by bench:membership).
test('24 nodes behind one IP address are all listed alive', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'] })
  const target = multiaddr(cluster.addr(res))
  for (let i = 0; i < 24; i++) {
    const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: [] })
    hosts.push(h)
    await h.start()
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
