import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { request, type Host } from '../../src/p2p/index.ts'
import { encodeClusterSecret, newClusterSecret, readClusterSecret, writeSecretFile } from '../../src/trust/index.ts'
import { encodeHeartbeat } from '../../src/membership/heartbeat.ts'
import { ONLINE_PROTOCOL, ONLINE_TOPIC } from '../../src/membership/constants.ts'
import { TestCluster, waitFor, stateIn } from '../helpers/cluster.ts'
import { heartbeat } from '../helpers/heartbeat.ts'
import { testHost } from '../helpers/member-host.ts'

const cluster = new TestCluster()
const hosts: Host[] = []
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-bad-'))
after(async () => {
  await Promise.allSettled(hosts.map(async h => { await h.stop() }))
  await cluster.cleanup()
  fs.rmSync(tmp, { recursive: true, force: true })
})

/**
 * A rogue inside the private network: it holds the cluster's network key (e.g. a leaked join
 * token's) but no certificate. (Without the key it could not connect at all: trust-attacks.test.ts.)
 */
async function rogueHost (): Promise<Host> {
  const { host } = await testHost(await readClusterSecret(await cluster.clusterKey()))
  hosts.push(host)
  await host.start()
  return host
}

async function dropped (counterGet: () => Promise<{ values: Array<{ labels: Record<string, unknown>, value: number }> }>, reason: string): Promise<number> {
  return (await counterGet()).values.find(v => v.labels.reason === reason)?.value ?? 0
}

test('forged, malformed and oversized gossip is dropped and counted; the resource keeps working', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'] })
  const node = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(res)] })
  const rogue = await rogueHost()
  await rogue.dial(multiaddr(cluster.addr(res)))
  await waitFor('rogue sees the resource subscribed', () => rogue.services.pubsub.getSubscribers('astra/hb/1/0').length > 0)

  const victimId = node.host.peerId.toString()
  const pub = async (topic: string, data: Uint8Array): Promise<void> => { await rogue.services.pubsub.publish(topic, data) }
  // A heartbeat claiming to be another peer: signed by the rogue, so the signer check fails.
  await pub('astra/hb/1/0', encodeHeartbeat(heartbeat({ peerId: victimId, seq: 1_000_000, state: 'left' })))
  await pub('astra/hb/1/0', new Uint8Array([1, 2, 3]))
  await pub('astra/hb/1/0', new Uint8Array(4096))
  await pub(ONLINE_TOPIC, new Uint8Array([7, 7, 7]))

  const m = res.metrics
  await waitFor('drops counted', async () =>
    await dropped(async () => await m.heartbeatsDropped.get(), 'signer') === 1 &&
    await dropped(async () => await m.heartbeatsDropped.get(), 'decode') === 1 &&
    await dropped(async () => await m.heartbeatsDropped.get(), 'oversize') === 1 &&
    await dropped(async () => await m.digestsDropped.get(), 'decode') === 1)
  await new Promise(resolve => setTimeout(resolve, 1200))
  // The forged `left` (seq 1,000,000) must not have been taken: it must be alive (a busy machine
  // may make it suspect for a moment).
  assert.notEqual(stateIn(res, victimId), 'left', 'the forged `left` took the real node out')
  await waitFor('the real node alive after the forged `left`', () => stateIn(res, victimId) === 'alive')
  assert.equal(stateIn(res, rogue.peerId.toString()), undefined, 'the rogue never heartbeat validly')

  // A malformed snapshot request gets an answer or a refusal, never a crash.
  await request(rogue, res.host.peerId, ONLINE_PROTOCOL, new Uint8Array(100_000)).then(
    () => assert.fail('oversized request accepted'),
    (err: Error) => { assert.equal(err.name, 'RequestError') })
  assert.equal(res.state, 'running')
  await waitFor('the real node still alive', () => stateIn(res, victimId) === 'alive')
})

test('only daemons holding this cluster\'s secret can join: another cluster\'s key or --insecure cannot even connect', async () => {
  const keyA = path.join(tmp, 'a.key')
  const keyB = path.join(tmp, 'b.key')
  writeSecretFile(keyA, encodeClusterSecret(await newClusterSecret()))
  writeSecretFile(keyB, encodeClusterSecret(await newClusterSecret()))
  const res = await cluster.start({ roles: ['resource', 'scheduler'], clusterKey: keyA })
  const member = await cluster.start({ roles: ['node'], clusterKey: keyA, bootstrap: [cluster.addr(res)] })
  const outsider = await cluster.start({ roles: ['node'], clusterKey: keyB, bootstrap: [cluster.addr(res)] })
  const open = await cluster.start({ roles: ['node'], insecure: true, bootstrap: [cluster.addr(res)] })
  await waitFor('member joined', () => stateIn(res, member.host.peerId.toString()) === 'alive')
  await waitFor('the outsiders\' failed handshakes counted', async () => {
    const text = await res.metrics.registry.getSingleMetricAsString('astrad_trust_handshake_failures_total')
    return /direction="inbound"} [1-9]/.test(text) ? text : undefined
  })
  assert.equal(stateIn(res, outsider.host.peerId.toString()), undefined)
  assert.equal(stateIn(res, open.host.peerId.toString()), undefined)
  assert.equal(res.host.getConnections(outsider.host.peerId).length, 0)
  assert.equal(res.host.getConnections(open.host.peerId).length, 0)
})

test('a corrupt cluster key file is a clear configuration error', async () => {
  const bad = path.join(tmp, 'bad.key')
  fs.writeFileSync(bad, 'not a key\n')
  await assert.rejects(cluster.start({ roles: ['node'], clusterKey: bad }), (err: Error & { key?: string }) => err.name === 'ConfigError' && err.key === '--cluster-key')
})
