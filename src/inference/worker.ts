import { endianness } from 'node:os'
import { parentPort, workerData, type MessagePort } from 'node:worker_threads'
import type * as Ort from 'onnxruntime-node'
import type { ModelSignature, Tensor, TensorSpec } from '../serving/types.ts'
import { AstradError } from '../util/errors.ts'
import { elementCount, rawToTyped, transferable, typedToRaw } from './codec.ts'
import { BATCH_DIM, WARMUP_RETRY_DIM } from './constants.ts'
import { TYPED_ARRAY, datatypeFromOrt, ortTypeOf } from './datatypes.ts'
import type { FromWorker, ProviderFailure, ToWorker, WorkerInit } from './messages.ts'

/**
 * One inference worker thread: owns ONE onnxruntime session, runs one request at a time and
 * answers the pool. onnxruntime's run() blocks the thread it is called on, which is why sessions
 * live here and never on the main thread. Started from sources (tests) or, inside the single
 * executable, from a CommonJS bundle of this file (scripts/build.ts) whose onnxruntime binding
 * is loaded from the cache directory instead of node_modules.
 */

type OrtModule = typeof Ort

/** Turns the session's metadata into a KServe signature; refuses what astrad cannot feed. */
function specsOf (kind: 'input' | 'output', metadata: readonly Ort.InferenceSession.ValueMetadata[]): TensorSpec[] {
  return metadata.map(m => {
    if (!m.isTensor) throw new AstradError(`${kind} '${m.name}' is a sequence or map, not a tensor`, 'ERR_MODEL_LOAD')
    const datatype = datatypeFromOrt(m.type)
    if (datatype === undefined) throw new AstradError(`${kind} '${m.name}' has onnxruntime type '${m.type}', which has no KServe datatype`, 'ERR_MODEL_LOAD')
    // A symbolic dimension is a string (its name, possibly empty) in onnxruntime's metadata.
    return { name: m.name, datatype, shape: m.shape.map(d => typeof d === 'number' ? d : -1) }
  })
}

/**
 * Zeros for every input (a scalar input stays shape []). `symbolic` gives the size of each
 * symbolic dimension from its name (onnxruntime reports a symbolic dimension as its name).
 */
function warmupFeeds (ort: OrtModule, metadata: readonly Ort.InferenceSession.ValueMetadata[], symbolic: (name: string) => number): Record<string, Ort.Tensor> {
  const feeds: Record<string, Ort.Tensor> = {}
  for (const m of metadata) {
    if (!m.isTensor) continue // refused by specsOf before any warm-up
    const datatype = datatypeFromOrt(m.type)!
    const shape = m.shape.map(d => typeof d === 'number' ? d : symbolic(d))
    const count = elementCount(shape)
    feeds[m.name] = datatype === 'BYTES'
      ? new ort.Tensor('string', new Array<string>(count).fill(''), shape)
      : new ort.Tensor(ortTypeOf(datatype), new TYPED_ARRAY[datatype](count), shape)
  }
  return feeds
}

/**
 * One warm-up run (allocations, kernel set-up) before the worker reports ready: zeros with every
 * symbolic dimension = 1; if onnxruntime refuses that, batch dimensions = 1 and the others =
 * WARMUP_RETRY_DIM (a window of 1 is too short for some models: Silero VAD's STFT needs ≥ 512
 * samples). Returns undefined, or why no warm-up ran: not fatal, since zeros of a guessed shape
 * say nothing about real inputs (session creation already checked the model and its kernels).
 */
async function warmUp (ort: OrtModule, session: Ort.InferenceSession): Promise<string | undefined> {
  const attempts: Array<(name: string) => number> = [
    () => 1,
    name => BATCH_DIM.test(name) ? 1 : WARMUP_RETRY_DIM
  ]
  const errors: string[] = []
  for (const symbolic of attempts) {
    try {
      await session.run(warmupFeeds(ort, session.inputMetadata, symbolic))
      return undefined
    } catch (err) {
      errors.push(errorText(err))
    }
  }
  return errors.join('; then: ')
}

function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

class SessionWorker {
  private readonly ort: OrtModule
  private readonly session: Ort.InferenceSession
  private readonly port: MessagePort
  private readonly outputNames: string[]
  /** Messages are handled strictly in order: a 'close' waits for the run before it. */
  private chain: Promise<void> = Promise.resolve()

  constructor (ort: OrtModule, session: Ort.InferenceSession, port: MessagePort) {
    this.ort = ort
    this.session = session
    this.port = port
    this.outputNames = [...session.outputNames]
  }

  listen (): void {
    this.port.on('message', (msg: ToWorker) => {
      this.chain = this.chain.then(async () => this.handle(msg))
    })
  }

  private async handle (msg: ToWorker): Promise<void> {
    if (msg.type === 'crash') {
      setImmediate(() => { throw new Error('crash requested') })
      return
    }
    if (msg.type === 'close') {
      try {
        await this.session.release()
      } finally {
        this.port.close() // nothing else keeps the thread alive: it exits
      }
      return
    }
    try {
      const feeds: Record<string, Ort.Tensor> = {}
      for (const t of msg.inputs) feeds[t.name] = new this.ort.Tensor(ortTypeOf(t.datatype), rawToTyped(t.datatype, t.data), t.shape)
      const names = msg.outputs ?? this.outputNames
      const startedAt = performance.timeOrigin + performance.now()
      const results = await this.session.run(feeds, names)
      const endedAt = performance.timeOrigin + performance.now()
      const outputs: Tensor[] = []
      const transfer: ArrayBuffer[] = []
      for (const name of names) {
        const value = results[name]
        if (value === undefined) throw new Error(`onnxruntime returned no output '${name}'`)
        const datatype = datatypeFromOrt(value.type)
        if (datatype === undefined) throw new Error(`output '${name}' has onnxruntime type '${value.type}', which has no KServe datatype`)
        const { bytes, buffer } = transferable(typedToRaw(datatype, value.data))
        if (!transfer.includes(buffer)) transfer.push(buffer)
        outputs.push({ name, datatype, shape: [...value.dims], data: bytes })
      }
      this.post({ type: 'result', id: msg.id, outputs, startedAt, endedAt }, transfer)
    } catch (err) {
      const code = err instanceof AstradError ? err.code : 'ERR_INFERENCE'
      this.post({ type: 'failed', id: msg.id, message: errorText(err), code })
    }
  }

  private post (msg: FromWorker, transfer: ArrayBuffer[] = []): void {
    this.port.postMessage(msg, transfer)
  }
}

async function main (): Promise<void> {
  const port = parentPort
  if (port === null) throw new Error('the inference worker must run in a worker thread')
  const init = workerData as WorkerInit
  const post = (msg: FromWorker): void => { port.postMessage(msg) }
  let session: Ort.InferenceSession | undefined
  // A 'close' that arrives while the model loads is honoured once loading returns: the thread
  // is never terminated inside onnxruntime (see WorkerHandle.close).
  let closeRequested = false
  const early = (msg: ToWorker): void => { if (msg.type === 'close') closeRequested = true }
  port.on('message', early)
  try {
    // Tensors are views over little-endian wire bytes (codec.ts).
    if (endianness() !== 'LE') throw new Error('astrad inference needs a little-endian host')
    const t0 = performance.now()
    // onnxruntime-common stores float16 data as a Float16Array where the runtime has one (Node
    // 24 does), and onnxruntime-node 1.30's binding reads a Float16Array's byte length as 0:
    // every FP16 input fails with "not enough space: expected N, got 0" (microsoft/onnxruntime
    // PR #32323, open). Without the global, float16 stays a Uint16Array, which the binding
    // reads correctly. Only this worker's global is touched; astrad itself never uses it.
    delete (globalThis as { Float16Array?: unknown }).Float16Array
    // Loaded here, not at the top, so a missing or unloadable binding is a clean load failure.
    const ort: OrtModule = await import('onnxruntime-node')
    // onnxruntime logs to stderr from native code, past astrad's logger. Level 'error' silences
    // the warning it prints once when ~/.cache is not writable ("Failed to persist telemetry
    // device ID", harmless); the session's logSeverityLevel 4 (fatal only) below silences the
    // error line of every failed run (its text is in the error the request gets anyway).
    ort.env.logLevel = 'error'
    // The first provider that starts wins; each one that does not is reported with its reason
    // (the pool says so: a fallback is never silent). onnxruntime itself runs the nodes a GPU
    // provider has no kernel for on the CPU.
    const providers = init.executionProviders ?? ['cpu']
    const skipped: ProviderFailure[] = []
    let provider: string | undefined
    for (const ep of providers) {
      try {
        session = await ort.InferenceSession.create(init.modelPath, {
          executionProviders: [ep],
          intraOpNumThreads: init.intraOpThreads,
          // One request at a time per session: no inter-op parallelism to pay threads for.
          interOpNumThreads: 1,
          executionMode: 'sequential',
          graphOptimizationLevel: 'all',
          logSeverityLevel: 4
        })
        provider = ep
        break
      } catch (err) {
        skipped.push({ provider: ep, reason: errorText(err) })
      }
    }
    if (session === undefined || provider === undefined) {
      throw new Error(`no execution provider could start: ${skipped.map(f => `${f.provider}: ${f.reason}`).join('; ')}`)
    }
    const signature: ModelSignature = { inputs: specsOf('input', session.inputMetadata), outputs: specsOf('output', session.outputMetadata) }
    const loadMs = performance.now() - t0
    const t1 = performance.now()
    const warmupError = await warmUp(ort, session)
    port.off('message', early)
    if (closeRequested) {
      await session.release().catch(() => {})
      port.close()
      return
    }
    post({ type: 'ready', signature, loadMs, warmupMs: performance.now() - t1, warmupError, provider, skipped })
    new SessionWorker(ort, session, port).listen()
  } catch (err) {
    port.off('message', early)
    await session?.release().catch(() => {})
    post({ type: 'load-failed', message: errorText(err) })
    port.close()
  }
}

// No top-level await: inside the single executable this file is a CommonJS bundle. A rejection
// (not in a worker at all) is unhandled on purpose: the pool sees it as the worker's 'error'.
void main()
