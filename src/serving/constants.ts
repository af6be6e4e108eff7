/** Serving-path protocol ids, limits and timings, each with its reason. */

/** Router → node inference requests (ARCHITECTURE §2 "Serving"). */
export const INFER_PROTOCOL = '/astra/infer/1.0.0'
/**
 * A pipeline's stages run one after another on one node that hosts them all (src/pipeline):
 * the same framing as INFER_PROTOCOL, the header naming the chain. A node without it (older)
 * refuses the protocol and the scheduler runs the stages one call at a time.
 */
export const CHAIN_PROTOCOL = '/astra/infer-chain/1.0.0'
/**
 * Router → node inference requests on kept-alive streams: the framing of INFER_PROTOCOL, but
 * after an answer the stream stays open for the router's next request to that node (one request
 * at a time per stream; a router keeps one stream per request it has in flight). Opening a stream
 * per call costs a yamux stream, a multistream-select negotiation and two peer-store writes on
 * each side (~1 ms of CPU per call measured, docs/bench-serve.md §5). A router asks for this
 * first and falls back to INFER_PROTOCOL with a node that does not have it (older).
 */
export const INFER_KEEPALIVE_PROTOCOL = '/astra/infer/1.1.0'
/** How long a node keeps a kept-alive stream open waiting for its next request. */
export const INFER_STREAM_IDLE_MS = 30_000
/**
 * How long a router keeps an idle kept-alive stream for reuse: well under the node's
 * INFER_STREAM_IDLE_MS, so the node seldom closes a stream the router is just taking.
 */
export const INFER_CLIENT_IDLE_MS = 10_000
/** Idle kept-alive streams a router keeps per node: beyond its usual concurrency, then closed. */
export const MAX_IDLE_INFER_STREAMS = 64
/** Stages one chained call runs at most (a pipeline has at most 32 steps). */
export const MAX_CHAIN_STEPS = 32
/** The JSON header of a request or answer (names, datatypes, shapes): small. */
export const MAX_INFER_HEADER_BYTES = 64 * 1024
/** All tensors of one request or answer together; matches the RPC port's body cap. */
export const MAX_INFER_TENSOR_BYTES = 64 * 1024 * 1024
/** Inputs or outputs per request; ONNX models have a handful. */
export const MAX_INFER_TENSORS = 64
/**
 * Concurrent inference streams per connection: one router connection carries every request it
 * sends to a node; the node's own queue (maxQueue per replica, 429 beyond) bounds real work.
 */
export const MAX_INFER_STREAMS = 1024
/** Time to open a stream to a node before the router tries another. */
export const INFER_DIAL_TIMEOUT_MS = 2_000
/**
 * Read allowance between the messages of one infer stream (the request's messages on the node,
 * the answer's tensors after its header on the router): a peer that stalls this long mid-message
 * is a transport failure (retried elsewhere), not a model error. Five dial timeouts: generous
 * for 64 MiB of tensors on a slow link.
 */
export const INFER_READ_TIMEOUT_MS = INFER_DIAL_TIMEOUT_MS * 5

/**
 * Router retries: a request that failed on a node (unreachable, reset, draining, full) is sent
 * to another node, at most this many more times and only while its deadline allows.
 */
export const MAX_RETRIES = 2
/** Routing weights are recomputed this often (the article: every 3 s) and at once on changes. */
export const WEIGHT_INTERVAL_MS = 3_000
/** Passive ejection (nginx max_fails / fail_timeout) and slow start for new nodes. */
export const MAX_FAILS = 3
export const FAIL_TIMEOUT_MS = 10_000
export const SLOW_START_MS = 5_000

/** A replica that has not loaded in this long is reported failed (the owner places it elsewhere). */
export const LOAD_TIMEOUT_MS = 10 * 60_000
/** Directory (under the data dir) holding models written out whole for onnxruntime to load. */
export const MODELS_DIR = 'models'

/**
 * A released replica (scale down, roll, rebalance, app removed) finishes the requests it holds
 * before its pool closes, for at most this long: longer than a run of any model served here,
 * shorter than a drain (a replica stuck in a run must not hold its cores for ever).
 */
export const RELEASE_DRAIN_MS = 30_000
/** How often a released replica checks whether its last request has finished. */
export const RELEASE_POLL_MS = 20
