import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import type { PrivateKey } from '@libp2p/interface'
import { createHost, request, type Host } from '../../src/p2p/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { clusterLog, type ClusterLog } from '../../src/clusterlog/index.ts'
import { newClusterSecret, type Trust } from '../../src/trust/index.ts'
import {
  MailboxServer, MailboxPuller, noticeKind, newNoticeId, mailboxConstants, decodePullResponse, encodePullRequest, type MailboxAction, type Notice
} from '../../src/mailbox/index.ts'
import { PullStreams } from '../../src/mailbox/pull-stream.ts'
import { testHost } from '../helpers/member-host.ts'
import { waitFor } from '../helpers/wait.ts'

/**
 * Long-lived pull streams (`/astra/mailbox-pull/1.1.0`, src/mailbox/pull-stream.ts) between real
 * libp2p hosts on 127.0.0.1: many pulls on one stream, idle close and transparent reopen, a
 * resource restart, both directions of the fallback to `/astra/mailbox/1.0.0`, refusal of a
 * puller without a valid certificate, and the stream and size limits.
 */

const { MAILBOX_PROTOCOL, MAILBOX_STREAM_PROTOCOL, MAILBOX_MAX_STREAMS_PER_PEER, MAX_PULL_REQUEST_BYTES } = mailboxConstants
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-mailbox-stream-'))
const hosts = new Set<Host>()
const trusts = new Set<Trust>()
const closers: Array<() => Promise<void>> = []
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => {})
  await Promise.allSettled([...hosts].map(async h => { await h.stop() }))
  await Promise.allSettled([...trusts].map(async t => { await t.detach() }))
  fs.rmSync(root, { recursive: true, force: true })
})

async function newHost (privateKey?: PrivateKey, listen = ['/ip4/127.0.0.1/tcp/0']): Promise<Host> {
  const host = await createHost({ privateKey: privateKey ?? await generateKeyPair('Ed25519'), listen })
  await host.start()
  hosts.add(host)
  return host
}

interface Resource { host: Host, log: ClusterLog, server: MailboxServer, registry: Registry }

async function startResource (host: Host, name: string, init: ConstructorParameters<typeof MailboxServer>[1] = {}): Promise<Resource> {
  const registry = new Registry()
  const log = clusterLog({ dataDir: path.join(root, name), syncIntervalMs: 300 })({ libp2p: host, logger: silentLogger(), registry })
  await log.start()
  const server = new MailboxServer({ libp2p: host, log, logger: silentLogger(), registry }, { digestIntervalMs: 500, ...init })
  await server.start()
  const r = { host, log, server, registry }
  closers.push(async () => { await stopResource(r) })
  return r
}

async function stopResource (r: Resource): Promise<void> {
  await r.server.stop()
  await r.log.stop()
}

async function counter (registry: Registry, name: string, label: string, value: string): Promise<number> {
  return (await registry.getSingleMetric(name)?.get())?.values.find(v => v.labels[label] === value)?.value ?? 0
}

const pullsAnswered = async (r: Resource): Promise<number> =>
  await counter(r.registry, 'astrad_mailbox_pulls_total', 'mode', 'delta') + await counter(r.registry, 'astrad_mailbox_pulls_total', 'mode', 'snapshot')

function pullStreamsOn (client: Host, resource: Host): number {
  return client.getConnections(resource.peerId).flatMap(c => c.streams).filter(s => s.protocol === MAILBOX_STREAM_PROTOCOL && s.status === 'open').length
}

function pullPayload (client: Host, cursor: { source: string, rev: number } | null = null): Uint8Array {
  return encodePullRequest({ node: client.peerId.toString(), cell: 'a', cursor })
}

let revision = 0
async function publish (log: ClusterLog, text: string): Promise<Notice> {
  const now = Date.now()
  const n: Notice = {
    id: newNoticeId(), kind: 'message', data: { text, level: 'info' }, audience: { cells: null, canary: null, node: null },
    state: 'published', expiresAt: null, createdAt: now, revision: ++revision, updatedAt: now, by: 'test'
  }
  await log.put(noticeKind, n.id, n)
  return n
}

test('many pulls travel on one stream; a malformed request is answered and the stream keeps serving', async () => {
  const r = await startResource(await newHost(), 'r-many')
  const client = await newHost()
  await client.dial(r.host.getMultiaddrs()[0]!)
  const streams = new PullStreams(client)
  closers.push(async () => { await streams.close() })
  const before = await pullsAnswered(r)
  let cursor: { source: string, rev: number } | null = null
  for (let i = 0; i < 200; i++) {
    const res = decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client, cursor)))
    cursor = { source: res.source, rev: res.rev }
  }
  assert.equal(await pullsAnswered(r) - before, 200, 'the resource answered every pull')
  assert.equal(pullStreamsOn(client, r.host), 1, 'all 200 pulls went over one open pull stream')
  assert.equal(streams.protocolFor(r.host.peerId), MAILBOX_STREAM_PROTOCOL)
  // Pipelined: 20 at once on the same stream, answered in order.
  const answers = await Promise.all(Array.from({ length: 20 }, async () => decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client, cursor)))))
  assert.equal(answers.length, 20)
  assert.equal(pullStreamsOn(client, r.host), 1, 'pipelined pulls shared the stream')
  const bad0 = await counter(r.registry, 'astrad_mailbox_refused_total', 'reason', 'bad_request')
  await assert.rejects(streams.pull(r.host.peerId, Buffer.from('{"node":"nope","cell":"a","cursor":null}')), /malformed pull request: node/)
  assert.equal(await counter(r.registry, 'astrad_mailbox_refused_total', 'reason', 'bad_request'), bad0 + 1, 'malformed request counted')
  decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client, cursor)))
  assert.equal(pullStreamsOn(client, r.host), 1, 'the stream survived the malformed request')
})

test('answers of hundreds of KiB (many chunks) arrive whole, pipelined with small ones, page after page', async () => {
  const r = await startResource(await newHost(), 'r-big')
  const text = 'x'.repeat(1_990)
  for (let i = 0; i < 300; i++) await publish(r.log, `${i} ${text}`)
  const client = await newHost()
  await client.dial(r.host.getMultiaddrs()[0]!)
  const streams = new PullStreams(client)
  closers.push(async () => { await streams.close() })
  // A snapshot page (~512 KiB) and a small pull in flight together on the one stream.
  const [page1, small] = await Promise.all([
    streams.pull(r.host.peerId, pullPayload(client)),
    streams.pull(r.host.peerId, pullPayload(client, { source: r.log.origin, rev: r.server.digest().rev }))
  ])
  assert.ok(page1.length > 256 * 1024, `first page is large (${page1.length} bytes)`)
  const first = decodePullResponse(page1)
  assert.equal(first.mode, 'snapshot')
  assert.ok(first.more, 'a second page follows')
  assert.equal(decodePullResponse(small).items.length, 0, 'the small answer matched the small request')
  let seen = first.items.length
  let cursor: { source: string, rev: number, snapshot?: true } = { source: first.source, rev: first.rev, snapshot: true }
  for (let page = 2; page < 10; page++) {
    const res = decodePullResponse(await streams.pull(r.host.peerId, encodePullRequest({ node: client.peerId.toString(), cell: 'a', cursor })))
    seen += res.items.length
    cursor = { source: res.source, rev: res.rev, snapshot: true }
    if (!res.more) break
  }
  assert.equal(seen, 300, 'every notice arrived once over the pages')
  assert.equal(pullStreamsOn(client, r.host), 1, 'all on one stream')
})

test('an idle stream is closed by the resource and reopened transparently', async () => {
  const r = await startResource(await newHost(), 'r-idle', { streamIdleMs: 300 })
  const client = await newHost()
  await client.dial(r.host.getMultiaddrs()[0]!)
  const streams = new PullStreams(client)
  closers.push(async () => { await streams.close() })
  decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client)))
  assert.equal(pullStreamsOn(client, r.host), 1)
  await waitFor('the resource closed the idle pull stream', () => pullStreamsOn(client, r.host) === 0)
  const res = decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client)))
  assert.equal(res.mode, 'snapshot', 'the pull after the idle close was answered')
  assert.equal(pullStreamsOn(client, r.host), 1, 'a new stream was opened')
})

test('a resource restarted mid-rollout: the node reconnects, applies the next notice once and nothing twice', async () => {
  const key = await generateKeyPair('Ed25519')
  const first = await newHost(key)
  const addr = first.getMultiaddrs()[0]!
  let r = await startResource(first, 'r-restart')
  const nodeHost = await newHost()
  await nodeHost.dial(addr)
  const dataDir = path.join(root, 'node-restart')
  fs.mkdirSync(dataDir)
  const applied: string[] = []
  const puller = new MailboxPuller({ libp2p: nodeHost, logger: silentLogger() }, {
    dataDir,
    self: { peerId: nodeHost.peerId.toString(), cell: 'a' },
    pullIntervalMs: 60_000,
    jitterMs: 10,
    onActions: (actions: MailboxAction[]) => { for (const a of actions) if (a.type === 'message') applied.push(a.notice.id) }
  })
  closers.push(async () => { await puller.stop() })
  await puller.start()
  const n1 = await publish(r.log, 'before restart')
  await waitFor('n1 applied before the restart', async () => { await puller.pull(); return applied.includes(n1.id) })
  // Stop the resource (its host too: every stream and connection goes) and start it again with
  // the same identity, address and data dir.
  await stopResource(r)
  await first.stop()
  hosts.delete(first)
  const again = await newHost(key, [addr.toString()])
  r = await startResource(again, 'r-restart')
  const n2 = await publish(r.log, 'after restart')
  await waitFor('n2 applied after the restart', async () => {
    if (nodeHost.getConnections(again.peerId).length === 0) await nodeHost.dial(addr).catch(() => {})
    await puller.pull()
    return applied.includes(n2.id)
  })
  await puller.pull()
  assert.deepEqual(applied, [n1.id, n2.id], 'each notice applied exactly once across the restart')
  assert.equal(pullStreamsOn(nodeHost, again), 1, 'the node pulls over a long-lived stream to the restarted resource')
})

test('older peers: a one-shot client is served by a new resource; a new node falls back to an older resource', async () => {
  const r = await startResource(await newHost(), 'r-new')
  const old = await startResource(await newHost(), 'r-old', { oneShotOnly: true })
  const client = await newHost()
  await client.dial(r.host.getMultiaddrs()[0]!)
  await client.dial(old.host.getMultiaddrs()[0]!)
  // An older node: /astra/mailbox/1.0.0, one request per stream.
  const viaOneShot = decodePullResponse(await request(client, r.host.peerId, MAILBOX_PROTOCOL, pullPayload(client)))
  assert.equal(viaOneShot.source, r.log.origin, 'the new resource still answers the one-shot protocol')
  // A new node against an older resource: falls back per connection, and keeps working.
  const streams = new PullStreams(client)
  closers.push(async () => { await streams.close() })
  for (let i = 0; i < 3; i++) {
    const res = decodePullResponse(await streams.pull(old.host.peerId, pullPayload(client)))
    assert.equal(res.source, old.log.origin, `pull ${i} answered by the older resource`)
  }
  assert.equal(streams.protocolFor(old.host.peerId), MAILBOX_PROTOCOL, 'fell back to the one-shot protocol')
  assert.equal(pullStreamsOn(client, old.host), 0)
})

test('limits: a stream over the per-peer cap and an oversized request are refused, counted, and the resource keeps serving', async () => {
  const r = await startResource(await newHost(), 'r-limits')
  const client = await newHost()
  await client.dial(r.host.getMultiaddrs()[0]!)
  const held = []
  for (let i = 0; i < MAILBOX_MAX_STREAMS_PER_PEER; i++) {
    const s = await client.dialProtocol(r.host.peerId, MAILBOX_STREAM_PROTOCOL)
    const lp = lpStream(s)
    await lp.write(pullPayload(client))
    assert.equal((await lp.read()).subarray()[0], 0, `stream ${i} answered`)
    held.push(s)
  }
  const extra = await client.dialProtocol(r.host.peerId, MAILBOX_STREAM_PROTOCOL)
  const answer = (await lpStream(extra).read()).subarray()
  assert.equal(answer[0], 1, 'the stream over the cap is answered with an error')
  assert.match(new TextDecoder().decode(answer.subarray(1)), /ERR_TOO_MANY_STREAMS/)
  assert.equal(await counter(r.registry, 'astrad_mailbox_refused_total', 'reason', 'streams'), 1)
  for (const s of held) await s.close()
  // Oversized: answered with ERR_TOO_LARGE, the stream closed; the next pull reopens one.
  const streams = new PullStreams(client)
  closers.push(async () => { await streams.close() })
  await waitFor('held streams released on the resource', async () => {
    decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client)))
    return true
  })
  await assert.rejects(streams.pull(r.host.peerId, Buffer.alloc(MAX_PULL_REQUEST_BYTES + 1, 32)), /exceeds 4096 bytes/)
  await waitFor('oversized request counted', async () => await counter(r.registry, 'astrad_mailbox_refused_total', 'reason', 'too_large') === 1)
  const res = decodePullResponse(await streams.pull(r.host.peerId, pullPayload(client)))
  assert.equal(res.source, r.log.origin, 'the resource still serves after the oversized request')
})

test('a puller without a valid member certificate is refused on the stream; a member is served', async () => {
  const secret = await newClusterSecret()
  const forger = await newClusterSecret()
  const res = await testHost(secret, ['resource'])
  trusts.add(res.trust!)
  await res.host.start()
  hosts.add(res.host)
  const r = await startResource(res.host, 'r-secure')
  const member = await testHost(secret, ['node'])
  trusts.add(member.trust!)
  // Same private-network key, certificate signed by another cluster key: a forged membership.
  const forged = await testHost({ ...secret, key: forger.key }, ['node', 'resource'])
  trusts.add(forged.trust!)
  const bare = await testHost(secret)
  for (const h of [member.host, forged.host, bare.host]) {
    await h.start()
    hosts.add(h)
    await h.dial(r.host.getMultiaddrs()[0]!)
  }
  const memberStreams = new PullStreams(member.host)
  closers.push(async () => { await memberStreams.close() })
  const ok = decodePullResponse(await waitFor('member served', async () => await memberStreams.pull(r.host.peerId, pullPayload(member.host))))
  assert.equal(ok.source, r.log.origin)
  for (const [name, h] of [['forged certificate', forged.host], ['no certificate', bare.host]] as const) {
    const streams = new PullStreams(h)
    closers.push(async () => { await streams.close() })
    await assert.rejects(streams.pull(r.host.peerId, pullPayload(h)), (err: Error) => {
      assert.match(err.message, /refused/, `${name}: ${err.message}`)
      assert.equal((err as { code?: string }).code, 'ERR_FORBIDDEN', `${name}: ${err.message}`)
      return true
    })
    await sleep(50)
    assert.equal(pullStreamsOn(h, r.host), 0, `${name}: the stream was closed after the refusal`)
  }
})
