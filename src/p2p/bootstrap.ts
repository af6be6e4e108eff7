import dns from 'node:dns/promises'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { backoffDelay } from '../util/time.ts'
import { errorMessage } from '../util/errors.ts'
import type { Host } from './host.ts'
import {
  BOOTSTRAP_BACKOFF_BASE_MS, BOOTSTRAP_BACKOFF_MAX_MS, BOOTSTRAP_CHECK_INTERVAL_MS, DIAL_TIMEOUT_MS
} from './constants.ts'

interface Target {
  addr: string
  peerId?: PeerId
  attempts: number
  nextAttemptAt: number
  dialing: boolean
  /** The address is this daemon's own (a resource listing every resource, itself included). */
  self: boolean
}

export interface BootstrapComponents {
  libp2p: Host
  logger: Logger
}

/**
 * Keeps the daemon connected to its bootstrap peers: dials each at start and re-dials with
 * exponential backoff (jittered) whenever the connection is lost. Addresses may carry /p2p/…
 * or not (the peer id is learnt from the handshake); /dns/ names are resolved at every dial so
 * a Kubernetes Service that moves is followed.
 */
export class Bootstrapper {
  private readonly targets: Target[]
  private timer?: NodeJS.Timeout
  private readonly controller = new AbortController()

  private readonly components: BootstrapComponents

  constructor (components: BootstrapComponents, addrs: string[]) {
    this.components = components
    this.targets = addrs.map(addr => ({ addr, attempts: 0, nextAttemptAt: 0, dialing: false, self: false }))
  }

  start (): void {
    if (this.timer != null || this.targets.length === 0) return
    this.check()
    this.timer = setInterval(() => { this.check() }, BOOTSTRAP_CHECK_INTERVAL_MS)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.controller.abort()
  }

  /**
   * True when at least one bootstrap peer is connected, or there is none to wait for (no
   * targets, or every target is this daemon itself).
   */
  get connected (): boolean {
    const others = this.targets.filter(t => !t.self)
    if (others.length === 0) return this.targets.every(t => t.self)
    return others.some(t => t.peerId != null && this.components.libp2p.getConnections(t.peerId).length > 0)
  }

  private check (): void {
    const now = Date.now()
    for (const t of this.targets) {
      if (t.dialing || t.self) continue
      if (t.peerId != null && this.components.libp2p.getConnections(t.peerId).length > 0) continue
      if (now < t.nextAttemptAt) continue
      void this.dial(t)
    }
  }

  /** Our own peer id, or one of the addresses we listen on. */
  private isSelf (ma: Multiaddr): boolean {
    const { libp2p } = this.components
    const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
    if (peer != null) return peer === libp2p.peerId.toString()
    const own = libp2p.getMultiaddrs().map(a => a.toString().replace(/\/p2p\/[^/]+$/, ''))
    return own.includes(ma.toString())
  }

  private markSelf (t: Target): void {
    t.self = true
    this.components.logger.info({ addr: t.addr }, 'bootstrap address is this daemon; not dialling it')
  }

  private async dial (t: Target): Promise<void> {
    const { libp2p, logger } = this.components
    t.dialing = true
    try {
      const ma = await resolve(multiaddr(t.addr))
      if (this.isSelf(ma)) {
        this.markSelf(t)
        return
      }
      const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
      const conn = await libp2p.dial(ma, { signal })
      if (t.peerId == null || !t.peerId.equals(conn.remotePeer)) {
        logger.info({ addr: t.addr, peer: conn.remotePeer.toString() }, 'bootstrap peer connected')
      } else if (t.attempts > 0) {
        logger.info({ addr: t.addr, peer: conn.remotePeer.toString(), attempts: t.attempts }, 'bootstrap peer reconnected')
      }
      t.peerId = conn.remotePeer
      t.attempts = 0
    } catch (err) {
      if (this.controller.signal.aborted) return
      // libp2p's answer when the address (behind a name or a NAT we could not see through)
      // led back to us after the handshake.
      if ((err as Error).name === 'InvalidPeerIdError') {
        this.markSelf(t)
        return
      }
      const delay = backoffDelay(t.attempts, BOOTSTRAP_BACKOFF_BASE_MS, BOOTSTRAP_BACKOFF_MAX_MS)
      t.attempts++
      t.nextAttemptAt = Date.now() + delay
      const log = t.attempts <= 3 || t.attempts % 10 === 0 ? logger.warn.bind(logger) : logger.debug.bind(logger)
      log({ addr: t.addr, attempts: t.attempts, retryInMs: delay, err: errorMessage(err) }, 'bootstrap peer unreachable')
    } finally {
      t.dialing = false
    }
  }
}

/** Replaces a /dns, /dns4 or /dns6 host by one of its addresses (TCP needs an IP). */
async function resolve (ma: Multiaddr): Promise<Multiaddr> {
  const parts = ma.getComponents()
  const first = parts[0]
  if (first == null || !['dns', 'dns4', 'dns6'].includes(first.name) || first.value == null) return ma
  const family = first.name === 'dns6' ? 6 : first.name === 'dns4' ? 4 : 0
  const found = await dns.lookup(first.value, { family })
  const rest = parts.slice(1).map(c => c.value != null ? `/${c.name}/${c.value}` : `/${c.name}`).join('')
  return multiaddr(`/ip${found.family}/${found.address}${rest}`)
}
