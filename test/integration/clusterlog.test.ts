import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, handleRequests, request } from '../../src/p2p/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { clusterLog, clusterLogClient, defineKind, type ClusterLog, type Entry } from '../../src/clusterlog/index.ts'
import { ACCESS_PROTOCOL, SYNC_PROTOCOL } from '../../src/clusterlog/constants.ts'
import { waitFor } from '../helpers/wait.ts'
import { clusterLogTestbed, connect, counter, type Resource } from '../helpers/clusterlog.ts'

/**
 * Real libp2p hosts in one process on 127.0.0.1: resources replicate the cluster log, recover
 * from disk after a restart, catch up when late, serve a node-role client, and shrug off
 * garbage. Anti-entropy runs every ~300 ms here so a missed hint costs little test time.
 */

const SYNC_MS = 300
const app = defineKind('app', z.object({ replicas: z.number().int().min(0), by: z.string() }))
const notice = defineKind('notice', z.string())

const { root, newHost, resource, stopResource, stopAll, cleanup } = clusterLogTestbed({ syncIntervalMs: SYNC_MS })
after(cleanup)

/** Everything a resource holds of the two kinds, versions included. */
function snapshot (log: ClusterLog): unknown[] {
  const rows = (e: Entry<unknown>): unknown[] => [e.kind, e.key, e.value, e.deleted, e.version]
  return [...log.list(app, { includeDeleted: true }).map(rows), ...log.list(notice, { includeDeleted: true }).map(rows)]
}

async function converged (rs: Resource[], expectedObjects?: number): Promise<void> {
  await waitFor(`${rs.map(r => r.name).join(', ')} to converge`, () => {
    const first = JSON.stringify(snapshot(rs[0]?.log as ClusterLog))
    if (expectedObjects != null && snapshot(rs[0]?.log as ClusterLog).length !== expectedObjects) return false
    return rs.every(r => JSON.stringify(snapshot(r.log)) === first)
  })
}

test('three resources converge after writes on different resources, concurrent writes to one key included', async (t) => {
  try {
    const [a, b, c] = await Promise.all([resource('a'), resource('b'), resource('c')])
    // A line, not a mesh: c learns a's writes only through b.
    await connect(a.host, b.host)
    await connect(b.host, c.host)
    const t0 = Date.now()
    await a.log.put(app, 'web', { replicas: 2, by: 'a' })
    await b.log.put(notice, 'n1', 'drain tonight')
    await c.log.put(app, 'api', { replicas: 1, by: 'c' })
    // Concurrent writes to the same key on all three, and a delete racing a write.
    await Promise.all([
      a.log.put(app, 'shared', { replicas: 1, by: 'a' }),
      b.log.put(app, 'shared', { replicas: 2, by: 'b' }),
      c.log.put(app, 'shared', { replicas: 3, by: 'c' })
    ])
    await Promise.all([a.log.delete(app, 'api'), c.log.put(app, 'api', { replicas: 5, by: 'c' })])
    await converged([a, b, c], 4)
    const ms = Date.now() - t0
    const shared = a.log.get(app, 'shared')
    assert.ok(shared != null && ['a', 'b', 'c'].includes(shared.value?.by ?? ''))
    assert.deepEqual(b.log.get(app, 'shared'), { ...shared, rev: b.log.get(app, 'shared')?.rev }, 'one winner everywhere')
    assert.equal(c.log.get(notice, 'n1')?.value, 'drain tonight')
    assert.ok(a.log.revision > 0 && c.log.revision > 0)
    // Every change reached the change feed.
    assert.deepEqual(new Set(b.log.changesSince(0).map(e => `${e.kind}/${e.key}`)), new Set(['app/web', 'notice/n1', 'app/api', 'app/shared']))
    t.diagnostic(`three resources converged in ${ms} ms`)
  } finally {
    await stopAll()
  }
})

test('a write reaches peer resources by push hint, without waiting for anti-entropy', async (t) => {
  try {
    // Anti-entropy effectively off: only the hint (and the catch-up on connect) can move data.
    const [a, b, c] = await Promise.all([resource('a', { syncIntervalMs: 600_000 }), resource('b', { syncIntervalMs: 600_000 }), resource('c', { syncIntervalMs: 600_000 })])
    await connect(a.host, b.host)
    await connect(a.host, c.host)
    await connect(b.host, c.host)
    await waitFor('the resources to see each other on the hint topic', () =>
      [a, b, c].every(r => r.host.services.pubsub.getSubscribers('astra/log/1').length === 2))
    const latencies: number[] = []
    for (let i = 0; i < 5; i++) {
      const writer = [a, b, c][i % 3] as Resource
      const t0 = Date.now()
      await writer.log.put(notice, `hint-${i}`, `written by ${writer.name}`)
      await converged([a, b, c], i + 1)
      latencies.push(Date.now() - t0)
    }
    t.diagnostic(`hint-driven replication to two peers: ${latencies.join(', ')} ms`)
  } finally {
    await stopAll()
  }
})

test('a restarted resource recovers from disk and catches up; a late empty resource catches up too', async (t) => {
  try {
    const [a, b, c] = await Promise.all([resource('a'), resource('b'), resource('c')])
    await connect(a.host, b.host)
    await connect(b.host, c.host)
    await connect(a.host, c.host)
    await a.log.put(app, 'web', { replicas: 1, by: 'a' })
    await c.log.put(app, 'old', { replicas: 1, by: 'c' })
    await c.log.put(notice, 'mine', 'written on c')
    await converged([a, b, c], 3)
    const before = snapshot(c.log)
    const revBefore = c.log.revision

    await stopResource(c)
    // Written around c while it is down: an update, a delete of c's own object, new objects.
    await a.log.put(app, 'web', { replicas: 4, by: 'a' })
    await b.log.delete(app, 'old')
    await b.log.put(notice, 'n2', 'while c was down')
    // More than one sync batch (1,000 entries) of writes, so catching up takes several rounds.
    for (let i = 0; i < 1_200; i++) await a.log.put(notice, `bulk-${String(i).padStart(4, '0')}`, `n${i}`)
    await converged([a, b], 1_204)

    const c2 = await resource('c2', { dataDir: c.dataDir, key: c.key })
    assert.deepEqual(snapshot(c2.log), before, 'recovered from disk before any peer is reachable')
    assert.equal(c2.log.revision, revBefore)
    const changes: string[] = []
    c2.log.onChange(e => { changes.push(`${e.kind}/${e.key}`) })
    const t0 = Date.now()
    await connect(c2.host, a.host)
    await converged([a, b, c2], 1_204)
    t.diagnostic(`restarted resource caught up in ${Date.now() - t0} ms`)
    assert.equal(c2.log.get(app, 'old')?.deleted, true, 'the delete of its own object reached it as a tombstone')
    assert.equal(changes.length, 1_203)
    assert.ok(['app/old', 'app/web', 'notice/n2', 'notice/bulk-1199'].every(k => changes.includes(k)))
    assert.equal(c2.log.changesSince(revBefore, 5_000).length, 1_203)
    assert.equal(c2.log.changesSince(revBefore).length, 1_000, 'default page of the change feed')
    // A write from the restarted resource continues its numbering and replicates.
    await c2.log.put(notice, 'back', 'c is back')
    await converged([a, b, c2], 1_205)

    const late = await resource('late')
    const t1 = Date.now()
    await connect(late.host, b.host)
    await converged([a, b, c2, late], 1_205)
    t.diagnostic(`late empty resource caught up in ${Date.now() - t1} ms`)
  } finally {
    await stopAll()
  }
})

test('a node-role daemon writes and reads through a resource, fails over, and says when none is reachable', async () => {
  try {
    const [a, b] = await Promise.all([resource('a'), resource('b')])
    await connect(a.host, b.host)
    const nodeHost = await newHost()
    const client = clusterLogClient({ timeoutMs: 2_000 })({ libp2p: nodeHost, logger: silentLogger() })
    await assert.rejects(client.get(app, 'x'), { name: 'LifecycleError', code: 'ERR_LIFECYCLE' })
    await client.start()
    await assert.rejects(client.get(app, 'x'), { name: 'RequestError', code: 'ERR_NO_RESOURCE' })
    await connect(nodeHost, a.host)
    await connect(nodeHost, b.host)
    await waitFor('the client to see both resources', async () => {
      try { await client.get(app, 'x'); return true } catch { return false }
    })

    const put = await client.put(app, 'web', { replicas: 3, by: 'node' })
    assert.deepEqual([put.key, put.value, put.deleted], ['web', { replicas: 3, by: 'node' }, false])
    assert.equal((await client.get(app, 'web'))?.version, put.version, 'reads its own write')
    await client.put(app, 'gone', { replicas: 1, by: 'node' })
    const del = await client.delete(app, 'gone')
    assert.equal(del.deleted, true)
    assert.deepEqual((await client.list(app)).map(e => e.key), ['web'])
    assert.deepEqual((await client.list(app, { includeDeleted: true })).map(e => [e.key, e.deleted]), [['gone', true], ['web', false]])
    await assert.rejects(client.put(app, 'bad', { replicas: -1, by: 'node' }), { name: 'InvalidEntryError', code: 'ERR_INVALID_ENTRY' })
    // A resource refuses a value it cannot store, too (the client's schema may differ from the writer's).
    const raw = defineKind('app', z.any())
    await assert.rejects(client.put(raw, 'huge', 'x'.repeat(600_000)), { name: 'InvalidEntryError' })
    // A list longer than one page (1,000 objects) is paged by the client.
    for (let i = 0; i < 1_100; i++) await a.log.put(notice, `page-${String(i).padStart(4, '0')}`, `p${i}`)
    const notices = await client.list(notice)
    assert.equal(notices.length, 1_100)
    assert.equal(new Set(notices.map(e => e.key)).size, 1_100)
    await converged([a, b], 1_102)
    assert.equal(a.log.get(app, 'web')?.origin === a.host.peerId.toString() || a.log.get(app, 'web')?.origin === b.host.peerId.toString(), true)

    // Failover: whichever resource answered, stop it; the other keeps serving.
    await stopResource(a)
    await waitFor('the connection to a to close', () => nodeHost.getConnections(a.host.peerId).length === 0)
    const again = await client.put(notice, 'after-failover', 'still writable')
    assert.equal(again.origin, b.host.peerId.toString())
    assert.equal((await client.get(notice, 'after-failover'))?.value, 'still writable')
    await stopResource(b)
    await waitFor('the connection to b to close', () => nodeHost.getConnections().length === 0)
    await assert.rejects(client.list(app), { name: 'RequestError', code: 'ERR_NO_RESOURCE' })
    await client.stop()
  } finally {
    await stopAll()
  }
})

test('a read that every resource was too slow for is tried once more with twice the time; a write is not', async () => {
  try {
    // A resource that answers each request with an empty entry, after `delayMs` when set.
    const slow = await newHost()
    const ops: string[] = []
    let delayMs = 0
    await handleRequests(slow, ACCESS_PROTOCOL, async (req) => {
      ops.push(String(JSON.parse(new TextDecoder().decode(req)).op))
      const wait = delayMs
      delayMs = 0
      if (wait > 0) await sleep(wait)
      return new TextEncoder().encode('{"entry":null}')
    })
    const nodeHost = await newHost()
    const client = clusterLogClient({ timeoutMs: 1_000 })({ libp2p: nodeHost, logger: silentLogger() })
    await client.start()
    await connect(nodeHost, slow)
    await waitFor('the client to see the resource', async () => {
      try { await client.get(app, 'x'); return true } catch { return false }
    })
    ops.length = 0
    // The first answer comes after 1.5 s: past the 1 s deadline, inside the second round's 2 s.
    delayMs = 1_500
    assert.equal(await client.get(app, 'x'), undefined, 'the read got its answer in the second round')
    assert.deepEqual(ops, ['get', 'get'], 'step: one slow attempt, one more with twice the time')
    ops.length = 0
    delayMs = 1_500
    await assert.rejects(client.put(app, 'w', { replicas: 1, by: 'node' }), (err: Error & { code?: string }) => err.code === 'ERR_NO_RESOURCE' && /timeout/i.test(err.message))
    assert.deepEqual(ops, ['put'], 'a write is tried once per resource')
    await client.stop()
  } finally {
    await stopAll()
  }
})

test('garbage and oversized sync requests are refused and counted; the resource keeps replicating', async () => {
  try {
    const [a, b] = await Promise.all([resource('a'), resource('b')])
    await connect(a.host, b.host)
    const evil = await newHost()
    await connect(evil, a.host)
    const bytes = new TextEncoder()
    for (const garbage of ['not json at all', '{"have":{"x":1}}', '{"have":{},"extra":true}', '[1,2,3]']) {
      await assert.rejects(request(evil, a.host.peerId, SYNC_PROTOCOL, bytes.encode(garbage)), { name: 'RequestError', code: 'ERR_DECODE' })
    }
    await assert.rejects(request(evil, a.host.peerId, SYNC_PROTOCOL, new Uint8Array(300 * 1024)), { name: 'RequestError' })
    await waitFor('the refusals to be counted', async () =>
      await counter(a.registry, 'astrad_clusterlog_sync_errors_total', 'bad_request') === 4 &&
      await counter(a.registry, 'astrad_clusterlog_sync_errors_total', 'too_large') === 1)
    // A malformed hint on the gossip topic is rejected by the validator and counted.
    evil.services.pubsub.subscribe('astra/log/1')
    await waitFor('a to see evil on the topic', () => a.host.services.pubsub.getSubscribers('astra/log/1').some(p => p.equals(evil.peerId)))
    await evil.services.pubsub.publish('astra/log/1', bytes.encode('{"origin":"nope","seq":-1}'))
    await waitFor('the bad hint to be counted', async () => await counter(a.registry, 'astrad_clusterlog_sync_errors_total', 'bad_hint') === 1)

    // Fake resources answering pulls with garbage or with far too much: refused and counted.
    const liar = await newHost()
    await handleRequests(liar, SYNC_PROTOCOL, () => bytes.encode('{"entries":[{"origin":"x"}],"more":true}'))
    const flood = await newHost()
    await handleRequests(flood, SYNC_PROTOCOL, () => new Uint8Array(3 * 1024 * 1024).fill(0x20), { maxResponseBytes: 8 * 1024 * 1024 })
    await connect(liar, a.host)
    await connect(flood, a.host)
    await waitFor('the bad responses to be counted', async () =>
      await counter(a.registry, 'astrad_clusterlog_sync_errors_total', 'bad_response') >= 1 &&
      await counter(a.registry, 'astrad_clusterlog_sync_errors_total', 'too_large') >= 2)

    await a.log.put(app, 'still', { replicas: 1, by: 'a' })
    await converged([a, b], 1)
    const metrics = await a.registry.metrics()
    assert.match(metrics, /astrad_clusterlog_entries 1/)
    assert.match(metrics, /astrad_clusterlog_revision 1/)
  } finally {
    await stopAll()
  }
})

test('lifecycle: calls before start fail, start twice is a no-op, stop closes the database', async () => {
  try {
    const host = await newHost()
    const dataDir = path.join(root, 'lifecycle')
    const log = clusterLog({ dataDir })({ libp2p: host, logger: silentLogger() })
    assert.throws(() => log.get(app, 'x'), { name: 'LifecycleError' })
    const stoppedHost = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await assert.rejects(clusterLog({ dataDir })({ libp2p: stoppedHost, logger: silentLogger() }).start(), { name: 'LifecycleError' })
    assert.throws(() => log.revision, { name: 'LifecycleError' })
    await assert.rejects(log.put(app, 'x', { replicas: 1, by: 't' }), { name: 'LifecycleError' })
    await log.stop() // stop before start: nothing to do
    await Promise.all([log.start(), log.start()])
    await log.start()
    await log.put(app, 'x', { replicas: 1, by: 't' })
    await assert.rejects(log.put(app, 'x', { replicas: 1.5, by: 't' }), { name: 'InvalidEntryError' })
    await assert.rejects(log.put(app, '', { replicas: 1, by: 't' }), { name: 'InvalidEntryError' })
    const aborted = AbortSignal.abort()
    await assert.rejects(log.put(app, 'y', { replicas: 1, by: 't' }, { signal: aborted }), { name: 'AbortError' })
    await log.stop()
    assert.throws(() => log.list(app), { name: 'LifecycleError' })
    // The file is closed and unlocked: a second instance on the same dir opens it.
    const other = clusterLog({ dataDir })({ libp2p: host, logger: silentLogger() })
    await other.start()
    assert.deepEqual(other.get(app, 'x')?.value, { replicas: 1, by: 't' })
    await other.stop()
    // A corrupt database file fails start with a clear error and leaves nothing half started.
    const bad = path.join(root, 'corrupt')
    fs.mkdirSync(bad, { recursive: true })
    fs.writeFileSync(path.join(bad, 'cluster-log.sqlite'), Buffer.alloc(8192, 0x42))
    const broken = clusterLog({ dataDir: bad })({ libp2p: host, logger: silentLogger() })
    await assert.rejects(broken.start(), { name: 'LogStoreError', code: 'ERR_CLUSTERLOG_CORRUPT' })
    assert.throws(() => broken.get(app, 'x'), { name: 'LifecycleError' })
  } finally {
    await stopAll()
  }
})
