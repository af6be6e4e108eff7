import { SignJWT, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { z } from 'zod'
import { errorMessage } from '../util/errors.ts'
import { TrustError } from './errors.ts'
import { importPublic, publicJwkSchema } from './keys.ts'
import { CLOCK_SKEW_S, GRANT_TYP, MAX_JWT_BYTES, MEMBER_TYP, ROLE_NAMES } from './constants.ts'

/**
 * Certificates: JWTs signed with Ed25519 (docs/security.md).
 *
 *   cluster key ──signs──▶ member certificate  {sub: peer id, roles}             (direct)
 *   cluster key ──signs──▶ grant {kind: member, roles, cnf: grant key}           (in a join token)
 *                 grant key ──signs──▶ member certificate {sub, roles ⊆ grant, grant}
 *   cluster key ──signs──▶ grant {kind: operator, name, cnf: operator key}       (operator credential)
 *
 * A member certificate names one libp2p peer id; Noise proves a connection's peer id and
 * gossipsub's StrictSign a message's author, so a certificate binds roles to whoever holds that
 * identity key. Nothing here trusts a claim that the cluster key did not sign, directly or
 * through a grant it signed.
 */

export type Role = typeof ROLE_NAMES[number]

export interface MemberCert {
  peer: string
  roles: Role[]
  /** Expiry in ms since the epoch; undefined = until the cluster key is replaced. */
  expiresAt?: number
  /** Grant id when signed by a join token's key; undefined when signed by the cluster key. */
  grantId?: string
  /** The JWT itself (what is sent to peers). */
  jwt: string
}

export interface Grant {
  id: string
  kind: 'member' | 'operator'
  roles: Role[]
  /** Operator name (operator grants). */
  name?: string
  /** The key this grant lets sign (join-token key or operator key). */
  key: CryptoKey
  keyJwk: JWK
  expiresAt?: number
  jwt: string
}

const roleList = z.array(z.enum(ROLE_NAMES)).min(1).max(ROLE_NAMES.length)
const grantClaims = z.object({
  sub: z.string().min(1).max(64),
  kind: z.enum(['member', 'operator']),
  roles: roleList.optional(),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/).optional(),
  cnf: z.object({ jwk: publicJwkSchema }),
  exp: z.number().int().optional()
})
const memberClaims = z.object({
  sub: z.string().regex(/^[A-Za-z0-9]{16,128}$/),
  roles: roleList,
  grant: z.string().max(MAX_JWT_BYTES).optional(),
  exp: z.number().int().optional()
})

function expiryMs (exp: number | undefined): number | undefined {
  return exp != null ? exp * 1000 : undefined
}

/** Signs a JWT of `typ` with `key`; `ttlS` undefined = no expiry. */
export async function signJwt (claims: JWTPayload, typ: string, key: CryptoKey, ttlS?: number): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ }).setIssuedAt()
  if (ttlS != null) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + Math.floor(ttlS))
  return await jwt.sign(key)
}

/** Verifies signature, typ, algorithm and times; every failure is a TrustError with a reason. */
export async function verifyJwt (jwt: unknown, typ: string, key: CryptoKey, what: string): Promise<JWTPayload> {
  if (typeof jwt !== 'string' || jwt.length > MAX_JWT_BYTES) throw new TrustError(`${what}: missing or longer than ${MAX_JWT_BYTES} bytes`, 'bad-cert')
  try {
    const { payload } = await jwtVerify(jwt, key, { typ, algorithms: ['EdDSA'], clockTolerance: CLOCK_SKEW_S })
    return payload
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new TrustError(`${what} expired`, 'expired')
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw new TrustError(`${what}: signature does not verify (not signed by this cluster)`, 'bad-signature')
    throw new TrustError(`${what}: ${errorMessage(err)}`, 'bad-cert')
  }
}

/** The payload without checking it (to find which key to check it with). */
export function peek (jwt: string, what: string): JWTPayload {
  try {
    decodeProtectedHeader(jwt)
    return decodeJwt(jwt)
  } catch (err) {
    throw new TrustError(`${what}: not a JWT (${errorMessage(err)})`, 'bad-cert')
  }
}

function parseClaims<S extends z.ZodType> (schema: S, payload: JWTPayload, what: string): z.infer<S> {
  const parsed = schema.safeParse(payload)
  if (!parsed.success) throw new TrustError(`${what}: ${parsed.error.issues[0]?.path.join('.') ?? ''} ${parsed.error.issues[0]?.message ?? 'invalid'}`, 'bad-cert')
  return parsed.data
}

// ---- grants ----------------------------------------------------------------------------------

export async function issueGrant (clusterKey: CryptoKey, init: { id: string, kind: 'member' | 'operator', roles?: Role[], name?: string, keyJwk: JWK, ttlS?: number }): Promise<string> {
  return await signJwt({
    sub: init.id, kind: init.kind, ...(init.roles != null ? { roles: init.roles } : {}), ...(init.name != null ? { name: init.name } : {}), cnf: { jwk: init.keyJwk }
  }, GRANT_TYP, clusterKey, init.ttlS)
}

export async function verifyGrant (jwt: unknown, clusterPublic: CryptoKey, kind: 'member' | 'operator'): Promise<Grant> {
  const payload = await verifyJwt(jwt, GRANT_TYP, clusterPublic, `${kind} grant`)
  const claims = parseClaims(grantClaims, payload, `${kind} grant`)
  if (claims.kind !== kind) throw new TrustError(`a ${claims.kind} grant is not a ${kind} grant`, 'bad-cert')
  if (kind === 'member' && claims.roles == null) throw new TrustError('member grant names no roles', 'bad-cert')
  if (kind === 'operator' && claims.name == null) throw new TrustError('operator grant names no operator', 'bad-cert')
  return {
    id: claims.sub,
    kind,
    roles: claims.roles ?? [],
    ...(claims.name != null ? { name: claims.name } : {}),
    key: await importPublic(claims.cnf.jwk, `${kind} grant key`),
    keyJwk: claims.cnf.jwk,
    expiresAt: expiryMs(claims.exp),
    jwt: jwt as string
  }
}

// ---- member certificates ---------------------------------------------------------------------

/** A certificate signed by the cluster key itself (daemons that hold it). */
export async function issueMemberCert (clusterKey: CryptoKey, peer: string, roles: Role[], ttlS?: number): Promise<string> {
  return await signJwt({ sub: peer, roles }, MEMBER_TYP, clusterKey, ttlS)
}

/** A certificate signed by a join token's key; it carries the grant that vouches for that key. */
export async function issueMemberCertFromGrant (grantKey: CryptoKey, grant: Grant, peer: string, roles: Role[]): Promise<string> {
  const missing = roles.filter(r => !grant.roles.includes(r))
  if (missing.length > 0) throw new TrustError(`the join token grants ${grant.roles.join(',')}; it cannot grant ${missing.join(',')}`, 'role')
  const ttlS = grant.expiresAt != null ? Math.max(1, Math.floor((grant.expiresAt - Date.now()) / 1000)) : undefined
  return await signJwt({ sub: peer, roles, grant: grant.jwt }, MEMBER_TYP, grantKey, ttlS)
}

/** Checks a member certificate against the cluster's public key (directly or through its grant). */
export async function verifyMemberCert (jwt: unknown, clusterPublic: CryptoKey): Promise<MemberCert> {
  if (typeof jwt !== 'string' || jwt.length > MAX_JWT_BYTES) throw new TrustError('member certificate: missing or too long', 'bad-cert')
  const unverified = peek(jwt, 'member certificate')
  let signer = clusterPublic
  let grant: Grant | undefined
  if (unverified.grant !== undefined) {
    grant = await verifyGrant(unverified.grant, clusterPublic, 'member')
    signer = grant.key
  }
  const claims = parseClaims(memberClaims, await verifyJwt(jwt, MEMBER_TYP, signer, 'member certificate'), 'member certificate')
  let expiresAt = expiryMs(claims.exp)
  if (grant != null) {
    const extra = claims.roles.filter(r => !grant.roles.includes(r))
    if (extra.length > 0) throw new TrustError(`member certificate claims ${extra.join(',')} beyond its grant`, 'role')
    // A certificate never outlives the grant that signed it.
    if (grant.expiresAt != null) expiresAt = Math.min(expiresAt ?? Infinity, grant.expiresAt)
  }
  return { peer: claims.sub, roles: claims.roles, expiresAt, grantId: grant?.id, jwt }
}
