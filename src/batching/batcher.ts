import {
  DeadlineError, InvalidInferRequestError, QueueFullError, UnavailableError,
  type InferRequest, type ModelSignature, type Tensor
} from '../serving/types.ts'
import { armPending, settlePending, validateInputs, type Pending, type InferencePool, type InferOutcome, type PoolStats } from '../inference/index.ts'
import { AstradError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { MAX_BATCH_SCAN } from './constants.ts'
import type { BatchingMetrics } from './metrics.ts'
import type { BatchingSpec } from './spec.ts'

/**
 * Dynamic batching in front of one replica's worker pool (docs/batching.md; Triton's dynamic
 * batcher is the model): requests whose inputs agree on every dimension but axis 0 (and on
 * datatypes) are concatenated along axis 0 into one run, and the outputs are cut back by rows.
 * Each request keeps its own validation, deadline, abort signal, output filter and error.
 */

/** The model cannot be batched (no batch dimension, BYTES tensors): the replica fails with this. */
export class BatchingUnsupportedError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_BATCHING_UNSUPPORTED')
    this.name = 'BatchingUnsupportedError'
  }
}

export interface BatcherInit {
  /** App name, for errors and metrics. */
  name: string
  /** Requests waiting in the batcher beyond which infer() rejects QueueFullError (the app's maxQueue). */
  maxQueue: number
  batching: BatchingSpec
}

export interface BatcherComponents {
  logger: Logger
  metrics?: BatchingMetrics
}

/**
 * Why a model cannot be batched along axis 0, or undefined if it can: every input and output
 * must have a symbolic first dimension (-1), and none may be BYTES (their rows have no fixed
 * size to cut outputs at).
 */
export function unbatchableReason (signature: ModelSignature): string | undefined {
  for (const [kind, specs] of [['input', signature.inputs], ['output', signature.outputs]] as const) {
    for (const s of specs) {
      if (s.datatype === 'BYTES') return `${kind} '${s.name}' is BYTES: batching supports numeric tensors only`
      if (s.shape.length === 0 || s.shape[0] !== -1) {
        return `the model has no batch dimension: ${kind} '${s.name}' has shape [${s.shape.join(', ')}], and batching needs axis 0 variable (-1) in every input and output`
      }
    }
  }
  return undefined
}

interface Member extends Pending {
  readonly req: InferRequest
  /** Rows (axis 0) this request brings. */
  readonly rows: number
  /** Requests with the same key can share a run; undefined: this one always runs alone. */
  readonly key: string | undefined
  /** Run alone (its shape does not batch, or it is being isolated after a batch failed). */
  alone: boolean
  dispatched: boolean
  resolve: (outcome: InferOutcome) => void
  reject: (err: unknown) => void
}

/**
 * Wraps a started pool. Throws BatchingUnsupportedError when the pool's model cannot be batched
 * (the caller closes the pool and reports the reason).
 */
export function createBatcher (components: BatcherComponents, init: BatcherInit, pool: InferencePool): InferencePool {
  const reason = unbatchableReason(pool.signature)
  if (reason !== undefined) throw new BatchingUnsupportedError(`batching: ${reason}`)
  return new Batcher(components, init, pool)
}

/**
 * The batcher keeps at most one run per working worker in the pool (so the pool's own queue
 * stays empty) and queues the rest. When a worker is free it forms a batch from the oldest
 * request and the later ones of the same shape key, in arrival order, up to maxBatchSize rows,
 * and dispatches it when: maxBatchSize rows are there, or a preferred size is reached, or the
 * oldest waited maxQueueDelayMs, or it is the only request waiting (no latency at low load).
 */
export class Batcher implements InferencePool {
  private readonly pool: InferencePool
  private readonly init: BatcherInit
  private readonly log: Logger
  private readonly metrics?: BatchingMetrics
  private readonly inputOrder: string[]
  private queue = new Set<Member>()
  private inFlight = 0
  private delayTimer?: NodeJS.Timeout
  private closed = false

  constructor (components: BatcherComponents, init: BatcherInit, pool: InferencePool) {
    this.pool = pool
    this.init = init
    this.log = components.logger
    this.metrics = components.metrics
    this.inputOrder = pool.signature.inputs.map(s => s.name)
  }

  get signature (): ModelSignature {
    return this.pool.signature
  }

  /** The execution provider of the pool underneath (src/devices). */
  get provider (): InferencePool['provider'] {
    return this.pool.provider
  }

  busyMs (): number {
    return this.pool.busyMs()
  }

  async infer (req: InferRequest, signal?: AbortSignal): Promise<InferOutcome> {
    if (this.closed) throw new UnavailableError(`inference pool '${this.init.name}' is closed`)
    validateInputs(this.signature, req)
    if (!Number.isFinite(req.deadline)) throw new InvalidInferRequestError('request deadline must be a finite epoch time in ms')
    if (req.deadline <= Date.now()) throw new DeadlineError('deadline passed before the request was queued')
    signal?.throwIfAborted()
    const free = this.inFlight < this.capacity()
    if (!(free && this.queue.size === 0) && this.queue.size >= this.init.maxQueue) {
      throw new QueueFullError(`inference pool '${this.init.name}': ${this.queue.size} requests queued (max ${this.init.maxQueue})`)
    }
    const { rows, key } = this.shapeKey(req)
    const { promise, resolve, reject } = Promise.withResolvers<InferOutcome>()
    const member: Member = {
      req, rows, key, enqueuedAt: performance.now(), alone: key === undefined || rows > this.init.batching.maxBatchSize,
      dispatched: false, settled: false, resolve, reject
    }
    armPending(member, req.deadline, signal, () => member.dispatched ? 'while running' : 'in the batch queue', err => {
      this.queue.delete(member)
      this.fail(member, err)
    })
    this.queue.add(member)
    this.pump()
    return promise
  }

  stats (): PoolStats {
    const s = this.pool.stats()
    return { queued: this.queue.size + s.queued, active: s.active, workers: s.workers }
  }

  async close (): Promise<void> {
    if (!this.closed) {
      this.closed = true
      clearTimeout(this.delayTimer)
      for (const m of this.queue) this.fail(m, new UnavailableError(`inference pool '${this.init.name}' closed`))
      this.queue.clear()
    }
    // Runs in flight are rejected by the pool (UnavailableError), which fails their members.
    await this.pool.close()
  }

  /** Runs the pool holds at once: one per working worker (at least one, so a restarting pool still queues). */
  private capacity (): number {
    return Math.max(1, this.pool.stats().workers)
  }

  /**
   * The request's rows (axis 0, the same in every input) and the key of what must agree for two
   * requests to share a run: each input's datatype and dimensions after axis 0.
   */
  private shapeKey (req: InferRequest): { rows: number, key: string | undefined } {
    const first = req.inputs[0]?.shape[0]
    if (first === undefined || first < 1) return { rows: 1, key: undefined }
    const byName = new Map(req.inputs.map(t => [t.name, t]))
    const parts: string[] = []
    for (const name of this.inputOrder) {
      const t = byName.get(name)!
      if (t.shape[0] !== first) return { rows: first, key: undefined }
      parts.push(`${t.datatype}[${t.shape.slice(1).join(',')}]`)
    }
    return { rows: first, key: parts.join(';') }
  }

  /** Dispatches batches while a worker is free and a batch is due; else waits for the delay. */
  private pump (): void {
    clearTimeout(this.delayTimer)
    this.delayTimer = undefined
    while (!this.closed && this.queue.size > 0 && this.inFlight < this.capacity()) {
      const batch = this.form()
      if (batch === undefined) return
      this.run(batch)
    }
  }

  /**
   * The next batch to run, taken out of the queue, or undefined when it should wait for more
   * requests (a timer is then armed for the oldest's maxQueueDelayMs).
   */
  private form (): Member[] | undefined {
    const { maxBatchSize, preferredBatchSizes, maxQueueDelayMs } = this.init.batching
    let oldest: Member | undefined
    for (const m of this.queue) {
      // Its timer may not have fired yet: do not spend a run on a request nobody waits for.
      if (m.req.deadline > Date.now()) { oldest = m; break }
      this.queue.delete(m)
      this.fail(m, new DeadlineError(`deadline passed after ${Math.round(performance.now() - m.enqueuedAt)} ms in the batch queue`))
    }
    if (oldest === undefined) return undefined
    if (oldest.alone) {
      this.queue.delete(oldest)
      return [oldest]
    }
    const members: Member[] = []
    let rows = 0
    let scanned = 0
    for (const m of this.queue) {
      if (scanned++ >= MAX_BATCH_SCAN || rows === maxBatchSize) break
      if (m.alone || m.key !== oldest.key || rows + m.rows > maxBatchSize) continue
      members.push(m)
      rows += m.rows
    }
    let take = members.length
    let due = rows === maxBatchSize || this.queue.size === 1
    if (!due && preferredBatchSizes !== undefined) {
      // The largest preferred size the waiting rows reach exactly, counting from the oldest.
      let sum = 0
      for (let i = 0; i < members.length; i++) {
        sum += members[i]!.rows
        if (preferredBatchSizes.includes(sum)) { take = i + 1; due = true }
      }
    }
    const waited = performance.now() - oldest.enqueuedAt
    if (!due && waited >= maxQueueDelayMs) due = true
    if (!due) {
      this.delayTimer = setTimeout(() => { this.pump() }, Math.max(0, maxQueueDelayMs - waited))
      return undefined
    }
    const batch = members.slice(0, take)
    for (const m of batch) this.queue.delete(m)
    return batch
  }

  private run (batch: Member[]): void {
    const dispatchedAt = performance.now()
    let rows = 0
    for (const m of batch) {
      m.dispatched = true
      rows += m.rows
      this.metrics?.queueDelay(this.init.name, (dispatchedAt - m.enqueuedAt) / 1000)
    }
    this.metrics?.batch(this.init.name, rows)
    this.inFlight++
    const req = batch.length === 1 ? batch[0]!.req : this.combine(batch, rows)
    this.pool.infer(req).then(
      outcome => {
        if (batch.length === 1) this.succeed(batch[0]!, { ...outcome, queueMs: outcome.queueMs + dispatchedAt - batch[0]!.enqueuedAt })
        else this.split(batch, rows, outcome, dispatchedAt)
      },
      (err: unknown) => { this.failed(batch, err) }
    ).finally(() => {
      this.inFlight--
      this.pump()
    })
  }

  /** One request of all members' rows: each input's bytes concatenated in member order. */
  private combine (batch: Member[], rows: number): InferRequest {
    const inputs: Tensor[] = this.pool.signature.inputs.map(spec => {
      const parts = batch.map(m => m.req.inputs.find(t => t.name === spec.name)!)
      const first = parts[0]!
      const data = new Uint8Array(parts.reduce((n, t) => n + t.data.byteLength, 0))
      let off = 0
      for (const t of parts) { data.set(t.data, off); off += t.data.byteLength }
      return { name: spec.name, datatype: first.datatype, shape: [rows, ...first.shape.slice(1)], data }
    })
    // The union of the outputs asked for; all of them as soon as one member wants all.
    let outputs: string[] | undefined = []
    for (const m of batch) {
      if (m.req.outputs === undefined || m.req.outputs.length === 0) { outputs = undefined; break }
      for (const o of m.req.outputs) if (!outputs.includes(o)) outputs.push(o)
    }
    const deadline = Math.max(...batch.map(m => m.req.deadline))
    return outputs === undefined ? { inputs, deadline } : { inputs, outputs, deadline }
  }

  /** Cuts every output back into the members' rows; if an output does not have the batch's rows on axis 0, isolates. */
  private split (batch: Member[], rows: number, outcome: InferOutcome, dispatchedAt: number): void {
    const rowBytes = new Map<string, number>()
    for (const t of outcome.outputs) {
      if (t.datatype === 'BYTES' || t.shape[0] !== rows || t.data.byteLength % rows !== 0) {
        this.log.warn({ app: this.init.name, output: t.name, shape: t.shape, rows }, 'a batched output does not have the batch\'s rows on axis 0; running the members one by one')
        this.isolate(batch)
        return
      }
      rowBytes.set(t.name, t.data.byteLength / rows)
    }
    let row = 0
    for (const m of batch) {
      const names = m.req.outputs !== undefined && m.req.outputs.length > 0 ? m.req.outputs : outcome.outputs.map(t => t.name)
      const outputs = names.map(name => {
        const t = outcome.outputs.find(o => o.name === name)!
        const size = rowBytes.get(name)!
        return { name, datatype: t.datatype, shape: [m.rows, ...t.shape.slice(1)], data: t.data.slice(row * size, (row + m.rows) * size) }
      })
      row += m.rows
      this.succeed(m, { outputs, queueMs: outcome.queueMs + dispatchedAt - m.enqueuedAt, computeMs: outcome.computeMs, compute: outcome.compute })
    }
  }

  /**
   * A run failed. Alone: the member gets the error. Batched: a closed pool or a full queue fails
   * every member with it; any other failure (the model refused the combined tensor, a worker
   * died) re-runs each member alone, so each gets its own answer or its own error.
   */
  private failed (batch: Member[], err: unknown): void {
    if (batch.length === 1 || err instanceof UnavailableError || err instanceof QueueFullError || err instanceof DeadlineError) {
      for (const m of batch) this.fail(m, err)
      return
    }
    this.log.warn({ app: this.init.name, members: batch.length, err: err instanceof Error ? err.message : String(err) }, 'a batched run failed; running its members one by one')
    this.isolate(batch)
  }

  /** Puts the members still waiting for an answer back at the head of the queue, each to run alone. */
  private isolate (batch: Member[]): void {
    const again = batch.filter(m => !m.settled)
    for (const m of again) { m.alone = true; m.dispatched = false }
    this.queue = new Set([...again, ...this.queue])
  }

  private succeed (m: Member, outcome: InferOutcome): void {
    if (this.finish(m)) m.resolve(outcome)
  }

  private fail (m: Member, err: unknown): void {
    if (this.finish(m)) m.reject(err)
  }

  private finish (m: Member): boolean {
    return settlePending(m)
  }
}
