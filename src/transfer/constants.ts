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
/**
 * Copies of one piece in flight at once in the endgame: the first request and one duplicate.
 * More copies finish the last piece no sooner than the fastest of two, and every extra copy
 * is wasted upload.
 */
export const ENDGAME_MAX_COPIES = 2
/** Peers a download pulls from at once. */
export const MAX_PEERS_PER_DOWNLOAD = 8
/** Piece requests in flight per peer (the bounded pipeline). */
export const PIPELINE_PER_PEER = 2
/**
 * A lane asks for its next piece when what is left of the current one, at the rate it
 * arrives, takes less than this many times the peer's recent wait for a first byte: the next
 * piece's first byte then lands before the current one's last, with room for the wait to
 * double. Under load that wait was 100–370 ms on loopback (as long as a 4 MiB piece takes),
 * so a fixed share of the piece left the connection idle (docs/bench-transfer.md).
 */
export const REQUEST_AHEAD_FIRST_BYTES = 2
/**
 * Received pieces waiting for their hash check, fsync and rename, per download. The lanes go
 * on fetching while a commit runs (an fsync took up to 400 ms on a loaded disk); past this
 * they wait, so temp files and open descriptors stay bounded.
 */
export const MAX_PENDING_COMMITS = 8
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
/**
 * Piece requests one node serves at once (all peers); the rest wait in a fair queue
 * (upload-slots.ts). Few slots finish pieces early, at the full upload rate each in turn,
 * so downloaders have pieces to pass on sooner: with 32 slots the first 4 MiB piece of a
 * seeder at 8 MB/s landed after ~8 s; with 4, after ~2 s (bench:transfer, docs/bench-transfer.md).
 */
export const MAX_CONCURRENT_UPLOADS = 4
/** Requests waiting for an upload slot (all peers); beyond this one is refused with ERR_BUSY. */
export const MAX_QUEUED_UPLOADS = 64
/**
 * Longest a request waits for an upload slot before ERR_BUSY (the peer then asks elsewhere);
 * below PIECE_STALL_MS, so the requester hears "busy" rather than timing out.
 */
export const UPLOAD_QUEUE_WAIT_MS = 10_000
/** A peer that asked for a model's pieces this recently is told directly of our new pieces of it. */
export const REQUESTER_MEMORY_MS = 30_000
/** Requesters remembered per model (the most recent). */
export const MAX_REQUESTERS_PER_MODEL = 64
/** Inbound piece streams per connection: a peer's pipeline plus endgame duplicates. */
export const MAX_INBOUND_PIECE_STREAMS = 8
/** A piece request is a few dozen bytes; anything longer is refused. */
export const MAX_PIECE_REQUEST_BYTES = 128

/** Direct have messages between downloaders of one model (swarm-have.ts). */
export const SWARM_HAVE_PROTOCOL = '/astra/have/1.0.0'
/** Header + an 8,192-piece bitfield. */
export const MAX_SWARM_HAVE_BYTES = 1 + 32 + 2 + 1024
/** Sending or receiving one have message (a few dozen bytes over an open connection). */
export const SWARM_HAVE_TIMEOUT_MS = 5_000
/** Have streams one connection may have open at once (one per model being traded, and slack). */
export const MAX_INBOUND_SWARM_HAVE_STREAMS = 8
/**
 * A downloader's new pieces are told to its swarm peers after this long, coalesced: pieces
 * verify every few hundred ms per peer, so most messages carry one new piece.
 */
export const SWARM_HAVE_COALESCE_MS = 50

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

/* ---- Rate limits (limiter.ts) and the automatic per-node limit (probe.ts) ---- */

/**
 * Default token-bucket burst, as time at the bucket's rate: 50 ms is at most 0.5 % of a 10 s
 * window (the ±5 % accuracy target), yet spans many timer ticks, so timer lateness and short
 * event-loop stalls do not cost throughput (tokens keep accruing while a take waits).
 */
export const BUCKET_BURST_MS = 50
/**
 * Burst floor: at slow rates 50 ms would be a few KB and wake a timer per tiny chunk. 64 KiB is
 * one yamux/noise-sized message; at 1 MB/s it is 65 ms of burst (0.65 % of a 10 s window).
 */
export const BUCKET_MIN_BURST_BYTES = 64 * 1024
/** Window of the rate meters: the accuracy target is stated over 10 s windows. */
export const RATE_WINDOW_MS = 10_000
/**
 * Fraction of the measured capacity an `auto` limit lets P2P use. Half leaves the other half
 * of the link to what the node is there for (inference requests, replies, heartbeats): P2P
 * never starves serving, and a fleet still fills at half line rate.
 */
export const AUTO_SHARE = 0.5
/**
 * Limit of an `auto` direction until the probe has measured (source `probing`): 100 Mbit/s,
 * at most 10 % of a 1 GbE link (the smallest NIC a fleet node has), so a node that resumes a
 * download at start cannot starve serving, nor distort its own probe, while it measures.
 * A probe ends seconds after the first resource connects; no P2P transfer can start before
 * that anyway (the tracker lives on resources).
 */
export const AUTO_INTERIM_BPS = 12_500_000

/** Speed probe: measures what a node can move to and from a resource (resources serve it). */
export const PROBE_PROTOCOL = '/astra/probe/1.0.0'
/** Longest a probe moves data, per direction (server cap and client default). */
export const PROBE_DURATION_MS = 2_000
/** Most bytes a probe moves per direction: 64 MiB is 0.5 s at 1 Gbit/s, enough for a stable rate. */
export const PROBE_MAX_BYTES = 64 * 1024 * 1024
/** Probe message size: the piece protocol's chunk, so the probe measures the piece path. */
export const PROBE_CHUNK_BYTES = 256 * 1024
/**
 * Probes one resource serves at once (all peers); more are refused with ERR_BUSY and a retry
 * hint. 4 × ≤ 2 s keeps a thousand joining nodes from melting a resource; each probe still
 * gets a quarter of the resource's link, above what one node's NIC can take in most fleets.
 */
export const PROBE_MAX_CONCURRENT = 4
/** Probe streams one peer may have open on a server at once (one per direction). */
export const PROBE_MAX_PER_PEER = 1
/** Inbound probe streams per connection: one in use plus one that gets a clear refusal. */
export const PROBE_MAX_INBOUND_STREAMS = 2
/** Slack on top of the probe duration for the request, the result and the close. */
export const PROBE_GRACE_MS = 3_000
/** A probe that moved less than this (after its first message) cannot give a rate. */
export const PROBE_MIN_BYTES = 2 * PROBE_CHUNK_BYTES
/** Client retry backoff after a failed or refused probe (full jitter, doubling). */
export const PROBE_RETRY_BASE_MS = 2_000
export const PROBE_RETRY_MAX_MS = 60_000
/**
 * An `auto` node keeps trying to probe this long after start (or after it gives up, from the
 * next probe peer that connects); then it falls back to the link speed if known, else stays
 * at AUTO_INTERIM_BPS and says so in the log and in status (source `probing`).
 */
export const PROBE_GIVE_UP_MS = 5 * 60_000

/* ---- Integrity: the background scrub (scrub.ts) ---- */

/**
 * Bytes per second the background scrub re-hashes: 4 MB/s is ~1 % of a core for SHA-256 and a
 * small share of any disk, and still covers 345 GB a day (a 70 GB model every ~5 h). Bit rot
 * changes no mtime, so only a re-read finds it; a receiver would otherwise be the first to
 * notice, and blame this node. `--scrub-rate` changes it (`off` stops the scrub).
 */
export const SCRUB_RATE_BPS = 4_000_000
/**
 * A held piece is re-hashed once its last hash (when it was written, re-checked before serving,
 * or scrubbed) is this old: daily, so rot is found within a day of happening, and a node whose
 * pieces were just downloaded does no scrub work at all. At the default rate one day covers
 * 345 GB; a larger cache is simply scrubbed continuously. `--scrub-interval` changes it.
 */
export const SCRUB_INTERVAL_MS = 24 * 3600_000
/** The scrub rests at least this long between passes (a continuous scrub, interval 0, included). */
export const SCRUB_PASS_PAUSE_MS = 1_000
/** …and looks for due pieces at least this often (new pieces, a wall-clock step). */
export const SCRUB_LOOK_MAX_MS = 60_000
