import { stat } from 'node:fs/promises'
import {
  DeadlineError, InferenceFailedError, InvalidInferRequestError, QueueFullError, UnavailableError,
  type ComputeTiming, type InferRequest, type ModelSignature, type Tensor
} from '../serving/types.ts'
import { ConfigError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { copyForTransfer, transferable } from './codec.ts'
import { CLOSE_TIMEOUT_MS, WEBGPU_WAIT_MS, DEFAULT_INTRA_OP_THREADS, MAX_RESTART_FAILURES, RESTART_BACKOFF_MS } from './constants.ts'
import { abortReason, armPending, settlePending, type Pending } from './pending.ts'
import { ModelLoadError } from './errors.ts'
import { validateInputs } from './validate.ts'
import { WorkerHandle, type RunReply } from './worker-handle.ts'
import type { ProviderFailure } from './messages.ts'
import { workerSource, type WorkerSource } from './worker-source.ts'

export interface PoolInit {
  /** An .onnx file on disk. */
  modelPath: string
  /** App name, for logs and thread names. */
  name: string
  /** worker_threads, each with its own onnxruntime session (≥ 1). */
  workers: number
  /** onnxruntime intra-op threads per session. @default 1 */
  intraOpThreads?: number
  /** Requests waiting (not running) beyond which infer() rejects QueueFullError (≥ 0). */
  maxQueue: number
  /**
   * Hand each input's ArrayBuffer to the worker without a copy when the Uint8Array spans all of
   * it: the caller's buffer is then detached (empty) once infer() was called. Off by default: a
   * router that retries the same request on another node after a failure (a pool closed under
   * it, a worker that died) still needs the bytes. Off, each input is copied once (exactly its
   * bytes, never the rest of a larger buffer it is a view of) and the copy is transferred.
   * @default false
   */
  transferInputs?: boolean
  /**
   * onnxruntime execution providers to try in order (src/devices): each worker creates its
   * session on the first that starts. @default ['cpu']
   */
  executionProviders?: string[]
}

export interface PoolComponents {
  logger: Logger
}

export interface InferOutcome {
  outputs: Tensor[]
  /** From infer() to the request's hand-off to a worker. */
  queueMs: number
  /** From the hand-off to the answer (the run plus the two message hops). */
  computeMs: number
  /**
   * computeMs in three (Triton's compute input/infer/output): hand-off to the run's start (the
   * message to the worker, onnxruntime tensors), the run, the run's end to the answer here.
   */
  compute: ComputeTiming
}

/** Which execution provider a pool's sessions run on, and the ones tried before it that did not start. */
export interface PoolProvider {
  provider: string
  skipped: ProviderFailure[]
}

export interface PoolStats {
  /** Requests waiting for a worker. */
  queued: number
  /** Workers busy with a run (one whose request passed its deadline included: it still runs). */
  active: number
  /** Workers loaded and serving (not starting, restarting or given up). */
  workers: number
}

export interface InferencePool {
  /** From the session's metadata; symbolic dimensions are -1. */
  readonly signature: ModelSignature
  /** Runs one request (input bytes are copied once, or moved with PoolInit.transferInputs). */
  infer: (req: InferRequest, signal?: AbortSignal) => Promise<InferOutcome>
  stats: () => PoolStats
  /** The execution provider the sessions run on (the first worker's; all load the same list). */
  readonly provider: PoolProvider
  /**
   * Time the workers have spent on runs since the pool started, summed over workers, runs in
   * progress included (ms): its growth over an interval / (interval × workers) is how busy the
   * pool's device was.
   */
  busyMs: () => number
  /** Rejects waiting and running requests (UnavailableError), releases every session, ends every worker. */
  close: () => Promise<void>
}

interface Job extends Pending {
  readonly req: InferRequest
  readonly settle: Settle
  dispatchedAt: number
}

type Settle = { resolve: (outcome: InferOutcome) => void, reject: (err: unknown) => void }

/**
 * starting/backoff: a (replacement) worker is on its way; idle/busy: serving; dead: given up
 * after MAX_RESTART_FAILURES; closed: the pool is closed.
 */
type SlotState = 'starting' | 'idle' | 'busy' | 'backoff' | 'dead' | 'closed'

interface Slot {
  readonly index: number
  state: SlotState
  handle?: WorkerHandle
  /** The request being run (kept after it settled early: the worker is busy until it answers). */
  job?: Job
  runId: number
  /** Consecutive failed starts, or deaths before a first completed run. */
  failures: number
  ranSinceStart: boolean
  restartTimer?: NodeJS.Timeout
}

function checkInit (init: PoolInit): Required<PoolInit> {
  const intraOpThreads = init.intraOpThreads ?? DEFAULT_INTRA_OP_THREADS
  if (!Number.isSafeInteger(init.workers) || init.workers < 1) throw new ConfigError('workers', `must be an integer ≥ 1, got ${init.workers}`)
  if (!Number.isSafeInteger(intraOpThreads) || intraOpThreads < 1) throw new ConfigError('intraOpThreads', `must be an integer ≥ 1, got ${intraOpThreads}`)
  if (!Number.isSafeInteger(init.maxQueue) || init.maxQueue < 0) throw new ConfigError('maxQueue', `must be an integer ≥ 0, got ${init.maxQueue}`)
  const executionProviders = init.executionProviders ?? ['cpu']
  if (executionProviders.length === 0) throw new ConfigError('executionProviders', 'must list at least one provider')
  return { ...init, intraOpThreads, transferInputs: init.transferInputs ?? false, executionProviders }
}

/**
 * Splits a run's compute time at the worker's start and end stamps. The run is measured on the
 * worker's own clock; the hand-off side compares the two threads' clocks once, and whatever the
 * clocks disagree by is clamped, so the three parts always add up to computeMs.
 */
function splitCompute (dispatchedAt: number, computeMs: number, run: { startedAt: number, endedAt: number }): ComputeTiming {
  const inferMs = Math.min(computeMs, Math.max(0, run.endedAt - run.startedAt))
  const inputMs = Math.min(computeMs - inferMs, Math.max(0, run.startedAt - (performance.timeOrigin + dispatchedAt)))
  return { inputMs, inferMs, outputMs: computeMs - inferMs - inputMs }
}

/**
 * Starts `init.workers` worker threads, each loading the model into its own onnxruntime session
 * and warming it up, and resolves once all are ready. If any fails to load, all are stopped and
 * this rejects ModelLoadError (NativeRuntimeError if, in the single executable, onnxruntime's
 * native files cannot be written out).
 */
/**
 * onnxruntime-node 1.30's WebGPU provider crashes the whole process (SIGSEGV, seen on Mesa's
 * llvmpipe) when sessions run in more than one thread at once: a process holds one webgpu
 * session. The pool holding it; a later pool (or a second worker) that lists webgpu skips it,
 * saying why, and starts on the next provider in its list or fails with the reason.
 */
let webgpuHolder: object | undefined
const WEBGPU_ONE_SESSION = 'this node already runs a webgpu session, and onnxruntime\'s WebGPU provider crashes with sessions in several threads: one webgpu worker per node (docs/gpus.md)'

export async function createPool (components: PoolComponents, init: PoolInit, signal?: AbortSignal): Promise<InferencePool> {
  let config = checkInit(init)
  signal?.throwIfAborted()
  const preSkipped: ProviderFailure[] = []
  const token = {}
  if (config.executionProviders.includes('webgpu')) {
    // A replica being released (a roll, an app removed) frees the session within moments.
    const until = Date.now() + WEBGPU_WAIT_MS
    while (webgpuHolder !== undefined && config.workers === 1 && Date.now() < until) {
      signal?.throwIfAborted()
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    if (webgpuHolder !== undefined || config.workers > 1) {
      preSkipped.push({ provider: 'webgpu', reason: webgpuHolder !== undefined ? WEBGPU_ONE_SESSION : `a webgpu pool runs one worker (${config.workers} asked): onnxruntime's WebGPU provider crashes with sessions in several threads (docs/gpus.md)` })
      const rest = config.executionProviders.filter(p => p !== 'webgpu')
      if (rest.length === 0) throw new ModelLoadError(`no execution provider could start: webgpu: ${preSkipped[0]!.reason}`)
      config = { ...config, executionProviders: rest }
    } else {
      webgpuHolder = token
    }
  }
  const releaseWebgpu = (): void => { if (webgpuHolder === token) webgpuHolder = undefined }
  try {
    const pool = await startPool(components, config, preSkipped, init.executionProviders ?? ['cpu'], signal)
    if (pool.provider.provider !== 'webgpu') releaseWebgpu()
    else pool.onClosed(releaseWebgpu)
    return pool
  } catch (err) {
    releaseWebgpu()
    throw err
  }
}

async function startPool (components: PoolComponents, config: Required<PoolInit>, preSkipped: ProviderFailure[], listed: string[], signal?: AbortSignal): Promise<WorkerPool> {
  const file = await stat(config.modelPath).catch((err: unknown) => {
    throw new ModelLoadError(`cannot load model ${config.modelPath}: ${(err as Error).message}`, { cause: err })
  })
  if (!file.isFile()) throw new ModelLoadError(`cannot load model ${config.modelPath}: not a file`)
  const source = await workerSource()
  signal?.throwIfAborted()
  const pool = new WorkerPool(components.logger.child({ app: config.name }), config, source, preSkipped, listed)
  await pool.start(signal)
  return pool
}

/** The pool: a FIFO queue in front of N single-request workers. Created by createPool. */
export class WorkerPool implements InferencePool {
  private readonly log: Logger
  private readonly init: Required<PoolInit>
  private readonly source: WorkerSource
  private readonly slots: Slot[]
  /** FIFO of waiting requests; a Set so one expiring in the middle leaves in O(1). */
  private readonly queue = new Set<Job>()
  private nextRunId = 0
  private pumpQueued = false
  private closing: Promise<void> | undefined
  private sig: ModelSignature | undefined
  private providerValue: PoolProvider | undefined
  /** Run time of the finished runs (ms, summed over workers). */
  private busyDone = 0

  /** Providers of the list skipped before any worker started (see webgpuHolder). */
  private readonly preSkipped: ProviderFailure[]
  private readonly closedHooks: Array<() => void> = []

  /** The provider list as asked for, before any was skipped here. */
  private readonly listed: string[]

  constructor (log: Logger, init: Required<PoolInit>, source: WorkerSource, preSkipped: ProviderFailure[] = [], listed: string[] = init.executionProviders) {
    this.log = log
    this.init = init
    this.source = source
    this.preSkipped = preSkipped
    this.listed = listed
    this.slots = Array.from({ length: init.workers }, (_, index) => ({ index, state: 'starting', runId: 0, failures: 0, ranSinceStart: false }))
  }

  get signature (): ModelSignature {
    if (this.sig === undefined) throw new Error('pool not started')
    return this.sig
  }

  get provider (): PoolProvider {
    if (this.providerValue === undefined) throw new Error('pool not started')
    return this.providerValue
  }

  busyMs (): number {
    const now = performance.now()
    let running = 0
    for (const s of this.slots) if (s.state === 'busy' && s.job !== undefined) running += now - s.job.dispatchedAt
    return this.busyDone + running
  }

  /** Loads every worker; on any failure (or abort) stops them all and rethrows. */
  async start (signal?: AbortSignal): Promise<void> {
    const t0 = performance.now()
    const handles = this.slots.map(slot => this.spawn(slot))
    const aborted = Promise.withResolvers<never>()
    const onAbort = (): void => { aborted.reject(abortReason(signal!)) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const infos = await Promise.race([Promise.all(handles.map(h => h.ready)), aborted.promise])
      this.sig = infos[0]!.signature
      // In the list's order, whether skipped here (webgpuHolder) or in the worker.
      const order = (f: ProviderFailure): number => this.listed.indexOf(f.provider)
      this.providerValue = { provider: infos[0]!.provider, skipped: [...this.preSkipped, ...infos[0]!.skipped].sort((a, b) => order(a) - order(b)) }
      const others = [...new Set(infos.map(i => i.provider))]
      if (others.length > 1) this.log.warn({ providers: others }, 'workers of one pool run on different execution providers')
      if (this.providerValue.skipped.length > 0) {
        this.log.warn({ provider: infos[0]!.provider, skipped: this.providerValue.skipped }, 'execution providers earlier in the list did not start; running on a later one')
      }
      for (const slot of this.slots) slot.state = 'idle'
      this.log.info({
        model: this.init.modelPath,
        workers: this.init.workers,
        intraOpThreads: this.init.intraOpThreads,
        provider: infos[0]!.provider,
        loadMs: Math.round(Math.max(...infos.map(i => i.loadMs))),
        warmupMs: Math.round(Math.max(...infos.map(i => i.warmupMs))),
        readyMs: Math.round(performance.now() - t0)
      }, 'inference pool ready')
      const warmupError = infos.find(i => i.warmupError !== undefined)?.warmupError
      if (warmupError !== undefined) this.log.warn({ err: warmupError }, 'warm-up run on zeros failed: the first requests pay the warm-up')
    } catch (err) {
      for (const slot of this.slots) slot.state = 'closed'
      this.closing = Promise.resolve()
      // Workers that failed have ended or are idle; others may still be loading: close() lets
      // them finish loading and exit (never terminated inside onnxruntime).
      await Promise.all(handles.map(async h => { await h.close(CLOSE_TIMEOUT_MS) }))
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  private spawn (slot: Slot): WorkerHandle {
    const handle = new WorkerHandle({
      source: this.source,
      modelPath: this.init.modelPath,
      intraOpThreads: this.init.intraOpThreads,
      executionProviders: this.init.executionProviders,
      name: `astrad-inference-${this.init.name}-${slot.index}`,
      onReply: (reply) => { this.onReply(slot, handle, reply) },
      onExit: (reason) => { this.onWorkerExit(slot, handle, reason) }
    })
    slot.handle = handle
    slot.ranSinceStart = false
    return handle
  }

  async infer (req: InferRequest, signal?: AbortSignal): Promise<InferOutcome> {
    if (this.closing !== undefined) throw new UnavailableError(`inference pool '${this.init.name}' is closed`)
    validateInputs(this.signature, req)
    if (!Number.isFinite(req.deadline)) throw new InvalidInferRequestError('request deadline must be a finite epoch time in ms')
    if (req.deadline <= Date.now()) throw new DeadlineError('deadline passed before the request was queued')
    signal?.throwIfAborted()
    if (!this.slots.some(s => s.state === 'idle' || s.state === 'busy' || s.state === 'starting' || s.state === 'backoff')) {
      throw new UnavailableError(`inference pool '${this.init.name}' has no working worker`)
    }
    // While requests wait, a new one queues behind them even if a worker just went idle: the
    // pump after that worker's answer hands it the oldest (FIFO).
    const idle = this.queue.size === 0 ? this.slots.find(s => s.state === 'idle') : undefined
    if (idle === undefined && this.queue.size >= this.init.maxQueue) {
      throw new QueueFullError(`inference pool '${this.init.name}': ${this.queue.size} requests queued (max ${this.init.maxQueue})`)
    }

    const { promise, resolve, reject } = Promise.withResolvers<InferOutcome>()
    const job: Job = { req, settle: { resolve, reject }, enqueuedAt: performance.now(), dispatchedAt: 0, settled: false }
    armPending(job, req.deadline, signal, () => job.dispatchedAt === 0 ? 'in the queue' : 'while running', err => {
      this.queue.delete(job)
      this.fail(job, err)
    })
    if (idle !== undefined) this.dispatch(idle, job)
    else this.queue.add(job)
    return promise
  }

  stats (): PoolStats {
    let active = 0
    let workers = 0
    for (const s of this.slots) {
      if (s.state === 'busy') active++
      if (s.state === 'busy' || s.state === 'idle') workers++
    }
    return { queued: this.queue.size, active, workers }
  }

  async close (): Promise<void> {
    this.closing ??= this.shutdown().finally(() => { for (const f of this.closedHooks.splice(0)) f() })
    return this.closing
  }

  /** Called once the pool has closed (its workers ended). */
  onClosed (f: () => void): void {
    this.closedHooks.push(f)
  }

  /**
   * Makes one worker die as a crash would, before it takes its next message: a request already
   * dispatched to it fails, a replacement starts. For tests.
   */
  crashWorker (index: number): void {
    this.slots[index]?.handle?.crash()
  }

  private async shutdown (): Promise<void> {
    const closed = (): UnavailableError => new UnavailableError(`inference pool '${this.init.name}' closed`)
    for (const job of this.queue) this.fail(job, closed())
    this.queue.clear()
    const closing: Array<Promise<void>> = []
    for (const slot of this.slots) {
      clearTimeout(slot.restartTimer)
      if (slot.job !== undefined) this.fail(slot.job, closed())
      slot.job = undefined
      slot.state = 'closed'
      if (slot.handle !== undefined) {
        closing.push(slot.handle.close(CLOSE_TIMEOUT_MS, () => {
          this.log.warn({ worker: slot.index, ms: CLOSE_TIMEOUT_MS }, 'a worker is still in a run; waiting for it before closing')
        }))
      }
    }
    await Promise.all(closing)
    this.log.debug('inference pool closed')
  }

  private dispatch (slot: Slot, job: Job): void {
    const id = ++this.nextRunId
    const transfer = new Set<ArrayBuffer>()
    const inputs = job.req.inputs.map(t => {
      const { bytes, buffer } = this.init.transferInputs ? transferable(t.data) : copyForTransfer(t.data)
      transfer.add(buffer)
      return { name: t.name, datatype: t.datatype, shape: t.shape, data: bytes }
    })
    const outputs = job.req.outputs !== undefined && job.req.outputs.length > 0 ? job.req.outputs : undefined
    job.dispatchedAt = performance.now()
    try {
      slot.handle!.run({ type: 'run', id, inputs, outputs }, [...transfer])
    } catch (err) {
      // postMessage refused the data (a detached buffer): the worker never saw the request.
      this.fail(job, new InvalidInferRequestError(`request data cannot be sent to the worker: ${(err as Error).message}`))
      this.pump()
      return
    }
    slot.state = 'busy'
    slot.job = job
    slot.runId = id
  }

  /** Hands waiting requests to idle workers, oldest first. */
  private pump (): void {
    for (const slot of this.slots) {
      if (slot.state !== 'idle') continue
      const job = this.nextJob()
      if (job === undefined) return
      this.dispatch(slot, job)
    }
  }

  private nextJob (): Job | undefined {
    for (const job of this.queue) {
      this.queue.delete(job)
      // Its timer may not have fired yet: do not spend a run on a request nobody waits for.
      if (job.req.deadline <= Date.now()) {
        this.fail(job, new DeadlineError(`deadline passed after ${Math.round(performance.now() - job.enqueuedAt)} ms in the queue`))
        continue
      }
      return job
    }
    return undefined
  }

  private onReply (slot: Slot, handle: WorkerHandle, reply: RunReply): void {
    if (slot.handle !== handle || slot.state !== 'busy' || reply.id !== slot.runId) return
    const job = slot.job!
    const computeMs = performance.now() - job.dispatchedAt
    this.busyDone += computeMs
    slot.job = undefined
    slot.state = 'idle'
    slot.ranSinceStart = true
    slot.failures = 0
    if (reply.type === 'result') {
      this.succeed(job, { outputs: reply.outputs, queueMs: job.dispatchedAt - job.enqueuedAt, computeMs, compute: splitCompute(job.dispatchedAt, computeMs, reply) })
    } else if (reply.code === 'ERR_INVALID_INPUT') {
      this.fail(job, new InvalidInferRequestError(reply.message))
    } else {
      this.fail(job, new InferenceFailedError(`inference failed: ${reply.message}`))
    }
    this.pumpSoon()
  }

  /**
   * The next request goes to the worker after the answer just settled has gone out: the
   * answer's promise chain (router, KServe encoding, the HTTP write) runs in this turn's
   * microtasks, and the hand-off to the worker (a postMessage, the costliest step on the event
   * loop) waits for the check phase. Handing off first made every answer wait for the next
   * request's postMessage; the worker, idle meanwhile, loses a few µs (issue 13, the hot path).
   */
  private pumpSoon (): void {
    if (this.pumpQueued) return
    this.pumpQueued = true
    setImmediate(() => {
      this.pumpQueued = false
      this.pump()
    })
  }

  private onWorkerExit (slot: Slot, handle: WorkerHandle, reason: string): void {
    if (slot.handle !== handle || this.closing !== undefined) return
    slot.handle = undefined
    const job = slot.job
    slot.job = undefined
    if (job !== undefined) {
      this.busyDone += performance.now() - job.dispatchedAt
      this.fail(job, new InferenceFailedError(`worker ${slot.index} died while running the request: ${reason}`, 'ERR_WORKER_EXIT'))
    }
    if (slot.ranSinceStart) slot.failures = 0
    else slot.failures++
    this.log.warn({ worker: slot.index, reason, failures: slot.failures }, 'inference worker died; replacing it')
    this.restart(slot)
  }

  /** Starts a replacement for the slot, after a backoff if the last ones failed; gives up after MAX_RESTART_FAILURES. */
  private restart (slot: Slot): void {
    if (slot.failures >= MAX_RESTART_FAILURES) {
      slot.state = 'dead'
      this.log.error({ worker: slot.index, failures: slot.failures }, 'inference worker keeps failing; not replacing it any more')
      this.failQueueIfNoWorkers()
      return
    }
    slot.state = 'backoff'
    const delay = slot.failures === 0 ? 0 : RESTART_BACKOFF_MS * 2 ** (slot.failures - 1)
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined
      if (this.closing !== undefined) return
      slot.state = 'starting'
      const handle = this.spawn(slot)
      handle.ready.then((info) => {
        if (this.closing !== undefined || slot.handle !== handle) return
        if (JSON.stringify(info.signature) !== JSON.stringify(this.signature)) {
          throw new ModelLoadError(`the model file ${this.init.modelPath} changed: its signature differs from the pool's`)
        }
        slot.state = 'idle'
        if (info.provider !== this.provider.provider) this.log.warn({ worker: slot.index, provider: info.provider, pool: this.provider.provider }, 'a replacement worker runs on another execution provider than the pool')
        this.log.info({ worker: slot.index }, 'inference worker replaced')
        this.pump()
      }).catch((err: unknown) => {
        if (this.closing !== undefined || slot.handle !== handle) return
        slot.handle = undefined
        slot.failures++
        this.log.warn({ worker: slot.index, err: (err as Error).message, failures: slot.failures }, 'replacement inference worker failed to start')
        void handle.terminate().finally(() => { this.restart(slot) })
      })
    }, delay)
  }

  /** Once every slot is given up, nothing will ever serve the queue. */
  private failQueueIfNoWorkers (): void {
    if (this.slots.some(s => s.state !== 'dead')) return
    for (const job of this.queue) this.fail(job, new UnavailableError(`inference pool '${this.init.name}' has no working worker`))
    this.queue.clear()
  }

  private succeed (job: Job, outcome: InferOutcome): void {
    if (this.finish(job)) job.settle.resolve(outcome)
  }

  private fail (job: Job, err: unknown): void {
    if (this.finish(job)) job.settle.reject(err)
  }

  private finish (job: Job): boolean {
    return settlePending(job)
  }
}
