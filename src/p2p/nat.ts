import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { isLoopback, isNetworkAddress, isPrivate, loopbackAddressLast, publicAddressesFirst, reliableTransportsFirst } from '@libp2p/utils'
import type { Address, ComponentLogger, Connection, Libp2pEvents, Logger, PeerId } from '@libp2p/interface'
import type { TypedEventTarget } from 'main-event'
import type { AddressManager, ConnectionManager, TransportManager } from '@libp2p/interface-internal'
import { autoNAT, type AutoNATComponents, type AutoNATServiceInit } from '@libp2p/autonat'
import { withOverrides } from './components.ts'

/**
 * NAT traversal (docs/nat.md): when this host holds a circuit relay reservation, and how peers'
 * addresses are ordered for dialing.
 */

/** The listen address that asks the circuit relay transport for a slot on any connected relay. */
export const CIRCUIT_SEARCH = '/p2p-circuit'

/** A relayed address (`…/p2p/RELAY/p2p-circuit/p2p/PEER`). */
export function isRelayed (ma: Multiaddr): boolean {
  return ma.getComponents().some(c => c.name === 'p2p-circuit')
}

/** Whether a connection runs through a relay (its remote address is a circuit address). */
export function isRelayedConnection (conn: Pick<Connection, 'remoteAddr'>): boolean {
  return isRelayed(conn.remoteAddr)
}

/** A direct IP address that is neither private, loopback nor link-local: reachable from anywhere if dialable at all. */
export function isPublicAddress (ma: Multiaddr): boolean {
  return !isRelayed(ma) && isNetworkAddress(ma) && !isPrivate(ma) && !isLoopback(ma)
}

/**
 * The relayed address of `target` through `relay` (a relay multiaddr with `/p2p/RELAY`), for a
 * dialer that knows who the target's relay is but has not learnt its addresses.
 */
export function circuitAddress (relay: Multiaddr | string, target: PeerId | string): Multiaddr {
  return multiaddr(`${relay.toString()}/p2p-circuit/p2p/${target.toString()}`)
}

/**
 * Dial order for a peer's addresses: every direct address before any relayed one, then libp2p's
 * own order (loopback last, public first, signed before unsigned, TCP first). libp2p's default
 * sorts public before private *before* it sorts relayed last, so a relayed address through a
 * public resource would be tried before a NAT'd peer's LAN address even by a neighbour on that
 * LAN: a whole cell's transfers would go through the resource.
 */
export function dialOrder (a: Address, b: Address): -1 | 0 | 1 {
  const ra = isRelayed(a.multiaddr)
  const rb = isRelayed(b.multiaddr)
  if (ra !== rb) return ra ? 1 : -1
  return loopbackAddressLast(a.multiaddr, b.multiaddr) ||
    publicAddressesFirst(a.multiaddr, b.multiaddr) ||
    (a.isCertified === b.isCertified ? 0 : a.isCertified ? -1 : 1) ||
    reliableTransportsFirst(a.multiaddr, b.multiaddr)
}

/**
 * AutoNAT v1 (`@libp2p/autonat` 3.0.28) with its dial-backs made on a new connection.
 *
 * As shipped, its server dials the address to verify with `openConnection` and no `force`, so
 * it is handed the connection the request arrived on (found by peer id) and then closes it in a
 * `finally`. Measured in the NAT lab: every node asked by a resource to verify the resource's
 * public address dropped its only connection to the resource, and nothing was ever verified
 * (the reused connection's remote port is not the listen port). Since libp2p advertises a
 * public address only once it is verified, public hosts advertised none. Forcing a fresh
 * connection makes the dial-back a real test, and closing it harmless.
 */
export function autoNATFreshDials (init: AutoNATServiceInit = {}): (components: AutoNATComponents) => unknown {
  const factory = autoNAT(init)
  return components => {
    const fresh = withOverrides(components.connectionManager, {
      openConnection: (cm: ConnectionManager) => {
        const open: ConnectionManager['openConnection'] = async (peer, options = {}) => await cm.openConnection(peer, { ...options, force: true })
        return open
      }
    })
    return factory(withOverrides(components, { connectionManager: () => fresh }))
  }
}

/**
 * - `auto`: hold one relay reservation whenever no public address of ours is confirmed (by
 *   AutoNAT); give it up once one is, take one again if it is lost.
 * - `never`: never reserve (relay servers; hosts with `--announce`, which replaces every address
 *   libp2p would advertise, relayed ones included).
 */
export type ReserveMode = 'auto' | 'never'

export interface NatInit {
  reserve: ReserveMode
}

export interface NatComponents {
  transportManager: TransportManager
  addressManager: AddressManager
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
}

export interface NatStatus {
  mode: ReserveMode
  /** `public`: a public address is confirmed; `relayed`: we hold a reservation; `reserving`: waiting for one (no relay connected yet, or refused); `private`: neither (mode never). */
  reachability: 'public' | 'relayed' | 'reserving' | 'private'
  /** Confirmed public addresses (direct). */
  publicAddrs: string[]
  /** Our relayed addresses, advertised to peers via identify. */
  relayAddrs: string[]
  /** ms from asking for a slot until the reservation was made (last time). */
  reservedAfterMs?: number
}

export interface Nat {
  readonly status: NatStatus
}

type Listener = ReturnType<TransportManager['getListeners']>[number]

class NatService implements Nat {
  readonly [Symbol.toStringTag] = 'astrad:nat'
  private readonly components: NatComponents
  private readonly mode: ReserveMode
  private readonly log: Logger
  private listener?: Listener
  private reserveStartedAt = 0
  private reservedAfterMs?: number
  private running = false
  private chain: Promise<void> = Promise.resolve()

  constructor (components: NatComponents, init: NatInit) {
    this.components = components
    this.mode = init.reserve
    this.log = components.logger.forComponent('astrad:nat')
  }

  start (): void {}

  afterStart (): void {
    if (this.mode === 'never') return
    this.running = true
    // A reservation made shows at once as 'transport:listening'; AutoNAT's verdicts (and the
    // same reservation, debounced by 1 s) as 'self:peer:update'.
    this.components.events.addEventListener('transport:listening', this.onUpdate)
    this.components.events.addEventListener('self:peer:update', this.onUpdate)
    this.onUpdate()
  }

  async stop (): Promise<void> {
    this.running = false
    this.components.events.removeEventListener('transport:listening', this.onUpdate)
    this.components.events.removeEventListener('self:peer:update', this.onUpdate)
    await this.chain
    this.listener = undefined
  }

  get status (): NatStatus {
    const addrs = this.components.addressManager.getAddresses()
    const publicAddrs = addrs.filter(isPublicAddress).map(String)
    const relayAddrs = addrs.filter(isRelayed).map(String)
    const reachability = publicAddrs.length > 0
      ? 'public'
      : relayAddrs.length > 0 ? 'relayed' : this.listener != null ? 'reserving' : 'private'
    return { mode: this.mode, reachability, publicAddrs, relayAddrs, reservedAfterMs: this.reservedAfterMs }
  }

  /** Our addresses changed (a reservation made or lost, AutoNAT confirmed or withdrew one). */
  private readonly onUpdate = (): void => {
    this.chain = this.chain.then(async () => { await this.evaluate() }).catch(err => {
      this.log.error('relay reservation update failed - %e', err)
    })
  }

  private async evaluate (): Promise<void> {
    if (!this.running) return
    const addrs = this.components.addressManager.getAddresses()
    const isPublic = addrs.some(isPublicAddress)
    const held = this.listener != null && this.listener.getAddrs().length > 0
    if (this.listener != null && held && this.reservedAfterMs == null) {
      this.reservedAfterMs = Date.now() - this.reserveStartedAt
      this.log('relay reservation made after %d ms: %s', this.reservedAfterMs, this.listener.getAddrs().map(String).join(', '))
    } else if (this.listener != null && !held && this.reservedAfterMs != null) {
      // Lost with its relay connection; libp2p looks for another relay by itself.
      this.log('relay reservation lost: waiting for a relay')
      this.reserveStartedAt = Date.now()
      this.reservedAfterMs = undefined
    }
    if (!isPublic && this.listener == null) {
      this.reserveStartedAt = Date.now()
      this.reservedAfterMs = undefined
      const before = new Set(this.components.transportManager.getListeners())
      this.log('no confirmed public address: asking for a relay slot')
      await this.components.transportManager.listen([multiaddr(CIRCUIT_SEARCH)])
      this.listener = this.components.transportManager.getListeners().find(l => !before.has(l))
      return
    }
    // Give the slot back only once it was made: a pending search cannot be cancelled in libp2p
    // and would later reserve a slot with nobody to advertise it. The reservation's arrival
    // changes our addresses, which brings us back here.
    if (isPublic && this.listener != null && held) {
      this.log('public address confirmed (%s): giving up the relay slot', addrs.filter(isPublicAddress).map(String).join(', '))
      const listener = this.listener
      this.listener = undefined
      this.reservedAfterMs = undefined
      await listener.close()
    }
  }
}

/** The libp2p service that keeps a relay reservation while this host is not publicly reachable. */
export function nat (init: NatInit): (components: NatComponents) => Nat {
  return components => new NatService(components, init)
}
