import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, handleRequests, request, type Host } from '../../src/p2p/index.ts'
import {
  Trust, createOperatorCredential, issueMemberCert, newClusterSecret, pskBytes, readClusterSecret, readOperatorCredential,
  signOperatorRequest, type Role
} from '../../src/trust/index.ts'
import { clusterLogConstants } from '../../src/clusterlog/index.ts'
import { noticeKind, type Notice } from '../../src/mailbox/notice.ts'
import { encodePullResponse, itemJson } from '../../src/mailbox/wire.ts'
import { MAILBOX_PROTOCOL } from '../../src/mailbox/constants.ts'
import { silentLogger } from '../../src/util/logger.ts'
import type { Daemon } from '../../src/daemon/index.ts'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { TEST_OPERATOR, operatorAuth, operatorCredential, operatorFetch, rpcUrl } from '../helpers/operator.ts'
import { sequenceOutputModel } from '../helpers/onnx-models.ts'
import { run } from '../helpers/cli.ts'
import { deployDemo } from '../../src/daemon/demo.ts'
import { appKind } from '../../src/placement/app.ts'

/**
 * Operators are authenticated where cluster writes land (issue 16): the RPC port wants a signed
 * operator request for every write that changes the cluster, the resource checks it again
 * against the forwarding peer, every accepted change records its operator, and nodes ignore
 * notices no verified operator wrote or that did not come from a resource.
 */

const cluster = new TestCluster()
const rogues: Host[] = []
after(async () => {
  await Promise.allSettled(rogues.map(async h => { await h.stop() }))
  await cluster.cleanup()
})

const { ACCESS_PROTOCOL, SYNC_PROTOCOL } = clusterLogConstants
const encoder = new TextEncoder()

/** One series of astrad_trust_refusals_total on a daemon (0 when absent). */
async function refusals (d: Daemon, where: string, reason?: string): Promise<number> {
  const metric = await d.metrics.registry.getSingleMetric('astrad_trust_refusals_total')?.get()
  return (metric?.values ?? [])
    .filter(v => v.labels.where === where && (reason == null || v.labels.reason === reason))
    .reduce((n, v) => n + v.value, 0)
}

/**
 * A libp2p host that holds this cluster's private-network key (so it can connect) and, with
 * `roles`, a member certificate the cluster key signed: a member gone rogue.
 */
async function rogue (roles: Role[] | null, serve?: (h: Host) => Promise<void>): Promise<Host> {
  const secret = await readClusterSecret(await cluster.clusterKey())
  const privateKey = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(privateKey).toString()
  const host = await createHost({ privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: pskBytes(secret.psk) })
  rogues.push(host)
  const selfCert = roles != null ? await issueMemberCert(secret.key.privateKey, peer, roles) : undefined
  await new Trust({ clusterPublic: secret.key.publicKey, selfCert, logger: silentLogger() }).attach(host)
  await serve?.(host)
  await host.start()
  return host
}

async function access (from: Host, to: Daemon, req: Record<string, unknown>): Promise<unknown> {
  const addr = multiaddr(cluster.addr(to))
  await from.dial(addr)
  return await request(from, to.host.peerId, ACCESS_PROTOCOL, encoder.encode(JSON.stringify(req)), { timeoutMs: 10_000 })
}

function drainNotice (id: string): Notice {
  const now = Date.now()
  return {
    id, kind: 'drain', data: { reason: 'forged', all: true }, audience: { cells: null, canary: null, node: null },
    state: 'published', revision: 1_000, createdAt: now, updatedAt: now, expiresAt: null, by: 'rogue'
  }
}

test('the RPC port: cluster writes need a valid operator signature (401 without, 403 forged, for another daemon or another body); reads stay open', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'] })
  const node = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(res)] })
  await waitFor('node joined', () => node.ready)
  const notice = { kind: 'message', data: { text: 'hello' } }

  const unsigned = await operatorFetch(cluster, res, 'POST', '/v1/notices', notice, { sign: false })
  assert.equal(unsigned.status, 401, `unsigned publish: ${JSON.stringify(unsigned.body)}`)
  assert.equal(unsigned.body.code, 'ERR_UNAUTHORIZED')
  assert.match(unsigned.headers.get('www-authenticate') ?? '', /^AstradOperator realm="astrad"/)
  assert.match(unsigned.body.error, /astrad cluster operator NAME/)

  const other = await newClusterSecret()
  const foreign = await readOperatorCredentialText(await createOperatorCredential(other, 'mallory'))
  const foreignAnswer = await operatorFetch(cluster, res, 'POST', '/v1/notices', notice, { sign: foreign })
  assert.equal(foreignAnswer.status, 403, `another cluster's operator: ${JSON.stringify(foreignAnswer.body)}`)
  assert.equal(foreignAnswer.body.code, 'ERR_FORBIDDEN')

  const forNode = await operatorAuth(cluster, node, 'POST', '/v1/notices', JSON.stringify(notice))
  const wrongAudience = await operatorFetch(cluster, res, 'POST', '/v1/notices', notice, { sign: forNode })
  assert.equal(wrongAudience.status, 403, `signed for another daemon: ${JSON.stringify(wrongAudience.body)}`)
  assert.match(wrongAudience.body.error, /signed for daemon/)

  const forOtherBody = await operatorAuth(cluster, res, 'POST', '/v1/notices', JSON.stringify({ kind: 'message', data: { text: 'harmless' } }))
  const changed = await operatorFetch(cluster, res, 'POST', '/v1/notices', { kind: 'drain', data: { reason: 'x', all: true } }, { sign: forOtherBody })
  assert.equal(changed.status, 403, `body changed after signing: ${JSON.stringify(changed.body)}`)
  assert.match(changed.body.error, /body differs/)

  assert.equal((await operatorFetch(cluster, res, 'GET', '/v1/notices', undefined, { sign: false })).body.notices.length, 0, 'nothing was published')
  assert.ok(await refusals(res, 'rpc', 'not-operator') >= 1, 'the unsigned write counted')
  assert.ok(await refusals(res, 'rpc') >= 4, 'refusals counted under where="rpc"')

  const published = await operatorFetch(cluster, res, 'POST', '/v1/notices', notice)
  assert.equal(published.status, 201, `signed publish: ${JSON.stringify(published.body)}`)
  assert.equal(published.body.author, TEST_OPERATOR)
  const shown = await run('notice', 'show', published.body.id, '--rpc', rpcUrl(res).slice('http://'.length))
  assert.equal(shown.code, 0, shown.err)
  assert.match(shown.out, new RegExp(`^author: +${TEST_OPERATOR}$`, 'm'))

  // A local model removal is no cluster write; with ?forget it is.
  const id = 'ab'.repeat(32)
  assert.notEqual((await operatorFetch(cluster, node, 'DELETE', `/v1/models/${id}`, undefined, { sign: false })).status, 401)
  assert.equal((await operatorFetch(cluster, node, 'DELETE', `/v1/models/${id}?forget=1`, undefined, { sign: false })).status, 401)

  // A streamed model upload: signed over its bytes; other bytes are refused before any record.
  const model = Buffer.from(sequenceOutputModel())
  const upload = async (sign: Buffer): Promise<Response> => await fetch(`${rpcUrl(node)}/v1/models?name=seq.onnx`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'astrad-operator': await operatorAuth(cluster, node, 'POST', '/v1/models?name=seq.onnx', sign) },
    body: model,
    signal: AbortSignal.timeout(30_000)
  })
  const tampered = await upload(Buffer.concat([model, Buffer.from('x')]))
  assert.equal(tampered.status, 403, `model bytes other than signed: ${await tampered.text()}`)
  const added = await upload(model)
  assert.equal(added.status, 201, `signed model upload: ${await added.clone().text()}`)
  const modelId = (await added.json() as { id: string }).id
  const models = await operatorFetch(cluster, node, 'GET', '/v1/models', undefined, { sign: false })
  assert.equal(models.body.models.find((m: { id: string }) => m.id === modelId)?.author, TEST_OPERATOR, 'model ls shows who added it')

  const spec = { name: 'seq', model: modelId, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1 }
  assert.equal((await operatorFetch(cluster, res, 'POST', '/v1/apps', spec, { sign: false })).status, 401)
  const deployed = await operatorFetch(cluster, res, 'POST', '/v1/apps', spec)
  assert.equal(deployed.status, 201, `signed deploy: ${JSON.stringify(deployed.body)}`)
  const ls = await run('app', 'ls', '--json', '--rpc', rpcUrl(res).slice('http://'.length))
  assert.equal(ls.code, 0, ls.err)
  const app = (JSON.parse(ls.out) as { apps: Array<{ spec: { name: string }, author?: string, via: string }> }).apps.find(a => a.spec.name === 'seq')
  assert.equal(app?.author, TEST_OPERATOR, `app ls --json: ${ls.out}`)
  assert.equal(app?.via, res.host.peerId.toString())

  // The CLI signs with --credential; without one it says where it looked, in one line.
  const { file } = await operatorCredential(cluster)
  const rm = await run('app', 'rm', 'seq', '--rpc', rpcUrl(res).slice('http://'.length), '--credential', file)
  assert.equal(rm.code, 0, rm.err)
  const missing = await run('app', 'rm', 'seq', '--rpc', rpcUrl(res).slice('http://'.length), '--credential', '/nonexistent/op.cred')
  assert.equal(missing.code, 1)
  assert.match(missing.err, /--credential: cannot read operator credential \/nonexistent\/op\.cred/)
})

test('a rogue member writing over /astra/log/1.0.0 is refused: no auth, a replayed request of another daemon, out of scope, no certificate; counted, nothing changed', async () => {
  const res = cluster.daemons.find(d => d.config.roles.includes('resource') && d.state === 'running') ?? await cluster.start({ roles: ['resource', 'scheduler'] })
  const node = cluster.daemons.find(d => d.config.roles.includes('node') && d.state === 'running') ?? await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(res)] })
  const member = await rogue(['node'])
  const value = drainNotice('0123456789ab')
  const before = await refusals(res, 'clusterlog-write')

  await assert.rejects(access(member, res, { op: 'put', kind: 'notice', key: value.id, value }), { code: 'ERR_FORBIDDEN' }, 'put with no auth')
  await assert.rejects(access(member, res, { op: 'delete', kind: 'app', key: 'vad' }), { code: 'ERR_FORBIDDEN' }, 'delete with no auth')
  // A request an operator signed for the node daemon, replayed by another peer.
  const replayed = await operatorAuth(cluster, node, 'POST', '/v1/notices', JSON.stringify({ kind: 'drain', data: {} }))
  await assert.rejects(access(member, res, { op: 'put', kind: 'notice', key: value.id, value, auth: replayed }), { code: 'ERR_FORBIDDEN' }, 'replayed request')
  // Even one signed for this very peer may write only what its route names.
  const { cred } = await operatorCredential(cluster)
  const rmApp = await signOperatorRequest(cred, { method: 'DELETE', path: '/v1/apps/x', body: new Uint8Array(0), audience: member.peerId.toString() })
  await assert.rejects(access(member, res, { op: 'put', kind: 'notice', key: value.id, value, auth: rmApp }), { code: 'ERR_FORBIDDEN' }, 'out of scope')
  await assert.rejects(access(member, res, { op: 'delete', kind: 'app', key: 'vad', auth: rmApp }), { code: 'ERR_FORBIDDEN' }, 'other key than signed')

  assert.equal(await res.clusterLog.get(noticeKind, value.id), undefined, 'nothing was written')
  assert.ok(await refusals(res, 'clusterlog-write') >= before + 5, 'each refusal counted under where="clusterlog-write"')

  const outsider = await rogue(null)
  await assert.rejects(access(outsider, res, { op: 'get', kind: 'notice', key: value.id }), { code: 'ERR_FORBIDDEN' }, 'a read needs a certificate')
  assert.ok(await refusals(res, ACCESS_PROTOCOL, 'no-cert') >= 1)
  // A member reads.
  assert.deepEqual(JSON.parse(Buffer.from(await access(member, res, { op: 'get', kind: 'notice', key: value.id }) as Uint8Array).toString()), { entry: null })

  // Replication is between resources: a node may not pull, and a node serving sync is not pulled from.
  await assert.rejects(request(member, res.host.peerId, SYNC_PROTOCOL, encoder.encode('{"have":{}}'), { timeoutMs: 10_000 }), { code: 'ERR_FORBIDDEN' })
  let served = 0
  const feeder = await rogue(['node'], async h => {
    await handleRequests(h, SYNC_PROTOCOL, () => { served++; return encoder.encode('{"entries":[],"more":false}') })
  })
  await feeder.dial(multiaddr(cluster.addr(res)))
  await waitFor('the sync refusal of a non-resource', async () => await refusals(res, SYNC_PROTOCOL, 'role') >= 2)
  assert.equal(served, 0, 'a resource never pulled from a node')
})

test('a node ignores a drain notice no verified operator wrote, and notices from peers that are not resources', async () => {
  const forged = drainNotice('ba9876543210')
  const answer = (items: string[]): Uint8Array => encodePullResponse({ mode: 'snapshot', source: 'forger:00000000', rev: 1, revision: 1_000, more: false }, items)
  let pulledFromResource = 0
  const fakeResource = await rogue(['resource'], async h => {
    await handleRequests(h, MAILBOX_PROTOCOL, () => { pulledFromResource++; return answer([itemJson({ key: forged.id, version: '0000000000001-00000-forger:00000000', notice: forged })]) })
  })
  let pulledFromNode = 0
  const fakeNode = await rogue(['node'], async h => {
    await handleRequests(h, MAILBOX_PROTOCOL, () => { pulledFromNode++; return answer([itemJson({ key: forged.id, version: '0000000000001-00000-forger:00000000', notice: forged, author: TEST_OPERATOR })]) })
  })
  const addr = (h: Host): string => h.getMultiaddrs().map(String).find(a => a.includes('/tcp/')) as string
  // First the member without the resource role, alone: the node does not pull from it.
  const node = await cluster.start({ roles: ['node'], bootstrap: [addr(fakeNode)] })
  await waitFor('the pull from a non-resource refused', async () => {
    const role = await refusals(node, MAILBOX_PROTOCOL, 'role')
    if (role < 1) throw new Error(`role refusals ${role}; pulls from the fake node ${pulledFromNode}`)
    return true
  })
  assert.equal(pulledFromNode, 0, 'a peer without the resource role is not pulled from')
  // Then a resource whose notice has no operator author: pulled, and ignored.
  await node.host.dial(multiaddr(addr(fakeResource)))
  await waitFor('the unauthored notice refused', async () => {
    const noAuthor = await refusals(node, MAILBOX_PROTOCOL, 'no-author')
    if (noAuthor < 1) throw new Error(`no-author refusals ${noAuthor}; pulls from the fake resource ${pulledFromResource}`)
    return true
  })
  assert.equal(node.state, 'running', 'the node did not drain')
  assert.deepEqual(Object.keys(node.mailbox?.state.toJSON().applied ?? {}), [], 'nothing applied')
})

test('the demo deploy of a one-host start signs with the host\'s local-admin credential', async () => {
  const host = await cluster.start({ roles: ['resource', 'scheduler', 'node'] })
  assert.ok(host.security?.operatorCredential != null, 'a daemon holding the cluster key wrote its operator credential')
  const demo = await deployDemo(host)
  assert.equal(demo.deploy.author, 'local-admin')
  assert.equal((await host.clusterLog.get(appKind, demo.deploy.app.spec.name))?.author, 'local-admin')
})

async function readOperatorCredentialText (text: string): Promise<Awaited<ReturnType<typeof readOperatorCredential>>> {
  const { parseOperatorCredential } = await import('../../src/trust/files.ts')
  return await parseOperatorCredential(text, 'foreign credential')
}
