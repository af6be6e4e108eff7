import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { Host } from '../../src/p2p/host.ts'
import { newPsk, pskBytes } from '../../src/trust/keys.ts'
import { dialOrder, isPublicAddress, isRelayed, circuitAddress } from '../../src/p2p/nat.ts'
import { fixXsalsa20 } from '../../src/p2p/xsalsa20-fix.ts'
import xsalsa20 from 'xsalsa20'
import { waitFor } from '../helpers/cluster.ts'
import { sendAll, hostPool } from '../helpers/streams.ts'

const BULK = '/astrad-test/bulk/1.0.0'
const SIZE = 8 * 1024 * 1024
const CHUNK = 64 * 1024

const pool = hostPool()
const host = pool.host
after(async () => { await pool.stopAll() })

/** Reads everything, answers `<bytes> <sha256>`: as a piece handler would, with no limited-connection flag. */
async function serveBulk (h: Host, options: { runOnLimitedConnection?: boolean } = {}): Promise<void> {
  await h.handle(BULK, async (stream: Stream) => {
    const hash = createHash('sha256')
    let n = 0
    for await (const chunk of stream) {
      const bytes = chunk.subarray()
      hash.update(bytes)
      n += bytes.byteLength
    }
    stream.send(new TextEncoder().encode(`${n} ${hash.digest('hex')}`))
    await stream.close()
  }, options)
}

/** Sends `data` over a new BULK stream and returns the receiver's answer. */
async function sendBulk (stream: Stream, data: Uint8Array): Promise<string> {
  await sendAll(stream, data, CHUNK)
  await stream.close()
  let reply = ''
  for await (const chunk of stream) reply += new TextDecoder().decode(chunk.subarray())
  return reply
}

function relayedTo (h: Libp2p<any>, peer: PeerId): Connection | undefined {
  return h.getConnections(peer).find(c => isRelayed(c.remoteAddr))
}

test('a peer with no public address reserves a slot on a resource; members of the private network move 8 MiB through it, others are refused', async (t) => {
  const members = new Set<string>()
  // A private network, as clusters run: relayed connections are protected inside too.
  const swarmKey = pskBytes(newPsk())
  const relay = await host({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'], relay: { server: true, isMember: p => members.has(p.toString()) } })
  const relayAddr = relay.getMultiaddrs()[0]!
  // Listens on nothing directly: reachable through a relay or not at all.
  const a = await host({ swarmKey })
  const b = await host({ swarmKey, relay: { reserve: 'never' } })
  assert.equal(relay.services.nat.status.mode, 'never', 'a relay server does not reserve')
  assert.equal(a.services.nat.status.reachability, 'reserving')

  const t0 = Date.now()
  await a.dial(relayAddr)
  await waitFor('a holds a reservation', () => a.services.nat.status.reachability === 'relayed')
  const reservedMs = Date.now() - t0
  const relayed = a.services.nat.status.relayAddrs
  assert.ok(relayed.some(ma => ma.startsWith(`${relayAddr.toString()}/p2p-circuit/p2p/${a.peerId.toString()}`)), relayed.join(' '))
  assert.equal(relay.services.relay?.reservations.has(a.peerId), true)

  // The resource learns the relayed address via identify push: what its tracker hands out.
  const learnt = await waitFor('the relay learnt a\'s relayed address', async () => {
    const known = (await relay.peerStore.get(a.peerId)).addresses.map(x => x.multiaddr)
    return known.some(isRelayed) ? known : undefined
  })
  const learntMs = Date.now() - t0

  await b.dial(relayAddr)
  await b.peerStore.merge(a.peerId, { multiaddrs: learnt })
  await serveBulk(a)

  // Neither end is a member yet (no heartbeat seen): the relay refuses to connect them.
  await assert.rejects(b.dialProtocol(a.peerId, BULK), /PERMISSION_DENIED/)
  members.add(a.peerId.toString())
  members.add(b.peerId.toString())

  // Members: dialled by peer id with the addresses the resource knows; neither side passes
  // runOnLimitedConnection because the relay grants reservations without limits.
  const data = randomBytes(SIZE)
  const t1 = Date.now()
  const stream = await b.dialProtocol(a.peerId, BULK)
  const reply = await sendBulk(stream, data)
  const ms = Date.now() - t1
  assert.equal(reply, `${SIZE} ${createHash('sha256').update(data).digest('hex')}`)
  const conn = relayedTo(b, a.peerId)
  assert.ok(conn != null, 'b reached a through the relay')
  assert.equal(conn.limits, undefined, 'an unlimited reservation gives an unlimited connection')
  t.diagnostic(`reservation ${reservedMs} ms after connecting; relay knew the relayed address after ${learntMs} ms; 8 MiB relayed in ${ms} ms (${(SIZE / 1e6 / (ms / 1000)).toFixed(1)} MB/s)`)

  // The slot survives the relay connection dropping: a new one is made when a reconnects.
  await a.hangUp(relay.peerId)
  await waitFor('a dropped its relayed address', () => a.services.nat.status.relayAddrs.length === 0)
  const t2 = Date.now()
  await a.dial(relayAddr)
  await waitFor('a holds a reservation again', () => a.services.nat.status.reachability === 'relayed')
  t.diagnostic(`re-reserved ${Date.now() - t2} ms after reconnecting`)
})

test('a relay with libp2p\'s default limits marks connections limited and cuts them at 128 KiB', async () => {
  // A plain libp2p relay, as anyone would run it: not what resources run.
  const plain = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), relay: circuitRelayServer() }
  })
  pool.extra(plain)
  const a = await host()
  const b = await host({ relay: { reserve: 'never' } })
  await a.dial(plain.getMultiaddrs()[0]!)
  await waitFor('a holds a reservation', () => a.services.nat.status.reachability === 'relayed')
  await serveBulk(a, { runOnLimitedConnection: true })

  const conn = await b.dial(circuitAddress(plain.getMultiaddrs()[0]!, a.peerId))
  assert.notEqual(conn.limits, undefined, 'a limited reservation gives a limited connection')
  // Without the flag a protocol refuses to run on it …
  await assert.rejects(conn.newStream(BULK), (err: Error) => err.name === 'LimitedConnectionError')
  // … and with it, the relay kills the whole relayed connection once 128 KiB have passed.
  const stream = await conn.newStream(BULK, { runOnLimitedConnection: true })
  await assert.rejects(sendBulk(stream, randomBytes(SIZE)), (err: Error) => {
    const sent = Number(/after (\d+) bytes/.exec(err.message)?.[1] ?? NaN)
    return sent < 1024 * 1024
  })
  await waitFor('the relayed connection is gone', () => conn.status !== 'open')
})

test('when its relay goes away, a node moves its slot to another connected resource', async (t) => {
  const r1 = await host({ listen: ['/ip4/127.0.0.1/tcp/0'], relay: { server: true } })
  const r2 = await host({ listen: ['/ip4/127.0.0.1/tcp/0'], relay: { server: true } })
  const a = await host()
  await a.dial(r1.getMultiaddrs()[0]!)
  await a.dial(r2.getMultiaddrs()[0]!)
  await waitFor('a holds a reservation', () => a.services.nat.status.reachability === 'relayed')
  const on = (r: Host): boolean => a.services.nat.status.relayAddrs.some(x => x.includes(`/p2p/${r.peerId.toString()}/p2p-circuit`))
  const [holder, other] = on(r1) ? [r1, r2] : [r2, r1]
  assert.equal(on(other), false, 'one slot, on one relay')
  const t0 = Date.now()
  await holder.stop()
  await waitFor('a reserved on the other relay', () => on(other) && !on(holder))
  t.diagnostic(`slot moved to the other resource ${Date.now() - t0} ms after its relay stopped`)
})

test('dial order: direct addresses (LAN ones too) before relayed ones, loopback last among them', () => {
  const addr = (s: string): { multiaddr: ReturnType<typeof multiaddr>, isCertified: boolean } => ({ multiaddr: multiaddr(s), isCertified: false })
  const relayedViaPublic = addr('/ip4/7.7.7.7/tcp/7071/p2p/12D3KooWJHNknGYgQNotTdxCA9Hve75SuvdxCxKAfkMpb1ktLrie/p2p-circuit')
  const lan = addr('/ip4/192.168.1.2/tcp/7071')
  const loopback = addr('/ip4/127.0.0.1/tcp/7071')
  const pub = addr('/ip4/8.8.8.8/tcp/7071')
  const sorted = [relayedViaPublic, loopback, lan, pub].sort(dialOrder).map(a => a.multiaddr.toString())
  assert.deepEqual(sorted, [pub, lan, loopback, relayedViaPublic].map(a => a.multiaddr.toString()))
  assert.equal(isPublicAddress(pub.multiaddr), true)
  assert.equal(isPublicAddress(lan.multiaddr), false)
  assert.equal(isPublicAddress(relayedViaPublic.multiaddr), false, 'a relayed address is not a public address of ours')
})

test('swarm-key cipher: large messages on several connections do not exhaust its memory (xsalsa20 fix)', () => {
  // Unfixed, this dies with "WebAssembly.Memory.grow(): Maximum memory size exceeded" within
  // ~1,000 messages: what killed the relaying resource in the NAT lab.
  assert.equal(fixXsalsa20(), true, 'the WebAssembly cipher was found and fixed')
  const nonce = new Uint8Array(24).fill(7)
  const key = new Uint8Array(32).fill(9)
  const enc = xsalsa20(nonce, key)
  const dec = xsalsa20(nonce, key)
  const other = xsalsa20(new Uint8Array(24).fill(8), key)
  const big = new Uint8Array(2 * 1024 * 1024)
  for (let i = 0; i < 3_000; i++) {
    if (i % 500 === 0) other.update(big) // grows the shared memory, detaching the others' views
    const msg = randomBytes(1_000 + (i % 300))
    assert.ok(Buffer.from(dec.update(enc.update(msg))).equals(msg), `round trip ${i}`)
  }
  for (const c of [enc, dec, other]) c.finalize()
})
