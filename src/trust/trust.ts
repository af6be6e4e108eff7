import type { CryptoKey } from 'jose'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Message } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { Counter, Gauge, type Registry } from 'prom-client'
import { z } from 'zod'
import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import { handleRequests, request } from '../p2p/request.ts'
import { TrustError } from './errors.ts'
import { verifyMemberCert, type Role } from './certs.ts'
import { inScope, verifyOperatorRequest, writeScope, type VerifiedOperator } from './operator.ts'
import {
  CERT_FETCH_TIMEOUT_MS, CERT_NEGATIVE_TTL_MS, CERT_PROTOCOL, MAX_CACHED_CERTS, MAX_JWT_BYTES, REFUSAL_LOG_INTERVAL_MS
} from './constants.ts'

/**
 * The trust layer at run time (docs/security.md): who holds which role, checked wherever a
 * control message or protocol request arrives.
 *
 * Each daemon shows its member certificate over CERT_PROTOCOL; peers fetch it once (at
 * identify, or on first need), verify it against the cluster's public key and cache the roles
 * until it expires. `check()` answers "may this peer do this?" and counts and logs every "no".
 * In insecure mode (`--insecure`) every peer holds every role, as before trust existed.
 */

export type Need = Role | 'member'

interface Known {
  roles: ReadonlySet<Role>
  expiresAt?: number
  jwt: string
}

export interface TrustInit {
  /** The cluster's public key; undefined = insecure mode. */
  clusterPublic?: CryptoKey
  /** This daemon's own certificate (secure mode). */
  selfCert?: string
  logger: Logger
  registry?: Registry
}

const certRequest = z.strictObject({ peer: z.string().regex(/^[A-Za-z0-9]{16,128}$/).optional() })
const certResponse = z.strictObject({ cert: z.string().max(MAX_JWT_BYTES).nullable() })

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

const registered = new WeakMap<object, Trust>()

export class Trust {
  readonly secure: boolean
  private readonly clusterPublic?: CryptoKey
  private readonly selfCert?: string
  private readonly logger: Logger
  private readonly known = new Map<string, Known>()
  private readonly failed = new Map<string, number>()
  private readonly fetching = new Map<string, Promise<Known | undefined>>()
  private readonly lastLog = new Map<string, { at: number, suppressed: number }>()
  private readonly refusals?: Counter<'where' | 'reason'>
  private readonly handshakes?: Counter<'direction'>
  private libp2p?: Libp2p
  private onIdentify?: (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>) => void

  constructor (init: TrustInit) {
    this.secure = init.clusterPublic != null
    this.clusterPublic = init.clusterPublic
    this.selfCert = init.selfCert
    this.logger = init.logger
    if (init.registry != null) {
      const r = [init.registry]
      this.refusals = new Counter({ name: 'astrad_trust_refusals_total', help: 'Control messages and requests refused for lack of authority, by where and reason', labelNames: ['where', 'reason'], registers: r })
      this.handshakes = new Counter({ name: 'astrad_trust_handshake_failures_total', help: 'Connections that failed the private-network or Noise handshake, by direction', labelNames: ['direction'], registers: r })
      const secure = this.secure
      new Gauge({ name: 'astrad_trust_secure', help: '1 when this daemon requires a cluster secret and certificates; 0 with --insecure', registers: r, collect () { this.set(secure ? 1 : 0) } })
      const known = this.known
      new Gauge({ name: 'astrad_trust_known_certificates', help: 'Member certificates verified and cached', registers: r, collect () { this.set(known.size) } })
    }
  }

  /** The trust registered for a libp2p host; a host without one (bare test hosts) is insecure. */
  static of (libp2p: object): Trust {
    return registered.get(libp2p) ?? INSECURE
  }

  /**
   * A request handler's gate (p2p/request.ts `authorize`): throws a TrustError (ERR_FORBIDDEN)
   * unless the peer holds `need` in the trust registered for `host` (looked up at each call).
   */
  static guard (host: object, need: Need | Need[], where: string): (peer: PeerId) => Promise<void> {
    return async peer => { await Trust.of(host).require(peer, need, where) }
  }

  /** Registers with `libp2p`, serves CERT_PROTOCOL and fetches the certificate of each peer that identifies. */
  async attach (libp2p: Libp2p): Promise<void> {
    this.libp2p = libp2p
    registered.set(libp2p, this)
    if (!this.secure) return
    if (this.selfCert != null) this.remember(libp2p.peerId.toString(), await verifyMemberCert(this.selfCert, this.clusterPublic!))
    await handleRequests(libp2p, CERT_PROTOCOL, req => this.serveCert(req), { maxRequestBytes: 1024, maxResponseBytes: MAX_JWT_BYTES + 64 })
    this.onIdentify = evt => {
      const peer = evt.detail.peerId
      if (evt.detail.protocols.includes(CERT_PROTOCOL) && this.lookup(peer.toString()) == null) void this.resolve(peer).catch(() => {})
    }
    libp2p.addEventListener('peer:identify', this.onIdentify as never)
  }

  async detach (): Promise<void> {
    const libp2p = this.libp2p
    if (libp2p == null) return
    if (this.onIdentify != null) libp2p.removeEventListener('peer:identify', this.onIdentify as never)
    if (this.secure) await libp2p.unhandle(CERT_PROTOCOL).catch(() => {})
    if (registered.get(libp2p) === this) registered.delete(libp2p)
    this.libp2p = undefined
  }

  /** Roles held by `peer` as far as is known now (no network); every role in insecure mode. */
  cachedRoles (peer: string): ReadonlySet<Role> | undefined {
    if (!this.secure) return ALL_ROLES
    return this.lookup(peer)?.roles
  }

  /** A peer with a valid certificate (any role); everyone in insecure mode. */
  isMember (peer: string): boolean {
    return (this.cachedRoles(peer)?.size ?? 0) > 0
  }

  /**
   * The roles `peer` holds: from the cache, else its certificate fetched from it (or, for the
   * author of a gossip message who is not connected to us, from `via`, the peer that forwarded
   * it). Empty when it has none that verifies.
   */
  async roles (peer: PeerId | string, via?: PeerId, signal?: AbortSignal): Promise<ReadonlySet<Role>> {
    if (!this.secure) return ALL_ROLES
    const id = typeof peer === 'string' ? peer : peer.toString()
    const cached = this.lookup(id)
    if (cached != null) return cached.roles
    return (await this.resolve(typeof peer === 'string' ? peerIdFromString(peer) : peer, via, signal))?.roles ?? NO_ROLES
  }

  /**
   * May `peer` act as `need` here? Counts and logs (rate-limited) every refusal under `where`
   * (a protocol or topic). Never throws.
   */
  async check (peer: PeerId | string, need: Need | Need[], where: string, via?: PeerId): Promise<boolean> {
    if (!this.secure) return true
    let roles: ReadonlySet<Role>
    try {
      roles = await this.roles(peer, via)
    } catch {
      roles = NO_ROLES
    }
    const needs = Array.isArray(need) ? need : [need]
    if (needs.some(n => n === 'member' ? roles.size > 0 : roles.has(n))) return true
    this.refuse(where, roles.size === 0 ? 'no-cert' : 'role', String(peer), `needs ${needs.join(' or ')}; holds ${roles.size === 0 ? 'no valid certificate' : [...roles].join(',')}`)
    return false
  }

  /**
   * May the author of a gossip message (its StrictSign `from`) act as `need` on topic `where`?
   * `via` is the peer that forwarded it. An unsigned message has no author: refused. Counted and
   * logged like check().
   */
  async checkAuthor (msg: Message, need: Need | Need[], where: string, via: PeerId): Promise<boolean> {
    if (!this.secure) return true
    if (msg.type !== 'signed') {
      this.refuse(where, 'unsigned', via.toString(), 'message without an author')
      return false
    }
    return await this.check(msg.from, need, where, via)
  }

  /** Like check(), but throws a TrustError (for request handlers: the caller sees why). */
  async require (peer: PeerId | string, need: Need | Need[], where: string): Promise<void> {
    if (!await this.check(peer, need, where)) {
      throw new TrustError(`${where}: refused; this needs the ${Array.isArray(need) ? need.join(' or ') : need} role, granted by the cluster key`, 'role')
    }
  }

  /**
   * Checks an operator's signed request on the RPC port of this daemon (`self`): signature,
   * credential, freshness, that it signs this method, path and body (without `body`, a body
   * still to be streamed: the caller compares the result's bodyHash once it has read it).
   */
  async verifyOperator (jwt: unknown, request: { method: string, path: string, body?: Uint8Array }): Promise<VerifiedOperator | undefined> {
    if (!this.secure) return undefined
    try {
      return await verifyOperatorRequest(jwt, this.clusterPublic!, { audience: this.selfId(), request })
    } catch (err) {
      this.refuse('rpc', err instanceof TrustError ? err.reason : 'bad-cert', 'local', errorMessage(err))
      throw err
    }
  }

  /**
   * Where a cluster-log write lands: may the operator request `jwt`, forwarded by `from` (the
   * peer whose RPC port received it; ourselves for a local write), write `kind`/`key`? Returns
   * the operator (recorded as the write's author); throws a TrustError otherwise.
   */
  async authorizeWrite (jwt: unknown, from: string, kind: string, key: string): Promise<VerifiedOperator | undefined> {
    if (!this.secure) return undefined
    try {
      const op = await verifyOperatorRequest(jwt, this.clusterPublic!, { audience: from })
      if (!inScope(writeScope(op.method, op.path), kind, key)) {
        throw new TrustError(`operator request ${op.method} ${op.path} may not write ${kind}/${key}`, 'scope')
      }
      return op
    } catch (err) {
      this.refuse('clusterlog-write', err instanceof TrustError ? err.reason : 'bad-cert', from, errorMessage(err))
      throw err
    }
  }

  /** Counts one failed connection handshake (wrong or no private-network key, bad Noise). */
  handshakeFailed (direction: 'inbound' | 'outbound', detail: string): void {
    this.handshakes?.inc({ direction })
    this.logRateLimited(`handshake:${direction}`, { direction, err: detail }, 'connection handshake failed (not a member of this cluster, or a damaged connection)')
  }

  /** Counts and logs (rate-limited) one refusal. */
  refuse (where: string, reason: string, peer: string, detail: string): void {
    this.refusals?.inc({ where, reason })
    this.logRateLimited(`${where}:${reason}`, { where, reason, peer, detail }, 'refused: no authority')
  }

  private selfId (): string {
    const id = this.libp2p?.peerId.toString()
    if (id == null) throw new TrustError('trust is not attached to a host', 'internal')
    return id
  }

  private logRateLimited (key: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now()
    const last = this.lastLog.get(key)
    if (last != null && now - last.at < REFUSAL_LOG_INTERVAL_MS) {
      last.suppressed++
      return
    }
    this.lastLog.set(key, { at: now, suppressed: 0 })
    this.logger.warn({ ...fields, ...(last != null && last.suppressed > 0 ? { alsoSinceLastLine: last.suppressed } : {}) }, msg)
  }

  private lookup (peer: string): Known | undefined {
    const k = this.known.get(peer)
    if (k == null) return undefined
    if (k.expiresAt != null && k.expiresAt <= Date.now()) {
      this.known.delete(peer)
      return undefined
    }
    return k
  }

  private remember (peer: string, cert: { peer: string, roles: Role[], expiresAt?: number, jwt: string }): Known {
    if (this.known.size >= MAX_CACHED_CERTS) {
      const oldest = this.known.keys().next().value
      if (oldest != null) this.known.delete(oldest)
    }
    const k: Known = { roles: new Set(cert.roles), expiresAt: cert.expiresAt, jwt: cert.jwt }
    this.known.set(peer, k)
    this.failed.delete(peer)
    return k
  }

  private async resolve (peer: PeerId, via?: PeerId, signal?: AbortSignal): Promise<Known | undefined> {
    const id = peer.toString()
    const failedAt = this.failed.get(id)
    if (failedAt != null && Date.now() - failedAt < CERT_NEGATIVE_TTL_MS) return undefined
    let pending = this.fetching.get(id)
    if (pending == null) {
      pending = this.fetch(peer, via, signal).finally(() => { this.fetching.delete(id) })
      this.fetching.set(id, pending)
    }
    return await pending
  }

  private async fetch (peer: PeerId, via: PeerId | undefined, signal?: AbortSignal): Promise<Known | undefined> {
    const libp2p = this.libp2p
    if (libp2p == null) return undefined
    const id = peer.toString()
    const ask: PeerId[] = []
    if (libp2p.getConnections(peer).length > 0) ask.push(peer)
    if (via != null && !via.equals(peer)) ask.push(via)
    if (ask.length === 0) ask.push(peer)
    let last = 'no answer'
    for (const target of ask) {
      try {
        const bytes = await request(libp2p, target, CERT_PROTOCOL, encoder.encode(JSON.stringify(target.equals(peer) ? {} : { peer: id })), {
          signal, timeoutMs: CERT_FETCH_TIMEOUT_MS, maxResponseBytes: MAX_JWT_BYTES + 64
        })
        const res = certResponse.parse(JSON.parse(decoder.decode(bytes)))
        if (res.cert == null) { last = `${target.toString()} holds no certificate for it`; continue }
        const cert = await verifyMemberCert(res.cert, this.clusterPublic!)
        if (cert.peer !== id) { last = `certificate is for ${cert.peer}`; continue }
        return this.remember(id, cert)
      } catch (err) {
        last = errorMessage(err)
      }
    }
    this.failed.set(id, Date.now())
    this.logger.debug({ peer: id, err: last }, 'no valid certificate for peer')
    return undefined
  }

  private serveCert (req: Uint8Array): Uint8Array {
    const parsed = certRequest.parse(JSON.parse(decoder.decode(req)))
    const self = this.libp2p?.peerId.toString()
    const cert = parsed.peer == null || parsed.peer === self ? this.selfCert : this.lookup(parsed.peer)?.jwt
    return encoder.encode(JSON.stringify({ cert: cert ?? null }))
  }
}

const ALL_ROLES: ReadonlySet<Role> = new Set(['node', 'resource', 'scheduler'])
const NO_ROLES: ReadonlySet<Role> = new Set()

const silent = { warn () {}, debug () {}, info () {}, error () {} } as unknown as Logger
/** The trust of hosts that registered none: insecure, every peer holds every role. */
const INSECURE = new Trust({ logger: silent })
