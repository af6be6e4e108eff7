import { AstradError } from '../util/errors.ts'

/**
 * Types shared by the serving path: the KServe v2 HTTP layer, the router, the node-to-node
 * `/astra/infer/1.0.0` protocol and the onnxruntime worker pools. A tensor travels as its raw
 * little-endian bytes from the edge to the worker and back: JSON is converted once at the edge,
 * the binary extension not at all.
 */

/** KServe v2 tensor datatypes (Open Inference Protocol "Tensor Data Types"). */
export const DATATYPES = ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES'] as const
export type DataType = typeof DATATYPES[number]

/** Bytes per element of each fixed-size datatype (BYTES is variable: absent). */
export const DATATYPE_SIZE: Readonly<Partial<Record<DataType, number>>> = {
  BOOL: 1, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8, INT8: 1, INT16: 2, INT32: 4, INT64: 8, FP16: 2, FP32: 4, FP64: 8
}

/**
 * A tensor: name, datatype, concrete shape and data as raw little-endian bytes, row-major.
 * BYTES tensors use the KServe binary layout: per element a u32 LE length then the bytes.
 */
export interface Tensor {
  name: string
  datatype: DataType
  shape: number[]
  data: Uint8Array
}

/** An input or output as the model declares it; -1 marks a symbolic (variable) dimension. */
export interface TensorSpec {
  name: string
  datatype: DataType
  shape: number[]
}

export interface ModelSignature {
  inputs: TensorSpec[]
  outputs: TensorSpec[]
}

/** One inference call after the edge has decoded it. */
export interface InferRequest {
  /** The client's request id, echoed back. */
  id?: string
  inputs: Tensor[]
  /** Output names the client asked for; undefined = all outputs. */
  outputs?: string[]
  /** Absolute deadline (epoch ms): past it the work is abandoned with DeadlineError. */
  deadline: number
  /**
   * The request's KServe `parameters` (a pipeline's switch reads them); not sent on to replicas.
   * 64-bit integers beyond double precision arrive as strings of their digits.
   */
  parameters?: Record<string, string | number | boolean>
}

export interface InferResult {
  id?: string
  /** Model (app) name and version, for the KServe response. */
  model: string
  version?: string
  outputs: Tensor[]
  /** Time spent queued and computing on the node that ran it (ms). */
  queueMs: number
  computeMs: number
  /**
   * `computeMs` split as Triton's compute_input/infer/output durations (ms): hand-off to the
   * run's start, the run, the run's end to the outputs back in the pool. Absent from backends
   * that do not measure it.
   */
  compute?: ComputeTiming
}

export interface ComputeTiming {
  inputMs: number
  inferMs: number
  outputMs: number
}

/** What the KServe HTTP layer knows about one model (= one app). */
export interface ModelStatus {
  name: string
  versions: string[]
  /** KServe platform string. */
  platform: string
  /** Known once a replica has loaded the model. */
  signature?: ModelSignature
  /** At least one replica is ready to serve. */
  ready: boolean
}

/**
 * What the KServe HTTP layer calls. Implemented by the scheduler's router (remote and local
 * replicas); tests implement it with a fake.
 */
export interface ServingBackend {
  /** The daemon is up and can route (health/ready). */
  serverReady: () => boolean
  /** Names of the models (apps) this daemon can serve. */
  models: () => string[]
  model: (name: string) => ModelStatus | undefined
  /** Runs one request; rejects with the errors below. */
  infer: (name: string, req: InferRequest, signal?: AbortSignal) => Promise<InferResult>
}

/**
 * A failure on the serving path. `status` is the HTTP status the KServe layer answers with;
 * `code` is stable and crosses the wire (the infer protocol sends it back to the router).
 */
export class ServingError extends AstradError {
  readonly status: number
  /** Seconds, for 429 and 503 answers' Retry-After. */
  readonly retryAfter?: number
  constructor (message: string, code: string, status: number, retryAfter?: number) {
    super(message, code)
    this.name = 'ServingError'
    this.status = status
    this.retryAfter = retryAfter
  }
}

/** 400: wrong input name, shape, datatype, size, malformed body. */
export class InvalidInferRequestError extends ServingError {
  constructor (message: string) {
    super(message, 'ERR_INVALID_INPUT', 400)
    this.name = 'InvalidInferRequestError'
  }
}

/** 404: no such model (app). */
export class ModelNotFoundError extends ServingError {
  constructor (name: string, message = `unknown model '${name}'`) {
    super(message, 'ERR_MODEL_NOT_FOUND', 404)
    this.name = 'ModelNotFoundError'
  }
}

/** 429: the replica's (or every replica's) queue is full; retry after a moment. */
export class QueueFullError extends ServingError {
  constructor (message: string, retryAfter = 1) {
    super(message, 'ERR_QUEUE_FULL', 429, retryAfter)
    this.name = 'QueueFullError'
  }
}

/** 503: no replica is ready (being placed, loading, all ejected) or the node is draining. */
export class UnavailableError extends ServingError {
  constructor (message: string, code = 'ERR_UNAVAILABLE', retryAfter = 1) {
    super(message, code, 503, retryAfter)
    this.name = 'UnavailableError'
  }
}

/**
 * 503: the infer stream failed below the model (a read allowance ran out, the stream was reset
 * or cut, a frozen node woke up past its timers): the replica did not answer, so the router
 * retries it on another node. Only an answer from the replica is a model error.
 */
export class InferTransportError extends UnavailableError {
  constructor (message: string) {
    super(message, 'ERR_UNAVAILABLE_TRANSPORT')
    this.name = 'InferTransportError'
  }
}

/** 504: the request's deadline passed before an answer. */
export class DeadlineError extends ServingError {
  constructor (message: string) {
    super(message, 'ERR_DEADLINE', 504)
    this.name = 'DeadlineError'
  }
}

/** 500: the model failed while running (onnxruntime error, worker died). */
export class InferenceFailedError extends ServingError {
  constructor (message: string, code = 'ERR_INFERENCE') {
    super(message, code, 500)
    this.name = 'InferenceFailedError'
  }
}

/** Rebuilds a ServingError from a code and message received over the wire. */
export function servingErrorFromCode (code: string, message: string, retryAfter?: number): ServingError {
  switch (code) {
    case 'ERR_INVALID_INPUT': return new InvalidInferRequestError(message)
    case 'ERR_MODEL_NOT_FOUND': return new ModelNotFoundError('', message)
    case 'ERR_QUEUE_FULL': return new QueueFullError(message, retryAfter)
    case 'ERR_DEADLINE': return new DeadlineError(message)
    case 'ERR_INFERENCE': return new InferenceFailedError(message)
    case 'ERR_UNAVAILABLE_TRANSPORT': return new InferTransportError(message)
    default:
      if (code.startsWith('ERR_UNAVAILABLE') || code === 'ERR_DRAINING' || code === 'ERR_NO_REPLICA') return new UnavailableError(message, code, retryAfter)
      return new InferenceFailedError(message, code)
  }
}
