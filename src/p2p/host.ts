import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, identifyPush, type Identify, type IdentifyPush } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayTransport, type CircuitRelayService } from '@libp2p/circuit-relay-v2'
import type { ConnectionGater, PeerId, PrivateKey } from '@libp2p/interface'
import { upgradeErrorMetrics } from './upgrade-errors.ts'
import type { PeerLookup } from './peer-lookup.ts'
import {
  GOSSIP_MAX_INBOUND_BYTES, MAX_CONNECTIONS, INBOUND_CONNECTIONS_PER_IP_PER_SECOND, MAX_INCOMING_PENDING_CONNECTIONS,
  RELAY_MAX_RESERVATIONS, RELAY_MAX_HOP_STREAMS, RELAY_MAX_STOP_STREAMS, RELAY_HOP_TIMEOUT_MS,
  RELAY_RESERVATION_TIMEOUT_MS, ADDRESS_DIAL_TIMEOUT_MS
} from './constants.ts'
import { nat, dialOrder, autoNATFreshDials, type Nat, type ReserveMode } from './nat.ts'
import { fixXsalsa20 } from './xsalsa20-fix.ts'
import { RelayTraffic, countedRelayServer } from './relay-traffic.ts'
import { HolePunches, countedDcutr } from './holepunch.ts'

export interface HostServices {
  identify: Identify
  identifyPush?: IdentifyPush
  ping: Ping
  pubsub: GossipSub
  /** Relay reservation keeper (docs/nat.md); `services.nat.status` tells how we are reachable. */
  nat: Nat
  /** Present when this host relays for others (resource role). */
  relay?: CircuitRelayService
  /** What the relay server forwarded, and its budget (with `relay`). */
  relayTraffic?: RelayTraffic
  /** DCUtR with its attempts and outcomes recorded (holepunch.ts). */
  holePunch: HolePunches
  [key: string]: unknown
}

export type Host = Libp2p<HostServices>

export interface HostInit {
  privateKey: PrivateKey
  listen: string[]
  /** Private network key (pnet file content); peers without it cannot connect. */
  swarmKey?: Uint8Array
  /** Called for every connection whose handshake (private network, Noise) fails: counted as an intrusion signal. */
  onHandshakeFailure?: (direction: 'inbound' | 'outbound', reason: string) => void
  /** Addresses to announce instead of the listen addresses (behind NAT, in pods). */
  announce?: string[]
  /** Source address for outgoing TCP connections (benchmarks simulate many hosts on loopback). */
  dialFrom?: string
  /** NAT traversal (docs/nat.md). */
  relay?: RelayInit
  /** Finds addresses of members this host never met, through the resources (attach it once the host exists). */
  peerLookup?: PeerLookup
}

export interface RelayInit {
  /**
   * Run a circuit relay v2 server (the resource role). Its reservations carry no data or time
   * limit, so relayed connections are not "limited" and every protocol runs over them.
   */
  server?: boolean
  /**
   * Who may be relayed (asked on the relay for both ends of every relayed connection): e.g. the
   * peers whose heartbeats this resource has seen. Without it, everyone who can connect (with a
   * private-network key: members only). Reservations are not gated: a node reserves right after
   * connecting, before its first heartbeat can have arrived.
   */
  isMember?: (peer: PeerId) => boolean
  /** When to hold a relay slot; default `never` for a relay server or with `announce`, else `auto`. */
  reserve?: ReserveMode
  /**
   * Counts (and, with a budget, limits) what the relay server forwards (relay-traffic.ts);
   * default: counted, not limited.
   */
  traffic?: RelayTraffic
}

/**
 * A libp2p host with the cluster's fixed stack: TCP, Noise, Yamux, identify, ping, gossipsub,
 * an optional private network, and NAT traversal (docs/nat.md): circuit relay transport, AutoNAT,
 * DCUtR, a relay slot while not publicly reachable, and a relay server on resources.
 * Not started: the daemon starts it after registering handlers.
 */
export async function createHost (init: HostInit): Promise<Host> {
  if (init.swarmKey != null) fixXsalsa20()
  const announce = init.announce ?? []
  const relayServer = init.relay?.server === true
  const reserve = init.relay?.reserve ?? (relayServer || announce.length > 0 ? 'never' : 'auto')
  const isMember = init.relay?.isMember
  const traffic = init.relay?.traffic ?? new RelayTraffic()
  const holePunches = new HolePunches()
  const gater: ConnectionGater = {}
  if (relayServer && isMember != null) {
    gater.denyOutboundRelayedConnection = (source, destination) => !isMember(source) || !isMember(destination)
  }
  return createLibp2p<HostServices>({
    start: false,
    // Addresses of members never met, from the resources (peer-lookup.ts).
    ...(init.peerLookup != null ? { peerRouters: [() => init.peerLookup!] } : {}),
    privateKey: init.privateKey,
    addresses: { listen: init.listen, announce },
    transports: [
      tcp(init.dialFrom != null ? { dialOpts: { localAddress: init.dialFrom } as TCPSocketOptions } : {}),
      // Dials relayed addresses, and listens on one when the nat service asks for a slot.
      circuitRelayTransport({
        reservationCompletionTimeout: RELAY_RESERVATION_TIMEOUT_MS,
        maxInboundStopStreams: RELAY_MAX_STOP_STREAMS
      })
    ],
    connectionGater: gater,
    connectionEncrypters: [noise()],
    ...(init.onHandshakeFailure != null ? { metrics: upgradeErrorMetrics(init.onHandshakeFailure) } : {}),
    streamMuxers: [yamux()],
    ...(init.swarmKey != null ? { connectionProtector: preSharedKey({ psk: init.swarmKey }) } : {}),
    connectionManager: {
      maxConnections: MAX_CONNECTIONS,
      // After a resource restarts, every node (many behind one NAT) re-dials it at once.
      inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_IP_PER_SECOND,
      maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS,
      addressDialTimeout: ADDRESS_DIAL_TIMEOUT_MS,
      // Direct addresses (LAN ones included) before relayed ones: see dialOrder.
      addressSorter: dialOrder
    },
    services: {
      identify: identify(),
      // Tells connected peers at once when we start serving a protocol (e.g. a resource's
      // cluster-log sync), so they need not reconnect to learn it.
      identifyPush: identifyPush(),
      ping: ping(),
      pubsub: gossipsub({
        // Heartbeats are published before the first resource is connected; that is not an error.
        allowPublishToZeroTopicPeers: true,
        // Own messages go to every subscribed peer at once, not only the mesh: a drain must
        // reach resources in milliseconds, not at the next mesh heartbeat.
        floodPublish: true,
        emitSelf: false,
        // Messages are signed; a heartbeat's claimed peer is checked against its signer.
        globalSignaturePolicy: 'StrictSign',
        maxInboundDataLength: GOSSIP_MAX_INBOUND_BYTES,
        fallbackToFloodsub: false,
        // gossipsub's default penalises every peer id beyond 10 seen from one IP, and past 14
        // ignores them: a cell behind one NAT, or nodes reached through a relay, would go
        // silently dead while connected (found by bench:membership). Members are admitted by
        // the cluster secret and certificates, not by address diversity; invalid messages still cost score.
        scoreParams: { IPColocationFactorWeight: 0 }
      }),
      // Asks connected peers to dial our public addresses back; only confirmed ones are advertised.
      autoNAT: autoNATFreshDials(),
      // Hole punching over a relayed connection; best effort (docs/nat.md says why it rarely
      // works for TCP in Node); every attempt's outcome is counted.
      dcutr: countedDcutr(holePunches),
      holePunch: () => holePunches,
      nat: nat({ reserve }),
      ...(relayServer
        ? {
            // libp2p's relay server, with what it forwards counted and limited by `traffic`.
            relay: countedRelayServer({
              hopTimeout: RELAY_HOP_TIMEOUT_MS,
              maxInboundHopStreams: RELAY_MAX_HOP_STREAMS,
              maxOutboundStopStreams: RELAY_MAX_STOP_STREAMS,
              // No data or duration limit: the default 128 KiB / 2 min cannot carry one piece, and
              // a cut connection costs the piece in flight. `traffic` limits the rate instead.
              reservations: { maxReservations: RELAY_MAX_RESERVATIONS, applyDefaultLimit: false }
            }, traffic),
            relayTraffic: () => traffic
          }
        : {})
    }
  })
}

