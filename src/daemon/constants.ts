/** Daemon lifecycle limits. */

/** Longest a drain waits for in-flight requests before leaving anyway (K8s grace is 30 s). */
export const DRAIN_TIMEOUT_MS = 25_000
/**
 * A node with replicas keeps serving this long after announcing `draining` even when idle:
 * routers drop a draining node within a second (membership target), and requests they routed
 * before that must still find it up.
 */
export const DRAIN_GRACE_MS = 1_500
/** How often a drain checks whether in-flight requests have finished. */
export const DRAIN_POLL_MS = 50
/** The final `left` heartbeat is given this long to reach resources before libp2p stops. */
export const LEAVE_FLUSH_MS = 150
/** Lock file that keeps two daemons from sharing one data dir (and one identity). */
export const LOCK_FILE = 'astrad.lock'
/** Present in a node's data dir while it is cordoned (`astrad cordon`), so a restart keeps it. */
export const CORDON_FILE = 'cordon.json'
