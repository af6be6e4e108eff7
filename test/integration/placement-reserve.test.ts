import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { lpStream } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { Ledger, ReserveClient, serveReservations, type Reservation } from '../../src/placement/index.ts'
import { RESERVE_PROTOCOL } from '../../src/placement/constants.ts'

/**
 * `/astra/reserve/1.0.0` between real libp2p hosts on 127.0.0.1: eight schedulers race for one
 * node's capacity and the node's ledger never overcommits; malformed requests are refused and
 * counted, and the node keeps answering.
 */

const hosts: Host[] = []
after(async () => { await Promise.all(hosts.map(async h => { await h.stop() })) })

async function host (): Promise<Host> {
  const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await h.start()
  hosts.push(h)
  return h
}

test('8 schedulers reserving on one node over libp2p: never overcommitted, conflicts reported', async () => {
  const node = await host()
  const ledger = new Ledger({ cpu: 6, gpu: 1 })
  let bad = 0
  let accepted = 0
  let rejected = 0
  await serveReservations(node, ledger, { onBadRequest: () => { bad++ }, onReserve: ok => { if (ok) accepted++; else rejected++ } })
  const schedulers = await Promise.all(Array.from({ length: 8 }, async () => await host()))
  await Promise.all(schedulers.map(async s => { await s.dial(node.getMultiaddrs()[0]!) }))

  const results = await Promise.all(schedulers.map(async (s, i) => {
    const client = new ReserveClient(s)
    const mine: string[] = []
    const codes: string[] = []
    for (let j = 0; j < 4; j++) {
      const r: Reservation = {
        replica: `app/1/${i}-${j}`, app: 'app', generation: 1, model: 'c'.repeat(64),
        resources: { cpu: 0.5 + (j % 2) * 0.5, gpu: j === 3 ? 1 : 0 }, threads: 1, maxQueue: 4, owner: s.peerId.toString()
      }
      try {
        const snapshot = await client.reserve(node.peerId, r)
        assert.ok(snapshot.used.cpu <= 6 + 1e-9)
        mine.push(r.replica)
      } catch (err) {
        codes.push((err as { code?: string }).code ?? '?')
      }
    }
    return { mine, codes }
  }))
  const snapshot = await new ReserveClient(schedulers[0]!).ledger(node.peerId)
  assert.ok(snapshot.used.cpu <= 6 + 1e-9, `cpu used ${snapshot.used.cpu}`)
  assert.ok(snapshot.used.gpu <= 1)
  const won = results.flatMap(r => r.mine)
  assert.deepEqual(snapshot.replicas.map(r => r.replica).sort(), won.sort())
  assert.equal(won.length, accepted)
  const codes = results.flatMap(r => r.codes)
  assert.equal(codes.length, rejected)
  assert.ok(codes.length > 0 && codes.every(c => c === 'ERR_NO_CAPACITY'), codes.join(','))

  // Release through the protocol frees the room for another scheduler.
  const freed = await new ReserveClient(schedulers[1]!).release(node.peerId, won[0]!)
  assert.equal(freed.replicas.some(r => r.replica === won[0]), false)
  assert.equal(bad, 0)
})

test('malformed reserve requests are refused with a code and counted; the node keeps serving', async () => {
  const node = await host()
  const ledger = new Ledger({ cpu: 2, gpu: 0 })
  let bad = 0
  await serveReservations(node, ledger, { onBadRequest: () => { bad++ } })
  const peer = await host()
  await peer.dial(node.getMultiaddrs()[0]!)
  for (const payload of ['not json', '{"op":"reserve"}', '{"op":"format-disk"}', JSON.stringify({ op: 'reserve', reservation: { replica: 'x', app: 'a', generation: 1, model: 'zz', resources: { cpu: -1, gpu: 0 }, threads: 1, maxQueue: 1, owner: 'o' } })]) {
    const stream = await peer.dialProtocol(node.peerId, RESERVE_PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode(payload))
    const answer = (await lp.read()).subarray()
    assert.equal(answer[0], 1, 'error status')
    assert.equal(JSON.parse(new TextDecoder().decode(answer.subarray(1))).code, 'ERR_DECODE')
  }
  // Oversized request: the stream is cut, nothing reserved.
  const stream = await peer.dialProtocol(node.peerId, RESERVE_PROTOCOL)
  const lp = lpStream(stream)
  await lp.write(new Uint8Array(100_000)).catch(() => {})
  await assert.rejects(lp.read())
  assert.equal(bad, 4)
  assert.equal(ledger.all().length, 0)
  const ok = await new ReserveClient(peer).ledger(node.peerId)
  assert.equal(ok.capacity.cpu, 2)
})
