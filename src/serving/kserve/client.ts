import { DecodeError } from '../../util/errors.ts'
import type { DataType, TensorSpec } from '../types.ts'
import { checkShape, checkTensorData, decodeElements, flattenData, isDataType, type TensorValue } from './codec.ts'

/**
 * The client side of the protocol, for `astrad infer` and tests: tensors from human-written
 * JSON values, and decoding of a response (JSON or with binary outputs).
 */

/** The answer of `GET /v2/models/{m}`; inputs/outputs absent until the signature is known. */
export interface ModelMetadata {
  name: string
  versions?: string[]
  platform: string
  inputs?: TensorSpec[]
  outputs?: TensorSpec[]
}

/** A JSON value that is not rectangular, or otherwise not a tensor. */
export class NotATensorError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'NotATensorError'
  }
}

/**
 * JSON.parse that keeps integer literals beyond 2^53 exact, as bigint (JSON.parse source text
 * access), so a 64-bit id typed on the command line reaches the model unrounded.
 */
export function parseJsonExact (text: string): unknown {
  return JSON.parse(text, (_key: string, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value) && context?.source != null && /^-?\d+$/.test(context.source)
      ? BigInt(context.source)
      : value)
}

/**
 * Shape and flat row-major elements of a JSON value: a scalar is shape [], a nested array's
 * shape is read from its nesting and must be rectangular ([[1, 2], [3]] is not a tensor).
 */
export function tensorOfValue (value: unknown): { shape: number[], data: unknown[] } {
  if (!Array.isArray(value)) {
    if (value === null || typeof value === 'object') throw new NotATensorError('expected a number, boolean, string or a nested array of them')
    return { shape: [], data: [value] }
  }
  const shape: number[] = []
  for (let node: unknown = value; Array.isArray(node); node = node[0]) {
    shape.push(node.length)
    if (node.length === 0) break
  }
  let data: unknown[]
  try {
    data = flattenData(value, shape, 'value')
  } catch {
    throw new NotATensorError(`not rectangular: the first entries give shape [${shape.join(', ')}], others differ`)
  }
  const bad = data.find(v => v === null || typeof v === 'object')
  if (bad !== undefined) throw new NotATensorError(`elements must be numbers, booleans or strings, found ${JSON.stringify(bad)}`)
  return { shape, data }
}

/**
 * JSON-ready elements for `datatype`: bigint becomes a decimal string for INT64/UINT64 (the
 * server reads those exactly) and a number otherwise.
 */
export function jsonElements (data: readonly unknown[], datatype: DataType): unknown[] {
  return data.map(v => typeof v === 'bigint' ? (datatype === 'INT64' || datatype === 'UINT64' ? String(v) : Number(v)) : v)
}

/** One output of a decoded response. */
export interface DecodedOutput {
  name: string
  datatype: DataType
  shape: number[]
  /** Binary outputs decode exactly (INT64 as bigint, BYTES as bytes); JSON ones as parsed. */
  values: Array<TensorValue | string>
}

export interface DecodedInferResponse {
  /** The JSON part, parsed. */
  header: Record<string, unknown>
  outputs: DecodedOutput[]
}

/**
 * Decodes an infer response body; `headerLength` is its Inference-Header-Content-Length (binary
 * outputs follow the JSON, in the order of `outputs`, each `binary_data_size` bytes).
 */
export function decodeInferResponse (body: Uint8Array, headerLength?: string): DecodedInferResponse {
  const jsonLength = headerLength != null ? Number(headerLength) : body.length
  if (!Number.isSafeInteger(jsonLength) || jsonLength < 0 || jsonLength > body.length) throw new DecodeError(`bad Inference-Header-Content-Length ${headerLength ?? ''} for a body of ${body.length} bytes`)
  let header: unknown
  try {
    header = parseJsonExact(Buffer.from(body.buffer, body.byteOffset, jsonLength).toString('utf8'))
  } catch (err) {
    throw new DecodeError(`the inference response is not JSON: ${err instanceof Error ? err.message : String(err)}`)
  }
  if (header === null || typeof header !== 'object' || !Array.isArray((header as { outputs?: unknown }).outputs)) throw new DecodeError('the inference response has no "outputs" array')
  let offset = jsonLength
  const outputs = ((header as { outputs: unknown[] }).outputs).map((o, i): DecodedOutput => {
    const out = o as { name?: unknown, datatype?: unknown, shape?: unknown, data?: unknown, parameters?: { binary_data_size?: unknown } }
    if (typeof out.name !== 'string' || !isDataType(out.datatype)) throw new DecodeError(`outputs[${i}] has no valid name or datatype`)
    let shape: number[]
    try {
      shape = checkShape(out.shape, `output '${out.name}'`)
    } catch (err) {
      throw new DecodeError(err instanceof Error ? err.message : String(err))
    }
    const size = out.parameters?.binary_data_size
    if (size === undefined) {
      try {
        return { name: out.name, datatype: out.datatype, shape, values: flattenData(out.data, shape, `output '${out.name}'`) as Array<TensorValue | string> }
      } catch (err) {
        throw new DecodeError(err instanceof Error ? err.message : String(err))
      }
    }
    const n = typeof size === 'bigint' ? Number(size) : size
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || offset + n > body.length) throw new DecodeError(`output '${out.name}': binary_data_size ${String(size)} does not fit the body`)
    const data = body.subarray(offset, offset + n)
    offset += n
    const tensor = { name: out.name, datatype: out.datatype, shape, data }
    try {
      checkTensorData(tensor, `output '${out.name}'`)
      return { name: out.name, datatype: out.datatype, shape, values: decodeElements(tensor) }
    } catch (err) {
      throw new DecodeError(err instanceof Error ? err.message : String(err))
    }
  })
  if (offset !== body.length) throw new DecodeError(`the inference response has ${body.length - offset} bytes beyond its outputs`)
  return { header: header as Record<string, unknown>, outputs }
}
