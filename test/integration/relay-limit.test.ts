import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type { PeerId, Stream } from '@libp2p/interface'
import type { Host } from '../../src/p2p/host.ts'
import { RelayTraffic, peerPaths } from '../../src/p2p/index.ts'
import { isRelayed } from '../../src/p2p/nat.ts'
import { TransferLimits, defaultBurst } from '../../src/transfer/limiter.ts'
import { RelayLimit } from '../../src/transfer/relay-budget.ts'
import { resolveConfig } from '../../src/config/index.ts'
import { ConfigError } from '../../src/util/errors.ts'
import { waitFor } from '../helpers/cluster.ts'
import { sendAll, hostPool } from '../helpers/streams.ts'

/*
 * Goal 4 of issue 17 (docs/nat.md): what a resource relays is counted and limited like any
 * upload; every relayed connection starts a hole punch whose outcome is counted and shown.
 * Real libp2p hosts on loopback in a relay-only topology: the holder listens on nothing, so
 * the downloader reaches it only through the resource.
 */

const PULL = '/astrad-test/pull/1.0.0'

const pool = hostPool()
const host = pool.host
after(async () => { await pool.stopAll() })

/** Serves `data` to whoever opens PULL, as a piece server would (the holder uploads). */
async function servePull (h: Host, data: Uint8Array): Promise<void> {
  await h.handle(PULL, async (stream: Stream) => {
    await sendAll(stream, data)
    await stream.close()
  })
}

async function pull (h: Host, peer: PeerId): Promise<{ bytes: number, sha: string }> {
  const stream = await h.dialProtocol(peer, PULL)
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    const b = chunk.subarray()
    hash.update(b)
    bytes += b.byteLength
  }
  return { bytes, sha: hash.digest('hex') }
}

/** A resource (relay server with `traffic`), a holder behind it (reserves, listens on nothing) and a downloader that dials nothing directly. */
async function relayOnly (traffic: RelayTraffic): Promise<{ relay: Host, holder: Host, downloader: Host }> {
  const relay = await host({ listen: ['/ip4/127.0.0.1/tcp/0'], relay: { server: true, traffic } })
  const relayAddr = relay.getMultiaddrs()[0]!
  const holder = await host()
  const downloader = await host({ relay: { reserve: 'never' } })
  await holder.dial(relayAddr)
  await waitFor('the holder holds a reservation', () => holder.services.nat.status.reachability === 'relayed')
  await downloader.dial(relayAddr)
  const addrs = holder.services.nat.status.relayAddrs
  await downloader.peerStore.merge(holder.peerId, { multiaddrs: holder.getMultiaddrs().filter(isRelayed) })
  assert.ok(addrs.length > 0, 'the holder has a relayed address')
  return { relay, holder, downloader }
}

test('a resource\'s relayed bytes are counted per direction and held to its relay limit and upload budget; the data arrives whole', async (t) => {
  // Larger than a yamux window (16 MiB at most), which a paused stream's sender may still send.
  const SIZE = 40 * 1024 * 1024
  const RATE = 10_000_000
  const uploads = new TransferLimits({ upload: 'unlimited', download: 'unlimited' })
  const limit = new RelayLimit({ setting: RATE, node: false }, uploads)
  const traffic = new RelayTraffic(limit)
  traffic.onBytes((_, n) => { limit.record(n) })
  const { holder, downloader } = await relayOnly(traffic)
  const data = randomBytes(SIZE)
  await servePull(holder, data)

  const t0 = performance.now()
  const got = await pull(downloader, holder.peerId)
  const seconds = (performance.now() - t0) / 1000
  assert.equal(got.bytes, SIZE, 'every byte arrived')
  assert.equal(got.sha, createHash('sha256').update(data).digest('hex'), 'the bytes are the holder\'s')
  const conn = downloader.getConnections(holder.peerId)[0]
  assert.ok(conn != null && isRelayed(conn.remoteAddr), `the transfer went through the relay: ${String(conn?.remoteAddr)}`)

  const s = traffic.stats()
  // Relayed bytes carry the inner connection's Noise and yamux framing: a few % above the payload.
  assert.ok(s.bytes.to_source >= SIZE && s.bytes.to_source < SIZE * 1.1, `to_source counted ${s.bytes.to_source} for ${SIZE} payload bytes`)
  assert.ok(s.bytes.to_destination > 0 && s.bytes.to_destination < SIZE / 10, `to_destination: the request and window updates only, got ${s.bytes.to_destination}`)
  assert.equal(s.connectionsTotal, 1, 'one relayed connection was opened')
  assert.ok(s.paused > 0, 'the budget held the relayed stream at least once')
  assert.equal(limit.info().limit, RATE)
  assert.ok(limit.info().rateBps > 0, 'the relay rate meter saw the bytes')
  assert.ok(uploads.uploaded.rate() > 0, 'relayed bytes count in the daemon\'s upload rate')
  // What the token bucket guarantees, whatever the machine's load: bytes granted ≤ burst +
  // rate × elapsed; the bulk stream forwards at most one yamux window (≤ 16 MiB) ahead of it,
  // the other direction carries only a few KiB.
  const granted = s.bytes.to_source + s.bytes.to_destination
  const slack = defaultBurst(RATE) + 16 * 1024 * 1024 + s.bytes.to_destination
  assert.ok(granted <= slack + RATE * seconds, `relayed ${granted} bytes in ${seconds.toFixed(2)} s at a limit of ${RATE} B/s`)
  t.diagnostic(`relayed ${SIZE} bytes at ${(SIZE / 1e6 / seconds).toFixed(2)} MB/s against a relay limit of ${RATE / 1e6} MB/s (${(SIZE / seconds / RATE).toFixed(2)} × the limit); stream paused ${s.paused} times`)

  await waitFor('the relayed connection is counted closed after hang-up', async () => {
    await downloader.hangUp(holder.peerId)
    return traffic.stats().connections === 0
  })
})

test('the relay\'s upload budget is the daemon\'s: a node+resource\'s upload limit holds relayed bytes too', async () => {
  const RATE = 2_000_000
  const uploads = new TransferLimits({ upload: RATE, download: 'unlimited' })
  // unlimited: no cap of its own, the upload limit alone.
  const limit = new RelayLimit({ setting: 'unlimited', node: true }, uploads)
  assert.equal(limit.limited(), true, 'limited by the upload bucket')
  assert.equal(limit.info().limit, null)
  const traffic = new RelayTraffic(limit)
  const { holder, downloader } = await relayOnly(traffic)
  const data = randomBytes(3 * 1024 * 1024)
  await servePull(holder, data)
  const got = await pull(downloader, holder.peerId)
  assert.equal(got.sha, createHash('sha256').update(data).digest('hex'))
  assert.ok(traffic.stats().paused > 0, 'the upload bucket held the relayed stream')
})

test('unlimited relay without upload limit: counted, never paused', async () => {
  const uploads = new TransferLimits({ upload: 'unlimited', download: 'unlimited' })
  const limit = new RelayLimit({ setting: 'auto', node: false, linkSpeed: () => undefined }, uploads)
  assert.equal(limit.limited(), false, 'auto with no known link speed: no cap')
  assert.equal(limit.info().source, 'auto')
  const traffic = new RelayTraffic(limit)
  const { holder, downloader } = await relayOnly(traffic)
  const data = randomBytes(2 * 1024 * 1024)
  await servePull(holder, data)
  const got = await pull(downloader, holder.peerId)
  assert.equal(got.bytes, data.byteLength)
  assert.ok(traffic.stats().bytes.to_source >= data.byteLength)
  assert.equal(traffic.stats().paused, 0)
  // auto on a resource with a known link: half of it.
  assert.equal(new RelayLimit({ setting: 'auto', node: false, linkSpeed: () => 125_000_000 }, uploads).info().limit, 62_500_000)
})

test('a relayed connection starts a hole punch; its outcome is counted and status shows the peer as relayed', async (t) => {
  const traffic = new RelayTraffic()
  const { holder, downloader } = await relayOnly(traffic)
  const conn = await downloader.dial(holder.peerId)
  assert.ok(isRelayed(conn.remoteAddr), `dialled through the relay: ${conn.remoteAddr.toString()}`)
  // The holder received the relayed connection: it starts DCUtR. Loopback addresses are not
  // public, so neither side has anything to dial: the attempt ends without an upgrade.
  const outcome = await waitFor('the holder decided its hole punch', () => holder.services.holePunch.outcome(downloader.peerId))
  assert.equal(outcome?.result, 'no_addresses', JSON.stringify(outcome))
  const st = holder.services.holePunch.status()
  assert.equal(st.attempts, 1)
  assert.equal(st.results.no_addresses, 1)
  assert.equal(downloader.services.holePunch.status().attempts, 0, 'the dialling side does not start DCUtR')
  const paths = peerPaths(holder, holder.services.holePunch)
  const p = paths.find(x => x.peerId === downloader.peerId.toString())
  assert.equal(p?.path, 'relayed', JSON.stringify(paths))
  assert.equal(p?.holePunch?.result, 'no_addresses')
  assert.equal(peerPaths(downloader).find(x => x.peerId === holder.peerId.toString())?.path, 'relayed')
  t.diagnostic(`hole punch: ${JSON.stringify(outcome)}`)
})

test('--relay-limit: a rate, auto or unlimited; anything else is refused naming the flag', () => {
  assert.equal(resolveConfig({ flags: { relayLimit: '25MB/s' }, env: {} }).relayLimit, 25_000_000)
  assert.equal(resolveConfig({ flags: {}, env: { ASTRAD_RELAY_LIMIT: 'unlimited' } }).relayLimit, 'unlimited')
  assert.equal(resolveConfig({ flags: {}, env: {} }).relayLimit, 'auto')
  for (const bad of ['fast', '-5MB/s', '0', '']) {
    assert.throws(() => resolveConfig({ flags: { relayLimit: bad }, env: {} }), (err: unknown) => err instanceof ConfigError && err.key.includes('relay-limit'), `--relay-limit '${bad}'`)
  }
})
