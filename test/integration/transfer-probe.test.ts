import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { TransferLimits } from '../../src/transfer/limiter.ts'
import { StreamReader } from '../../src/transfer/stream-io.ts'
import {
  AutoLimiter, ProbeServer, ProbeError, PROBE_PROTOCOL, encodeProbeRequest, probeDirection, probeLink
} from '../../src/transfer/probe.ts'
import { AUTO_SHARE } from '../../src/transfer/constants.ts'

/**
 * The speed probe between real libp2p hosts on 127.0.0.1: it measures, the server caps
 * concurrent probes and refuses the rest with a retry hint, garbage gets an error (not a
 * crash), and AutoLimiter turns a measurement into the node's limits.
 */

const running = new Set<Host>()
after(async () => {
  await Promise.all([...running].map(async h => { await h.stop() }))
})

async function newHost (): Promise<Host> {
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await host.start()
  running.add(host)
  return host
}

async function connect (from: Host, to: Host): Promise<void> {
  await from.dial(to.getMultiaddrs()[0]!)
}

async function waitFor (what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const MiB = 1024 * 1024
/** Small probes: the suite runs on 2 cores next to other tests. */
const SMALL = { durationMs: 500, maxBytes: 8 * MiB }

/** A raw probe stream: sends `bytes`, returns the stream and a reader. */
async function raw (client: Host, server: Host, bytes: Uint8Array): Promise<{ stream: Stream, reader: StreamReader }> {
  const stream = await client.dialProtocol(server.peerId, PROBE_PROTOCOL)
  const reader = new StreamReader(stream, MiB)
  stream.send(bytes)
  return { stream, reader }
}

async function readError (reader: StreamReader): Promise<{ code: string, message: string }> {
  const signal = AbortSignal.timeout(5_000)
  const status = (await reader.exactly(1, signal))[0]
  assert.equal(status, 1, 'error status')
  const n = new DataView((await reader.exactly(2, signal)).buffer).getUint16(0)
  return JSON.parse(new TextDecoder().decode(await reader.exactly(n, signal)))
}

let server: Host
let probeServer: ProbeServer

test('setup: a probe server', async () => {
  server = await newHost()
  probeServer = new ProbeServer(server, { maxConcurrent: 1 })
  await probeServer.start()
})

test('a probe between two hosts gives positive, finite rates in both directions', async (t) => {
  const client = await newHost()
  await connect(client, server)
  const started = Date.now()
  const r = await probeLink(client, server.peerId, SMALL)
  const took = Date.now() - started
  for (const v of [r.downloadBps, r.uploadBps]) assert.ok(Number.isFinite(v) && v > 0, `rate ${v}`)
  // Loopback moves MB/s at least; the bounds only catch unit mistakes (bits vs bytes, ms vs s).
  assert.ok(r.downloadBps > 1e6 && r.downloadBps < 1e11, `download ${r.downloadBps}`)
  assert.ok(r.uploadBps > 1e6 && r.uploadBps < 1e11, `upload ${r.uploadBps}`)
  assert.equal(probeServer.stats.active, 0)
  assert.ok(probeServer.stats.bytes <= 2 * SMALL.maxBytes, `server moved ${probeServer.stats.bytes} bytes`)
  t.diagnostic(`loopback probe: download ${(r.downloadBps / 1e6).toFixed(1)} MB/s, upload ${(r.uploadBps / 1e6).toFixed(1)} MB/s in ${took} ms`)
})

test('the server clamps what a client asks for to its own caps', async () => {
  const capped = await newHost()
  const s = new ProbeServer(capped, { maxBytes: MiB, maxDurationMs: 300 })
  await s.start()
  const client = await newHost()
  await connect(client, capped)
  const started = Date.now()
  await probeDirection(client, capped.peerId, 'download', { durationMs: 60_000, maxBytes: 512 * MiB })
  assert.ok(Date.now() - started < 3_000)
  assert.ok(s.stats.bytes <= MiB, `served ${s.stats.bytes} bytes, cap 1 MiB`)
  await s.stop()
})

test('beyond its concurrency cap the server refuses with ERR_BUSY and a retry hint, and keeps serving', async () => {
  const holder = await newHost()
  const other = await newHost()
  await Promise.all([connect(holder, server), connect(other, server)])
  // A client that asks for an upload probe and sends nothing holds the only slot.
  const held = await raw(holder, server, encodeProbeRequest({ direction: 1, durationMs: 2_000, maxBytes: MiB }))
  const ok = await held.reader.exactly(9, AbortSignal.timeout(5_000))
  assert.equal(ok[0], 0)
  assert.equal(probeServer.stats.active, 1)

  await assert.rejects(probeDirection(other, server.peerId, 'download', SMALL), (err: unknown) => {
    assert.ok(err instanceof ProbeError)
    assert.equal(err.code, 'ERR_BUSY')
    assert.ok(err.retryAfterMs !== undefined && err.retryAfterMs > 0, `retryAfterMs ${String(err.retryAfterMs)}`)
    return true
  })
  // The same peer may not run a second probe alongside its first either.
  await assert.rejects(probeDirection(holder, server.peerId, 'download', SMALL), { name: 'ProbeError', code: 'ERR_BUSY' })
  assert.ok((probeServer.stats.refused.ERR_BUSY ?? 0) >= 2)

  // The holder vanishes mid-probe: its slot is freed and the next probe is served.
  held.stream.abort(new Error('client gone'))
  held.reader.close()
  await waitFor('slot freed', () => probeServer.stats.active === 0)
  assert.ok(await probeDirection(other, server.peerId, 'download', SMALL) > 0)
})

test('bad probe requests get an error, not a crash', async () => {
  const client = await newHost()
  await connect(client, server)
  const served = probeServer.stats.served

  const badVersion = encodeProbeRequest({ direction: 0, durationMs: 100, maxBytes: 100 })
  badVersion[0] = 9
  const a = await raw(client, server, badVersion)
  assert.equal((await readError(a.reader)).code, 'ERR_BAD_REQUEST')
  a.reader.close()
  await a.stream.close()

  const badDirection = encodeProbeRequest({ direction: 7, durationMs: 100, maxBytes: 100 })
  const b = await raw(client, server, badDirection)
  assert.equal((await readError(b.reader)).code, 'ERR_BAD_REQUEST')
  b.reader.close()
  await b.stream.close()

  const zero = await raw(client, server, encodeProbeRequest({ direction: 0, durationMs: 0, maxBytes: 100 }))
  assert.equal((await readError(zero.reader)).code, 'ERR_BAD_REQUEST')
  zero.reader.close()
  await zero.stream.close()

  // A short request and a close: the server answers what it can and moves on.
  const short = await raw(client, server, new Uint8Array([1, 0, 0]))
  await short.stream.close()
  assert.equal((await readError(short.reader)).code, 'ERR_BAD_REQUEST')
  short.reader.close()

  // An upload that sends more than granted is cut off.
  const greedy = await raw(client, server, encodeProbeRequest({ direction: 1, durationMs: 2_000, maxBytes: 64 * 1024 }))
  assert.equal((await greedy.reader.exactly(9, AbortSignal.timeout(5_000)))[0], 0)
  const junk = new Uint8Array(256 * 1024)
  for (let i = 0; i < 4 && greedy.stream.writeStatus === 'writable'; i++) {
    if (!greedy.stream.send(junk)) await greedy.stream.onDrain({ signal: AbortSignal.timeout(5_000) }).catch(() => {})
  }
  await waitFor('greedy upload refused', () => (probeServer.stats.refused.ERR_BAD_REQUEST ?? 0) >= 5)
  greedy.reader.close()

  assert.equal(probeServer.stats.served, served, 'no bad request counted as served')
  await waitFor('slots freed', () => probeServer.stats.active === 0)
  assert.ok(await probeDirection(client, server.peerId, 'upload', SMALL) > 0, 'the server still works')
})

test('a client rejects a server that sends more than it granted', async () => {
  const liar = await newHost()
  await liar.handle(PROBE_PROTOCOL, (stream) => {
    const ok = new Uint8Array(9)
    new DataView(ok.buffer).setUint32(1, 1_000)
    new DataView(ok.buffer).setUint32(5, 1024)
    stream.send(ok)
    stream.send(new Uint8Array(64 * 1024))
    void stream.close().catch(() => {})
  })
  const client = await newHost()
  await connect(client, liar)
  await assert.rejects(probeDirection(client, liar.peerId, 'download', { durationMs: 1_000, maxBytes: 1024 }), { name: 'ProbeError', code: 'ERR_BAD_RESPONSE' })
})

test('an aborted probe rejects with the abort reason', async () => {
  const client = await newHost()
  await connect(client, server)
  await waitFor('slot free', () => probeServer.stats.active === 0)
  const controller = new AbortController()
  const reason = new Error('user stop')
  const p = probeDirection(client, server.peerId, 'download', { durationMs: 5_000, maxBytes: 1024 * MiB, signal: controller.signal })
  await waitFor('probe running', () => probeServer.stats.active === 1)
  controller.abort(reason)
  await assert.rejects(p, err => err === reason)
  await waitFor('slot freed', () => probeServer.stats.active === 0)
})

test('AutoLimiter measures at join and sets the auto limits (min of probe and link speed)', async () => {
  const resource = await newHost()
  const rs = new ProbeServer(resource)
  await rs.start()

  // Download auto, upload set by flag: only the download is probed.
  const node = await newHost()
  const limits = new TransferLimits({ upload: 5_000_000, download: 'auto' })
  assert.equal(limits.state().download.source, 'probing')
  const changes: string[] = []
  limits.onChange(() => { changes.push(limits.state().download.source) })
  const auto = new AutoLimiter({ libp2p: node, logger: silentLogger() }, limits, { ...SMALL, linkSpeed: () => undefined })
  auto.start()
  await connect(node, resource)
  await waitFor('download limit measured', () => limits.state().download.source === 'auto')
  const d = limits.state().download
  assert.ok(d.measured != null && d.measured > 1e6 && Number.isFinite(d.measured), `measured ${String(d.measured)}`)
  assert.equal(d.limit, Math.round(d.measured * AUTO_SHARE))
  assert.equal(d.node, d.limit)
  assert.equal(limits.download.rate, d.limit)
  assert.deepEqual(limits.state().upload, { limit: 5_000_000, source: 'flag', node: 5_000_000, cluster: null, measured: null })
  assert.equal(rs.stats.served, 1, 'one probe: the flag direction is not probed')
  assert.ok(auto.measured)
  // Started before the connect: possibly 'no-peer' for a moment, then measured.
  assert.equal(changes.at(-1), 'auto', changes.join(' → '))
  assert.ok(changes.every(c => ['no-peer', 'probing', 'auto'].includes(c)), changes.join(' → '))
  auto.stop()

  // A slower NIC than the probe found: the link speed wins.
  const node2 = await newHost()
  const limits2 = new TransferLimits({ upload: 'auto', download: 'auto' })
  const auto2 = new AutoLimiter({ libp2p: node2, logger: silentLogger() }, limits2, { ...SMALL, linkSpeed: () => 1_000_000 })
  // Already connected when started: the limiter finds the peer without a new connect event.
  await connect(node2, resource)
  await waitFor('identify', async () => (await node2.peerStore.get(resource.peerId)).protocols.includes(PROBE_PROTOCOL))
  auto2.start()
  await waitFor('both limits measured', () => auto2.measured)
  const s2 = limits2.state()
  assert.deepEqual(s2.upload, { limit: 500_000, source: 'auto', node: 500_000, cluster: null, measured: 1_000_000 })
  assert.deepEqual(s2.download, { limit: 500_000, source: 'auto', node: 500_000, cluster: null, measured: 1_000_000 })
  auto2.stop()
  await rs.stop()
})

test('AutoLimiter retries a busy resource and gives up to the link speed when probing never succeeds', async () => {
  // A resource that is always busy.
  const busy = await newHost()
  let refused = 0
  await busy.handle(PROBE_PROTOCOL, (stream) => {
    refused++
    const json = new TextEncoder().encode(JSON.stringify({ code: 'ERR_BUSY', message: 'busy', retryAfterMs: 50 }))
    const out = new Uint8Array(3 + json.length)
    out[0] = 1
    new DataView(out.buffer).setUint16(1, json.length)
    out.set(json, 3)
    stream.send(out)
    void stream.close().catch(() => {})
  })
  const node = await newHost()
  const limits = new TransferLimits({ upload: 'unlimited', download: 'auto' })
  const auto = new AutoLimiter({ libp2p: node, logger: silentLogger() }, limits, { ...SMALL, linkSpeed: () => 10_000_000, retryBaseMs: 20, retryMaxMs: 100, giveUpMs: 1_000 })
  auto.start()
  await connect(node, busy)
  await waitFor('fallback to the link speed', () => limits.state().download.source === 'auto')
  assert.ok(refused >= 2, `retried: ${refused} attempts`)
  assert.deepEqual(limits.state().download, { limit: 5_000_000, source: 'auto', node: 5_000_000, cluster: null, measured: 10_000_000 })
  assert.equal(auto.measured, false, 'not measured by a probe')
  auto.stop()
  // Stop is final for the loop: no more attempts.
  const after = refused
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.equal(refused, after)
})

test('AutoLimiter on a one-host cluster: no peer to measure, unlimited, then measured when a peer comes', async () => {
  // Node and resource roles in one process: its own probe server is no peer to measure against.
  const lone = await newHost()
  const own = new ProbeServer(lone)
  await own.start()
  const limits = new TransferLimits({ upload: 'auto', download: 'auto' })
  const auto = new AutoLimiter({ libp2p: lone, logger: silentLogger() }, limits, { ...SMALL, linkSpeed: () => undefined })
  const resource = await newHost()
  const rs = new ProbeServer(resource)
  try {
    auto.start()
    await waitFor(`no-peer (last seen ${limits.state().upload.source})`, () => limits.state().upload.source === 'no-peer')
    for (const d of ['upload', 'download'] as const) {
      assert.deepEqual(limits.state()[d], { limit: null, source: 'no-peer', node: null, cluster: null, measured: null }, d)
      assert.equal(limits[d].rate, Infinity, `${d} bucket unlimited`)
    }
    await rs.start()
    await connect(lone, resource)
    await waitFor(`measured (last seen ${limits.state().upload.source})`, () => auto.measured)
    assert.equal(limits.state().upload.source, 'auto')
    assert.equal(limits.state().download.source, 'auto')
    assert.equal(own.stats.served, 0, 'never probed itself')
  } finally {
    auto.stop()
    await rs.stop()
    await own.stop()
  }
})

test('AutoLimiter lifecycle: nothing to do without auto, stop before start, start twice', async () => {
  const node = await newHost()
  const limits = new TransferLimits({ upload: 'unlimited', download: 1_000_000 })
  const auto = new AutoLimiter({ libp2p: node, logger: silentLogger() }, limits)
  auto.stop()
  auto.start()
  auto.start()
  auto.stop()
  assert.equal(limits.state().download.source, 'flag')
  assert.equal(limits.state().upload.source, 'unlimited')
})
