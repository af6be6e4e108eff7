import { isUtf8 } from 'node:buffer'
import { DATATYPE_SIZE, InvalidInferRequestError, type DataType } from '../serving/types.ts'
import { TYPED_ARRAY, type NumericData } from './datatypes.ts'

/**
 * Raw tensor bytes (KServe layout, little-endian, row-major) to and from what onnxruntime takes.
 * Typed arrays are views over the same bytes where alignment allows, so a tensor is not copied
 * on its way into a session. Assumes a little-endian host (x64; the worker checks at start).
 */

/** What an onnxruntime tensor holds: a typed array, or strings for BYTES ('string' tensors). */
export type TensorData = NumericData | string[]

/** Number of elements of a shape; a scalar (shape []) has one. */
export function elementCount (shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

/** Bytes of the u32 length that precedes each BYTES element. */
const BYTES_LENGTH_PREFIX = 4

/**
 * Walks a BYTES tensor (per element: u32 LE length, then that many bytes) and returns the
 * number of elements, or a reason when the framing is broken or an element is not UTF-8
 * (onnxruntime string tensors hold text: other bytes could not round-trip).
 */
export function scanBytesElements (bytes: Uint8Array): { count: number } | { error: string } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let offset = 0
  let count = 0
  while (offset < bytes.byteLength) {
    if (offset + BYTES_LENGTH_PREFIX > bytes.byteLength) return { error: `element ${count}: truncated length prefix` }
    const length = view.getUint32(offset, true)
    offset += BYTES_LENGTH_PREFIX
    if (offset + length > bytes.byteLength) return { error: `element ${count}: length ${length} runs past the end of the data` }
    if (!isUtf8(bytes.subarray(offset, offset + length))) return { error: `element ${count}: not UTF-8 text` }
    offset += length
    count++
  }
  return { count }
}

/** Splits a well-formed BYTES tensor into its elements (views, no copy). */
export function decodeBytesElements (bytes: Uint8Array): Uint8Array[] {
  const scan = scanBytesElements(bytes)
  if ('error' in scan) throw new InvalidInferRequestError(`malformed BYTES data: ${scan.error}`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const elements: Uint8Array[] = []
  let offset = 0
  while (offset < bytes.byteLength) {
    const length = view.getUint32(offset, true)
    offset += BYTES_LENGTH_PREFIX
    elements.push(bytes.subarray(offset, offset + length))
    offset += length
  }
  return elements
}

/** Frames elements (strings are written as UTF-8) in the BYTES layout. */
export function encodeBytesElements (elements: ReadonlyArray<string | Uint8Array>): Uint8Array {
  const encoder = new TextEncoder()
  const encoded = elements.map(e => typeof e === 'string' ? encoder.encode(e) : e)
  let total = 0
  for (const e of encoded) total += BYTES_LENGTH_PREFIX + e.byteLength
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let offset = 0
  for (const e of encoded) {
    view.setUint32(offset, e.byteLength, true)
    out.set(e, offset + BYTES_LENGTH_PREFIX)
    offset += BYTES_LENGTH_PREFIX + e.byteLength
  }
  return out
}

/**
 * Raw bytes → onnxruntime data. Numeric types get a view over the same memory when the bytes
 * are aligned for the element size (always, for buffers the pool sends), a copy otherwise.
 */
export function rawToTyped (datatype: DataType, bytes: Uint8Array): TensorData {
  if (datatype === 'BYTES') {
    const decoder = new TextDecoder('utf-8', { fatal: true })
    return decodeBytesElements(bytes).map(e => decoder.decode(e))
  }
  const Typed = TYPED_ARRAY[datatype]
  const size = Typed.BYTES_PER_ELEMENT
  if (bytes.byteLength % size !== 0) throw new InvalidInferRequestError(`${bytes.byteLength} bytes is not a whole number of ${datatype} elements`)
  if (bytes.byteOffset % size === 0) return new Typed(bytes.buffer, bytes.byteOffset, bytes.byteLength / size)
  const aligned = new Typed(bytes.byteLength / size)
  new Uint8Array(aligned.buffer).set(bytes)
  return aligned
}

/**
 * onnxruntime data → raw bytes: a view over a typed array's memory (no copy; any typed array,
 * Float16Array included), or the BYTES framing of strings.
 */
export function typedToRaw (datatype: DataType, data: unknown): Uint8Array {
  if (datatype === 'BYTES') {
    if (!Array.isArray(data) || !data.every(e => typeof e === 'string')) throw new TypeError('BYTES tensor data must be strings')
    return encodeBytesElements(data)
  }
  if (!ArrayBuffer.isView(data)) throw new TypeError(`${datatype} tensor data must be a typed array`)
  const expected = DATATYPE_SIZE[datatype]
  const size = (data as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT
  if (size !== undefined && size !== expected) throw new TypeError(`${datatype} tensor data has ${size}-byte elements, expected ${expected}`)
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
}

/**
 * The bytes to post and the ArrayBuffer to put in postMessage's transfer list, without a copy
 * when the bytes span a whole plain ArrayBuffer (which is then detached for the sender), else
 * via copyForTransfer: transferring a larger or shared buffer would move bytes that are not
 * ours, and cloning a view clones all of its buffer.
 */
export function transferable (bytes: Uint8Array): { bytes: Uint8Array, buffer: ArrayBuffer } {
  const buffer = bytes.buffer
  if (buffer instanceof ArrayBuffer && !buffer.resizable && bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength) {
    return { bytes, buffer }
  }
  return copyForTransfer(bytes)
}

/** Exactly these bytes in a fresh ArrayBuffer, to transfer (one copy, the sender's stay intact). */
export function copyForTransfer (bytes: Uint8Array): { bytes: Uint8Array, buffer: ArrayBuffer } {
  // new Uint8Array(view) always copies (Buffer#slice would return a view of the same memory).
  const copy = new Uint8Array(bytes)
  return { bytes: copy, buffer: copy.buffer }
}
