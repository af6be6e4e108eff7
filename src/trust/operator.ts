import { createHash, randomUUID } from 'node:crypto'
import type { CryptoKey } from 'jose'
import { z } from 'zod'
import { TrustError } from './errors.ts'
import { peek, signJwt, verifyGrant, verifyJwt } from './certs.ts'
import type { OperatorCredential } from './files.ts'
import { CLOCK_SKEW_S, MAX_JWT_BYTES, OPERATOR_REQUEST_TTL_S, OPERATOR_REQUEST_TYP } from './constants.ts'

/**
 * Signed operator requests. The CLI (or any HTTP client with a credential) signs each write it
 * sends to the RPC port: method, path, a hash of the body, the peer id of the daemon it talks
 * to (`aud`), a time and a nonce. That daemon checks it, then forwards it with every cluster-log
 * write the request causes; the resource where the write lands checks it again, against the
 * cluster key, the write's scope and the forwarding peer, and records the operator's name.
 */

export interface OperatorRequest {
  method: string
  /** The request target as sent: path and query (`/v1/models?name=x`). */
  path: string
  /** The body bytes as sent, or the SHA-256 (hex) of a body streamed from a file. */
  body: Uint8Array | { sha256: string }
  /** Peer id of the daemon whose RPC port receives the request. */
  audience: string
}

export interface VerifiedOperator {
  /** Operator name from the credential the cluster key signed. */
  name: string
  grantId: string
  method: string
  path: string
  /** SHA-256 (hex) of the body it signs: checked by a receiver that streams the body. */
  bodyHash: string
  /** The signed request itself, to forward with the writes it causes. */
  jwt: string
}

const claims = z.object({
  grant: z.string().max(MAX_JWT_BYTES),
  aud: z.string().regex(/^[A-Za-z0-9]{16,128}$/),
  m: z.string().regex(/^[A-Z]{3,7}$/),
  p: z.string().min(1).max(2048),
  h: z.string().regex(/^[0-9a-f]{64}$/),
  jti: z.string().min(8).max(64),
  iat: z.number().int(),
  exp: z.number().int()
})

export function bodyHash (body: Uint8Array): string {
  return createHash('sha256').update(body).digest('hex')
}

export async function signOperatorRequest (cred: OperatorCredential, req: OperatorRequest): Promise<string> {
  return await signJwt({
    grant: cred.grant.jwt, aud: req.audience, m: req.method.toUpperCase(), p: req.path, h: req.body instanceof Uint8Array ? bodyHash(req.body) : req.body.sha256, jti: randomUUID()
  }, OPERATOR_REQUEST_TYP, cred.key.privateKey, OPERATOR_REQUEST_TTL_S)
}

/**
 * Checks a signed operator request: signed by an operator key the cluster key vouches for,
 * fresh, meant for `audience`. With `request`, also that it signs this method, path and body
 * (a body still to be streamed is left to the caller: compare `bodyHash` once it is read).
 */
export async function verifyOperatorRequest (jwt: unknown, clusterPublic: CryptoKey, expect: { audience: string, request?: { method: string, path: string, body?: Uint8Array } }): Promise<VerifiedOperator> {
  if (typeof jwt !== 'string' || jwt.length > 2 * MAX_JWT_BYTES) throw new TrustError('operator credential required (sign the request: astrad CLI with --credential)', 'not-operator')
  const unverified = peek(jwt, 'operator request')
  const grant = await verifyGrant(unverified.grant, clusterPublic, 'operator')
  const payload = await verifyJwt(jwt, OPERATOR_REQUEST_TYP, grant.key, 'operator request')
  const parsed = claims.safeParse(payload)
  if (!parsed.success) throw new TrustError('operator request: malformed claims', 'bad-cert')
  const c = parsed.data
  if (c.exp - c.iat > OPERATOR_REQUEST_TTL_S + CLOCK_SKEW_S) throw new TrustError('operator request: lifetime too long', 'stale')
  if (c.aud !== expect.audience) throw new TrustError(`operator request was signed for daemon ${c.aud}, not ${expect.audience}`, 'audience')
  if (expect.request != null) {
    const r = expect.request
    if (c.m !== r.method.toUpperCase() || c.p !== r.path) throw new TrustError(`operator request signs ${c.m} ${c.p}, not ${r.method} ${r.path}`, 'scope')
    if (r.body != null && c.h !== bodyHash(r.body)) throw new TrustError('operator request: body differs from the one signed', 'scope')
  }
  return { name: grant.name ?? 'unknown', grantId: grant.id, method: c.m, path: c.p, bodyHash: c.h, jwt }
}

/** The cluster-log objects one operator request may write: kind, and the key where the path names it. */
export interface WriteScope {
  kind: string
  key?: string
}

/** `?forget=1` on a model removal: it drops the model from the cluster log too (a cluster write). */
export function forgetsModel (query: URLSearchParams): boolean {
  return ['1', 'true', 'yes'].includes(query.get('forget') ?? '')
}

const SCOPES: Array<{ method: string, pattern: RegExp, when?: (query: URLSearchParams) => boolean, scope: (m: RegExpMatchArray) => WriteScope[] }> = [
  // Apps and pipelines share a name space and a route (docs/pipelines.md).
  { method: 'POST', pattern: /^\/v1\/apps$/, scope: () => [{ kind: 'app' }, { kind: 'pipeline' }] },
  { method: 'DELETE', pattern: /^\/v1\/apps\/([^/]+)$/, scope: m => [{ kind: 'app', key: decodeURIComponent(m[1] ?? '') }, { kind: 'pipeline', key: decodeURIComponent(m[1] ?? '') }] },
  { method: 'POST', pattern: /^\/v1\/models$/, scope: () => [{ kind: 'model' }] },
  { method: 'DELETE', pattern: /^\/v1\/models\/([^/]+)$/, when: forgetsModel, scope: m => [{ kind: 'model', key: decodeURIComponent(m[1] ?? '') }] },
  { method: 'POST', pattern: /^\/v1\/notices$/, scope: () => [{ kind: 'notice' }, { kind: 'inbox' }] },
  { method: 'POST', pattern: /^\/v1\/notices\/[^/]+\/(canary|promote|stop|recall|edit)$/, scope: () => [{ kind: 'notice' }, { kind: 'inbox' }] }
]

/** What a signed request for `method path` (query included) may write; empty for requests that write nothing. */
export function writeScope (method: string, path: string): WriteScope[] {
  const [p = '', q = ''] = path.split('?', 2)
  for (const s of SCOPES) {
    if (s.method !== method.toUpperCase()) continue
    const m = p.match(s.pattern)
    if (m != null) {
      if (s.when != null && !s.when(new URLSearchParams(q))) return []
      try { return s.scope(m) } catch { return [] }
    }
  }
  return []
}

export function inScope (scope: WriteScope[], kind: string, key: string): boolean {
  return scope.some(s => s.kind === kind && (s.key == null || s.key === key))
}
