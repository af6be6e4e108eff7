import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { dcutr } from '@libp2p/dcutr'
import type { Multiaddr } from '@multiformats/multiaddr'
import { withOverrides } from './components.ts'
import { isPublicAddress, isRelayedConnection } from './nat.ts'
import { DCUTR_RETRIES, DCUTR_TIMEOUT_MS, HOLEPUNCH_OUTCOME_MS, HOLEPUNCH_MAX_PEERS } from './constants.ts'

/**
 * Hole punching (DCUtR, `@libp2p/dcutr`), counted: every relayed connection a peer opens to us
 * is an attempt (the side that receives the relayed connection starts DCUtR), and its outcome
 * is recorded per peer and counted (docs/nat.md).
 *
 * - `upgraded`: a direct connection replaced the relayed one (DCUtR closes the relayed one only
 *   after its direct dial succeeded);
 * - `no_addresses`: the peers exchanged no public address to dial (a NAT'd node has none
 *   confirmed: its observed address never is, see docs/nat.md);
 * - `dial_failed`: addresses were exchanged and dialled, and every dial failed;
 * - `failed`: any other error on every try; `closed`: the relayed connection closed first;
 *   `timeout`: no outcome within every try's deadline.
 */
export type HolePunchResult = 'upgraded' | 'no_addresses' | 'dial_failed' | 'failed' | 'closed' | 'timeout'
export const HOLEPUNCH_RESULTS: HolePunchResult[] = ['upgraded', 'no_addresses', 'dial_failed', 'failed', 'closed', 'timeout']

export interface HolePunchOutcome {
  result: HolePunchResult
  /** When it was decided (ms since the epoch). */
  at: number
  /** The last error DCUtR reported, for the failures. */
  error?: string
}

export interface HolePunchStatus {
  /** Attempts started; and their outcomes so far, by result. */
  attempts: number
  results: Partial<Record<HolePunchResult, number>>
}

/** What classifies a failed try from its error (dcutr's own messages, 3.0.x). */
function classify (error: string | undefined): HolePunchResult {
  if (error == null) return 'failed'
  if (/no (dialable )?multiaddrs|had no multiaddrs/i.test(error)) return 'no_addresses'
  if (/dial|connect|ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|abort/i.test(error)) return 'dial_failed'
  return 'failed'
}

export class HolePunches {
  private attemptsCount = 0
  private readonly counts = new Map<HolePunchResult, number>()
  private readonly latest = new Map<string, HolePunchOutcome>()
  private readonly listeners = new Set<(outcome: HolePunchOutcome, peer: string) => void>()

  /** Called once per decided attempt (metrics). */
  onOutcome (listener: (outcome: HolePunchOutcome, peer: string) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  status (): HolePunchStatus {
    return { attempts: this.attemptsCount, results: Object.fromEntries(this.counts) }
  }

  /** The latest outcome with this peer, if any attempt with it was decided. */
  outcome (peer: PeerId | string): HolePunchOutcome | undefined {
    return this.latest.get(peer.toString())
  }

  /**
   * Follows DCUtR on one relayed connection: hands back the connection DCUtR should be given,
   * which reports the tries' streams and the final close of the relayed connection.
   * `ownPublic`: whether we have a public address to offer; without one a failed try is
   * `no_addresses` whatever the error (the other side refuses our list and resets the stream).
   */
  track (conn: Connection, ownPublic: () => boolean = () => true): Connection {
    this.attemptsCount++
    const peer = conn.remotePeer.toString()
    let decided = false
    let failures = 0
    let lastError: string | undefined
    const decide = (result: HolePunchResult): void => {
      if (decided) return
      decided = true
      clearTimeout(timer)
      conn.removeEventListener?.('close', onClose)
      const outcome: HolePunchOutcome = { result, at: Date.now(), ...(result !== 'upgraded' && lastError != null ? { error: lastError } : {}) }
      this.counts.set(result, (this.counts.get(result) ?? 0) + 1)
      this.latest.delete(peer)
      this.latest.set(peer, outcome)
      if (this.latest.size > HOLEPUNCH_MAX_PEERS) this.latest.delete(this.latest.keys().next().value!)
      for (const l of this.listeners) l(outcome, peer)
    }
    const timer = setTimeout(() => { decide('timeout') }, HOLEPUNCH_OUTCOME_MS)
    timer.unref()
    const onClose = (): void => { queueMicrotask(() => { decide('closed') }) }
    conn.addEventListener?.('close', onClose, { once: true })
    return withOverrides(conn, {
      // DCUtR closes the relayed connection only once the direct one is up.
      close: (c: any) => async (options?: unknown) => {
        decide('upgraded')
        return await c.close(options)
      },
      newStream: (c: any) => async (protocols: string | string[], options?: unknown) => {
        let stream: Stream
        try {
          stream = await c.newStream(protocols, options)
        } catch (err) {
          lastError = err instanceof Error ? err.message : String(err)
          if (++failures >= DCUTR_RETRIES) decide(ownPublic() ? classify(lastError) : 'no_addresses')
          throw err
        }
        stream.addEventListener('close', (evt: Event & { error?: Error }) => {
          if (evt.error == null) return
          lastError = evt.error.message
          if (++failures >= DCUTR_RETRIES) decide(ownPublic() ? classify(lastError) : 'no_addresses')
        }, { once: true })
        return stream
      }
    })
  }
}

/**
 * `@libp2p/dcutr` with its outcomes recorded in `punches`: its topology's `onConnect` is given a
 * tracked connection for every inbound relayed connection (the ones DCUtR starts on), once per
 * connection: stock DCUtR starts again at every identify push of the peer (measured: 2–3 runs of
 * 3 tries on one relayed connection), which only repeats a failed exchange.
 */
export function countedDcutr (punches: HolePunches): (components: any) => unknown {
  const factory = dcutr({ retries: DCUTR_RETRIES, timeout: DCUTR_TIMEOUT_MS })
  return (components: any) => {
    // identify and each identify push report the peer again: one attempt per connection.
    const seen = new WeakSet<Connection>()
    const ownPublic = (): boolean => (components.addressManager.getAddresses() as Multiaddr[]).some(isPublicAddress)
    return factory(withOverrides(components, {
    registrar: (c: any) => withOverrides(c.registrar, {
      register: (r: any) => async (protocol: string, topology: { onConnect?: (peer: PeerId, conn: Connection) => void }) => await r.register(protocol, {
        ...topology,
        onConnect: (peer: PeerId, conn: Connection) => {
          if (!isRelayedConnection(conn) || conn.direction !== 'inbound') return
          if (seen.has(conn)) return
          seen.add(conn)
          topology.onConnect?.(peer, punches.track(conn, ownPublic))
        }
      })
    })
    }) as never)
  }
}

export interface PeerPath {
  peerId: string
  /** `direct` when any open connection to the peer is direct, else `relayed`. */
  path: 'direct' | 'relayed'
  /** The latest hole punch with this peer, if this daemon started one. */
  holePunch?: HolePunchOutcome
}

/** How we are connected to each connected peer: direct or only through a relay. */
export function peerPaths (libp2p: { getConnections: () => Connection[] }, punches?: HolePunches): PeerPath[] {
  const direct = new Map<string, boolean>()
  for (const conn of libp2p.getConnections()) {
    if (conn.status !== 'open') continue
    const peer = conn.remotePeer.toString()
    direct.set(peer, (direct.get(peer) ?? false) || !isRelayedConnection(conn))
  }
  return [...direct].map(([peerId, d]): PeerPath => {
    const holePunch = punches?.outcome(peerId)
    return { peerId, path: d ? 'direct' : 'relayed', ...(holePunch != null ? { holePunch } : {}) }
  }).sort((a, b) => a.peerId.localeCompare(b.peerId))
}
