import type { DataType } from '../serving/types.ts'

/**
 * onnxruntime's tensor type names (`Tensor.Type` of onnxruntime-common) that astrad serves, and
 * the KServe v2 datatype each one is. The mapping is one to one over all 13 KServe datatypes;
 * onnxruntime's 4-bit types have no KServe name and are refused at load.
 */
export const ORT_TO_DATATYPE = {
  bool: 'BOOL',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  float16: 'FP16',
  float32: 'FP32',
  float64: 'FP64',
  string: 'BYTES'
} as const satisfies Record<string, DataType>

export type OrtTypeName = keyof typeof ORT_TO_DATATYPE

const DATATYPE_TO_ORT = Object.fromEntries(
  Object.entries(ORT_TO_DATATYPE).map(([ort, dt]) => [dt, ort])
) as Record<DataType, OrtTypeName>

/** The KServe datatype of an onnxruntime type name, undefined for types astrad cannot serve. */
export function datatypeFromOrt (type: string): DataType | undefined {
  return Object.hasOwn(ORT_TO_DATATYPE, type) ? ORT_TO_DATATYPE[type as OrtTypeName] : undefined
}

/** The onnxruntime type name for a KServe datatype. */
export function ortTypeOf (datatype: DataType): OrtTypeName {
  return DATATYPE_TO_ORT[datatype]
}

/** Typed arrays onnxruntime takes for the numeric types (FP16 as raw Uint16Array bits, BOOL as bytes). */
export type NumericData =
  Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array |
  BigUint64Array | BigInt64Array | Float32Array | Float64Array

interface TypedArrayClass {
  readonly BYTES_PER_ELEMENT: number
  new (length: number): NumericData
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): NumericData
}

/** The typed array each fixed-size datatype is handed to onnxruntime in. */
export const TYPED_ARRAY: Readonly<Record<Exclude<DataType, 'BYTES'>, TypedArrayClass>> = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP16: Uint16Array,
  FP32: Float32Array,
  FP64: Float64Array
}
