/** Limits and defaults of the libp2p layer, each with its reason. */

/** File in the data dir holding the protobuf-encoded Ed25519 identity key (mode 0600). */
export const IDENTITY_FILE = 'identity.key'

/** First re-dial of a lost bootstrap peer; doubles per failure (with jitter). */
export const BOOTSTRAP_BACKOFF_BASE_MS = 500
/** Ceiling of the bootstrap backoff: a lost resource is retried at least twice a minute. */
export const BOOTSTRAP_BACKOFF_MAX_MS = 30_000
/** How often the bootstrap loop looks for lost peers. */
export const BOOTSTRAP_CHECK_INTERVAL_MS = 500
/** A dial that takes longer than this is abandoned and retried with backoff. */
export const DIAL_TIMEOUT_MS = 5_000

/** Request/response protocols: a request larger than this is refused (they are small queries). */
export const MAX_REQUEST_BYTES = 64 * 1024
/** Default cap of one response; protocols that send snapshots raise it explicitly. */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024
/** Whole request/response exchange deadline, both sides. */
export const REQUEST_TIMEOUT_MS = 5_000
/** Concurrent inbound streams per connection for one request/response protocol. */
export const MAX_INBOUND_REQUEST_STREAMS = 32

/**
 * gossipsub caps: our gossip messages are heartbeats (< 512 B) and change digests (a few KiB);
 * anything above 1 MiB is not ours and is refused before decoding.
 */
export const GOSSIP_MAX_INBOUND_BYTES = 1024 * 1024

/** Connection manager: a resource keeps one connection per node; leave room for a big cell. */
export const MAX_CONNECTIONS = 10_000

/**
 * New inbound connections accepted per second from one IP (libp2p's default is 5): a resource
 * must take back a whole NAT'd cell of nodes at once after it restarts.
 */
export const INBOUND_CONNECTIONS_PER_IP_PER_SECOND = 200
/** Inbound connections mid-handshake at once (libp2p's default is 10). */
export const MAX_INCOMING_PENDING_CONNECTIONS = 256

/*
 * NAT traversal (docs/nat.md). Resources run a circuit relay v2 server; nodes without a confirmed
 * public address hold one reservation on a resource and advertise the relayed address.
 */

/**
 * Reservations one relay (resource) holds at once; libp2p's default is 15. Every node behind NAT
 * holds one slot on one resource, so a resource must take a whole cell. A slot is a map entry
 * and a timer; the real bound is MAX_CONNECTIONS.
 */
export const RELAY_MAX_RESERVATIONS = 10_000
/**
 * Relayed connections one peer may open through one relay at once (inbound HOP streams per
 * connection; libp2p's default is 32). A downloader talks to a few peers at a time, but
 * connections to earlier peers stay open until the connection manager prunes them.
 */
export const RELAY_MAX_HOP_STREAMS = 256
/**
 * Relayed connections one node may receive through its relay at once (STOP streams; libp2p's
 * default is 300). A popular holder behind NAT serves many downloaders.
 */
export const RELAY_MAX_STOP_STREAMS = 1_024
/** A relay's HOP handshake (reserve or connect) must finish within this (libp2p's default 30 s). */
export const RELAY_HOP_TIMEOUT_MS = 10_000
/** A node's reservation request (dial + RESERVE round trip) is abandoned after this. */
export const RELAY_RESERVATION_TIMEOUT_MS = 10_000
/**
 * Per-address dial timeout (libp2p's default is 6 s inside a 10 s dial). A peer behind NAT
 * advertises its LAN addresses too (its LAN neighbours use them); from elsewhere such an address
 * is usually black-holed, and every one of them would otherwise eat 6 s before the relayed
 * address is tried. 3 s still covers a TCP connect with one lost SYN (retransmitted at 1 s)
 * plus the Noise handshake on a slow WAN path.
 */
export const ADDRESS_DIAL_TIMEOUT_MS = 3_000

/**
 * Peer lookup (`peer-lookup.ts`): a daemon that must dial a member it never met (a scheduler-only
 * daemon reserving on a node, whose addresses it cannot know: heartbeats carry none) asks the
 * resources it is connected to, which hold a connection to every member. Only members ask; only
 * answers from resources are used.
 */
export const PEER_LOOKUP_PROTOCOL = '/astra/peer/1.0.0'
/** Addresses one answer carries at most (a peer's listen, announced and relay addresses). */
export const MAX_LOOKUP_ADDRS = 16
/** One lookup's deadline per resource asked. */
export const PEER_LOOKUP_TIMEOUT_MS = 2_000

/*
 * Relayed traffic (relay-traffic.ts, docs/nat.md): what a resource relays is counted and drawn
 * from a byte-rate budget, like any upload.
 */

/** circuit relay v2's protocol ids (the spec's; `@libp2p/circuit-relay-v2` does not export them). */
export const RELAY_HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'
export const RELAY_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'
/**
 * Read buffer of a relayed stream while its budget holds it paused. A paused yamux stream stops
 * granting window, but the sender may still have up to its whole window (yamux's maximum is
 * 16 MiB) in flight; libp2p's default buffer (4 MiB) would reset the stream instead of holding it.
 */
export const RELAY_PAUSED_READ_BUFFER_BYTES = 20 * 1024 * 1024

/*
 * Hole punching (holepunch.ts): DCUtR's outcome per relayed connection, counted and shown.
 */

/** `@libp2p/dcutr`'s defaults: tries per relayed connection and each one's deadline. */
export const DCUTR_RETRIES = 3
export const DCUTR_TIMEOUT_MS = 5_000
/** An attempt with no outcome after every try's deadline (plus slack) is counted `timeout`. */
export const HOLEPUNCH_OUTCOME_MS = DCUTR_RETRIES * DCUTR_TIMEOUT_MS + 2_000
/** Outcomes remembered per peer for status (the latest per peer; oldest peers dropped). */
export const HOLEPUNCH_MAX_PEERS = 1_024
