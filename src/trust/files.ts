import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import type { CryptoKey, JWK } from 'jose'
import { errorMessage } from '../util/errors.ts'
import { writeFileAtomic } from '../util/fs.ts'
import { TrustError } from './errors.ts'
import { importPair, importPublic, newKeyPair, newPsk, privateJwkSchema, pskSchema, publicJwkSchema, type KeyPair } from './keys.ts'
import { issueGrant, verifyGrant, type Grant, type Role } from './certs.ts'
import { JOIN_TOKEN_PREFIX, MAX_JWT_BYTES } from './constants.ts'

/**
 * The secrets an operator handles, as files and strings (docs/security.md):
 * - cluster key file: the private-network key and the cluster's signing key. Created once
 *   (`astrad cluster init`); kept by operators and the daemons they trust to hold it.
 * - join token: the private-network key, the cluster's public key and a grant of roles with
 *   its own signing key. Handed to hosts (file, env var, Kubernetes Secret).
 * - operator credential: an operator's name and key, vouched for by the cluster key.
 */

export interface ClusterSecret {
  psk: string
  key: KeyPair
}

export interface JoinToken {
  psk: string
  clusterPublic: CryptoKey
  clusterJwk: JWK
  grant: Grant
  grantKey: KeyPair
}

export interface OperatorCredential {
  name: string
  clusterJwk: JWK
  grant: Grant
  key: KeyPair
}

const clusterFile = z.strictObject({ v: z.literal(1), kind: z.literal('astrad-cluster-key'), psk: pskSchema, key: privateJwkSchema })
const tokenBody = z.strictObject({ v: z.literal(1), psk: pskSchema, ca: publicJwkSchema, grant: z.string().max(MAX_JWT_BYTES), key: privateJwkSchema })
const credentialFile = z.strictObject({ v: z.literal(1), kind: z.literal('astrad-operator'), name: z.string(), ca: publicJwkSchema, grant: z.string().max(MAX_JWT_BYTES), key: privateJwkSchema })

/** Writes `text` to `file` with mode 0600, atomically, fsynced; refuses to replace an existing file unless asked. */
export function writeSecretFile (file: string, text: string, options: { overwrite?: boolean } = {}): void {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  if (options.overwrite !== true && fs.existsSync(file)) throw new TrustError(`${file} exists; refusing to replace a secret (move it away first)`, 'exists')
  writeFileAtomic(file, text)
}

function readText (file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new TrustError(`cannot read ${what} ${file}: ${errorMessage(err)}`, 'missing')
  }
}

function parseJsonText (text: string, what: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new TrustError(`${what} is not valid JSON`, 'bad-key')
  }
}

// ---- cluster key -----------------------------------------------------------------------------

export async function newClusterSecret (): Promise<ClusterSecret> {
  return { psk: newPsk(), key: await newKeyPair() }
}

export function encodeClusterSecret (secret: ClusterSecret): string {
  return `${JSON.stringify({ v: 1, kind: 'astrad-cluster-key', psk: secret.psk, key: secret.key.privateJwk }, null, 2)}\n`
}

export async function readClusterSecret (file: string): Promise<ClusterSecret> {
  const parsed = clusterFile.safeParse(parseJsonText(readText(file, 'cluster key'), `cluster key ${file}`))
  if (!parsed.success) throw new TrustError(`${file} is not an astrad cluster key (create one with: astrad cluster init)`, 'bad-key')
  return { psk: parsed.data.psk, key: await importPair(parsed.data.key, `cluster key ${file}`) }
}

// ---- join tokens -----------------------------------------------------------------------------

/** A join token granting `roles` for `ttlS` seconds (undefined: until the cluster key changes). */
export async function createJoinToken (secret: ClusterSecret, roles: Role[], ttlS?: number): Promise<string> {
  const grantKey = await newKeyPair()
  const id = `join-${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex')}`
  const grant = await issueGrant(secret.key.privateKey, { id, kind: 'member', roles, keyJwk: grantKey.publicJwk, ttlS })
  const body = { v: 1, psk: secret.psk, ca: secret.key.publicJwk, grant, key: grantKey.privateJwk }
  return JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url')
}

/** Parses and checks a join token (the grant must be signed by the cluster key inside it and unexpired). */
export async function parseJoinToken (text: string): Promise<JoinToken> {
  const token = text.trim()
  if (!token.startsWith(JOIN_TOKEN_PREFIX) || token.length > 16 * 1024) throw new TrustError(`not an astrad join token (it starts with ${JOIN_TOKEN_PREFIX}; create one with: astrad cluster token)`, 'bad-token')
  let body: unknown
  try {
    body = JSON.parse(Buffer.from(token.slice(JOIN_TOKEN_PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new TrustError('join token is damaged (not base64url JSON); copy it again whole', 'bad-token')
  }
  const parsed = tokenBody.safeParse(body)
  if (!parsed.success) throw new TrustError('join token is damaged (fields missing); copy it again whole', 'bad-token')
  const clusterPublic = await importPublic(parsed.data.ca, 'join token cluster key')
  const grant = await verifyGrant(parsed.data.grant, clusterPublic, 'member')
  const grantKey = await importPair(parsed.data.key, 'join token key')
  if (grantKey.publicJwk.x !== (grant.keyJwk as { x?: string }).x) throw new TrustError('join token key does not match its grant', 'bad-token')
  return { psk: parsed.data.psk, clusterPublic, clusterJwk: parsed.data.ca, grant, grantKey }
}

// ---- operator credentials --------------------------------------------------------------------

export async function createOperatorCredential (secret: ClusterSecret, name: string, ttlS?: number): Promise<string> {
  const key = await newKeyPair()
  const id = `op-${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex')}`
  const grant = await issueGrant(secret.key.privateKey, { id, kind: 'operator', name, keyJwk: key.publicJwk, ttlS })
  return `${JSON.stringify({ v: 1, kind: 'astrad-operator', name, ca: secret.key.publicJwk, grant, key: key.privateJwk }, null, 2)}\n`
}

export async function readOperatorCredential (file: string): Promise<OperatorCredential> {
  return await parseOperatorCredential(readText(file, 'operator credential'), file)
}

/** An operator credential from its text (`where` names it in errors: a file, an env var). */
export async function parseOperatorCredential (text: string, where: string): Promise<OperatorCredential> {
  const file = where
  const parsed = credentialFile.safeParse(parseJsonText(text, `operator credential ${file}`))
  if (!parsed.success) throw new TrustError(`${file} is not an astrad operator credential (create one with: astrad cluster operator NAME)`, 'bad-key')
  const clusterPublic = await importPublic(parsed.data.ca, 'operator credential cluster key')
  const grant = await verifyGrant(parsed.data.grant, clusterPublic, 'operator')
  const key = await importPair(parsed.data.key, 'operator key')
  if (key.publicJwk.x !== (grant.keyJwk as { x?: string }).x) throw new TrustError(`${file}: key does not match its grant`, 'bad-key')
  return { name: grant.name ?? parsed.data.name, clusterJwk: parsed.data.ca, grant, key }
}

