import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import type { CryptoKey, JWK } from 'jose'
import { ConfigError, errorMessage } from '../util/errors.ts'
import { TrustError } from './errors.ts'
import { importPublic, publicJwkSchema, pskBytes, pskSchema } from './keys.ts'
import { issueMemberCert, issueMemberCertFromGrant, verifyMemberCert, type Role } from './certs.ts'
import {
  createOperatorCredential, encodeClusterSecret, newClusterSecret, parseJoinToken, readClusterSecret, writeSecretFile, type ClusterSecret
} from './files.ts'
import { CLUSTER_KEY_FILE, LOCAL_OPERATOR_NAME, MAX_JWT_BYTES, MEMBERSHIP_FILE, OPERATOR_CREDENTIAL_FILE } from './constants.ts'

/**
 * How a daemon comes to hold its cluster secret and certificate at start (docs/security.md),
 * in this order:
 *   --insecure                      no secret, no certificates (said in status and the log);
 *   --cluster-key FILE              the daemon signs its own certificate with the cluster key;
 *   --join-token TOKEN              the daemon signs its certificate with the token's grant key
 *                                   and saves it (membership.json), so restarts need no token;
 *   membership.json in the data dir a restart of a daemon that joined before;
 *   cluster.key in the data dir     a restart of a one-host cluster;
 *   nothing, no --bootstrap         a new one-host cluster: cluster.key and an operator
 *                                   credential for this host are created in the data dir;
 *   nothing, with --bootstrap       refused: it could only join a cluster without a secret.
 */

export interface SecurityInput {
  dataDir: string
  roles: Role[]
  bootstrap: string[]
  insecure?: boolean
  /** Path of a cluster key file. */
  clusterKey?: string
  /** A join token (the string itself). */
  joinToken?: string
}

export interface Security {
  mode: 'secure' | 'insecure'
  /** How the secret was found, for status and the log. */
  source: 'insecure' | 'cluster-key' | 'join-token' | 'membership' | 'created'
  psk?: Uint8Array
  clusterPublic?: CryptoKey
  /** This daemon's member certificate. */
  cert?: string
  roles: Role[]
  certExpiresAt?: number
  /** The cluster key, where this daemon holds it (may issue certificates). */
  clusterSecret?: ClusterSecret
  /** Operator credential written for this host (one-host cluster, --cluster-key), if any. */
  operatorCredential?: string
}

const membershipFile = z.strictObject({ v: z.literal(1), psk: pskSchema, ca: publicJwkSchema, cert: z.string().max(MAX_JWT_BYTES), roles: z.array(z.string()) })

export async function loadSecurity (input: SecurityInput, peerId: string): Promise<Security> {
  if (input.insecure === true) {
    if (input.clusterKey != null || input.joinToken != null) throw new ConfigError('--insecure', 'cannot be combined with --cluster-key or --join-token')
    return { mode: 'insecure', source: 'insecure', roles: input.roles }
  }
  if (input.clusterKey != null && input.joinToken != null) throw new ConfigError('--join-token', 'give either --cluster-key or --join-token, not both')
  try {
    if (input.clusterKey != null) return await fromClusterKey(await readClusterSecret(input.clusterKey), input, peerId, 'cluster-key')
    if (input.joinToken != null) return await fromJoinToken(input, peerId)
    const saved = await readMembership(input, peerId)
    if (saved != null) return saved
    const localKey = path.join(input.dataDir, CLUSTER_KEY_FILE)
    if (fs.existsSync(localKey)) return await fromClusterKey(await readClusterSecret(localKey), input, peerId, 'cluster-key')
    if (input.bootstrap.length > 0) {
      throw new ConfigError('--join-token', 'joining a cluster needs its secret: pass --join-token TOKEN (from `astrad cluster token` on a host with the cluster key), or --cluster-key FILE; --insecure runs without one')
    }
    const secret = await newClusterSecret()
    writeSecretFile(localKey, encodeClusterSecret(secret))
    return await fromClusterKey(secret, input, peerId, 'created')
  } catch (err) {
    if (err instanceof TrustError) throw new ConfigError(input.joinToken != null ? '--join-token' : '--cluster-key', err.message)
    throw err
  }
}

async function fromClusterKey (secret: ClusterSecret, input: SecurityInput, peerId: string, source: Security['source']): Promise<Security> {
  const cert = await issueMemberCert(secret.key.privateKey, peerId, input.roles)
  // The host that holds the cluster key gets an operator credential, so its CLI can write.
  const credFile = path.join(input.dataDir, OPERATOR_CREDENTIAL_FILE)
  if (!fs.existsSync(credFile)) writeSecretFile(credFile, await createOperatorCredential(secret, LOCAL_OPERATOR_NAME))
  return {
    mode: 'secure', source, psk: pskBytes(secret.psk), clusterPublic: secret.key.publicKey, cert, roles: input.roles, clusterSecret: secret, operatorCredential: credFile
  }
}

async function fromJoinToken (input: SecurityInput, peerId: string): Promise<Security> {
  const token = await parseJoinToken(input.joinToken!)
  const cert = await issueMemberCertFromGrant(token.grantKey.privateKey, token.grant, peerId, input.roles)
  const verified = await verifyMemberCert(cert, token.clusterPublic)
  saveMembership(input.dataDir, token.psk, token.clusterJwk, cert, input.roles)
  return { mode: 'secure', source: 'join-token', psk: pskBytes(token.psk), clusterPublic: token.clusterPublic, cert, roles: input.roles, certExpiresAt: verified.expiresAt }
}

async function readMembership (input: SecurityInput, peerId: string): Promise<Security | undefined> {
  const file = path.join(input.dataDir, MEMBERSHIP_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new ConfigError('--data-dir', `cannot read ${file}: ${errorMessage(err)}`)
  }
  let parsed
  try {
    parsed = membershipFile.parse(JSON.parse(text))
  } catch {
    throw new ConfigError('--data-dir', `${file} is damaged; move it away and start with --join-token to join again`)
  }
  const clusterPublic = await importPublic(parsed.ca, 'membership cluster key')
  let cert
  try {
    cert = await verifyMemberCert(parsed.cert, clusterPublic)
  } catch (err) {
    if (!(err instanceof TrustError)) throw err
    throw new ConfigError('--join-token', `the certificate saved in ${file} is no longer valid (${err.message}); start with a new --join-token`)
  }
  if (cert.peer !== peerId) throw new ConfigError('--data-dir', `${file} holds the certificate of another identity; start with --join-token to join again`)
  const missing = input.roles.filter(r => !cert.roles.includes(r))
  if (missing.length > 0) throw new ConfigError('--role', `this daemon's certificate grants ${cert.roles.join(',')}, not ${missing.join(',')}; start with a --join-token that grants them`)
  return { mode: 'secure', source: 'membership', psk: pskBytes(parsed.psk), clusterPublic, cert: parsed.cert, roles: input.roles, certExpiresAt: cert.expiresAt }
}

function saveMembership (dataDir: string, psk: string, ca: JWK, cert: string, roles: Role[]): void {
  writeSecretFile(path.join(dataDir, MEMBERSHIP_FILE), `${JSON.stringify({ v: 1, psk, ca, cert, roles })}\n`, { overwrite: true })
}
