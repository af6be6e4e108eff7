/** Placement protocol ids, timings and limits, each with its reason. */

/** Reservations, releases and ledger reads between schedulers and nodes (ARCHITECTURE §2). */
export const RESERVE_PROTOCOL = '/astra/reserve/1.0.0'
/**
 * The same requests on a stream a scheduler keeps open to each node (src/p2p/request-stream.ts):
 * a stream per request cost both ends more CPU than the reservation itself (issue 14 goal 5,
 * docs/bench-scale.md). A node that answers only 1.0.0 is asked one stream per request.
 */
export const RESERVE_STREAM_PROTOCOL = '/astra/reserve/1.1.0'
/** Reserve streams one scheduler may keep open to a node (it opens one; the rest is slack for a reconnect). */
export const MAX_RESERVE_STREAMS_PER_PEER = 4
/** A reserve stream idle this long is closed by the node (the scheduler reopens it on its next request). */
export const RESERVE_STREAM_IDLE_MS = 60_000
/** A reserve/release request is a small JSON object. */
export const MAX_RESERVE_REQUEST_BYTES = 16 * 1024
/** A ledger answer lists a node's replicas (each < 1 KiB with its signature): 256 KiB is ~250 replicas. */
export const MAX_LEDGER_RESPONSE_BYTES = 256 * 1024
/** Replicas one node hosts at most (bounds the ledger answer above). */
export const MAX_REPLICAS_PER_NODE = 128
/** Reserve/ledger exchange deadline: a node that cannot answer in 2 s is skipped this round. */
export const RESERVE_TIMEOUT_MS = 2_000
/** Concurrent reserve streams from one peer (schedulers are few). */
export const MAX_RESERVE_STREAMS = 16

/**
 * The owner reconciles its apps this often, and at once (debounced) on membership changes:
 * a replica on a dead or drained node is re-placed within 5 s of detection (the bound),
 * well inside one tick plus a reserve round trip.
 */
export const RECONCILE_INTERVAL_MS = 1_000
/** Membership changes are coalesced this long before a reconcile. */
export const RECONCILE_DEBOUNCE_MS = 50
/** Reserve attempts per replica per reconcile before giving up until the next tick. */
export const MAX_RESERVE_ATTEMPTS = 4
/**
 * Replicas of one app the owner places at once (issue 14, goal 5): one at a time, a scheduler
 * places one replica per reserve round trip; 8 at a time hide the round trip (each pick counts
 * the reservations in flight as used). Below MAX_RESERVE_STREAMS, the streams a node accepts
 * from one scheduler at once.
 */
export const PLACE_CONCURRENCY = 8
/** Ledger pulls in flight at once from one scheduler. */
export const LEDGER_PULL_CONCURRENCY = 8
/** Schedulers re-read the app list from the cluster log this often (apps change rarely). */
export const APPS_REFRESH_MS = 1_000
/**
 * A replica that failed to load is not retried on the same node for this long, for the same
 * deployment of the app (a redeploy or `app rm` starts afresh: the fix may be in the spec).
 */
export const FAILED_NODE_BACKOFF_MS = 30_000
/**
 * Why a replica failed to load, as a node keeps it in its ledger (and schedulers show it): the
 * first 500 characters say it; the ledger answer's bound above assumes replicas of < 1 KiB.
 */
export const MAX_REPLICA_ERROR_CHARS = 500
/**
 * An app whose replicas are unevenly spread (two on one node, none on another eligible one) has
 * one replica moved at most this often: a move starts a replica, waits for it to be ready, then
 * releases one from the crowded node. Each move lowers the spread, so moves end; the interval
 * keeps nodes that come and go from moving replicas back and forth.
 */
export const REBALANCE_INTERVAL_MS = 30_000

/** Defaults of an app spec. */
export const DEFAULT_TIMEOUT_MS = 30_000
export const DEFAULT_MAX_QUEUE = 64
export const DEFAULT_THREADS = 1
/**
 * GPUs a replica reserves when its spec does not say: none. Most models served here run on cpu,
 * and a gpu reserved by default would keep every replica off gpu-less nodes. (`cpu` defaults to
 * `threads`, in app.ts: one core per worker thread, each running one onnxruntime session.)
 */
export const DEFAULT_GPU = 0
/** Resources of one replica at most: beyond any one machine's, so a typo, not a plan. */
export const MAX_CPU = 4096
export const MAX_GPU = 64
/** Upper bounds of an app spec: more is a typo, not a plan. */
export const MAX_REPLICAS = 100_000
export const MAX_THREADS = 64
export const MAX_QUEUE = 100_000
export const MAX_TIMEOUT_MS = 10 * 60_000
/** App names are KServe model names in URLs: lower-case, digits, '.', '_', '-'. */
export const APP_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/

/** An app's routing weight functions (docs/routing.md); here, free of imports, for the CLI's help. */
export const ROUTING_WEIGHTS = ['measured', 'article', 'static'] as const

/**
 * Defaults of an app's autoscaling block (docs/autoscaling.md). Target: 2 requests in flight per
 * replica (Ray Serve's default target_ongoing_requests). Up after 1 s of wanting more (scaling
 * in seconds is the point; the load signal is already a 1 s average), down after 30 s of needing
 * fewer (Knative's stable window: a dip in traffic does not release capacity that the next
 * second needs). At most 4 replicas placed per second per app.
 */
export const AUTOSCALE_DEFAULTS = {
  targetOngoingRequests: 2,
  upscaleDelayMs: 1_000,
  downscaleDelayMs: 30_000,
  maxReplicasPerSecond: 4
} as const
/** Longest scaling delay a spec may give (an hour): more is a typo. */
export const MAX_SCALE_DELAY_MS = 3_600_000
/** Largest per-app placement rate a spec may give. */
export const MAX_REPLICAS_PER_SECOND = 1_000
