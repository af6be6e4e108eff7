/**
 * The node side of serving: per model, a pool of worker_threads, each with its own onnxruntime
 * session (run() blocks the thread it is on, so it never runs on the event loop), a bounded FIFO
 * queue, per-request deadlines. onnxruntime is only ever loaded inside the workers: importing
 * this module costs nothing at start-up. See docs/inference.md.
 */
export {
  createPool,
  type InferencePool, type InferOutcome, type PoolComponents, type PoolInit, type PoolStats, type PoolProvider
} from './pool.ts'
export { validateInputs } from './validate.ts'
export { abortReason, armPending, settlePending, type Pending } from './pending.ts'
export type { ProviderFailure } from './messages.ts'
export { ModelLoadError, NativeRuntimeError } from './errors.ts'
export { datatypeFromOrt, ortTypeOf } from './datatypes.ts'
export * as inferenceConstants from './constants.ts'
