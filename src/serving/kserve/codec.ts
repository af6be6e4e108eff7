import { DATATYPES, DATATYPE_SIZE, InvalidInferRequestError, type DataType, type Tensor } from '../types.ts'
import { MAX_RANK, MAX_TENSOR_BYTES } from './constants.ts'
import { fromHalfBits, toHalfBits, FP16_MAX } from './fp16.ts'

/**
 * Tensor data of the Open Inference Protocol: JSON values ⇄ raw little-endian bytes
 * (`Tensor.data`), and the binary layout of the binary tensor data extension. Pure functions;
 * every error is an InvalidInferRequestError (400) naming the tensor (`what`).
 *
 * JSON element rules (docs/kserve.md "Datatypes"):
 * - BOOL: `true` / `false` only.
 * - integers: JSON numbers that are integers within the type's range. INT64 and UINT64 also
 *   take decimal strings ("-9223372036854775808"), and integer literals beyond 2^53 are read
 *   exactly from the request text (see {@link InexactIntegerError}).
 * - FP16/FP32/FP64: finite JSON numbers whose magnitude fits the type (rounded to nearest
 *   even), or the strings "NaN", "Infinity", "-Infinity" (protobuf's JSON convention).
 * - BYTES: strings, stored as their UTF-8 bytes.
 */

const isLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
if (!isLittleEndian) throw new Error('astrad tensors are little-endian; this platform is big-endian')

/** A flattened JSON element. bigint appears only after the exact re-parse of a request. */
export type JsonElement = number | boolean | string | bigint

/** A decoded element: numbers, booleans, 64-bit integers as bigint, BYTES elements as bytes. */
export type TensorValue = number | boolean | bigint | Uint8Array

/**
 * Thrown (not to the client) when a 64-bit integer tensor holds a JSON number that is an
 * integer but beyond 2^53: JSON.parse has already rounded it. The request decoder then parses
 * the text again with the exact source of each number literal and decodes once more.
 */
export class InexactIntegerError extends Error {
  constructor () {
    super('a 64-bit integer beyond 2^53 needs an exact re-parse')
    this.name = 'InexactIntegerError'
  }
}

const INT_RANGE: Readonly<Partial<Record<DataType, readonly [number, number]>>> = {
  UINT8: [0, 0xff],
  UINT16: [0, 0xffff],
  UINT32: [0, 0xffffffff],
  INT8: [-0x80, 0x7f],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff]
}
const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
const UINT64_MAX = 2n ** 64n - 1n
/** Largest finite float32 plus half an ulp: anything at or beyond rounds to infinity. */
const FP32_MAX = 3.4028234663852886e38
const DECIMAL = /^-?\d+$/

const utf8 = new TextEncoder()
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

export function isDataType (x: unknown): x is DataType {
  return typeof x === 'string' && (DATATYPES as readonly string[]).includes(x)
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function elementCount (shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

const fmtShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`

/**
 * Validates a request shape: an array of at most MAX_RANK non-negative integers whose product
 * is a safe integer.
 */
export function checkShape (shape: unknown, what: string): number[] {
  if (!Array.isArray(shape)) throw new InvalidInferRequestError(`${what}: "shape" must be an array of non-negative integers`)
  if (shape.length > MAX_RANK) throw new InvalidInferRequestError(`${what}: shape has ${shape.length} dimensions (at most ${MAX_RANK})`)
  let n = 1
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new InvalidInferRequestError(`${what}: shape ${JSON.stringify(shape, (_k, v: unknown) => typeof v === 'bigint' ? String(v) : v)} has a dimension that is not a non-negative integer`)
    }
    n *= d
    if (!Number.isSafeInteger(n)) throw new InvalidInferRequestError(`${what}: shape ${fmtShape(shape as number[])} has too many elements`)
  }
  return shape as number[]
}

/** Raw size of `count` elements; for BYTES the smallest possible (a 4-byte length each). */
function minBytes (datatype: DataType, count: number): number {
  return count * (DATATYPE_SIZE[datatype] ?? 4)
}

/**
 * Flattens JSON tensor data, which the spec allows in exactly two forms: flat (row-major), or
 * nested exactly as the shape ("natural multi-dimensional representation").
 */
export function flattenData (data: unknown, shape: readonly number[], what: string): unknown[] {
  if (!Array.isArray(data)) throw new InvalidInferRequestError(`${what}: "data" must be an array`)
  const count = elementCount(shape)
  if (!data.some(Array.isArray)) {
    if (data.length !== count) throw new InvalidInferRequestError(`${what}: shape ${fmtShape(shape)} has ${count} element${count === 1 ? '' : 's'} but "data" has ${data.length}`)
    return data
  }
  const out: unknown[] = []
  const walk = (node: unknown, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (Array.isArray(node)) throw new InvalidInferRequestError(`${what}: "data" is nested deeper than shape ${fmtShape(shape)} at data${path}`)
      out.push(node)
      return
    }
    if (!Array.isArray(node) || node.length !== shape[depth]) {
      throw new InvalidInferRequestError(`${what}: nested "data" does not match shape ${fmtShape(shape)}: data${path} ${Array.isArray(node) ? `has ${node.length} entries, expected ${shape[depth] ?? 0}` : 'is not an array'} (give data flat or nested exactly as the shape)`)
    }
    for (let i = 0; i < node.length; i++) walk(node[i], depth + 1, `${path}[${i}]`)
  }
  walk(data, 0, '')
  return out
}

function badElement (what: string, i: number, v: unknown, expected: string): InvalidInferRequestError {
  const shown = typeof v === 'bigint' ? String(v) : JSON.stringify(v) ?? String(v)
  return new InvalidInferRequestError(`${what}: element ${i} (${shown.length > 40 ? shown.slice(0, 40) + '…' : shown}) ${expected}`)
}

function toInt64 (v: unknown, i: number, datatype: 'INT64' | 'UINT64', what: string, exact: boolean): bigint {
  let b: bigint
  if (typeof v === 'bigint') {
    b = v
  } else if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw badElement(what, i, v, `is not an integer (${datatype})`)
    if (!Number.isSafeInteger(v)) {
      if (!exact) throw new InexactIntegerError()
      throw badElement(what, i, v, `cannot be read exactly: write integers beyond 2^53 as plain digits or as a decimal string (${datatype})`)
    }
    b = BigInt(v)
  } else if (typeof v === 'string' && DECIMAL.test(v) && v.length <= 21) {
    b = BigInt(v)
  } else {
    throw badElement(what, i, v, `is not an integer or a decimal string (${datatype})`)
  }
  const [lo, hi] = datatype === 'INT64' ? [INT64_MIN, INT64_MAX] : [0n, UINT64_MAX]
  if (b < lo || b > hi) throw badElement(what, i, v, `is out of range for ${datatype} (${lo}..${hi})`)
  return b
}

function toFloat (v: unknown, i: number, datatype: 'FP16' | 'FP32' | 'FP64', what: string): number {
  let x: number
  if (typeof v === 'number') x = v
  else if (typeof v === 'bigint') x = Number(v)
  else if (v === 'NaN') return NaN
  else if (v === 'Infinity') return Infinity
  else if (v === '-Infinity') return -Infinity
  else throw badElement(what, i, v, `is not a number (${datatype}; "NaN", "Infinity" and "-Infinity" are accepted as strings)`)
  const max = datatype === 'FP16' ? 65520 : datatype === 'FP32' ? FP32_MAX : Infinity
  if (!(Math.abs(x) < max)) throw badElement(what, i, v, `is out of range for ${datatype} (largest finite: ${datatype === 'FP16' ? FP16_MAX : datatype === 'FP32' ? '3.4028235e38' : Number.MAX_VALUE})`)
  return x
}

/** Encodes BYTES elements in the binary layout: per element a u32 LE length, then the bytes. */
export function encodeBytesElements (items: readonly Uint8Array[]): Uint8Array {
  let total = 0
  for (const it of items) total += 4 + it.length
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let off = 0
  for (const it of items) {
    view.setUint32(off, it.length, true)
    out.set(it, off + 4)
    off += 4 + it.length
  }
  return out
}

/**
 * Splits BYTES data in the binary layout into its elements (views, no copy). Throws unless it
 * holds exactly `count` well-framed elements.
 */
export function splitBytesElements (data: Uint8Array, count: number, what: string): Uint8Array[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const out: Uint8Array[] = []
  let off = 0
  while (off < data.length) {
    if (off + 4 > data.length) throw new InvalidInferRequestError(`${what}: BYTES data ends inside the 4-byte length of element ${out.length}`)
    const len = view.getUint32(off, true)
    if (off + 4 + len > data.length) throw new InvalidInferRequestError(`${what}: BYTES element ${out.length} declares ${len} bytes but only ${data.length - off - 4} remain`)
    out.push(data.subarray(off + 4, off + 4 + len))
    off += 4 + len
    if (out.length > count) break
  }
  if (out.length !== count) throw new InvalidInferRequestError(`${what}: BYTES data holds ${out.length > count ? 'more than ' + count : out.length} element${out.length === 1 ? '' : 's'}, shape needs ${count}`)
  return out
}

/**
 * Encodes flattened JSON elements as raw little-endian bytes of `datatype`. `exact` says the
 * request was re-parsed with exact integer literals (a rounded one is then an error, not a
 * reason to re-parse).
 */
export function encodeElements (values: readonly unknown[], datatype: DataType, what: string, exact = false): Uint8Array {
  const n = values.length
  switch (datatype) {
    case 'BOOL': {
      const out = new Uint8Array(n)
      for (let i = 0; i < n; i++) {
        const v = values[i]
        if (typeof v !== 'boolean') throw badElement(what, i, v, 'is not true or false (BOOL)')
        out[i] = v ? 1 : 0
      }
      return out
    }
    case 'UINT8': case 'UINT16': case 'UINT32': case 'INT8': case 'INT16': case 'INT32': {
      const [lo, hi] = INT_RANGE[datatype] as readonly [number, number]
      const arr = datatype === 'UINT8'
        ? new Uint8Array(n)
        : datatype === 'UINT16' ? new Uint16Array(n) : datatype === 'UINT32' ? new Uint32Array(n) : datatype === 'INT8' ? new Int8Array(n) : datatype === 'INT16' ? new Int16Array(n) : new Int32Array(n)
      for (let i = 0; i < n; i++) {
        const v = values[i]
        if (typeof v !== 'number' || !Number.isInteger(v)) {
          if (typeof v === 'bigint') throw badElement(what, i, v, `is out of range for ${datatype} (${lo}..${hi})`)
          throw badElement(what, i, v, `is not an integer (${datatype})`)
        }
        if (v < lo || v > hi) throw badElement(what, i, v, `is out of range for ${datatype} (${lo}..${hi})`)
        arr[i] = v
      }
      return new Uint8Array(arr.buffer)
    }
    case 'INT64': case 'UINT64': {
      const arr = datatype === 'INT64' ? new BigInt64Array(n) : new BigUint64Array(n)
      for (let i = 0; i < n; i++) arr[i] = toInt64(values[i], i, datatype, what, exact)
      return new Uint8Array(arr.buffer)
    }
    case 'FP16': {
      const arr = new Uint16Array(n)
      for (let i = 0; i < n; i++) arr[i] = toHalfBits(toFloat(values[i], i, 'FP16', what))
      return new Uint8Array(arr.buffer)
    }
    case 'FP32': case 'FP64': {
      const arr = datatype === 'FP32' ? new Float32Array(n) : new Float64Array(n)
      for (let i = 0; i < n; i++) arr[i] = toFloat(values[i], i, datatype, what)
      return new Uint8Array(arr.buffer)
    }
    case 'BYTES': {
      const items: Uint8Array[] = []
      for (let i = 0; i < n; i++) {
        const v = values[i]
        if (typeof v !== 'string') throw badElement(what, i, v, 'is not a string (BYTES)')
        items.push(utf8.encode(v))
      }
      return encodeBytesElements(items)
    }
  }
}

/** Builds a tensor from the JSON form of an input (`shape` already validated). */
export function tensorFromJson (name: string, datatype: DataType, shape: number[], data: unknown, what: string, exact = false): Tensor {
  const count = elementCount(shape)
  if (minBytes(datatype, count) > MAX_TENSOR_BYTES) throw new InvalidInferRequestError(`${what}: shape ${fmtShape(shape)} of ${datatype} exceeds ${MAX_TENSOR_BYTES} bytes`)
  const values = flattenData(data, shape, what)
  return { name, datatype, shape, data: encodeElements(values, datatype, what, exact) }
}

/**
 * Checks the raw bytes of a tensor against its datatype and shape: exact size for fixed-size
 * types, bytes 0/1 for BOOL, well-framed elements for BYTES.
 */
export function checkTensorData (t: Tensor, what: string): void {
  const count = elementCount(t.shape)
  const size = DATATYPE_SIZE[t.datatype]
  if (size == null) {
    splitBytesElements(t.data, count, what)
    return
  }
  if (t.data.length !== count * size) {
    throw new InvalidInferRequestError(`${what}: ${t.data.length} bytes of data, but shape ${fmtShape(t.shape)} of ${t.datatype} needs ${count * size}`)
  }
  if (t.datatype === 'BOOL') {
    const i = t.data.findIndex(b => b > 1)
    if (i >= 0) throw new InvalidInferRequestError(`${what}: BOOL element ${i} is byte ${t.data[i] ?? 0}, not 0 or 1`)
  }
}

/** The tensor's bytes at an offset that typed arrays of any element size can view. */
function alignedBytes (data: Uint8Array): Uint8Array {
  return data.byteOffset % 8 === 0 ? data : copyBytes(data)
}

/**
 * Decodes a tensor's bytes (sizes already checked) into values: numbers, booleans, bigint for
 * INT64/UINT64, byte arrays for BYTES.
 */
export function decodeElements (t: Tensor, what = `tensor '${t.name}'`): TensorValue[] {
  const count = elementCount(t.shape)
  if (t.datatype === 'BYTES') return splitBytesElements(t.data, count, what)
  const d = alignedBytes(t.data)
  const b = d.buffer
  const o = d.byteOffset
  switch (t.datatype) {
    case 'BOOL': return Array.from(d.subarray(0, count), x => x !== 0)
    case 'UINT8': return Array.from(d.subarray(0, count))
    case 'UINT16': return Array.from(new Uint16Array(b, o, count))
    case 'UINT32': return Array.from(new Uint32Array(b, o, count))
    case 'INT8': return Array.from(new Int8Array(b, o, count))
    case 'INT16': return Array.from(new Int16Array(b, o, count))
    case 'INT32': return Array.from(new Int32Array(b, o, count))
    case 'INT64': return Array.from(new BigInt64Array(b, o, count))
    case 'UINT64': return Array.from(new BigUint64Array(b, o, count))
    case 'FP16': return Array.from(new Uint16Array(b, o, count), fromHalfBits)
    case 'FP32': return Array.from(new Float32Array(b, o, count))
    case 'FP64': return Array.from(new Float64Array(b, o, count))
  }
}

/** A float as JSON: shortest round-trip digits; -0 as -0.0; NaN/±Infinity as strings. */
function floatJson (x: number): string {
  if (Number.isFinite(x)) return Object.is(x, -0) ? '-0.0' : String(x)
  return Number.isNaN(x) ? '"NaN"' : x > 0 ? '"Infinity"' : '"-Infinity"'
}

/**
 * The JSON text of a tensor's data as a flat row-major array. Exact: 64-bit integers are
 * written digit for digit (JSON numbers have no precision limit; JSON.stringify would refuse
 * bigint), floats with the shortest digits that read back to the same value. BYTES elements
 * must be UTF-8 text; other bytes can only travel as binary data.
 */
export function dataToJson (t: Tensor, what = `output '${t.name}'`): string {
  if (t.datatype === 'FP32' || t.datatype === 'FP64') {
    // Fast path (the common answer): finite floats with no -0 are what JSON.stringify writes.
    const d = alignedBytes(t.data)
    const count = elementCount(t.shape)
    const view = t.datatype === 'FP32' ? new Float32Array(d.buffer, d.byteOffset, count) : new Float64Array(d.buffer, d.byteOffset, count)
    let plain = true
    for (let i = 0; i < view.length; i++) {
      const x = view[i]!
      if (!Number.isFinite(x) || (x === 0 && 1 / x < 0)) { plain = false; break }
    }
    if (plain) return JSON.stringify(Array.from(view))
  }
  const values = decodeElements(t, what)
  let parts: string[]
  switch (t.datatype) {
    case 'FP16': case 'FP32': case 'FP64':
      parts = (values as number[]).map(floatJson)
      break
    case 'BYTES':
      parts = (values as Uint8Array[]).map((v, i) => {
        try {
          return JSON.stringify(utf8Strict.decode(v))
        } catch {
          throw new InvalidInferRequestError(`${what}: BYTES element ${i} is not UTF-8 text and cannot be sent as JSON; request the output with "parameters": {"binary_data": true}`)
        }
      })
      break
    default:
      parts = values.map(String)
  }
  return `[${parts.join(',')}]`
}

/** A copy in a fresh ArrayBuffer (Buffer#slice would return a view of the same memory). */
function copyBytes (data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length)
  out.set(data)
  return out
}
