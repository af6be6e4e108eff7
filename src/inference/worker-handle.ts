import { Worker } from 'node:worker_threads'
import type { ModelSignature } from '../serving/types.ts'
import { ModelLoadError } from './errors.ts'
import type { FromWorker, ProviderFailure, ToWorker, WorkerInit } from './messages.ts'
import type { WorkerSource } from './worker-source.ts'

export interface ReadyInfo {
  signature: ModelSignature
  loadMs: number
  warmupMs: number
  /** Why the warm-up run failed, if it did (not fatal, see worker.ts). */
  warmupError?: string
  /** The execution provider the session runs on. */
  provider: string
  /** Providers tried before it, and why each did not start. */
  skipped: ProviderFailure[]
}

export type RunReply = Extract<FromWorker, { type: 'result' | 'failed' }>

export interface WorkerHandleInit {
  source: WorkerSource
  modelPath: string
  intraOpThreads: number
  /** Execution providers to try in order (unset: cpu). */
  executionProviders?: string[]
  /** Thread name (shows in debuggers and crash reports). */
  name: string
  /** A run's answer. */
  onReply: (reply: RunReply) => void
  /** The thread ended after it was ready, for any reason but close() (crash, terminate()). */
  onExit: (reason: string) => void
}

/**
 * One worker thread and its session, seen from the main thread: start, wait for ready, send
 * runs, close. Scheduling is the pool's business.
 */
export class WorkerHandle {
  /** Resolves once the model is loaded and warmed up; rejects ModelLoadError otherwise. */
  readonly ready: Promise<ReadyInfo>
  /** Resolves when the thread has ended. */
  readonly exited: Promise<void>
  private readonly worker: Worker
  private closing = false
  private isReady = false
  private lastError: string | undefined

  constructor (init: WorkerHandleInit) {
    const workerData: WorkerInit = { modelPath: init.modelPath, intraOpThreads: init.intraOpThreads }
    if (init.executionProviders !== undefined) workerData.executionProviders = init.executionProviders
    if (init.source.kind === 'eval') workerData.nativeBindingPath = init.source.nativeBindingPath
    this.worker = init.source.kind === 'eval'
      ? new Worker(init.source.code, { eval: true, workerData, name: init.name })
      : new Worker(init.source.url, { workerData, name: init.name })
    const ready = Promise.withResolvers<ReadyInfo>()
    const exited = Promise.withResolvers<void>()
    this.ready = ready.promise
    this.exited = exited.promise
    // A pool that gives up on starting does not wait for every ready: none may go unhandled.
    this.ready.catch(() => {})

    this.worker.on('message', (msg: FromWorker) => {
      switch (msg.type) {
        case 'ready':
          this.isReady = true
          ready.resolve({ signature: msg.signature, loadMs: msg.loadMs, warmupMs: msg.warmupMs, warmupError: msg.warmupError, provider: msg.provider, skipped: msg.skipped })
          break
        case 'load-failed':
          this.lastError = msg.message
          ready.reject(new ModelLoadError(`cannot load model ${init.modelPath}: ${msg.message}`, { reason: msg.message }))
          break
        default:
          init.onReply(msg)
      }
    })
    this.worker.on('error', (err) => {
      // An uncaught exception in the worker; 'exit' follows.
      this.lastError = err.message
    })
    this.worker.on('exit', (code) => {
      const reason = this.lastError !== undefined ? `${this.lastError} (exit code ${code})` : `exit code ${code}`
      const why = `the worker ended before it was ready: ${reason}`
      ready.reject(new ModelLoadError(`cannot load model ${init.modelPath}: ${why}`, { reason: why }))
      exited.resolve()
      if (this.isReady && !this.closing) init.onExit(reason)
    })
  }

  run (msg: Extract<ToWorker, { type: 'run' }>, transfer: ArrayBuffer[]): void {
    this.worker.postMessage(msg, transfer)
  }

  /**
   * Asks the worker to release its session and exit, after the run in progress or, for a worker
   * still loading, once the model is loaded. The thread is never terminated from outside while
   * it may be inside onnxruntime: terminating a thread in a native run aborts the whole process
   * (Napi::Error thrown into a dying environment, seen here under load). A run that outlasts
   * `timeoutMs` is logged by the caller and waited for.
   */
  async close (timeoutMs: number, onSlow?: () => void): Promise<void> {
    this.closing = true
    this.worker.postMessage({ type: 'close' } satisfies ToWorker)
    const timer = setTimeout(() => { onSlow?.() }, timeoutMs)
    await this.exited
    clearTimeout(timer)
  }

  /** Makes the worker die between runs as a crash would (tests of the pool's crash handling). */
  crash (): void {
    this.worker.postMessage({ type: 'crash' } satisfies ToWorker)
  }

  /** Stops a thread that is not in onnxruntime (one that failed to load). */
  async terminate (): Promise<void> {
    await this.worker.terminate()
    await this.exited
  }
}
