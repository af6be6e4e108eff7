/**
 * Limits and defaults of dynamic batching (docs/batching.md), in one place. Each says why.
 */

/**
 * Largest `maxBatchSize` an app may ask for. Rows are concatenated into one tensor per input;
 * beyond ~1k rows a CPU run no longer gets cheaper per row (the per-run overhead it saves is
 * already < 1 %) while one slow batch holds every member's answer.
 */
export const MAX_BATCH_SIZE = 1024

/** Most preferred batch sizes (Triton's preferred_batch_size list); a handful is all anyone uses. */
export const MAX_PREFERRED_BATCH_SIZES = 16

/**
 * Longest `maxQueueDelayMs`: the delay is a latency every request may pay at low load, and a
 * second is already far above any inference deadline worth batching for.
 */
export const MAX_QUEUE_DELAY_MS = 1_000

/**
 * Default delay: 0, as Triton's max_queue_delay_microseconds. A batch then forms only from the
 * requests that queued while every worker was busy: batching costs no latency at low load, and
 * under load the batch is whatever waited (up to maxBatchSize).
 */
export const DEFAULT_QUEUE_DELAY_MS = 0

/**
 * Queued requests a forming batch looks through past ones of another shape: bounds the work of
 * one dispatch (a queue full of mixed shapes would otherwise be scanned on every dispatch).
 */
export const MAX_BATCH_SCAN = 256

/** Histogram buckets of the rows per run (powers of two up to MAX_BATCH_SIZE). */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

/** Histogram buckets of a request's wait in the batcher, in seconds (0.1 ms … 1 s). */
export const QUEUE_DELAY_BUCKETS_S = [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1]
