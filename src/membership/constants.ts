/** Membership protocol ids, timings and limits, each with its reason. */

/** Heartbeat topic prefix; the shard is appended (`astra/hb/1/0`). */
export const HEARTBEAT_TOPIC_PREFIX = 'astra/hb/1/'
/** Shards of the heartbeat topic (S in ARCHITECTURE §2); 1 until fan-out needs more. */
export const HEARTBEAT_SHARDS = 1
/** Online-list changes published by resources. */
export const ONLINE_TOPIC = 'astra/online/1'
/** Pull of a resource's full online list (schedulers every 3 s, resources for anti-entropy). */
export const ONLINE_PROTOCOL = '/astra/online/1.0.0'

/**
 * A node's `draining` and `left` heartbeats, also sent straight to each connected resource, which
 * answers once it has taken them. Gossip alone lost them: a leaving node closes its connections
 * right after, and the close could overtake messages still queued or in validation (measured: at
 * load 8 a drained node was concluded dead in 5 of 6 runs). The answer is the confirmation.
 */
export const ANNOUNCE_PROTOCOL = '/astra/announce/1.0.0'
/**
 * How long a leaving node waits for its resources' confirmations before it goes on anyway
 * (gossip still carried the beat; a resource that never confirms concludes dead instead).
 */
export const ANNOUNCE_TIMEOUT_MS = 2_000
/** Concurrent announce streams a resource serves per connection: one node, one leave. */
export const ANNOUNCE_MAX_INBOUND_STREAMS = 4

/** Heartbeat period (the article: every node reports every second). */
export const HEARTBEAT_INTERVAL_MS = 1_000
/** A heartbeat on the wire must stay under 512 B (ARCHITECTURE §2). */
export const MAX_HEARTBEAT_BYTES = 512
/**
 * Wire format version, first byte of every heartbeat and record. 3 added a flags byte after the
 * state (cordoned); a heartbeat without flags is still written and read as version 2, so only a
 * cordoned node's heartbeat is unreadable to a daemon older than version 3.
 */
export const HEARTBEAT_VERSION = 3

/**
 * Silence after which a node is `suspect`: two heartbeats missed (2 s) plus 250 ms of jitter
 * margin for timer and gossip delay under load.
 */
export const SUSPECT_AFTER_MS = 2_250
/**
 * Silence after which a node is `dead`. Target: a SIGKILL'd node is dead in every scheduler's
 * view ≤ 3 s after the kill. The last heartbeat left up to ~0 s before the kill in the worst
 * case, the state-machine tick adds ≤ 100 ms and gossip a few ms, so 2.8 s keeps the worst case
 * under 3 s while tolerating two lost heartbeats.
 */
export const DEAD_AFTER_MS = 2_800
/**
 * When a node's connection closes (a crashed process: the kernel closes its sockets) and no
 * heartbeat follows within this time, it is dead without waiting for DEAD_AFTER_MS.
 */
export const DEAD_AFTER_DISCONNECT_MS = 1_500
/** How often resources evaluate silences. */
export const TICK_INTERVAL_MS = 100
/**
 * Nothing forged sticks (docs/membership.md): when a record's version and the time its node was
 * last heard disagree by more than this, time wins, so a claim with an inflated version ("left
 * at incarnation + 1") is overturned by the node's own later beats. Two heartbeat periods: more
 * than the transit and gossip delay that blur record ages on a loaded machine, so honest records
 * (newer versions are heard later) are never reordered by it.
 */
export const REINSTATE_MARGIN_MS = 2 * HEARTBEAT_INTERVAL_MS
/** Dead and left nodes stay listed this long (for `astrad status`), then are forgotten. */
export const FORGET_AFTER_MS = 10 * 60_000

/** Changes are coalesced this long before one digest is published. */
export const DIGEST_COALESCE_MS = 20
/** Records per published change digest; larger change sets are split. */
export const MAX_RECORDS_PER_DIGEST = 200
/** Schedulers pull the full online list this often (the article: every 3 s). */
export const VIEW_PULL_INTERVAL_MS = 3_000
/** Resources pull a peer resource's full list this often (anti-entropy). */
export const ANTI_ENTROPY_INTERVAL_MS = 5_000
/** Largest online-list snapshot accepted (≈ 40 k nodes at ~200 B). */
export const MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
/** Records in one snapshot: a record is at least ~64 B on the wire, so no more fit the cap. */
export const MAX_SNAPSHOT_RECORDS = Math.floor(MAX_SNAPSHOT_BYTES / 64)
/** A snapshot request is one byte: the records format version the puller understands. */
export const SNAPSHOT_REQUEST = new Uint8Array([1])

/** Name and cell labels are at most this many UTF-8 bytes. */
export const MAX_LABEL_BYTES = 63
