import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import type { Ledger, LedgerReplica } from '../placement/index.ts'
import type { TransferService } from '../transfer/index.ts'
import { ModelLoadError, type InferencePool, type PoolComponents, type PoolInit } from '../inference/index.ts'
import type { Registry } from 'prom-client'
import { batchingMetrics, createBatcher } from '../batching/index.ts'
import { explain, isExecutionProvider, isGpuProvider, type ExecutionProvider } from '../devices/index.ts'
import { UnavailableError, type InferRequest, type InferResult } from './types.ts'
import { LOAD_TIMEOUT_MS, MODELS_DIR, RELEASE_DRAIN_MS, RELEASE_POLL_MS } from './constants.ts'

export interface ReplicaHostComponents {
  ledger: Ledger
  transfer: TransferService
  logger: Logger
  /** Starts a worker pool (src/inference); injectable so tests can count pools. */
  createPool: (components: PoolComponents, init: PoolInit, signal?: AbortSignal) => Promise<InferencePool>
  /** For the batching metrics of apps with batching on (none kept without one). */
  registry?: Registry
}

export interface ReplicaHostInit {
  dataDir: string
}

interface Hosted {
  replica: LedgerReplica
  abort: AbortController
  pool?: InferencePool
  unpin?: () => void
}

/**
 * What the ledger says a replica with an execution-provider list runs on, and why it fell back
 * past the providers before it (never silent). Replicas without a list run on cpu, unsaid.
 */
function runsOn (replica: LedgerReplica, pool: InferencePool): { provider?: ExecutionProvider, fallback?: string } {
  if (replica.executionProviders == null) return {}
  const { provider, skipped } = pool.provider
  const out: { provider?: ExecutionProvider, fallback?: string } = {}
  if (isExecutionProvider(provider)) out.provider = provider
  if (skipped.length > 0) out.fallback = `running on ${provider}: ${skipped.map(f => `${f.provider} did not start (${explain(f.provider, f.reason)})`).join('; ')}`
  return out
}

/** A model could not be made ready on this node (download, file, onnxruntime load). */
export class ReplicaLoadError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_REPLICA_LOAD')
    this.name = 'ReplicaLoadError'
  }
}

/**
 * The node side of serving: for every reservation in the ledger, fetch the model peer-to-peer,
 * write it out whole for onnxruntime, start a pool of worker threads, warm them up, and only
 * then report the replica ready. A release closes the pool (the workers and their sessions go
 * with it) and unpins the model.
 */
export class ReplicaHost {
  private readonly components: ReplicaHostComponents
  private readonly init: ReplicaHostInit
  private readonly hosted = new Map<string, Hosted>()
  private unsubscribe?: () => void
  private readonly writing = new Map<string, Promise<string>>()

  constructor (components: ReplicaHostComponents, init: ReplicaHostInit) {
    this.components = components
    this.init = init
  }

  start (): void {
    if (this.unsubscribe != null) return
    this.unsubscribe = this.components.ledger.onChange(event => {
      if (event.type === 'reserved') this.load(event.replica)
      else if (event.type === 'released') void this.unload(event.replica.replica, true)
    })
  }

  async stop (): Promise<void> {
    this.unsubscribe?.()
    this.unsubscribe = undefined
    await Promise.all([...this.hosted.keys()].map(async id => { await this.unload(id, false) }))
  }

  /** Runs a request on the least busy ready replica of `app` on this node. */
  async infer (app: string, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    let best: Hosted | undefined
    let bestLoad = Infinity
    for (const h of this.hosted.values()) {
      if (h.replica.app !== app || h.pool == null || h.replica.state !== 'ready') continue
      const s = h.pool.stats()
      const load = (s.queued + s.active) / Math.max(1, s.workers)
      if (load < bestLoad) { best = h; bestLoad = load }
    }
    if (best?.pool == null) throw new UnavailableError(`no ready replica of '${app}' on this node`, 'ERR_NO_REPLICA')
    const out = await best.pool.infer(req, signal)
    const result: InferResult = { model: app, version: String(best.replica.generation), outputs: out.outputs, queueMs: out.queueMs, computeMs: out.computeMs, compute: out.compute }
    if (req.id != null) result.id = req.id
    return result
  }

  /**
   * Run time (ms, summed over workers, runs in progress included) of the replicas here that run
   * on a GPU provider: the node's gpuUtil is its growth per second per card.
   */
  gpuBusyMs (): number {
    let ms = 0
    for (const h of this.hosted.values()) if (h.pool != null && isGpuProvider(h.pool.provider.provider)) ms += h.pool.busyMs()
    return ms
  }

  /** Requests waiting for a worker, per app and version (generation) hosted here. */
  pending (): Array<{ model: string, version: string, count: number }> {
    const out = []
    for (const h of this.hosted.values()) {
      if (h.pool != null) out.push({ model: h.replica.app, version: String(h.replica.generation), count: h.pool.stats().queued })
    }
    return out
  }

  private load (replica: LedgerReplica): void {
    const hosted: Hosted = { replica, abort: new AbortController() }
    this.hosted.set(replica.replica, hosted)
    const { logger, ledger } = this.components
    const signal = AbortSignal.any([hosted.abort.signal, AbortSignal.timeout(LOAD_TIMEOUT_MS)])
    void (async () => {
      const t0 = Date.now()
      try {
        hosted.unpin = this.components.transfer.store?.pin(replica.model, `replica:${replica.replica}`)
        const file = await this.modelFile(replica.model, signal)
        let pool = await this.components.createPool({ logger }, {
          modelPath: file, name: replica.app, workers: replica.threads, maxQueue: replica.maxQueue,
          ...(replica.executionProviders != null ? { executionProviders: replica.executionProviders } : {})
        }, signal)
        if (replica.batching != null) pool = await this.batched(pool, replica)
        if (hosted.abort.signal.aborted) {
          await pool.close()
          return
        }
        hosted.pool = pool
        ledger.setState(replica.replica, 'ready', { signature: pool.signature, ...runsOn(replica, pool) })
        logger.info({ app: replica.app, replica: replica.replica, ms: Date.now() - t0, provider: pool.provider.provider }, 'replica ready')
      } catch (err) {
        if (hosted.abort.signal.aborted) return
        logger.warn({ app: replica.app, replica: replica.replica, err: errorMessage(err) }, 'replica failed to load')
        // The reason travels in the ledger to the owning scheduler, which shows it in app ls.
        ledger.setState(replica.replica, 'failed', { error: err instanceof ModelLoadError ? err.reason : errorMessage(err) })
        hosted.unpin?.()
      }
    })()
  }

  /** The pool behind a batcher (docs/batching.md); a model that cannot batch closes it and throws why. */
  private async batched (pool: InferencePool, replica: LedgerReplica): Promise<InferencePool> {
    const { logger, registry } = this.components
    try {
      return createBatcher({ logger, metrics: registry != null ? batchingMetrics(registry) : undefined }, {
        name: replica.app, maxQueue: replica.maxQueue, batching: replica.batching!
      }, pool)
    } catch (err) {
      await pool.close()
      throw err
    }
  }

  /**
   * Releases a replica. It takes no new request at once (a router that has not yet seen the
   * release gets ERR_NO_REPLICA and tries another node); `graceful`: the requests it holds finish
   * first (up to RELEASE_DRAIN_MS), so scaling down or rolling fails none of them.
   */
  private async unload (id: string, graceful: boolean): Promise<void> {
    const hosted = this.hosted.get(id)
    if (hosted == null) return
    this.hosted.delete(id)
    hosted.abort.abort(new UnavailableError('replica released'))
    const pool = hosted.pool
    if (graceful && pool != null) {
      const until = Date.now() + RELEASE_DRAIN_MS
      while (Date.now() < until) {
        const s = pool.stats()
        if (s.queued + s.active === 0) break
        await new Promise(resolve => setTimeout(resolve, RELEASE_POLL_MS))
      }
    }
    try {
      await hosted.pool?.close()
    } catch (err) {
      this.components.logger.warn({ replica: id, err: errorMessage(err) }, 'closing a replica pool failed')
    }
    hosted.unpin?.()
    // The written-out model goes when no replica here uses it any more (the pieces stay cached).
    const model = hosted.replica.model
    if (![...this.hosted.values()].some(h => h.replica.model === model)) {
      await rm(this.modelPath(model), { force: true }).catch(() => {})
    }
    this.components.logger.info({ app: hosted.replica.app, replica: id }, 'replica released')
  }

  private modelPath (model: string): string {
    return path.join(this.init.dataDir, MODELS_DIR, `${model}.onnx`)
  }

  /** Fetches the model (peer-to-peer) and writes it out whole, once per model. */
  private async modelFile (model: string, signal: AbortSignal): Promise<string> {
    let p = this.writing.get(model)
    if (p == null) {
      // Shared by every replica of the model being loaded: bounded by time, not by one replica.
      p = this.fetchAndWrite(model, AbortSignal.timeout(LOAD_TIMEOUT_MS))
      this.writing.set(model, p)
      p.catch(() => {}).finally(() => { this.writing.delete(model) })
    }
    signal.throwIfAborted()
    return await p
  }

  private async fetchAndWrite (model: string, signal: AbortSignal): Promise<string> {
    const { transfer } = this.components
    const file = this.modelPath(model)
    const local = transfer.store?.get(model)
    if (local?.complete !== true) {
      await transfer.pull(model)
      while (true) {
        signal.throwIfAborted()
        const info = transfer.transfer(model)
        if (info?.state === 'complete') break
        if (info == null || info.state === 'failed') throw new ReplicaLoadError(`model ${model.slice(0, 12)} could not be fetched: ${info?.error ?? 'no transfer'}`)
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    }
    const { size, stream } = transfer.readModel(model)
    const existing = await stat(file).catch(() => undefined)
    if (existing?.size === size) return file
    await mkdir(path.dirname(file), { recursive: true })
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`
    const fh = await open(tmp, 'w', 0o600)
    try {
      for await (const chunk of stream) {
        signal.throwIfAborted()
        await fh.write(chunk)
      }
      await fh.sync()
    } catch (err) {
      await fh.close()
      await rm(tmp, { force: true })
      throw err
    }
    await fh.close()
    await rename(tmp, file)
    return file
  }
}
