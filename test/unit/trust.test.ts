import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { SignJWT } from 'jose'
import {
  newClusterSecret, createJoinToken, parseJoinToken, createOperatorCredential, readOperatorCredential, writeSecretFile, encodeClusterSecret,
  readClusterSecret, issueMemberCert, issueMemberCertFromGrant, verifyMemberCert, signOperatorRequest, verifyOperatorRequest, writeScope,
  inScope, loadSecurity, TrustError, trustConstants
} from '../../src/trust/index.ts'

async function peer (): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
}

function tmpdir (): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-trust-'))
}

async function rejectsWith (p: Promise<unknown>, reason: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof TrustError, `expected a TrustError, got ${String(err)}`)
    assert.equal(err.reason, reason, `reason of: ${err.message}`)
    return true
  })
}

test('a certificate signed by the cluster key verifies; one from another cluster or altered does not', async () => {
  const a = await newClusterSecret()
  const b = await newClusterSecret()
  const id = await peer()
  const jwt = await issueMemberCert(a.key.privateKey, id, ['node', 'scheduler'])
  const cert = await verifyMemberCert(jwt, a.key.publicKey)
  assert.equal(cert.peer, id)
  assert.deepEqual(cert.roles, ['node', 'scheduler'])
  assert.equal(cert.expiresAt, undefined)
  await rejectsWith(verifyMemberCert(jwt, b.key.publicKey), 'bad-signature')
  // The same claims with one role added, re-encoded without a valid signature.
  const [h, , s] = jwt.split('.')
  const forged = Buffer.from(JSON.stringify({ sub: id, roles: ['node', 'resource', 'scheduler'], iat: 1 })).toString('base64url')
  await rejectsWith(verifyMemberCert(`${h}.${forged}.${s}`, a.key.publicKey), 'bad-signature')
  // Signed by a key of its own: not the cluster's.
  const selfMade = await issueMemberCert(b.key.privateKey, id, ['resource'])
  await rejectsWith(verifyMemberCert(selfMade, a.key.publicKey), 'bad-signature')
  await rejectsWith(verifyMemberCert('not.a.jwt', a.key.publicKey), 'bad-cert')
  await rejectsWith(verifyMemberCert('x'.repeat(trustConstants.MAX_JWT_BYTES + 1), a.key.publicKey), 'bad-cert')
})

test('a join token grants only its roles, until it expires; the certificates it signs carry the grant', async () => {
  const secret = await newClusterSecret()
  const id = await peer()
  const token = await parseJoinToken(await createJoinToken(secret, ['node'], 3600))
  assert.deepEqual(token.grant.roles, ['node'])
  const jwt = await issueMemberCertFromGrant(token.grantKey.privateKey, token.grant, id, ['node'])
  const cert = await verifyMemberCert(jwt, secret.key.publicKey)
  assert.deepEqual(cert.roles, ['node'])
  assert.equal(cert.grantId, token.grant.id)
  assert.ok(cert.expiresAt != null && cert.expiresAt <= token.grant.expiresAt!)
  await rejectsWith(issueMemberCertFromGrant(token.grantKey.privateKey, token.grant, id, ['node', 'resource']), 'role')
  // A holder of the token key signs a certificate claiming more than the grant: refused.
  const greedy = await new SignJWT({ sub: id, roles: ['resource'], grant: token.grant.jwt })
    .setProtectedHeader({ alg: 'EdDSA', typ: trustConstants.MEMBER_TYP }).setIssuedAt().sign(token.grantKey.privateKey)
  await rejectsWith(verifyMemberCert(greedy, secret.key.publicKey), 'role')
  // An expired grant (beyond the clock-skew allowance) no longer vouches for anything.
  const expired = await new SignJWT({ sub: 'old', kind: 'member', roles: ['node'], cnf: { jwk: token.grantKey.publicJwk } })
    .setProtectedHeader({ alg: 'EdDSA', typ: trustConstants.GRANT_TYP }).setIssuedAt(1).setExpirationTime(2).sign(secret.key.privateKey)
  const late = await new SignJWT({ sub: id, roles: ['node'], grant: expired })
    .setProtectedHeader({ alg: 'EdDSA', typ: trustConstants.MEMBER_TYP }).setIssuedAt().sign(token.grantKey.privateKey)
  await rejectsWith(verifyMemberCert(late, secret.key.publicKey), 'expired')
})

test('a damaged or foreign join token is a clear error', async () => {
  const secret = await newClusterSecret()
  const token = await createJoinToken(secret, ['node'])
  await rejectsWith(parseJoinToken('hello'), 'bad-token')
  await rejectsWith(parseJoinToken(token.slice(0, -10)), 'bad-token')
  await rejectsWith(parseJoinToken(`${trustConstants.JOIN_TOKEN_PREFIX}${Buffer.from('{"v":1}').toString('base64url')}`), 'bad-token')
  // The token's grant re-signed claims by another cluster key: the grant does not verify.
  const other = await newClusterSecret()
  const body = JSON.parse(Buffer.from(token.slice(trustConstants.JOIN_TOKEN_PREFIX.length), 'base64url').toString())
  body.ca = other.key.publicJwk
  await rejectsWith(parseJoinToken(trustConstants.JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url')), 'bad-signature')
})

test('operator requests: signed for one daemon, one method, path and body, fresh; scoped to what the route writes', async () => {
  const secret = await newClusterSecret()
  const dir = tmpdir()
  try {
    const file = path.join(dir, 'alice.cred')
    writeSecretFile(file, await createOperatorCredential(secret, 'alice'))
    assert.equal(fs.statSync(file).mode & 0o777, 0o600)
    const cred = await readOperatorCredential(file)
    assert.equal(cred.name, 'alice')
    const daemon = await peer()
    const body = new TextEncoder().encode('{"name":"vad"}')
    const jwt = await signOperatorRequest(cred, { method: 'DELETE', path: '/v1/apps/vad', body, audience: daemon })
    const ok = await verifyOperatorRequest(jwt, secret.key.publicKey, { audience: daemon, request: { method: 'DELETE', path: '/v1/apps/vad', body } })
    assert.equal(ok.name, 'alice')
    await rejectsWith(verifyOperatorRequest(jwt, secret.key.publicKey, { audience: await peer() }), 'audience')
    await rejectsWith(verifyOperatorRequest(jwt, secret.key.publicKey, { audience: daemon, request: { method: 'DELETE', path: '/v1/apps/other', body } }), 'scope')
    await rejectsWith(verifyOperatorRequest(jwt, secret.key.publicKey, { audience: daemon, request: { method: 'DELETE', path: '/v1/apps/vad', body: new Uint8Array(1) } }), 'scope')
    await rejectsWith(verifyOperatorRequest(jwt, (await newClusterSecret()).key.publicKey, { audience: daemon }), 'bad-signature')
    await rejectsWith(verifyOperatorRequest(undefined, secret.key.publicKey, { audience: daemon }), 'not-operator')
    // A member certificate is not an operator credential, even from the same cluster key.
    const member = await issueMemberCert(secret.key.privateKey, daemon, ['node'])
    await rejectsWith(verifyOperatorRequest(member, secret.key.publicKey, { audience: daemon }), 'bad-cert')

    const scope = writeScope(ok.method, ok.path)
    // Apps and pipelines share the route and the name: removing 'vad' may remove either, no other.
    assert.deepEqual(scope, [{ kind: 'app', key: 'vad' }, { kind: 'pipeline', key: 'vad' }])
    assert.ok(inScope(scope, 'app', 'vad'))
    assert.ok(inScope(scope, 'pipeline', 'vad'))
    assert.ok(!inScope(scope, 'app', 'other'))
    assert.ok(!inScope(scope, 'pipeline', 'other'))
    assert.ok(!inScope(scope, 'notice', 'n1'))
    assert.deepEqual(writeScope('POST', '/v1/drain'), [])
    assert.deepEqual(writeScope('GET', '/v1/apps'), [])
    assert.deepEqual(writeScope('DELETE', '/v1/apps/%ff'), [])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('loadSecurity: a one-host start creates its cluster; joining needs a secret; a join token is kept for restarts', async () => {
  const dirs = [tmpdir(), tmpdir(), tmpdir()]
  try {
    const [solo, joiner, other] = dirs as [string, string, string]
    const id = await peer()
    const first = await loadSecurity({ dataDir: solo, roles: ['node', 'resource', 'scheduler'], bootstrap: [] }, id)
    assert.equal(first.mode, 'secure')
    assert.equal(first.source, 'created')
    assert.equal(fs.statSync(path.join(solo, trustConstants.CLUSTER_KEY_FILE)).mode & 0o777, 0o600)
    assert.equal((await readOperatorCredential(path.join(solo, trustConstants.OPERATOR_CREDENTIAL_FILE))).name, trustConstants.LOCAL_OPERATOR_NAME)
    const again = await loadSecurity({ dataDir: solo, roles: ['node', 'resource', 'scheduler'], bootstrap: [] }, id)
    assert.equal(again.source, 'cluster-key')
    assert.deepEqual(again.psk, first.psk)

    await assert.rejects(loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: ['127.0.0.1:7071'] }, id),
      (err: Error & { key?: string }) => err.name === 'ConfigError' && err.key === '--join-token')
    await assert.rejects(loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: [], insecure: true, clusterKey: '/x' }, id),
      (err: Error) => err.name === 'ConfigError')
    const insecure = await loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: ['127.0.0.1:7071'], insecure: true }, id)
    assert.equal(insecure.mode, 'insecure')
    assert.equal(insecure.psk, undefined)

    const secret = await readClusterSecret(path.join(solo, trustConstants.CLUSTER_KEY_FILE))
    const token = await createJoinToken(secret, ['node'])
    const joined = await loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: ['127.0.0.1:7071'], joinToken: token }, id)
    assert.equal(joined.source, 'join-token')
    assert.deepEqual(joined.psk, first.psk)
    assert.equal(fs.existsSync(path.join(joiner, trustConstants.OPERATOR_CREDENTIAL_FILE)), false, 'a joining node gets no operator credential')
    const restarted = await loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: ['127.0.0.1:7071'] }, id)
    assert.equal(restarted.source, 'membership')
    assert.equal((await verifyMemberCert(restarted.cert, secret.key.publicKey)).peer, id)
    // The saved certificate grants node only: starting as a resource needs a token that grants it.
    await assert.rejects(loadSecurity({ dataDir: joiner, roles: ['node', 'resource'], bootstrap: ['127.0.0.1:7071'] }, id),
      (err: Error & { key?: string }) => err.name === 'ConfigError' && err.key === '--role')
    await assert.rejects(loadSecurity({ dataDir: other, roles: ['resource'], bootstrap: ['127.0.0.1:7071'], joinToken: token }, id),
      (err: Error & { key?: string }) => err.name === 'ConfigError' && /cannot grant resource/.test(err.message))
    // Another identity in the same data dir cannot use this daemon's saved certificate.
    await assert.rejects(loadSecurity({ dataDir: joiner, roles: ['node'], bootstrap: ['127.0.0.1:7071'] }, await peer()),
      (err: Error & { key?: string }) => err.name === 'ConfigError' && err.key === '--data-dir')
    const keyFile = path.join(other, 'k')
    writeSecretFile(keyFile, encodeClusterSecret(secret))
    assert.throws(() => { writeSecretFile(keyFile, 'x') }, /refusing to replace/)
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  }
})
