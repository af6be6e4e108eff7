import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { createHash } from 'node:crypto'
import { RpcServer, RpcClient, verifiedStream, type OperatorCheck } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { createOperatorCredential, newClusterSecret, verifyOperatorRequest, type ClusterSecret } from '../../src/trust/index.ts'
import { CredentialError, isClusterWrite, loadCredential, operatorSigner } from '../../src/cli/operator.ts'

/**
 * The CLI signs what changes the cluster and the RPC port checks it: a real RpcServer on
 * 127.0.0.1 with operator routes, a real RpcClient with the CLI's signer.
 */

const PEER = '12D3KooWTestDaemonPeerIdForOperatorSigning1'
const dirs: string[] = []
let secret: ClusterSecret
let home: string

function tempDir (): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-op-unit-'))
  dirs.push(d)
  return d
}

async function credFile (dir: string, name: string, file = 'operator.cred'): Promise<string> {
  const p = path.join(dir, file)
  fs.writeFileSync(p, await createOperatorCredential(secret, name), { mode: 0o600 })
  return p
}

before(async () => {
  secret = await newClusterSecret()
  home = tempDir()
})
after(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }) })

test('isClusterWrite: the routes that change the cluster, a model removal only with --forget', async () => {
  for (const [method, target, want] of [
    ['POST', '/v1/apps', true], ['DELETE', '/v1/apps/vad', true], ['GET', '/v1/apps', false],
    ['POST', '/v1/models?name=x.onnx', true], ['DELETE', `/v1/models/${'a'.repeat(64)}`, false], ['DELETE', `/v1/models/${'a'.repeat(64)}?forget=1`, true],
    ['POST', `/v1/models/${'a'.repeat(64)}/pull`, false], ['POST', '/v1/notices', true], ['POST', '/v1/notices/abcd/promote', true],
    ['POST', '/v1/notices/abcd/edit', true], ['GET', '/v1/notices/abcd', false], ['POST', '/v1/drain', false], ['POST', '/v1/cordon', false]
  ] as const) assert.equal(await isClusterWrite(method, target), want, `${method} ${target}`)
})

test('loadCredential: --credential, then ASTRAD_CREDENTIAL (file or JSON), then the data dir, then ~/.astrad; none: one line naming where it looked', async () => {
  const dataDir = tempDir()
  const astrad = path.join(home, '.astrad')
  fs.mkdirSync(astrad, { recursive: true })
  const flag = await credFile(tempDir(), 'from-flag')
  const envFile = await credFile(tempDir(), 'from-env-file')
  await credFile(dataDir, 'from-data-dir')
  await credFile(astrad, 'from-home')
  const envJson = await createOperatorCredential(secret, 'from-env-json')
  const name = async (sources: Parameters<typeof loadCredential>[0]): Promise<string> => (await loadCredential(sources)).name

  assert.equal(await name({ credential: flag, env: { ASTRAD_CREDENTIAL: envFile, ASTRAD_DATA_DIR: dataDir }, home }), 'from-flag')
  assert.equal(await name({ env: { ASTRAD_CREDENTIAL: envFile, ASTRAD_DATA_DIR: dataDir }, home }), 'from-env-file')
  assert.equal(await name({ env: { ASTRAD_CREDENTIAL: envJson, ASTRAD_DATA_DIR: dataDir }, home }), 'from-env-json')
  assert.equal(await name({ env: { ASTRAD_DATA_DIR: dataDir }, home }), 'from-data-dir')
  assert.equal(await name({ env: {}, home }), 'from-home')

  const nowhere = tempDir()
  await assert.rejects(loadCredential({ env: { ASTRAD_DATA_DIR: path.join(nowhere, 'data') }, home: nowhere }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_CREDENTIAL')
    assert.ok(err instanceof CredentialError)
    assert.doesNotMatch(err.message, /\n/)
    assert.match(err.message, /--credential, ASTRAD_CREDENTIAL/)
    assert.ok(err.message.includes(path.join(nowhere, 'data', 'operator.cred')) && err.message.includes(path.join(nowhere, '.astrad', 'operator.cred')))
    assert.match(err.message, /astrad cluster operator NAME/)
    return true
  })
  await assert.rejects(loadCredential({ credential: path.join(nowhere, 'missing.cred'), env: {}, home }), { code: 'ERR_CREDENTIAL' }, 'a named file that cannot be read is an error, not a fallback')
  await assert.rejects(loadCredential({ env: { ASTRAD_CREDENTIAL: '{"v":1}' }, home }), { code: 'ERR_CREDENTIAL' })
})

interface Port { server: RpcServer, client: (sign?: boolean, file?: string) => RpcClient, selfCalls: () => number, port: number }

async function port (security: 'secure' | 'insecure'): Promise<Port> {
  const check: OperatorCheck = {
    secure: security === 'secure',
    verifyOperator: async (jwt, request) => await verifyOperatorRequest(jwt, secret.key.publicKey, { audience: PEER, request })
  }
  const server = new RpcServer({ logger: silentLogger(), metrics: createMetrics(), operators: check }, { host: '127.0.0.1', port: 0 })
  let selfCalls = 0
  server.route('GET', '/v1/self', () => { selfCalls++; return { status: 200, body: { peerId: PEER, name: 'd', roles: ['resource'], security } } })
  server.route('POST', '/v1/notices', async req => ({ status: 201, body: { operator: req.operator?.name ?? null, got: await req.json() } }), { operator: true })
  server.route('GET', '/v1/notices', () => ({ status: 200, body: { notices: [] } }))
  server.route('POST', '/v1/models', async req => {
    const size = Number(req.headers['content-length'])
    const hash = createHash('sha256')
    for await (const chunk of verifiedStream(req.raw, req.operator, size)) hash.update(chunk)
    return { status: 201, body: { sha256: hash.digest('hex'), operator: req.operator?.name ?? null } }
  }, { operator: { streamed: true } })
  const addr = await server.listen()
  after(async () => { await server.close() })
  return {
    server,
    port: addr.port,
    selfCalls: () => selfCalls,
    client: (sign = true, file?: string) => new RpcClient(addr, undefined, sign ? { sign: operatorSigner({ credential: file, env: {}, home }) } : {})
  }
}

test('the RPC port and the CLI signer: unsigned 401 with a challenge, a bad signature 403, the signed write goes through with its operator; reads are not signed', async () => {
  const p = await port('secure')
  const file = await credFile(tempDir(), 'alice')
  const body = { kind: 'message', data: { text: 'hi' } }

  await assert.rejects(p.client(false).call('POST', '/v1/notices', body), { code: 'ERR_HTTP_401' })
  const raw = await fetch(`http://127.0.0.1:${p.port}/v1/notices`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
  assert.equal(raw.status, 401)
  assert.match(raw.headers.get('www-authenticate') ?? '', /^AstradOperator realm="astrad", header="astrad-operator"$/)
  const forged = await fetch(`http://127.0.0.1:${p.port}/v1/notices`, { method: 'POST', body: JSON.stringify(body), headers: { 'astrad-operator': 'not.a.jwt' } })
  assert.equal(forged.status, 403)
  assert.equal((await forged.json() as { code: string }).code, 'ERR_FORBIDDEN')

  const client = p.client(true, file)
  assert.deepEqual(await client.call('GET', '/v1/notices'), { notices: [] })
  assert.equal(p.selfCalls(), 0, 'a read needs no signature and no /v1/self')
  assert.deepEqual(await client.call('POST', '/v1/notices', body), { operator: 'alice', got: body })
  assert.deepEqual(await client.call('POST', '/v1/notices', { kind: 'message', data: { text: 'again' } }), { operator: 'alice', got: { kind: 'message', data: { text: 'again' } } })
  assert.equal(p.selfCalls(), 1, '/v1/self is asked once per client')

  const bytes = Buffer.from('model bytes '.repeat(1000))
  const sha256 = createHash('sha256').update(bytes).digest('hex')
  const upload = async (sent: Buffer, signedHash: string): Promise<unknown> => {
    const res = await client.stream('POST', '/v1/models?name=m.onnx', {
      body: Readable.from([sent]), bodySha256: async () => signedHash, headers: { 'content-length': String(sent.length) }
    })
    const chunks: Buffer[] = []
    for await (const c of res) chunks.push(c as Buffer)
    return JSON.parse(Buffer.concat(chunks).toString())
  }
  assert.deepEqual(await upload(bytes, sha256), { sha256, operator: 'alice' })
  await assert.rejects(upload(bytes, createHash('sha256').update('other').digest('hex')), { code: 'ERR_HTTP_403' })

  const noCred = new RpcClient({ host: '127.0.0.1', port: p.port }, undefined, { sign: operatorSigner({ env: {}, home: tempDir() }) })
  await assert.rejects(noCred.call('POST', '/v1/notices', body), { code: 'ERR_CREDENTIAL' })
})

test('an insecure daemon: the CLI sends writes unsigned and the port checks nothing', async () => {
  const p = await port('insecure')
  const client = p.client(true, path.join(tempDir(), 'never-read.cred'))
  assert.deepEqual(await client.call('POST', '/v1/notices', { kind: 'message' }), { operator: null, got: { kind: 'message' } })
})
