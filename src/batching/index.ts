/**
 * Dynamic batching (docs/batching.md): an app's `batching` block, and the batcher that combines
 * requests of one replica along axis 0 into one run of its worker pool.
 */
export { batchingSchema, batchingKey, type BatchingSpec } from './spec.ts'
export { createBatcher, unbatchableReason, BatchingUnsupportedError, type BatcherInit, type BatcherComponents } from './batcher.ts'
export { batchingMetrics, type BatchingMetrics } from './metrics.ts'
export * as batchingConstants from './constants.ts'
