import type { ModelSignature, Tensor } from '../serving/types.ts'

/** What a worker is started with (workerData). */
export interface WorkerInit {
  modelPath: string
  intraOpThreads: number
  /**
   * Single executable only: path of onnxruntime_binding.node written to the cache directory,
   * which the worker loads with process.dlopen (see native-binding.ts). Unset when running from
   * sources: onnxruntime-node then requires its binding from node_modules as usual.
   */
  nativeBindingPath?: string
  /**
   * onnxruntime execution providers to try, in order (src/devices: `webgpu`, `cuda`, `cpu` …):
   * the session is created on the first that starts. Unset: `cpu`.
   */
  executionProviders?: string[]
}

/** An execution provider the worker tried before the one it runs on, and why it did not start. */
export interface ProviderFailure {
  provider: string
  reason: string
}

/** Main thread → worker. One run at a time: the pool sends the next only after the answer. */
export type ToWorker =
  | { type: 'run', id: number, inputs: Tensor[], outputs?: string[] }
  /** Release the session and exit (after the run in progress, or after loading). */
  | { type: 'close' }
  /** Die now with an uncaught exception, between runs (tests of the pool's crash handling). */
  | { type: 'crash' }

/** Worker → main thread. */
export type FromWorker =
  /** Loaded and warmed up (or why the warm-up run failed): ready for runs. */
  | { type: 'ready', signature: ModelSignature, loadMs: number, warmupMs: number, warmupError?: string, provider: string, skipped: ProviderFailure[] }
  /** Load or warm-up failed; the worker exits after sending this. */
  | { type: 'load-failed', message: string }
  /**
   * `startedAt`/`endedAt`: the run's start and end as `performance.timeOrigin + performance.now()`,
   * a clock the threads share (each thread's timeOrigin differs, the sum does not).
   */
  | { type: 'result', id: number, outputs: Tensor[], startedAt: number, endedAt: number }
  /** The run failed (onnxruntime error); the worker stays usable. */
  | { type: 'failed', id: number, message: string, code: string }
