/**
 * The public mailbox's protocol ids, limits and timings in one place (docs/mailbox.md).
 */

/** Nodes pull their mailbox from a resource over this protocol (one request, one answer). */
export const MAILBOX_PROTOCOL = '/astra/mailbox/1.0.0'
/** Resources announce their mailbox head here so nodes pull at once instead of on the next tick. */
export const MAILBOX_TOPIC = 'astra/mailbox/1'

/** A pull request is a cursor, a peer id and a cell: a few hundred bytes. */
export const MAX_PULL_REQUEST_BYTES = 4 * 1024
/** One answer holds at most this many items … */
export const MAX_PULL_ITEMS = 256
/** … and about this many bytes (one more item may cross it; hard cap below). */
export const PULL_BATCH_BYTES = 512 * 1024
/** Hard cap of an answer: a batch plus one largest notice (data ≤ 64 KiB) and the envelope. */
export const MAX_PULL_RESPONSE_BYTES = PULL_BATCH_BYTES + 128 * 1024
/** A digest is a source id, a rev and a revision. */
export const MAX_DIGEST_BYTES = 512
/** Concurrent pull streams one peer may hold open on a resource (a node has one at a time). */
export const MAILBOX_MAX_INBOUND_STREAMS = 64
/** A pull that has not answered in this time fails over to another resource. */
export const PULL_TIMEOUT_MS = 3_000

/** Nodes pull at least this often even without a digest (the bound). */
export const PULL_INTERVAL_MS = 5_000
/**
 * A digest makes a node pull after a random delay in [0, this): a thousand nodes hearing the
 * same digest spread their pulls over a quarter second instead of arriving at once.
 */
export const DIGEST_JITTER_MS = 250
/** Resources re-announce their head this often (a node that missed the push still learns). */
export const DIGEST_INTERVAL_MS = 2_000
/** Changes within this window are announced in one digest. */
export const DIGEST_DEBOUNCE_MS = 20
/** More pages of one pull session than this means something is wrong: stop and retry later. */
export const MAX_PULL_PAGES = 1_000

/**
 * Recalled and expired notices stay in a resource's memory this long, so nodes that were away
 * learn of the recall from a delta; a node away longer gets a snapshot and drops what the
 * snapshot no longer lists.
 */
export const RETENTION_MS = 60 * 60_000
/** A node forgets its record of a notice this long after the notice ended (recalled/expired). */
export const APPLIED_RETENTION_MS = 7 * 24 * 60 * 60_000

/** Notice payloads are small orders, not data: 64 KiB of JSON at most. */
export const MAX_DATA_BYTES = 64 * 1024
/** A whitelist, a private audience or a cell list holds at most this many entries. */
export const MAX_AUDIENCE = 1_000
/** `message` text. */
export const MAX_MESSAGE_CHARS = 2_000
/** Longest expiry accepted at publish (a year): longer is a typo. */
export const MAX_EXPIRY_MS = 366 * 24 * 60 * 60_000

/** The node's mailbox state file in its data dir. */
export const STATE_FILE = 'mailbox.json'

/**
 * Long-lived pull streams (pull-stream.ts): a node keeps one open to its resource and sends every
 * pull on it. Peers without it are pulled over MAILBOX_PROTOCOL (one stream per pull).
 */
export const MAILBOX_STREAM_PROTOCOL = '/astra/mailbox-pull/1.1.0'
/**
 * Pull streams one peer may hold open on a resource. A node needs one; bench:mailbox's client
 * hosts, which carry ~125 simulated nodes each, use a few.
 */
export const MAILBOX_MAX_STREAMS_PER_PEER = 8
/** A pull stream with no request for this long is closed by the resource (nodes pull every 5 s). */
export const MAILBOX_STREAM_IDLE_MS = 60_000
/** Requests a node sends on one stream before an answer comes back (a node has one at a time). */
export const MAILBOX_STREAM_MAX_PIPELINED = 32
