import type { IncomingMessage } from 'node:http'
import type { Registry } from 'prom-client'
import { BodyAbortedError, HttpError, acceptedCoding, encodeBody, type RpcRequest, type RpcResponse, type RpcServer } from '../../rpc/index.ts'
import type { Logger } from '../../util/logger.ts'
import { AstradError, errorMessage } from '../../util/errors.ts'
import { VERSION } from '../../version.ts'
import {
  DeadlineError, InvalidInferRequestError, ModelNotFoundError, ServingError, UnavailableError,
  type InferRequest, type InferResult, type ModelStatus, type ServingBackend
} from '../types.ts'
import {
  DEFAULT_RETRY_AFTER_S, DEFAULT_TIMEOUT_MS, EXTENSIONS, HEADER_LENGTH_HEADER, MAX_INFER_BODY_BYTES, MAX_JSON_INFER_BODY_BYTES,
  MAX_TIMEOUT_MS, SERVER_NAME, TIMEOUT_HEADER
} from './constants.ts'
import { decodeInferRequest, type DecodedInferRequest } from './request.ts'
import { encodeInferResponse } from './response.ts'
import { createInferenceMetrics, type FailureReason, type ModelVersion } from './metrics.ts'

export interface KServeComponents {
  /** Prometheus registry for the astrad_inference_* metrics; none are kept without one. */
  registry?: Registry
  logger: Logger
  /**
   * Whether `GET /v2/health/ready` says ready. The daemon passes its own state (joined, and on a
   * scheduler able to route), which also holds for daemons without a backend (node-only).
   * @default a backend is present and its serverReady() is true
   */
  ready?: () => boolean
  /**
   * Requests waiting for a worker in this daemon's replicas, by model (app) and version
   * (generation), for astrad_inference_pending_request_count; read at scrape.
   */
  pending?: () => Array<ModelVersion & { count: number }>
  /**
   * Whether this daemon routes inference (has the scheduler role). One without it answers 503
   * ERR_NOT_SCHEDULER saying where to send requests, not that it is starting or stopping.
   * @default true
   */
  scheduler?: boolean
}

/** The client closed its connection before the answer: nobody is waiting for it any more. */
class ClientGoneError extends AstradError {
  constructor () {
    super('the client closed the connection', 'ERR_CANCELED')
    this.name = 'ClientGoneError'
  }
}

/** A JSON infer body over MAX_JSON_INFER_BODY_BYTES: 413 that points to the binary extension. */
class JsonBodyTooLargeError extends HttpError {
  constructor () {
    super(413, `a JSON infer request body may have at most ${MAX_JSON_INFER_BODY_BYTES} bytes (JSON is parsed on the event loop); send large tensors with the binary tensor data extension (header Inference-Header-Content-Length, bodies up to ${MAX_INFER_BODY_BYTES} bytes; docs/kserve.md)`, 'ERR_TOO_LARGE')
    this.name = 'JsonBodyTooLargeError'
  }
}

/**
 * A daemon without the scheduler role never serves inference: no Retry-After, since retrying
 * here cannot help.
 */
class NotSchedulerError extends HttpError {
  constructor () {
    super(503, "this daemon has no scheduler role; send inference requests to a scheduler's RPC port (astrad status lists roles)", 'ERR_NOT_SCHEDULER')
    this.name = 'NotSchedulerError'
  }
}

/**
 * The Open Inference Protocol (KServe v2) on the RPC port. `backend()` is undefined while the
 * daemon cannot serve (starting, stopped): health/ready answers not ready, the rest 503.
 * Health routes are open (probes carry no token); the others follow the port's token.
 */
export function registerKServeRoutes (rpc: RpcServer, backend: () => ServingBackend | undefined, components: KServeComponents): void {
  const log = components.logger
  const known = (): ModelVersion[] => {
    const b = backend()
    if (b == null) return []
    return b.models().flatMap(model => {
      const version = b.model(model)?.versions.at(-1)
      return version != null ? [{ model, version }] : []
    })
  }
  const metrics = components.registry != null ? createInferenceMetrics(components.registry, { known, pending: components.pending }) : undefined

  const serving = (): ServingBackend => {
    if (components.scheduler === false) throw new NotSchedulerError()
    const b = backend()
    if (b == null) throw new UnavailableError('this daemon is not serving (starting or stopping)', 'ERR_UNAVAILABLE', DEFAULT_RETRY_AFTER_S)
    return b
  }
  const modelOf = (b: ServingBackend, req: RpcRequest): ModelStatus => {
    const name = req.params.model ?? ''
    const status = b.model(name)
    if (status == null) throw new ModelNotFoundError(name)
    const version = req.params.version
    if (version != null && !status.versions.includes(version)) {
      throw new ServingError(`model '${name}' has no version '${version}' (versions: ${status.versions.join(', ') || 'none'})`, 'ERR_MODEL_NOT_FOUND', 404)
    }
    return status
  }

  const serverReady = components.ready ?? (() => backend()?.serverReady() === true)
  rpc.route('GET', '/v2/health/live', () => ({ status: 200, body: { live: true } }), { open: true })
  rpc.route('GET', '/v2/health/ready', () => {
    const ready = serverReady()
    return { status: ready ? 200 : 503, body: { ready } }
  }, { open: true })

  rpc.route('GET', '/v2', () => ({ status: 200, body: { name: SERVER_NAME, version: VERSION, extensions: [...EXTENSIONS] } }))

  const metadata = (req: RpcRequest): RpcResponse => guard(log, () => {
    const m = modelOf(serving(), req)
    return {
      status: 200,
      body: {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        // Known once a replica has loaded the model; until then the fields are left out
        // rather than claiming a model without inputs.
        ...(m.signature != null ? { inputs: m.signature.inputs, outputs: m.signature.outputs } : {})
      }
    }
  })
  rpc.route('GET', '/v2/models/:model', metadata)
  rpc.route('GET', '/v2/models/:model/versions/:version', metadata)

  const modelReady = (req: RpcRequest): RpcResponse => guard(log, () => {
    const m = modelOf(serving(), req)
    return { status: m.ready ? 200 : 503, body: { name: m.name, ready: m.ready } }
  })
  rpc.route('GET', '/v2/models/:model/ready', modelReady)
  rpc.route('GET', '/v2/models/:model/versions/:version/ready', modelReady)

  const infer = async (req: RpcRequest): Promise<RpcResponse> => {
    const started = performance.now()
    const startedAt = Date.now()
    let model: string | undefined
    let version = ''
    try {
      const b = serving()
      const status = modelOf(b, req)
      model = status.name
      // The version asked for, else the current one; a success counts under the version that ran it.
      version = req.params.version ?? status.versions.at(-1) ?? ''
      const headerTimeoutMs = timeoutHeader(req.headers[TIMEOUT_HEADER])
      // JSON.parse runs on the event loop: a JSON body gets a lower cap than a binary one.
      const binary = req.headers[HEADER_LENGTH_HEADER] !== undefined
      const body = await req.body(binary ? MAX_INFER_BODY_BYTES : MAX_JSON_INFER_BODY_BYTES).catch((err: unknown) => {
        if (err instanceof BodyAbortedError) throw new ClientGoneError()
        if (!binary && err instanceof HttpError && err.status === 413) throw new JsonBodyTooLargeError()
        throw err
      })
      const decoded = decodeInferRequest(body, req.headers[HEADER_LENGTH_HEADER], status.signature)
      const budgetMs = timeoutMs(headerTimeoutMs, decoded.timeoutUs)
      const result = await runInfer(b, status.name, decoded, { deadline: startedAt + budgetMs, budgetMs }, req.raw)
      const encoded = encodeInferResponse(result, decoded, status.name)
      const requestMs = performance.now() - started
      metrics?.success(status.name, result.version ?? version, {
        batch: batchSize(status, decoded),
        requestMs,
        queueMs: result.queueMs,
        // A backend that does not split its compute time reports it all as the run.
        computeInputMs: result.compute?.inputMs ?? 0,
        computeInferMs: result.compute?.inferMs ?? result.computeMs,
        computeOutputMs: result.compute?.outputMs ?? 0
      })
      // Compressed when the client asks (Triton's response_compression_algorithm); the
      // Inference-Header-Content-Length still counts the decoded JSON, as Triton's clients expect.
      const coding = acceptedCoding(req.headers['accept-encoding'])
      const payload = coding !== undefined ? await encodeBody(encoded.body, coding) : encoded.body
      if (coding !== undefined) encoded.headers['content-encoding'] = coding
      // Content-Length always: the binary extension requires it to give the full body length.
      return { status: 200, bytes: payload, headers: { ...encoded.headers, 'content-length': String(payload.length) } }
    } catch (err) {
      const res = errorResponse(log, err, model)
      if (model != null) metrics?.failure(model, version, failureReason(err, res.status))
      return res
    }
  }
  rpc.route('POST', '/v2/models/:model/infer', infer)
  rpc.route('POST', '/v2/models/:model/versions/:version/infer', infer)
}

/** Runs a synchronous handler, answering a failure in the KServe error form. */
function guard (log: Logger, fn: () => RpcResponse): RpcResponse {
  try {
    return fn()
  } catch (err) {
    return errorResponse(log, err)
  }
}

/**
 * A failure as the spec's error object, `{"error": "..."}` and nothing else, with the status
 * the error carries; 429 and 503 say when to come back (Retry-After, seconds).
 */
function errorResponse (log: Logger, err: unknown, model?: string): RpcResponse {
  let status = 500
  const headers: Record<string, string> = {}
  if (err instanceof ServingError) {
    status = err.status
    if (status === 429 || status === 503) headers['retry-after'] = String(Math.max(0, Math.ceil(err.retryAfter ?? DEFAULT_RETRY_AFTER_S)))
  } else if (err instanceof HttpError) {
    status = err.status
    Object.assign(headers, err.headers)
    // The rest of an oversized or undecodable body is not worth reading: close once answered.
    if (status === 413 || status === 415) headers.connection = 'close'
  }
  if (status >= 500 && status !== 503 && status !== 504) log.warn({ model, err: errorMessage(err), code: err instanceof AstradError ? err.code : undefined }, 'inference request failed')
  else log.debug({ model, status, err: errorMessage(err) }, 'inference request refused')
  return { status, body: { error: errorMessage(err) }, headers }
}

/**
 * Triton's failure reasons: REJECTED the queue was full (429), CANCELED the client left,
 * BACKEND the model failed (500: onnxruntime error, a worker died, a bad output), OTHER the rest
 * (bad requests, no replica ready, deadline passed, body refused).
 */
function failureReason (err: unknown, status: number): FailureReason {
  if (err instanceof ClientGoneError) return 'CANCELED'
  if (status === 429) return 'REJECTED'
  if (status === 500) return 'BACKEND'
  return 'OTHER'
}

/** The astrad-timeout-ms header: a positive integer of milliseconds, or absent. */
function timeoutHeader (value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !/^\d{1,12}$/.test(value.trim()) || Number(value) === 0) {
    throw new InvalidInferRequestError(`${TIMEOUT_HEADER} must be a positive integer of milliseconds, got ${JSON.stringify(value)}`)
  }
  return Number(value)
}

/** The request's time budget: the smaller of header and "timeout" parameter, else the default; at most MAX_TIMEOUT_MS. */
function timeoutMs (headerMs: number | undefined, paramUs: number | undefined): number {
  const given = [headerMs, paramUs != null ? Math.ceil(paramUs / 1000) : undefined].filter((x): x is number => x != null)
  return Math.min(given.length > 0 ? Math.min(...given) : DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)
}

/**
 * Inferences in a request for Triton's `inference_count`: the leading dimension of the first
 * input when the model declares that dimension variable (a batch), else 1.
 */
function batchSize (status: ModelStatus, req: DecodedInferRequest): number {
  const first = req.inputs[0]
  const spec = status.signature?.inputs.find(s => s.name === first?.name)
  return first != null && spec?.shape[0] === -1 && first.shape.length > 0 ? (first.shape[0] ?? 1) : 1
}

/**
 * Calls the backend under the request's deadline and the client's connection: the backend gets
 * a signal that aborts at the deadline or when the client goes away, and the answer is a 504
 * at the deadline even if the backend does not honour its signal.
 */
async function runInfer (b: ServingBackend, model: string, decoded: DecodedInferRequest, time: { deadline: number, budgetMs: number }, raw: IncomingMessage): Promise<InferResult> {
  const { deadline, budgetMs } = time
  const socket = raw.socket
  if (socket.destroyed) throw new ClientGoneError()
  const ac = new AbortController()
  // One promise settles the request: the backend's answer, the deadline or the client leaving,
  // whichever comes first (no Promise.race of three: a request allocates as little as it can).
  const { promise, resolve, reject } = Promise.withResolvers<InferResult>()
  const stop = (err: Error): void => {
    ac.abort(err)
    reject(err)
  }
  const gone = (): void => { stop(new ClientGoneError()) }
  socket.once('close', gone)
  const timer = setTimeout(() => { stop(new DeadlineError(`no answer within the request's deadline of ${budgetMs} ms`)) }, Math.max(0, deadline - Date.now()))
  const req: InferRequest = { inputs: decoded.inputs, deadline }
  if (decoded.id != null) req.id = decoded.id
  if (decoded.outputs != null) req.outputs = decoded.outputs.map(o => o.name)
  if (decoded.parameters != null) req.parameters = decoded.parameters
  b.infer(model, req, ac.signal).then(resolve, reject)
  try {
    return await promise
  } finally {
    clearTimeout(timer)
    socket.off('close', gone)
  }
}
