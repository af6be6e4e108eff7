import { DATATYPES, DATATYPE_SIZE, InvalidInferRequestError, type ModelSignature, type Tensor, type TensorSpec } from '../types.ts'
import { InexactIntegerError, checkShape, checkTensorData, elementCount, encodeBytesElements, isDataType, tensorFromJson } from './codec.ts'
import { MAX_TENSORS } from './constants.ts'
import { validateInputs } from '../../inference/validate.ts'

/**
 * Decoding of an infer request body (inference_rest.md "Inference Request JSON Object" plus
 * Triton's binary tensor data extension) into tensors, and the edge check against the model's
 * signature. Everything a client can get wrong is an InvalidInferRequestError (400).
 */

/** One entry of the request's `outputs`. */
export interface RequestedOutput {
  name: string
  /** The output's `binary_data` parameter; undefined = follow `binary_data_output`. */
  binary?: boolean
}

export interface DecodedInferRequest {
  id?: string
  inputs: Tensor[]
  /** The outputs asked for, in order; undefined = every output of the model. */
  outputs?: RequestedOutput[]
  /** Outputs without their own `binary_data` are returned binary (`binary_data_output`). */
  binaryOutput: boolean
  /** The request's "timeout" parameter in microseconds (Triton's schedule-policy extension); 0/absent = server default. */
  timeoutUs?: number
  /** The request's parameters (a pipeline's switch cases read them); absent when it has none. */
  parameters?: Record<string, string | number | boolean>
}

/** A parameter value: the spec allows string, number, boolean (bigint: an exact re-parse). */
type ParamValue = string | number | boolean | bigint

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)

function checkParameters (p: unknown, what: string): Record<string, ParamValue> {
  if (p === undefined) return {}
  if (!isObject(p)) throw new InvalidInferRequestError(`${what}: "parameters" must be an object`)
  for (const [k, v] of Object.entries(p)) {
    if (!['string', 'number', 'boolean', 'bigint'].includes(typeof v)) throw new InvalidInferRequestError(`${what}: parameter "${k}" must be a string, number or boolean`)
  }
  return p as Record<string, ParamValue>
}

function boolParam (params: Record<string, ParamValue>, key: string, what: string): boolean | undefined {
  const v = params[key]
  if (v === undefined) return undefined
  if (typeof v !== 'boolean') throw new InvalidInferRequestError(`${what}: parameter "${key}" must be true or false`)
  return v
}

/** A non-negative integer parameter (int64 in Triton's extensions). */
function countParam (params: Record<string, ParamValue>, key: string, what: string): number | undefined {
  const v = params[key]
  if (v === undefined) return undefined
  if (typeof v === 'bigint' && v >= 0n) return Number(v)
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new InvalidInferRequestError(`${what}: parameter "${key}" must be a non-negative integer`)
  return v
}

/**
 * Reads the Inference-Header-Content-Length header: undefined when absent (the whole body is
 * JSON), else the JSON part's length.
 */
function headerLength (value: string | string[] | undefined, bodyLength: number): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value.trim())) throw new InvalidInferRequestError(`Inference-Header-Content-Length must be one non-negative integer, got ${JSON.stringify(value)}`)
  const n = Number(value.trim())
  if (n > bodyLength) throw new InvalidInferRequestError(`Inference-Header-Content-Length ${n} exceeds the body (${bodyLength} bytes)`)
  return n
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true })

/** Binary tensors sent without the header are the likeliest cause of an unreadable body. */
const noHeaderHint = (header: unknown): string => header === undefined ? ' (binary tensor data after the JSON needs the Inference-Header-Content-Length header)' : ''

/**
 * JSON.parse that keeps integer literals beyond 2^53 exact (as bigint), using the literal's
 * source text (ES2025 JSON.parse source text access, in Node ≥ 21). Slower than a plain parse:
 * used only when a 64-bit integer tensor needs it.
 */
function parseExact (text: string): unknown {
  return JSON.parse(text, (_key: string, value: unknown, context?: { source?: string }) => {
    if (typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value) && context?.source != null && /^-?\d+$/.test(context.source)) {
      return BigInt(context.source)
    }
    return value
  })
}

/**
 * Decodes an infer request body. `header` is the Inference-Header-Content-Length value;
 * `signature` (when the model's is known) is needed for a raw binary request and checks the
 * inputs and requested outputs at the edge.
 */
export function decodeInferRequest (body: Uint8Array, header: string | string[] | undefined, signature?: ModelSignature): DecodedInferRequest {
  const jsonLength = headerLength(header, body.length) ?? body.length
  if (jsonLength === 0 && header !== undefined) return decodeRawBinary(body, signature)
  let text: string
  try {
    text = utf8Strict.decode(body.subarray(0, jsonLength))
  } catch {
    throw new InvalidInferRequestError(`the JSON inference header is not valid UTF-8${noHeaderHint(header)}`)
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw new InvalidInferRequestError(`the inference request is not valid JSON: ${err instanceof Error ? err.message : String(err)}${noHeaderHint(header)}`)
  }
  const binary = body.subarray(jsonLength)
  let decoded: DecodedInferRequest
  try {
    decoded = decodeDocument(doc, binary, false)
  } catch (err) {
    if (!(err instanceof InexactIntegerError)) throw err
    decoded = decodeDocument(parseExact(text), binary, true)
  }
  // The same check the replica's pool makes (src/inference/validate.ts), here before routing.
  if (signature != null) validateInputs(signature, { inputs: decoded.inputs, outputs: decoded.outputs?.map(o => o.name), deadline: 0 })
  return decoded
}

function decodeDocument (doc: unknown, binary: Uint8Array, exact: boolean): DecodedInferRequest {
  if (!isObject(doc)) throw new InvalidInferRequestError('the inference request must be a JSON object')
  if (doc.id !== undefined && typeof doc.id !== 'string') throw new InvalidInferRequestError('"id" must be a string')
  const params = checkParameters(doc.parameters, 'request')
  const binaryOutput = boolParam(params, 'binary_data_output', 'request') ?? false
  const timeoutUs = countParam(params, 'timeout', 'request')

  if (!Array.isArray(doc.inputs)) throw new InvalidInferRequestError('"inputs" must be an array of input tensors')
  if (doc.inputs.length > MAX_TENSORS) throw new InvalidInferRequestError(`at most ${MAX_TENSORS} inputs`)
  const inputs: Tensor[] = []
  const names = new Set<string>()
  let offset = 0
  doc.inputs.forEach((input: unknown, i: number) => {
    if (!isObject(input)) throw new InvalidInferRequestError(`inputs[${i}] must be an object`)
    const { name, datatype } = input
    if (typeof name !== 'string' || name === '') throw new InvalidInferRequestError(`inputs[${i}]: "name" must be a non-empty string`)
    const what = `input '${name}'`
    if (names.has(name)) throw new InvalidInferRequestError(`${what} is given twice`)
    names.add(name)
    if (!isDataType(datatype)) throw new InvalidInferRequestError(`${what}: unknown datatype ${JSON.stringify(datatype)} (one of ${DATATYPES.join(', ')})`)
    const shape = checkShape(input.shape, what)
    const size = countParam(checkParameters(input.parameters, what), 'binary_data_size', what)
    if (size === undefined) {
      if (input.data === undefined) throw new InvalidInferRequestError(`${what}: "data" is missing (or give "binary_data_size" and send the bytes after the JSON)`)
      inputs.push(tensorFromJson(name, datatype, shape, input.data, what, exact))
      return
    }
    if (input.data !== undefined) throw new InvalidInferRequestError(`${what}: has both "data" and "binary_data_size"`)
    if (offset + size > binary.length) {
      throw new InvalidInferRequestError(`${what}: binary_data_size ${size} runs past the end of the body (${binary.length - offset} binary bytes left${binary.length === 0 ? '; is the Inference-Header-Content-Length header missing?' : ''})`)
    }
    const tensor = { name, datatype, shape, data: aligned(binary.subarray(offset, offset + size)) }
    checkTensorData(tensor, what)
    inputs.push(tensor)
    offset += size
  })
  if (offset !== binary.length) throw new InvalidInferRequestError(`the body has ${binary.length - offset} bytes after the JSON header and the binary inputs it declares (binary_data_size must add up to the rest of the body)`)

  let outputs: RequestedOutput[] | undefined
  if (doc.outputs !== undefined) {
    if (!Array.isArray(doc.outputs)) throw new InvalidInferRequestError('"outputs" must be an array')
    if (doc.outputs.length > MAX_TENSORS) throw new InvalidInferRequestError(`at most ${MAX_TENSORS} outputs`)
    const seen = new Set<string>()
    outputs = doc.outputs.map((o: unknown, i: number) => {
      if (!isObject(o) || typeof o.name !== 'string' || o.name === '') throw new InvalidInferRequestError(`outputs[${i}] must be an object with a non-empty "name"`)
      if (seen.has(o.name)) throw new InvalidInferRequestError(`output '${o.name}' is requested twice`)
      seen.add(o.name)
      return { name: o.name, binary: boolParam(checkParameters(o.parameters, `output '${o.name}'`), 'binary_data', `output '${o.name}'`) }
    })
    // An empty list asks for nothing in particular: every output, like no list.
    if (outputs.length === 0) outputs = undefined
  }
  return {
    ...(doc.id !== undefined ? { id: doc.id as string } : {}),
    inputs,
    ...(outputs !== undefined ? { outputs } : {}),
    binaryOutput,
    ...(timeoutUs !== undefined && timeoutUs > 0 ? { timeoutUs } : {}),
    ...(Object.keys(params).length > 0 ? { parameters: plainParameters(params) } : {})
  }
}

/** Parameters as JSON values: a 64-bit integer re-parsed exactly travels as its digits. */
function plainParameters (params: Record<string, ParamValue>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {}
  for (const [k, v] of Object.entries(params)) out[k] = typeof v === 'bigint' ? String(v) : v
  return out
}

/**
 * Binary input bytes start wherever the JSON header ended; consumers view them as typed arrays,
 * which need aligned offsets. Tensors from the edge always start 8-byte aligned.
 */
function aligned (data: Uint8Array): Uint8Array {
  return data.byteOffset % 8 === 0 ? data : copyBytes(data)
}

const fmtShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`

/**
 * A raw binary request (Inference-Header-Content-Length: 0; Triton's extension): the whole
 * body is the data of the model's only input. The shape comes from the signature: a BYTES input
 * must have shape [1] (the body is that one element); otherwise a symbolic leading (batch)
 * dimension is taken as 1 and at most one other symbolic dimension is deduced from the size.
 * Every output is returned binary.
 */
function decodeRawBinary (body: Uint8Array, signature?: ModelSignature): DecodedInferRequest {
  if (signature == null) throw new InvalidInferRequestError('a raw binary request (Inference-Header-Content-Length: 0) needs the model\'s signature, which is not known yet; send a JSON header')
  if (signature.inputs.length !== 1) throw new InvalidInferRequestError(`a raw binary request (Inference-Header-Content-Length: 0) works only for a model with one input; this one has ${signature.inputs.length}`)
  const spec = signature.inputs[0] as TensorSpec
  const what = `input '${spec.name}'`
  if (spec.datatype === 'BYTES') {
    if (spec.shape.length !== 1 || (spec.shape[0] !== 1 && spec.shape[0] !== -1)) throw new InvalidInferRequestError(`${what}: a raw binary BYTES input must have shape [1]; the model's is ${fmtShape(spec.shape)}`)
    return { inputs: [{ name: spec.name, datatype: 'BYTES', shape: [1], data: encodeBytesElements([body]) }], binaryOutput: true }
  }
  const size = DATATYPE_SIZE[spec.datatype] as number
  if (body.length % size !== 0) throw new InvalidInferRequestError(`${what}: a raw binary body of ${body.length} bytes is not a whole number of ${spec.datatype} elements`)
  const elements = body.length / size
  const shape = spec.shape.map((d, i) => i === 0 && d === -1 && spec.shape.filter(x => x === -1).length > 1 ? 1 : d)
  const symbolic = shape.flatMap((d, i) => d === -1 ? [i] : [])
  if (symbolic.length > 1) throw new InvalidInferRequestError(`${what}: shape ${fmtShape(spec.shape)} has more than one variable dimension besides the batch; a raw binary request cannot tell them apart`)
  const known = elementCount(shape.filter(d => d !== -1))
  if (symbolic.length === 1) {
    if (known === 0 ? elements !== 0 : elements % known !== 0) throw new InvalidInferRequestError(`${what}: ${elements} elements do not fit shape ${fmtShape(spec.shape)}`)
    shape[symbolic[0] as number] = known === 0 ? 0 : elements / known
  } else if (known !== elements) {
    throw new InvalidInferRequestError(`${what}: shape ${fmtShape(spec.shape)} needs ${known * size} bytes, the body has ${body.length}`)
  }
  const tensor: Tensor = { name: spec.name, datatype: spec.datatype, shape, data: aligned(body) }
  checkTensorData(tensor, what)
  return { inputs: [tensor], binaryOutput: true }
}


/** A copy in a fresh ArrayBuffer (Buffer#slice would return a view of the same memory). */
function copyBytes (data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length)
  out.set(data)
  return out
}
