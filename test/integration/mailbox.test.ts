import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from 'prom-client'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, handleRequests, request, type Host } from '../../src/p2p/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { clusterLog, type ClusterLog } from '../../src/clusterlog/index.ts'
import {
  MailboxServer, MailboxPuller, noticeKind, newNoticeId, mailboxConstants, type MailboxAction, type Notice
} from '../../src/mailbox/index.ts'
import { waitFor } from '../helpers/cluster.ts'

/**
 * Real libp2p hosts in one process on 127.0.0.1: two resources (cluster log + mailbox server)
 * and four nodes (mailbox pullers with their state files), as in a daemon. Notices are written
 * straight into a resource's cluster log, as `astrad notice` does through the RPC port.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-mailbox-it-'))
const hosts = new Set<Host>()
after(async () => {
  await Promise.allSettled([...hosts].map(async h => { await h.stop() }))
  fs.rmSync(root, { recursive: true, force: true })
})

interface Resource { host: Host, log: ClusterLog, server: MailboxServer, registry: Registry }
interface Node { name: string, host: Host, dataDir: string, cell: string, puller: MailboxPuller, applied: Array<{ type: string, id: string }> }

async function newHost (): Promise<Host> {
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await host.start()
  hosts.add(host)
  return host
}

async function resource (name: string): Promise<Resource> {
  const host = await newHost()
  const registry = new Registry()
  const log = clusterLog({ dataDir: path.join(root, name), syncIntervalMs: 300 })({ libp2p: host, logger: silentLogger(), registry })
  await log.start()
  const server = new MailboxServer({ libp2p: host, log, logger: silentLogger(), registry }, { digestIntervalMs: 500 })
  await server.start()
  return { host, log, server, registry }
}

async function stopResource (r: Resource): Promise<void> {
  await r.server.stop()
  await r.log.stop()
  await r.host.stop()
  hosts.delete(r.host)
}

function startPuller (n: Pick<Node, 'host' | 'dataDir' | 'cell' | 'applied'>): MailboxPuller {
  return new MailboxPuller({ libp2p: n.host, logger: silentLogger() }, {
    dataDir: n.dataDir,
    self: { peerId: n.host.peerId.toString(), cell: n.cell },
    pullIntervalMs: 1_000,
    jitterMs: 50,
    onActions: (actions: MailboxAction[]) => {
      for (const a of actions) {
        if (a.type === 'standing') continue
        n.applied.push({ type: a.type, id: a.type === 'unpreload' || a.type === 'preload' ? a.id : a.notice.id })
      }
    }
  })
}

async function node (name: string, cell: string, resources: Resource[]): Promise<Node> {
  const host = await newHost()
  for (const r of resources) await host.dial(r.host.getMultiaddrs()[0]!)
  const dataDir = path.join(root, name)
  fs.mkdirSync(dataDir, { recursive: true })
  const n: Node = { name, host, dataDir, cell, applied: [], puller: undefined as unknown as MailboxPuller }
  n.puller = startPuller(n)
  await n.puller.start()
  return n
}

let revision = 0
async function write (log: ClusterLog, n: Omit<Notice, 'revision' | 'createdAt' | 'updatedAt' | 'by'> & { createdAt?: number }): Promise<Notice> {
  const now = Date.now()
  const full: Notice = { createdAt: now, ...n, revision: ++revision, updatedAt: now, by: 'test' }
  await log.put(noticeKind, full.id, full)
  return full
}

const count = (n: Node, id: string): number => n.applied.filter(a => a.id === id).length

const resources: Resource[] = []
const nodes: Node[] = []

test('setup: two resources, four nodes in two cells', async () => {
  resources.push(await resource('r1'), await resource('r2'))
  await resources[0]!.host.dial(resources[1]!.host.getMultiaddrs()[0]!)
  for (const [i, cell] of ['a', 'a', 'b', 'b'].entries()) nodes.push(await node(`n${i + 1}`, cell, resources))
  await waitFor('every node pulled once', () => nodes.every(n => n.puller.state.cursor != null))
})

test('a canary reaches only its whitelist; promotion reaches everyone, each exactly once', async () => {
  const [r1] = resources as [Resource]
  const [n1, n2] = nodes as [Node, Node]
  const msg = await write(r1.log, {
    id: newNoticeId(), kind: 'message', data: { text: 'canary first', level: 'info' },
    audience: { cells: null, canary: [n1.host.peerId.toString(), n2.host.peerId.toString()], node: null }, state: 'canary', expiresAt: null
  })
  await waitFor('the canary nodes applied it', () => count(n1, msg.id) === 1 && count(n2, msg.id) === 1)
  // Two more pull intervals: nobody else gets it.
  await sleep(2_200)
  assert.deepEqual(nodes.map(n => count(n, msg.id)), [1, 1, 0, 0])
  assert.equal(n1.puller.revision, msg.revision, 'the canary nodes report the revision they applied')
  const promoted = await write(r1.log, { ...msg, audience: { cells: null, canary: null, node: null }, state: 'published' })
  await waitFor('everyone applied the promotion', () => nodes.every(n => n.puller.revision >= promoted.revision))
  await sleep(1_200)
  assert.deepEqual(nodes.map(n => count(n, msg.id)), [1, 1, 1, 1], 'the canary nodes do not apply it again')
  assert.deepEqual(nodes.map(n => n.puller.state.standing(Date.now()).messages.map(m => m.text)), Array(4).fill(['canary first']))
})

test('cells: a notice for cell b reaches only cell b', async () => {
  const [r1] = resources as [Resource]
  const bw = await write(r1.log, {
    id: newNoticeId(), kind: 'bandwidth', data: { upload: 1_000_000, download: null },
    audience: { cells: ['b'], canary: null, node: null }, state: 'published', expiresAt: null
  })
  await waitFor('cell b has the cap', () => nodes.slice(2).every(n => n.puller.state.standing(Date.now()).bandwidth?.upload === 1_000_000))
  await sleep(1_200)
  assert.deepEqual(nodes.slice(0, 2).map(n => n.puller.state.standing(Date.now()).bandwidth), [undefined, undefined])
  // Recall: the cap is undone where it was applied.
  await write(r1.log, { ...bw, data: null, state: 'recalled' })
  await waitFor('cell b lost the cap', () => nodes.slice(2).every(n => n.puller.state.standing(Date.now()).bandwidth == null))
})

test('an offline node catches up on return, and a restart neither re-applies nor misses', async () => {
  const [r1] = resources as [Resource]
  const n4 = nodes[3] as Node
  await n4.puller.stop()
  const drain = await write(r1.log, {
    id: newNoticeId(), kind: 'drain', data: { reason: 'kernel update' },
    audience: { cells: ['b'], canary: null, node: null }, state: 'published', expiresAt: null
  })
  const edited = await write(r1.log, {
    id: newNoticeId(), kind: 'message', data: { text: 'v1', level: 'warn' }, audience: { cells: null, canary: null, node: null }, state: 'published', expiresAt: null
  })
  await write(r1.log, { ...edited, data: { text: 'v2', level: 'warn' } })
  await waitFor('n3 drained once', () => count(nodes[2]!, drain.id) === 1)
  assert.equal(count(n4, drain.id), 0)
  // Back: a fresh puller on the same data dir (a restarted daemon).
  const before = n4.applied.length
  n4.puller = startPuller(n4)
  await n4.puller.start()
  await waitFor('n4 caught up', () => count(n4, drain.id) === 1 && n4.puller.state.standing(Date.now()).messages.some(m => m.text === 'v2'))
  assert.equal(count(n4, edited.id), 1, 'only the newest version of the edited message applied')
  // Restart again with nothing new: nothing applied twice.
  await n4.puller.stop()
  const after = n4.applied.length
  n4.puller = startPuller(n4)
  await n4.puller.start()
  await sleep(1_500)
  assert.equal(n4.applied.length, after, `restart re-applied: ${JSON.stringify(n4.applied.slice(after))}`)
  assert.ok(after > before)
})

test('a resource failing mid-rollout loses nothing: nodes fail over, get a snapshot, apply once', async () => {
  const [r1, r2] = resources as [Resource, Resource]
  const [n1, n2] = nodes as [Node, Node]
  const pre = await write(r1.log, {
    id: newNoticeId(), kind: 'message', data: { text: 'rollout', level: 'info' },
    audience: { cells: null, canary: [n1.host.peerId.toString(), n2.host.peerId.toString()], node: null }, state: 'canary', expiresAt: null
  })
  await waitFor('canary applied', () => count(n1, pre.id) === 1 && count(n2, pre.id) === 1)
  await waitFor('r2 holds the notice', () => r2.log.get(noticeKind, pre.id)?.value?.revision === pre.revision)
  await stopResource(r1)
  // The operator promotes through the surviving resource.
  const promoted = await write(r2.log, { ...pre, audience: { cells: null, canary: null, node: null }, state: 'published' })
  await waitFor('everyone has the promotion from r2', () => nodes.every(n => n.puller.revision >= promoted.revision))
  await sleep(1_200)
  assert.deepEqual(nodes.map(n => count(n, pre.id)), [1, 1, 1, 1])
  assert.ok(nodes.every(n => n.puller.state.cursor?.source === r2.log.origin), 'every node now follows r2')
})

test('malformed and oversized pulls are refused and counted; the resource keeps serving', async () => {
  const r2 = resources[1] as Resource
  const client = await newHost()
  await client.dial(r2.host.getMultiaddrs()[0]!)
  const refused = async (reason: string): Promise<number> => {
    const m = (await r2.registry.getSingleMetric('astrad_mailbox_refused_total')?.get())?.values.find(v => v.labels.reason === reason)
    return m?.value ?? 0
  }
  const bad0 = await refused('bad_request')
  await assert.rejects(request(client, r2.host.peerId, mailboxConstants.MAILBOX_PROTOCOL, Buffer.from('{"node":"nope","cell":"a","cursor":null}')), /refused.*malformed pull request/)
  await assert.rejects(request(client, r2.host.peerId, mailboxConstants.MAILBOX_PROTOCOL, Buffer.from('not json')), /not JSON/)
  assert.equal(await refused('bad_request'), bad0 + 2)
  const big0 = await refused('too_large')
  await assert.rejects(request(client, r2.host.peerId, mailboxConstants.MAILBOX_PROTOCOL, Buffer.alloc(mailboxConstants.MAX_PULL_REQUEST_BYTES + 1, 32)))
  await waitFor('oversized counted', async () => await refused('too_large') === big0 + 1)
  // Still serving.
  const n1 = nodes[0] as Node
  await n1.puller.pull()
  assert.equal(n1.puller.state.cursor?.source, r2.log.origin)
})

test('an oversized or malformed answer is refused and counted by the node, which keeps its state', async () => {
  const rogue = await newHost()
  let answer: Uint8Array = Buffer.alloc(mailboxConstants.MAX_PULL_RESPONSE_BYTES + 1024, 32)
  await handleRequests(rogue, mailboxConstants.MAILBOX_PROTOCOL, () => answer, { maxResponseBytes: 4 * mailboxConstants.MAX_PULL_RESPONSE_BYTES })
  const host = await newHost()
  await host.dial(rogue.getMultiaddrs()[0]!)
  const dataDir = path.join(root, 'rogue-node')
  fs.mkdirSync(dataDir)
  const registry = new Registry()
  const applied: Array<{ type: string, id: string }> = []
  const puller = new MailboxPuller({ libp2p: host, logger: silentLogger(), registry }, {
    dataDir, self: { peerId: host.peerId.toString(), cell: 'a' }, pullIntervalMs: 60_000, onActions: a => { applied.push(...a.map(x => ({ type: x.type, id: '' }))) }
  })
  await puller.start()
  const errors = async (reason: string): Promise<number> =>
    (await registry.getSingleMetric('astrad_mailbox_pull_errors_total')?.get())?.values.find(v => v.labels.reason === reason)?.value ?? 0
  await waitFor('oversized answer counted', async () => await errors('too_large') >= 1)
  answer = Buffer.from(JSON.stringify({ mode: 'delta', source: 'x', rev: 1, revision: 1, more: false, items: [{ key: 'k', version: 'v', notice: { id: 'nope' } }] }))
  await puller.pull()
  assert.equal(await errors('bad_response'), 1)
  assert.equal(puller.state.cursor, null, 'nothing was taken from the rogue resource')
  assert.deepEqual(applied.filter(a => a.type !== 'standing'), [])
  await puller.stop()
})

test('teardown', async () => {
  for (const n of nodes) await n.puller.stop()
})
