/** Limits of the local RPC port (HTTP). */

/** Largest request body accepted on admin routes (app specs, notices are small JSON). */
export const MAX_ADMIN_BODY_BYTES = 1024 * 1024
/** A client must send its headers within this time (slowloris). */
export const HEADERS_TIMEOUT_MS = 10_000
/** A connection that moves no byte for this long is closed (a model upload may take hours). */
export const IDLE_TIMEOUT_MS = 60_000
/** Idle keep-alive connections are closed after this. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000
