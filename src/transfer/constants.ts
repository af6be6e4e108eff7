/**
 * Limits and defaults of model distribution, in one place. Each says why.
 */

/** Smallest piece: below this, per-piece overhead (a stream, a hash, a rename) dominates. */
export const MIN_PIECE_SIZE = 4 * 1024 * 1024
/** Largest piece: one piece is the unit of retry; 64 MiB costs ~3 s at 25 MB/s to redo. */
export const MAX_PIECE_SIZE = 64 * 1024 * 1024
/**
 * Piece size is the power of two that gives at most this many pieces (clamped to the range
 * above): a 70 GB model gets 64 MiB pieces, 1,043 of them; a 1 GiB model 256 × 4 MiB.
 */
export const TARGET_PIECES = 1024
/** Largest model: MAX_PIECE_SIZE × MAX_PIECES = 512 GiB; keeps a manifest under 600 KiB. */
export const MAX_PIECES = 8192
/** Manifest format version (part of the hashed manifest, so of the model id). */
export const MANIFEST_VERSION = 1

/** Piece transfer protocol: request = one length-prefixed header, reply = header + raw bytes. */
export const PIECE_PROTOCOL = '/astra/piece/1.0.0'
/** Tracker queries (resource role). */
export const TRACKER_PROTOCOL = '/astra/tracker/1.0.0'
/** Gossip topic on which nodes announce what they hold (resources subscribe). */
export const HAVE_TOPIC = 'astra/have/1'

/** Pieces fetched in random order before rarest-first takes over (the article's shuffle). */
export const SHUFFLED_PIECES = 4
/** Peers a download pulls from at once. */
export const MAX_PEERS_PER_DOWNLOAD = 8
/** Piece requests in flight per peer (the bounded pipeline). */
export const PIPELINE_PER_PEER = 2
/** Holders the tracker returns per query (a random subset, weighted towards rare pieces). */
export const TRACKER_HOLDERS = 20
/** Tracker re-queried this often while a download runs (new holders, availability). */
export const TRACKER_REFRESH_MS = 2_000
/** A piece transfer that moves no byte for this long is abandoned and fetched elsewhere. */
export const PIECE_STALL_MS = 15_000
/** A peer that failed this many pieces (timeouts, errors) in a row rests for PEER_REST_MS. */
export const PEER_MAX_STRIKES = 3
export const PEER_REST_MS = 30_000
/** A pull with no reachable holder for this long fails (the user sees why). */
export const NO_SOURCE_TIMEOUT_MS = 60_000

/** Bytes per message on the piece stream (one read from disk, one token-bucket take). */
export const PIECE_CHUNK_BYTES = 256 * 1024
/** Receive-side buffer: the stream is paused (yamux stops granting window) above this. */
export const PIECE_READ_HIGH_WATER = 1024 * 1024
/** Piece requests one node serves at once (all peers); more are refused with ERR_BUSY. */
export const MAX_CONCURRENT_UPLOADS = 32
/** Inbound piece streams per connection: a peer's pipeline plus endgame duplicates. */
export const MAX_INBOUND_PIECE_STREAMS = 8
/** A piece request is a few dozen bytes; anything longer is refused. */
export const MAX_PIECE_REQUEST_BYTES = 128

/** Have announcements: coalesced this long after a change. */
export const HAVE_COALESCE_MS = 500
/** Every held model is re-announced this often (a new or restarted resource learns it). */
export const HAVE_REFRESH_MS = 30_000
/** A tracker forgets a holder not re-announced for this long. */
export const HAVE_EXPIRY_MS = 95_000
/** Largest have message: header + an 8,192-piece bitfield. */
export const MAX_HAVE_BYTES = 2048
/** Tracker request/response caps. */
export const MAX_TRACKER_REQUEST_BYTES = 4096
export const MAX_TRACKER_RESPONSE_BYTES = 1024 * 1024
/** The cluster-wide limit set in the cluster log is re-read this often by every node. */
export const CLUSTER_LIMIT_POLL_MS = 5_000
