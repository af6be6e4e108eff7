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
