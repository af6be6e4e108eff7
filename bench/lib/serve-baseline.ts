// The baseline of bench:serve's overhead comparison: the least an HTTP server must do to
// serve one ONNX model with the Open Inference Protocol's JSON body, and nothing else.
//
// One process: node:http on 127.0.0.1 (keep-alive), `threads` worker_threads each holding
// its own onnxruntime session (the same layout as an astrad replica with `threads` workers;
// run() never blocks the event loop), a FIFO queue in front of them, JSON decoded and
// validated against the model's inputs, tensors moved to the worker by transfer (no copy),
// outputs encoded back to KServe JSON. No routing, no metrics, no deadlines, no queue bound.
//
//   POST /v2/models/{name}/infer   KServe v2 JSON in, KServe v2 JSON out
//   GET  /v2/models/{name}/ready   200 once every worker has loaded (and warmed) the model
//   GET  /v2/health/live|ready     200
//
// startBaseline() forks this file (--baseline-child); the child starts its workers (this same
// file again, in worker_threads) and reports its port over IPC once it is ready.

import fs from 'node:fs'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { forkTs, type Managed } from './procs.ts'

export interface BaselineOptions {
  /** The ONNX model file. */
  model: string
  /** Model name in the URL (the astrad app name, so both answer the same path). */
  name: string
  /** Worker threads, one onnxruntime session each. */
  threads: number
  /** onnxruntime intra-op threads per session. */
  intraOpThreads: number
  /** A KServe JSON request each worker runs WARMUP_RUNS times before the server is ready. */
  warmupRequest?: string
  /** How long loading and warming up may take. */
  timeoutMs?: number
}

/** A model input or output as onnxruntime reports it (symbolic dims are strings). */
export interface BaselineTensorMeta {
  name: string
  type: string
  shape: Array<number | string>
}

export interface Baseline {
  port: number
  proc: Managed
  inputs: BaselineTensorMeta[]
  outputs: BaselineTensorMeta[]
}

const SELF = fileURLToPath(import.meta.url)
const CHILD_FLAG = '--baseline-child'
/** Request bodies above this are refused (413): the same order as a KServe server's cap. */
const MAX_BODY_BYTES = 64 * 1024 * 1024
/** Runs of the warm-up request per worker: the first few runs allocate onnxruntime's arenas. */
const WARMUP_RUNS = 10
/** Idle keep-alive connections close after this (Node's default; the load keeps them busy). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000

/** Starts the baseline server in its own process; resolves once it answers. */
export async function startBaseline (o: BaselineOptions): Promise<Baseline> {
  const args = [CHILD_FLAG, '--model', o.model, '--name', o.name, '--threads', String(o.threads), '--intra-op-threads', String(o.intraOpThreads)]
  if (o.warmupRequest !== undefined) args.push('--warmup-request', o.warmupRequest)
  const proc = forkTs('baseline', SELF, args)
  const timeoutMs = o.timeoutMs ?? 60_000
  return await new Promise<Baseline>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`baseline server not ready within ${timeoutMs} ms: ${proc.tail.join('\n')}`)) }, timeoutMs)
    proc.child.once('message', (m: ReadyMessage) => {
      clearTimeout(timer)
      resolve({ port: m.port, proc, inputs: m.inputs, outputs: m.outputs })
    })
    void proc.exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`baseline server exited ${code ?? signal} before it was ready: ${proc.tail.join('\n')}`))
    })
  })
}

// ---- wire between the server and its workers ------------------------------------------

type OrtType = 'float32' | 'float64' | 'int8' | 'uint8' | 'int32' | 'int64'
type TypedData = Float32Array | Float64Array | Int8Array | Uint8Array | Int32Array | BigInt64Array

interface WireTensor {
  name: string
  type: OrtType
  dims: number[]
  data: TypedData
}

interface WorkerInit { baselineWorker: true, model: string, intraOpThreads: number }
type ToWorker = { id: number, feeds: WireTensor[] }
type FromWorker =
  | { type: 'loaded', inputs: BaselineTensorMeta[], outputs: BaselineTensorMeta[] }
  | { type: 'result', id: number, outputs: WireTensor[] }
  | { type: 'failed', id: number, error: string }

interface ReadyMessage { type: 'ready', port: number, inputs: BaselineTensorMeta[], outputs: BaselineTensorMeta[] }

/** KServe v2 datatype of each onnxruntime tensor type this baseline handles. */
const KSERVE_TYPE: Record<OrtType, string> = { float32: 'FP32', float64: 'FP64', int8: 'INT8', uint8: 'UINT8', int32: 'INT32', int64: 'INT64' }

function isOrtType (t: string): t is OrtType {
  return Object.hasOwn(KSERVE_TYPE, t)
}

// ---- worker thread ---------------------------------------------------------------------

async function workerMain (init: WorkerInit): Promise<void> {
  const port = parentPort
  if (port == null) throw new Error('worker without a parent port')
  const { default: ort } = await import('onnxruntime-node')
  // The session options astrad's inference workers use (src/inference/worker.ts).
  const session = await ort.InferenceSession.create(init.model, {
    intraOpNumThreads: init.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all'
  })
  const feedsOf = (tensors: WireTensor[]): Record<string, InstanceType<typeof ort.Tensor>> =>
    Object.fromEntries(tensors.map(t => [t.name, new ort.Tensor(t.type, t.data, t.dims)]))
  const meta = (list: typeof session.inputMetadata): BaselineTensorMeta[] =>
    list.map(m => ({ name: m.name, type: m.isTensor ? m.type : 'non-tensor', shape: m.isTensor ? [...m.shape] : [] }))
  port.postMessage({ type: 'loaded', inputs: meta(session.inputMetadata), outputs: meta(session.outputMetadata) } satisfies FromWorker)
  port.on('message', (m: ToWorker) => {
    session.run(feedsOf(m.feeds)).then(out => {
      const outputs: WireTensor[] = []
      for (const name of session.outputNames) {
        const t = out[name]
        if (t === undefined || !isOrtType(t.type)) throw new Error(`output ${name}: unsupported type ${t?.type ?? 'missing'}`)
        // A copy this thread owns, so its buffer can be transferred.
        outputs.push({ name, type: t.type, dims: [...t.dims], data: (t.data as TypedData).slice() })
      }
      port.postMessage({ type: 'result', id: m.id, outputs } satisfies FromWorker, outputs.map(o => o.data.buffer as ArrayBuffer))
    }).catch((err: unknown) => {
      port.postMessage({ type: 'failed', id: m.id, error: err instanceof Error ? err.message : String(err) } satisfies FromWorker)
    })
  })
}

// ---- server process --------------------------------------------------------------------

class BadRequest extends Error {
  readonly status: number
  constructor (message: string, status = 400) {
    super(message)
    this.name = 'BadRequest'
    this.status = status
  }
}

/** One worker thread: requests by id, one at a time (the Pool never sends a second). */
class WorkerClient {
  readonly worker: Worker
  private readonly pending = new Map<number, { resolve: (t: WireTensor[]) => void, reject: (e: Error) => void }>()
  private nextId = 0

  constructor (worker: Worker) {
    this.worker = worker
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'loaded') return
      const p = this.pending.get(m.id)
      this.pending.delete(m.id)
      if (m.type === 'result') p?.resolve(m.outputs)
      else p?.reject(new Error(m.error))
    })
  }

  async run (feeds: WireTensor[]): Promise<WireTensor[]> {
    return await new Promise((resolve, reject) => {
      const id = this.nextId++
      this.pending.set(id, { resolve, reject })
      this.worker.postMessage({ id, feeds } satisfies ToWorker, feeds.map(f => f.data.buffer as ArrayBuffer))
    })
  }
}

interface Pending { feeds: WireTensor[], resolve: (t: WireTensor[]) => void, reject: (e: Error) => void }

/** Workers run one request each at a time; a FIFO queue (unbounded) in front of them. */
class Pool {
  private readonly idle: WorkerClient[] = []
  private readonly queue: Pending[] = []

  add (w: WorkerClient): void { this.release(w) }

  async run (feeds: WireTensor[]): Promise<WireTensor[]> {
    return await new Promise((resolve, reject) => {
      const p = { feeds, resolve, reject }
      const w = this.idle.pop()
      if (w !== undefined) this.dispatch(w, p)
      else this.queue.push(p)
    })
  }

  private dispatch (w: WorkerClient, p: Pending): void {
    w.run(p.feeds).then(p.resolve, p.reject).finally(() => { this.release(w) })
  }

  private release (w: WorkerClient): void {
    const next = this.queue.shift()
    if (next !== undefined) this.dispatch(w, next)
    else this.idle.push(w)
  }
}

function typedArray (type: OrtType, n: number): TypedData {
  switch (type) {
    case 'float32': return new Float32Array(n)
    case 'float64': return new Float64Array(n)
    case 'int8': return new Int8Array(n)
    case 'uint8': return new Uint8Array(n)
    case 'int32': return new Int32Array(n)
    case 'int64': return new BigInt64Array(n)
  }
}

/** Decodes and checks a KServe v2 JSON request against the model's inputs. */
function decodeRequest (text: string, inputs: BaselineTensorMeta[]): { id?: string, feeds: WireTensor[] } {
  let doc: unknown
  try { doc = JSON.parse(text) } catch { throw new BadRequest('body is not JSON') }
  const req = doc as { id?: unknown, inputs?: unknown }
  if (typeof req !== 'object' || req == null || !Array.isArray(req.inputs)) throw new BadRequest("'inputs' must be an array")
  const seen = new Set<string>()
  const feeds: WireTensor[] = []
  for (const raw of req.inputs as unknown[]) {
    const t = raw as { name?: unknown, shape?: unknown, datatype?: unknown, data?: unknown }
    const meta = inputs.find(m => m.name === t.name)
    if (meta === undefined || typeof t.name !== 'string') throw new BadRequest(`unknown input '${String(t.name)}'`)
    if (seen.has(t.name)) throw new BadRequest(`input '${t.name}' given twice`)
    seen.add(t.name)
    if (!isOrtType(meta.type) || t.datatype !== KSERVE_TYPE[meta.type]) throw new BadRequest(`input '${t.name}': datatype must be ${isOrtType(meta.type) ? KSERVE_TYPE[meta.type] : meta.type}`)
    if (!Array.isArray(t.shape) || t.shape.length !== meta.shape.length || !t.shape.every((d, i) => Number.isInteger(d) && d >= 0 && (typeof meta.shape[i] !== 'number' || meta.shape[i] === d))) {
      throw new BadRequest(`input '${t.name}': shape ${JSON.stringify(t.shape)} does not fit [${meta.shape.join(', ')}]`)
    }
    const dims = t.shape as number[]
    const count = dims.reduce((a, b) => a * b, 1)
    if (!Array.isArray(t.data)) throw new BadRequest(`input '${t.name}': data must be an array`)
    const values = (t.data as unknown[]).flat(Infinity)
    if (values.length !== count) throw new BadRequest(`input '${t.name}': ${values.length} values for shape [${dims.join(', ')}]`)
    const data = typedArray(meta.type, count)
    for (let i = 0; i < count; i++) {
      const v = values[i]
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new BadRequest(`input '${t.name}': value ${i} is not a finite number`)
      if (data instanceof BigInt64Array) {
        if (!Number.isSafeInteger(v)) throw new BadRequest(`input '${t.name}': value ${i} is not an integer`)
        data[i] = BigInt(v)
      } else {
        data[i] = v
      }
    }
    feeds.push({ name: t.name, type: meta.type, dims, data })
  }
  const missing = inputs.filter(m => !seen.has(m.name))
  if (missing.length > 0) throw new BadRequest(`missing input(s): ${missing.map(m => m.name).join(', ')}`)
  return { ...(typeof req.id === 'string' ? { id: req.id } : {}), feeds }
}

function encodeResponse (model: string, id: string | undefined, outputs: WireTensor[]): string {
  return JSON.stringify({
    model_name: model,
    ...(id !== undefined ? { id } : {}),
    outputs: outputs.map(o => ({
      name: o.name,
      datatype: KSERVE_TYPE[o.type],
      shape: o.dims,
      data: o.data instanceof BigInt64Array ? Array.from(o.data, Number) : Array.from(o.data)
    }))
  })
}

function flag (argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}

async function serverMain (argv: string[]): Promise<void> {
  const model = flag(argv, '--model')
  const name = flag(argv, '--name') ?? 'model'
  const threads = Number(flag(argv, '--threads') ?? '1')
  const intraOpThreads = Number(flag(argv, '--intra-op-threads') ?? '1')
  const warmupFile = flag(argv, '--warmup-request')
  if (model === undefined) throw new Error('--model FILE is required')
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${threads}`)

  const pool = new Pool()
  const workers: Worker[] = []
  const load = async (): Promise<{ client: WorkerClient, inputs: BaselineTensorMeta[], outputs: BaselineTensorMeta[] }> => {
    const w = new Worker(SELF, { workerData: { baselineWorker: true, model, intraOpThreads } satisfies WorkerInit })
    workers.push(w)
    return await new Promise((resolve, reject) => {
      w.once('error', reject)
      w.once('exit', code => { reject(new Error(`worker exited ${code} while loading`)) })
      w.once('message', (m: FromWorker) => {
        if (m.type !== 'loaded') { reject(new Error(`worker: unexpected ${m.type}`)); return }
        w.removeAllListeners('exit')
        w.on('exit', code => { process.stderr.write(`baseline worker exited ${code}\n`); process.exit(1) })
        resolve({ client: new WorkerClient(w), inputs: m.inputs, outputs: m.outputs })
      })
    })
  }
  const loaded = await Promise.all(Array.from({ length: threads }, load))
  const signature = { inputs: loaded[0]?.inputs ?? [], outputs: loaded[0]?.outputs ?? [] }
  // Each worker runs the warm-up request before it takes traffic (astrad warms a replica up
  // before it reports it ready).
  const warmupText = warmupFile !== undefined ? fs.readFileSync(warmupFile, 'utf8') : undefined
  for (const { client } of loaded) {
    if (warmupText !== undefined) {
      for (let i = 0; i < WARMUP_RUNS; i++) await client.run(decodeRequest(warmupText, signature.inputs).feeds)
    }
    pool.add(client)
  }

  const server = http.createServer({ keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, (req, res) => {
    const reply = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }
    const fail = (err: unknown): void => {
      const status = err instanceof BadRequest ? err.status : 500
      reply(status, JSON.stringify({ error: err instanceof Error ? err.message : String(err) }))
    }
    const url = req.url ?? '/'
    const m = /^\/v2\/models\/([^/]+)\/(infer|ready)$/.exec(url)
    if (req.method === 'GET' && (url === '/v2/health/live' || url === '/v2/health/ready')) { reply(200, '{}'); return }
    if (m == null) { fail(new BadRequest(`no route ${req.method ?? ''} ${url}`, 404)); return }
    if (decodeURIComponent(m[1] as string) !== name) { fail(new BadRequest(`unknown model '${m[1] ?? ''}'`, 404)); return }
    if (m[2] === 'ready' && req.method === 'GET') { reply(200, '{}'); return }
    if (m[2] !== 'infer' || req.method !== 'POST') { fail(new BadRequest(`method ${req.method ?? ''} not allowed`, 405)); return }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_BODY_BYTES) { fail(new BadRequest(`body over ${MAX_BODY_BYTES} bytes`, 413)); req.destroy() } else chunks.push(c)
    })
    req.on('end', () => {
      if (res.headersSent) return
      let decoded: { id?: string, feeds: WireTensor[] }
      try {
        decoded = decodeRequest(Buffer.concat(chunks).toString('utf8'), signature.inputs)
      } catch (err) { fail(err); return }
      pool.run(decoded.feeds).then(outputs => { reply(200, encodeResponse(name, decoded.id, outputs)) }, fail)
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  const addr = server.address()
  const port = typeof addr === 'object' && addr != null ? addr.port : 0
  const stopAll = (): void => {
    server.close()
    server.closeAllConnections()
    void Promise.all(workers.map(async w => await w.terminate())).then(() => { process.exit(0) })
  }
  process.once('SIGTERM', stopAll)
  process.once('SIGINT', stopAll)
  // The parent may go away without a signal (killed): do not outlive it.
  process.once('disconnect', stopAll)
  process.send?.({ type: 'ready', port, ...signature } satisfies ReadyMessage)
}

if (!isMainThread && (workerData as Partial<WorkerInit> | null)?.baselineWorker === true) {
  workerMain(workerData as WorkerInit).catch((err: unknown) => {
    process.stderr.write(`baseline worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  })
} else if (isMainThread && process.argv[1] === SELF && process.argv.includes(CHILD_FLAG)) {
  serverMain(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`baseline server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  })
}
