import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { lpStream } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { Ledger, ReserveClient, serveReservations, type Reservation } from '../../src/placement/index.ts'
import { RESERVE_PROTOCOL, RESERVE_STREAM_PROTOCOL } from '../../src/placement/constants.ts'

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

test('reserve streams: many requests on one kept stream, bad input answered on it; a node with only 1.0.0 is still served', async () => {
  const node = await host()
  const ledger = new Ledger({ cpu: 4, gpu: 0 })
  let bad = 0
  await serveReservations(node, ledger, { onBadRequest: () => { bad++ } })
  const scheduler = await host()
  await scheduler.dial(node.getMultiaddrs()[0]!)
  const client = new ReserveClient(scheduler)
  const r = (i: number): Reservation => ({ replica: `s/1/${i}`, app: 's', generation: 1, model: 'd'.repeat(64), resources: { cpu: 1, gpu: 0 }, threads: 1, maxQueue: 4, owner: scheduler.peerId.toString() })
  // Six at once on the kept stream: four fit, two are refused with the node's code, answers in order.
  const results = await Promise.allSettled(Array.from({ length: 6 }, async (_, i) => await client.reserve(node.peerId, r(i))))
  assert.equal(results.filter(x => x.status === 'fulfilled').length, 4, results.map(x => x.status).join(','))
  for (const x of results) if (x.status === 'rejected') assert.equal((x.reason as { code?: string }).code, 'ERR_NO_CAPACITY')
  const streams = scheduler.getConnections(node.peerId).flatMap(c => c.streams).filter(s => s.protocol === RESERVE_STREAM_PROTOCOL)
  assert.equal(streams.length, 1, `reserve streams open: ${streams.length}`)
  // A malformed request on a reserve stream is answered with ERR_DECODE and counted; the same stream then serves a good one.
  const { requestFrame, FrameDecoder } = await import('../../src/p2p/request-stream.ts')
  const raw = await scheduler.dialProtocol(node.peerId, RESERVE_STREAM_PROTOCOL)
  const decoder = new FrameDecoder(1 << 20)
  const answers: Uint8Array[] = []
  raw.addEventListener('message', (evt: { data: Uint8Array | { subarray: () => Uint8Array } }) => { answers.push(...decoder.decode(evt.data)) })
  raw.send(requestFrame(new TextEncoder().encode('{"op":"format-disk"}')))
  raw.send(requestFrame(new TextEncoder().encode('{"op":"ledger"}')))
  const deadline = Date.now() + 10_000
  while (answers.length < 2 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  assert.equal(answers.length, 2, `answers on the raw stream: ${answers.length}`)
  assert.equal(answers[0]![0], 1, 'error status for the malformed request')
  assert.equal(JSON.parse(new TextDecoder().decode(answers[0]!.subarray(1))).code, 'ERR_DECODE')
  assert.equal(answers[1]![0], 0, 'the next request on the stream is served')
  assert.equal(JSON.parse(new TextDecoder().decode(answers[1]!.subarray(1))).replicas.length, 4)
  raw.abort(new Error('done'))
  assert.equal(bad, 1)
  await client.close()

  // An older node: serves only /astra/reserve/1.0.0.
  const old = await host()
  const oldLedger = new Ledger({ cpu: 2, gpu: 0 })
  const { handleRequests } = await import('../../src/p2p/index.ts')
  await handleRequests(old, RESERVE_PROTOCOL, (bytes) => {
    const req = JSON.parse(new TextDecoder().decode(bytes)) as { op: string, reservation?: Reservation }
    if (req.op === 'reserve') oldLedger.reserve(req.reservation!)
    return new TextEncoder().encode(JSON.stringify(oldLedger.snapshot()))
  })
  await scheduler.dial(old.getMultiaddrs()[0]!)
  const client2 = new ReserveClient(scheduler)
  const snap = await client2.reserve(old.peerId, r(10))
  assert.equal(snap.replicas.length, 1, 'reserved on the 1.0.0 node')
  await client2.close()
})
