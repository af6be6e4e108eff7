/** Limits of the local RPC port (HTTP). */

/** Largest request body accepted on admin routes (app specs, notices are small JSON). */
export const MAX_ADMIN_BODY_BYTES = 1024 * 1024
/** A client must send its headers within this time (slowloris). */
export const HEADERS_TIMEOUT_MS = 10_000
/** A connection that moves no byte for this long is closed (a model upload may take hours). */
export const IDLE_TIMEOUT_MS = 60_000
/** Idle keep-alive connections are closed after this. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000

/**
 * Request-body bytes the port holds in memory at once, over all requests: 256 MiB. A body is
 * counted from its first byte (its whole Content-Length, when declared) until its answer is
 * sent; one that would pass the budget is refused with 503 + Retry-After before more of it is
 * read. 256 MiB is four full 64 MiB binary infer bodies at once (decoding roughly doubles that
 * for their tensors), so the daemon's peak stays well under 1 GiB while the chaos run's 8 held
 * 60 MB bodies (+470 MB RSS) cannot recur. Streamed model uploads (`POST /v1/models`, token
 * only) go to the transfer store as they arrive and are not counted here.
 */
export const MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
/**
 * A buffered request body must be whole this long after its headers (slowloris on the body):
 * 30 s, beyond it 408 and the connection is closed. 64 MiB in 30 s needs ~2.2 MB/s, which any
 * client that should send such a body has. Streamed model uploads are not cut by it: they are
 * bounded by IDLE_TIMEOUT_MS (no byte for that long), so an hours-long upload that keeps moving
 * is kept. Node's own `requestTimeout` cannot tell the two apart (it covers every route), so it
 * stays 0.
 */
export const BODY_TIMEOUT_MS = 30_000
/** Retry-After (seconds) of a 503 for a full body budget: bodies in flight drain in seconds. */
export const BODY_BUDGET_RETRY_AFTER_S = 2
/**
 * Most open connections on the port: 4096. The chaos run held 1,000 slow-body connections;
 * each is now closed at BODY_TIMEOUT_MS (or IDLE_TIMEOUT_MS) and its bytes count in the body
 * budget, so what is left to bound is file descriptors and per-socket kernel buffers: 4096
 * leaves room for libp2p's connections and the model store's files under an 8k-65k fd limit
 * (deploy/systemd sets 1M). Beyond it node:http closes a new connection at once.
 */
export const MAX_CONNECTIONS = 4096
