import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, identifyPush, type Identify, type IdentifyPush } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { preSharedKey } from '@libp2p/pnet'
import type { PrivateKey } from '@libp2p/interface'
import {
  GOSSIP_MAX_INBOUND_BYTES, MAX_CONNECTIONS, INBOUND_CONNECTIONS_PER_IP_PER_SECOND, MAX_INCOMING_PENDING_CONNECTIONS
} from './constants.ts'

export interface HostServices {
  identify: Identify
  identifyPush?: IdentifyPush
  ping: Ping
  pubsub: GossipSub
  [key: string]: unknown
}

export type Host = Libp2p<HostServices>

export interface HostInit {
  privateKey: PrivateKey
  listen: string[]
  /** Private network key (file content); peers without it cannot connect. */
  swarmKey?: Uint8Array
  /** Addresses to announce instead of the listen addresses (behind NAT, in pods). */
  announce?: string[]
  /** Source address for outgoing TCP connections (benchmarks simulate many hosts on loopback). */
  dialFrom?: string
}

/**
 * A libp2p host with the cluster's fixed stack: TCP, Noise, Yamux, identify, ping, gossipsub,
 * and an optional private network. Not started: the daemon starts it after registering handlers.
 */
export async function createHost (init: HostInit): Promise<Host> {
  return createLibp2p<HostServices>({
    start: false,
    privateKey: init.privateKey,
    addresses: { listen: init.listen, announce: init.announce ?? [] },
    transports: [tcp(init.dialFrom != null ? { dialOpts: { localAddress: init.dialFrom } as TCPSocketOptions } : {})],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(init.swarmKey != null ? { connectionProtector: preSharedKey({ psk: init.swarmKey }) } : {}),
    connectionManager: {
      maxConnections: MAX_CONNECTIONS,
      // After a resource restarts, every node (many behind one NAT) re-dials it at once.
      inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_IP_PER_SECOND,
      maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS
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
        // the swarm key, not by address diversity; invalid messages still cost score.
        scoreParams: { IPColocationFactorWeight: 0 }
      })
    }
  })
}
