/** Cluster-log protocol ids, limits and defaults, each with its reason. */

/** Replication among resources: request = my version vector, response = a batch I lack. */
export const SYNC_PROTOCOL = '/astra/log/sync/1.0.0'
/** put/delete/get/list for daemons without the resource role, served by every resource. */
export const ACCESS_PROTOCOL = '/astra/log/1.0.0'
/** Push hint `{origin, seq}` after a local write; receivers lacking it pull at once. */
export const LOG_TOPIC = 'astra/log/1'
/**
 * Acknowledged writes: the accepting resource pushes a new entry of its own to a peer resource,
 * which stores it durably and answers its high-water mark for that origin, before the writer
 * gets its answer.
 */
export const REPLICATE_PROTOCOL = '/astra/log/replicate/1.0.0'

/** The database file inside the data dir. */
export const DB_FILE = 'cluster-log.sqlite'
/** Schema of the database file; a file with a newer version is refused, not guessed at. */
export const SCHEMA_VERSION = 1

/**
 * Furthest a remote clock may pull ours ahead. Entries stamped further in the future are bad
 * input (a broken clock): accepting them would make every later local write lose to them.
 */
export const MAX_CLOCK_DRIFT_MS = 60_000
/** HLC logical counter ceiling (5 decimal digits in the version string); overflow ticks the wall part. */
export const MAX_HLC_COUNTER = 0xffff
/** Wall part of a version: 13 decimal digits (ms), valid until the year 2286. */
export const MAX_HLC_WALL = 9_999_999_999_999

/** Kind names: short lowercase identifiers (`app`, `model-manifest`, `notice`). */
export const KIND_PATTERN = /^[a-z][a-z0-9-]{0,31}$/
/** Keys are app names, manifest ids, notice ids: short; the cap keeps indexes and requests small. */
export const MAX_KEY_BYTES = 256
/**
 * One object's JSON. A model manifest of 100 GB in 64 MiB pieces lists ~1,600 SHA-256 hashes
 * (~120 KiB); 512 KiB leaves room while keeping one entry well inside a sync batch.
 */
export const MAX_VALUE_BYTES = 512 * 1024

/** Anti-entropy with one random resource peer this often (jittered ±25 %); hints make it rarely needed. */
export const SYNC_INTERVAL_MS = 5_000
/** Entries per sync response; the requester asks again while `more` is set. */
export const SYNC_BATCH_ENTRIES = 1_000
/** Soft byte budget of one sync response (one entry may exceed it alone, up to MAX_VALUE_BYTES). */
export const SYNC_BATCH_BYTES = 1024 * 1024
/** Hard cap of a sync response: the budget plus one maximal entry plus envelope slack. */
export const MAX_SYNC_RESPONSE_BYTES = SYNC_BATCH_BYTES + MAX_VALUE_BYTES + 64 * 1024
/**
 * Origins (resource × database incarnation) in a version vector. A resource tier has tens of
 * members; a new origin appears only when a resource loses its disk. ~90 B each on the wire.
 */
export const MAX_ORIGINS = 1_024
/** Cap of a sync request: MAX_ORIGINS entries of the version vector fit. */
export const MAX_SYNC_REQUEST_BYTES = 128 * 1024
/** Rounds of one sync session (each ≤ one batch); anti-entropy resumes anything left. */
export const MAX_SYNC_ROUNDS = 1_000
/** Concurrent inbound sync streams per connection: a peer runs one session with us at a time. */
export const SYNC_MAX_INBOUND_STREAMS = 4

/**
 * A write's operator authority: one signed operator request (trust's OPERATOR_REQUEST_TYP), its
 * own claims plus the grant it embeds, each at most trust's MAX_JWT_BYTES (8 KiB).
 */
export const MAX_AUTH_BYTES = 16 * 1024
/** An entry's author is an operator name (trust's grant names: at most 64 characters). */
export const MAX_AUTHOR_CHARS = 64
/** The author recorded on writes accepted with --insecure, where no operator is checked. */
export const INSECURE_AUTHOR = 'insecure'
/** Access requests carry at most one value and one operator authority. */
export const MAX_ACCESS_REQUEST_BYTES = MAX_VALUE_BYTES + 4 * 1024 + MAX_AUTH_BYTES
/** Access responses: one page of a list (budget below) plus one maximal entry. */
export const MAX_ACCESS_RESPONSE_BYTES = MAX_SYNC_RESPONSE_BYTES
/** Soft byte budget of one list page. */
export const LIST_PAGE_BYTES = SYNC_BATCH_BYTES
/** Objects per list page. */
export const LIST_PAGE_ENTRIES = 1_000
/** A client stops paging after this many pages (10 M objects): a resource that never ends a list is broken. */
export const MAX_LIST_PAGES = 10_000
/** Concurrent access streams per connection (admin commands, node-side readers). */
export const ACCESS_MAX_INBOUND_STREAMS = 32

/**
 * How long a write waits for a second resource to confirm it, all peers together (each is tried
 * in turn; one of several gets at most half of what is left, so one stalled peer cannot use it
 * all). Then the write is acknowledged with one copy (availability over durability) and counted.
 * Must stay well below the client's per-attempt deadline (REQUEST_TIMEOUT_MS, 5 s): a client
 * that times out retries on another resource, writing twice.
 */
export const REPLICATE_WAIT_MS = 2_000
/** A replicate request carries one entry: at most one value plus key, version and envelope. */
export const MAX_REPLICATE_REQUEST_BYTES = MAX_VALUE_BYTES + 8 * 1024
/** A replicate answer is one number. */
export const MAX_REPLICATE_RESPONSE_BYTES = 256
/** Concurrent replicate streams per connection: a resource's concurrent writes, each waiting for us. */
export const REPLICATE_MAX_INBOUND_STREAMS = 32
/** At most one warning this often about writes acknowledged with one copy while peers are known. */
export const UNREPLICATED_WARN_INTERVAL_MS = 60_000

/** A push hint is two small fields; anything bigger is not ours. */
export const MAX_HINT_BYTES = 256

/** Default and ceiling of changesSince() results, so one call never reads the whole store. */
export const DEFAULT_CHANGES_LIMIT = 1_000
export const MAX_CHANGES_LIMIT = 10_000

/** A client with no resource connected waits this long for one before failing a call. */
export const RESOURCE_WAIT_MS = 3_000
/**
 * Rounds over the resources when every one failed to open a stream (ERR_UNREACHABLE: a dial
 * refused or a connection closed under it, as a fresh connection can be), and the pause before
 * the next round. Timeouts are not retried: the caller's time is spent.
 */
export const UNREACHABLE_ROUNDS = 3
export const UNREACHABLE_RETRY_MS = 250
/**
 * Rounds of a read (get, list) when every resource timed out: reads change nothing, so one more
 * round with twice the per-attempt deadline costs the caller only time (5 s + 10 s at most
 * with the default deadline), where an error would fail an admin command on a starved host.
 * Writes are not retried on a timeout here: their callers decide.
 */
export const READ_TIMEOUT_ROUNDS = 2
