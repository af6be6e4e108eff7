import type { Connection, Stream } from '@libp2p/interface'
import { circuitRelayServer, type CircuitRelayServerInit, type CircuitRelayService } from '@libp2p/circuit-relay-v2'
import { withOverrides } from './components.ts'
import { RELAY_HOP_PROTOCOL, RELAY_STOP_PROTOCOL, RELAY_PAUSED_READ_BUFFER_BYTES } from './constants.ts'

/**
 * What a relay (a resource) forwards, counted and limited like any upload (docs/nat.md).
 *
 * libp2p's relay can only cut a relayed connection after a number of bytes or seconds, which
 * cuts a model transfer mid-piece. Instead every byte the relay reads from either end of a
 * relayed connection is counted and drawn from a byte-rate budget (the relay's own cap, then the
 * daemon's upload bucket); while the budget is short the stream is paused, so yamux stops
 * granting window and the sender waits. Nothing is dropped or cut: the transfer only slows.
 */

/** `to_destination`: from the peer that dialled through the relay to the peer holding the slot; `to_source`: back. */
export type RelayDirection = 'to_source' | 'to_destination'

export interface RelayBudget {
  /** Whether any limit applies now (else bytes are only counted, and streams never paused). */
  limited: () => boolean
  /** Resolves once `n` relayed bytes fit the budget (they were already read: the stream waits). */
  take: (n: number, signal: AbortSignal) => Promise<void>
}

export interface RelayTrafficStats {
  /** Bytes relayed since start, per direction. */
  bytes: Record<RelayDirection, number>
  /** Relayed connections open through us now, and since start. */
  connections: number
  connectionsTotal: number
  /** Times a relayed stream was held paused by the budget. */
  paused: number
}

interface MessageEventLike { data: Uint8Array | { byteLength: number } }

export class RelayTraffic {
  private budget?: RelayBudget
  private readonly bytes: Record<RelayDirection, number> = { to_source: 0, to_destination: 0 }
  private open = 0
  private total = 0
  private pausedCount = 0
  private readonly listeners = new Set<(direction: RelayDirection, n: number) => void>()

  constructor (budget?: RelayBudget) {
    this.budget = budget
  }

  /** Sets (or replaces) the budget: the daemon attaches its upload bucket once its transfer service exists. */
  setBudget (budget: RelayBudget | undefined): void {
    this.budget = budget
  }

  /** Called for every relayed chunk (metrics). */
  onBytes (listener: (direction: RelayDirection, n: number) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  stats (): RelayTrafficStats {
    return { bytes: { ...this.bytes }, connections: this.open, connectionsTotal: this.total, paused: this.pausedCount }
  }

  /**
   * Counts and limits what is read from `stream`, one end of a relayed connection: what the
   * source sends arrives on its HOP stream (`to_destination`), what the destination sends on the
   * STOP stream we opened to it (`to_source`). `connection`: this stream is the one that
   * completes a relayed connection (counted open until it closes).
   */
  attach (stream: Stream, direction: RelayDirection, connection = false): void {
    // A paused stream may still receive its sender's whole window: hold it rather than reset.
    const s = stream as Stream & { maxReadBufferLength?: number }
    if (typeof s.maxReadBufferLength === 'number' && s.maxReadBufferLength < RELAY_PAUSED_READ_BUFFER_BYTES) s.maxReadBufferLength = RELAY_PAUSED_READ_BUFFER_BYTES
    const done = new AbortController()
    let pending = 0
    if (connection) {
      this.open++
      this.total++
    }
    const onMessage = (evt: MessageEventLike): void => {
      const n = evt.data.byteLength
      if (n === 0) return
      this.bytes[direction] += n
      for (const l of this.listeners) l(direction, n)
      const budget = this.budget
      if (budget == null || !budget.limited()) return
      // The chunk is already on its way: hold the stream until the budget has paid for it.
      pending++
      if (stream.readStatus === 'readable') {
        stream.pause()
        this.pausedCount++
      }
      budget.take(n, done.signal).then(() => {
        pending--
        if (pending === 0 && stream.readStatus === 'paused') stream.resume()
      }, () => {})
    }
    // Observe what the stream delivers rather than listen for it: a 'message' listener would make
    // the stream deliver data while the relay has none attached (between its handshake reader
    // and its pipe), and those bytes would be lost to it. Measured in the NAT lab: a 6 MiB pull
    // through the relay took 39 s with a listener (under 10 s without).
    const target = stream as Stream & { dispatchEvent: (evt: Event) => boolean }
    const dispatch = target.dispatchEvent.bind(target)
    target.dispatchEvent = (evt: Event): boolean => {
      if (evt.type === 'message') onMessage(evt as unknown as MessageEventLike)
      return dispatch(evt)
    }
    stream.addEventListener('close', () => {
      done.abort()
      if (connection) this.open--
    }, { once: true })
  }
}

/**
 * A circuit relay v2 server whose relayed bytes go through `traffic`. The server is libp2p's,
 * unchanged; it is handed components whose registrar wraps the HOP handler (the source's end)
 * and whose connection manager wraps the STOP streams it opens (the destination's end), the way
 * `autoNATFreshDials` hands AutoNAT its own connection manager.
 */
export function countedRelayServer (init: CircuitRelayServerInit, traffic: RelayTraffic): (components: any) => CircuitRelayService {
  const factory = circuitRelayServer(init)
  return (components: any) => {
    const registrar = withOverrides(components.registrar, {
      handle: (target: any) => async (protocol: string, handler: (stream: Stream, connection: Connection) => unknown, options?: unknown) => {
        const wrapped = protocol !== RELAY_HOP_PROTOCOL
          ? handler
          : (stream: Stream, connection: Connection) => {
              traffic.attach(stream, 'to_destination')
              return handler(stream, connection)
            }
        return await target.handle(protocol, wrapped, options)
      }
    })
    const connectionManager = withOverrides(components.connectionManager, {
      getConnections: (target: any) => (peer?: unknown) => (target.getConnections(peer) as Connection[]).map(conn => withOverrides(conn, {
        newStream: (c: any) => async (protocols: string | string[], options?: unknown) => {
          const stream: Stream = await c.newStream(protocols, options)
          if ((Array.isArray(protocols) ? protocols : [protocols]).includes(RELAY_STOP_PROTOCOL)) traffic.attach(stream, 'to_source', true)
          return stream
        }
      }))
    })
    return factory(withOverrides(components, {
      registrar: () => registrar,
      connectionManager: () => connectionManager
    }))
  }
}

