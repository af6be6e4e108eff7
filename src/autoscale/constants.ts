/** Autoscaling's protocol, timings and limits, each with its reason (docs/autoscaling.md). */

/**
 * Schedulers publish the load they route, per app, on this gossip topic every second; resources
 * subscribe only to relay it (schedulers meet through them). Only peers holding the scheduler
 * role may author it.
 */
export const LOAD_TOPIC = 'astra/load/1'
/** How often a scheduler samples and publishes its load (the load is an average over this). */
export const LOAD_INTERVAL_MS = 1_000
/** A scheduler's report counts this long: a scheduler gone quiet stops adding load after ~3 beats. */
export const LOAD_STALE_MS = 3_500
/** A load message at most (JSON): ~1,000 apps with their names and decisions. */
export const MAX_LOAD_MESSAGE_BYTES = 128 * 1024
/** Apps in one load message at most; beyond, the least loaded are left out (they read as 0). */
export const MAX_LOAD_APPS = 1_000
/**
 * Requests held for an app scaled to zero while its first replica starts, per app and
 * scheduler; more are answered 503 with Retry-After (the request's deadline bounds each).
 */
export const MAX_HELD_PER_APP = 256
/** The reason of a decision is a sentence for `app ls`; longer is cut. */
export const MAX_REASON_CHARS = 200
