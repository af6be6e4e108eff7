import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { z } from 'zod'
import { handleRequests, request, type Host } from '../../src/p2p/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { clusterLogClient, defineKind } from '../../src/clusterlog/index.ts'
import { REPLICATE_PROTOCOL, SYNC_PROTOCOL } from '../../src/clusterlog/constants.ts'
import { formatVersion } from '../../src/clusterlog/hlc.ts'
import { waitFor } from '../helpers/wait.ts'
import { clusterLogTestbed, connect, counter, type Resource } from '../helpers/clusterlog.ts'

/**
 * Acknowledged writes (issue 16 item 6): a resource answers a write only once a second resource
 * holds it durably, when one is reachable; alone, or when no peer confirms in time, it still
 * answers and says so (`replicas: 1`, astrad_clusterlog_unreplicated_acks_total). Anti-entropy is
 * effectively off here, so nothing but the acknowledgement path (and hints) moves data.
 */

const notice = defineKind('notice', z.string())
const UNREPLICATED = 'astrad_clusterlog_unreplicated_acks_total'
const SYNC_ERRORS = 'astrad_clusterlog_sync_errors_total'

const { newHost, resource, stopResource, stopAll, cleanup } = clusterLogTestbed({ syncIntervalMs: 600_000 })
after(cleanup)

const encode = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v))

/** Writes on `writer` until one is confirmed by a second resource (identify runs on both sides after a connect). */
async function untilReplicated (writer: Resource): Promise<void> {
  await waitFor(`a write on ${writer.name} to be confirmed by a second resource`, async () =>
    (await writer.log.put(notice, `warm-up-${writer.name}`, 'x')).replicas === 2)
}

/**
 * A host that looks like a resource (it serves the sync protocol, with nothing to give) and
 * whose replicate handler, if `stall` is given, never answers until the test releases it.
 */
async function fakeResource (stall?: Promise<void>): Promise<{ host: Host, pushes: () => number }> {
  const host = await newHost()
  let pushes = 0
  await handleRequests(host, SYNC_PROTOCOL, () => encode({ entries: [], more: false }))
  if (stall != null) {
    await handleRequests(host, REPLICATE_PROTOCOL, async () => {
      pushes++
      await stall
      return encode({ have: 0 })
    }, { timeoutMs: 600_000 })
  }
  return { host, pushes: () => pushes }
}

test('with two resources, an acknowledged write is already durable on the second when it resolves', async () => {
  try {
    const [a, b] = await Promise.all([resource('a'), resource('b')])
    await connect(a.host, b.host)
    await untilReplicated(a)

    const put = await a.log.put(notice, 'n1', 'kept twice')
    // Read at once, no waiting: the acknowledgement means b already holds it.
    assert.equal(put.replicas, 2)
    assert.equal(b.log.get(notice, 'n1')?.version, put.version)
    const del = await a.log.delete(notice, 'warm-up-a')
    assert.equal(del.replicas, 2)
    assert.equal(b.log.get(notice, 'warm-up-a')?.deleted, true)
    // Written on b, confirmed by a: the other direction.
    await untilReplicated(b)
    const back = await b.log.put(notice, 'n2', 'from b')
    assert.equal(back.replicas, 2)
    assert.equal(a.log.get(notice, 'n2')?.version, back.version)

    // Through a node-role client: whichever resource takes the write, the other holds it too.
    const nodeHost = await newHost()
    const client = clusterLogClient()({ libp2p: nodeHost, logger: silentLogger() })
    await client.start()
    await connect(nodeHost, a.host)
    await connect(nodeHost, b.host)
    const remote = await client.put(notice, 'n3', 'from a node')
    assert.equal(remote.replicas, 2)
    assert.equal(a.log.get(notice, 'n3')?.version, remote.version)
    assert.equal(b.log.get(notice, 'n3')?.version, remote.version)
    const remoteDel = await client.delete(notice, 'n3')
    assert.equal(remoteDel.replicas, 2)
    await client.stop()

    // Lose a entirely, then restart b from its disk with no peer at all: every acknowledged write is there.
    await stopResource(a)
    await stopResource(b)
    const b2 = await resource('b2', { dataDir: b.dataDir, key: b.key })
    assert.equal(b2.log.get(notice, 'n1')?.value, 'kept twice')
    assert.equal(b2.log.get(notice, 'n2')?.value, 'from b')
    assert.equal(b2.log.get(notice, 'n3')?.deleted, true)
    assert.equal(b2.log.get(notice, 'warm-up-a')?.deleted, true)
  } finally {
    await stopAll()
  }
})

test('a resource alone still acknowledges writes, with replicas 1, and counts them', async () => {
  try {
    const a = await resource('alone')
    assert.equal((await a.log.put(notice, 'x', 'one copy')).replicas, 1)
    assert.equal((await a.log.delete(notice, 'x')).replicas, 1)
    const nodeHost = await newHost()
    const client = clusterLogClient()({ libp2p: nodeHost, logger: silentLogger() })
    await client.start()
    await connect(nodeHost, a.host)
    const remote = await waitFor('the client to write through the lone resource', async () => await client.put(notice, 'y', 'via a node'))
    assert.equal(remote.replicas, 1)
    await client.stop()
    assert.equal(await counter(a.registry, UNREPLICATED), 3)
    assert.equal(a.log.get(notice, 'y')?.value, 'via a node')
  } finally {
    await stopAll()
  }
})

test('a peer resource that never answers does not hold a write past the bound; a third one that answers takes it', async () => {
  let release = (): void => {}
  const stall = new Promise<void>(resolve => { release = resolve })
  try {
    const lines: string[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => { lines.push(line) } })
    const a = await resource('a', { logger })
    const stuck = await fakeResource(stall)
    await connect(a.host, stuck.host)
    await waitFor('a to push a write to the stalled resource', async () => {
      // The stalled handler never answers, so resolving at all means the wait was bounded.
      const put = await a.log.put(notice, 'stalled', 'still acknowledged')
      assert.equal(put.replicas, 1)
      return stuck.pushes() > 0
    })
    const unreplicated = await counter(a.registry, UNREPLICATED)
    assert.ok(unreplicated >= 1)
    assert.equal((await a.log.put(notice, 'again', 'still acknowledged')).replicas, 1)
    assert.equal(await counter(a.registry, UNREPLICATED), unreplicated + 1)
    assert.ok(await counter(a.registry, SYNC_ERRORS, 'timeout') >= 1)
    const warnings = lines.map(l => JSON.parse(l) as { msg: string }).filter(l => l.msg.includes('acknowledged with one copy'))
    assert.equal(warnings.length, 1, 'warned once, not per write')

    // A real third resource joins: writes are confirmed by it, whichever peer is tried first.
    const b = await resource('b')
    await connect(a.host, b.host)
    await untilReplicated(a)
    for (let i = 0; i < 3; i++) {
      const put = await a.log.put(notice, `three-${i}`, 'kept twice')
      assert.equal(put.replicas, 2)
      assert.equal(b.log.get(notice, `three-${i}`)?.version, put.version)
    }
  } finally {
    release()
    await stopAll()
  }
})

test('malformed or unauthorised replicate pushes are refused with an error; pushes are idempotent; the resource stays up', async () => {
  try {
    const [a, b] = await Promise.all([resource('a'), resource('b')])
    await connect(a.host, b.host)
    const evil = await fakeResource()
    await connect(evil.host, a.host)
    const stranger = await newHost()
    await connect(stranger, a.host)

    const origin = `${evil.host.peerId.toString()}:0123abcd`
    const entry = (seq: number, over: Record<string, unknown> = {}): Record<string, unknown> => ({
      origin, seq, kind: 'notice', key: `k${seq}`, version: formatVersion({ wall: Date.now(), counter: seq, origin }), deleted: false, value: `v${seq}`, ...over
    })
    const push = async (from: Host, body: unknown): Promise<number> =>
      (JSON.parse(new TextDecoder().decode(await request(from, a.host.peerId, REPLICATE_PROTOCOL, encode(body)))) as { have: number }).have

    // A peer that does not serve the cluster log may not push, however well formed.
    await assert.rejects(push(stranger, { entry: entry(1) }), { name: 'RequestError', code: 'ERR_FORBIDDEN' })
    // A resource may push its own entries: stored once, however often it repeats them.
    assert.equal(await waitFor('a to take evil for a resource', async () => await push(evil.host, { entry: entry(1) })), 1)
    assert.equal(await push(evil.host, { entry: entry(1) }), 1)
    assert.equal(a.log.get(notice, 'k1')?.value, 'v1')
    // A gap: a asks evil for what it lacks, gets nothing, and says what it holds.
    assert.equal(await push(evil.host, { entry: entry(3) }), 1)

    const otherOrigin = `${b.host.peerId.toString()}:0123abcd`
    for (const garbage of [
      'not json at all',
      { entry: {} },
      { entry: entry(2), extra: true },
      { entry: entry(2, { seq: 0 }) },
      { entry: entry(2, { value: undefined }) },
      { entry: entry(2, { origin: otherOrigin, version: formatVersion({ wall: Date.now(), counter: 0, origin: otherOrigin }) }) },
      [1, 2, 3]
    ]) {
      await assert.rejects(push(evil.host, garbage), { name: 'RequestError', code: 'ERR_DECODE' }, JSON.stringify(garbage))
    }
    await assert.rejects(request(evil.host, a.host.peerId, REPLICATE_PROTOCOL, new Uint8Array(600 * 1024)), { name: 'RequestError' })
    await waitFor('the refusals to be counted', async () =>
      await counter(a.registry, SYNC_ERRORS, 'forbidden') === 1 &&
      await counter(a.registry, SYNC_ERRORS, 'bad_request') === 7 &&
      await counter(a.registry, SYNC_ERRORS, 'too_large') >= 1)

    // Still up and replicating: a write is confirmed by b (evil, if tried, never holds a's entries).
    await waitFor('a write on a to be confirmed by b', async () => {
      const put = await a.log.put(notice, 'after', 'still fine')
      return put.replicas === 2 && b.log.get(notice, 'after')?.version === put.version
    })
    assert.equal(a.log.get(notice, 'k3'), undefined)
  } finally {
    await stopAll()
  }
})

