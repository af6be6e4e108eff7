/**
 * A minimal writer for ONNX model files: just the protobuf messages and fields a small
 * inference graph needs (onnx/onnx.proto, proto2 syntax). Field numbers below are those of
 * onnx.proto; fields are written in ascending field-number order, so the same model always
 * encodes to the same bytes.
 */

/** TensorProto.DataType values (onnx.proto). */
export const OnnxDataType = {
  FLOAT: 1,
  INT64: 7
} as const
export type OnnxDataType = typeof OnnxDataType[keyof typeof OnnxDataType]

/** An initializer (constant tensor) stored as raw little-endian bytes. */
export interface OnnxTensor {
  name: string
  dataType: OnnxDataType
  dims: number[]
  /** Row-major, little-endian (TensorProto.raw_data). */
  raw: Uint8Array
}

/** A graph input or output. A string dimension is symbolic (dim_param), a number fixed (dim_value). */
export interface OnnxValueInfo {
  name: string
  elemType: OnnxDataType
  shape: Array<number | string>
  /** A sequence of such tensors (SequenceConstruct's output) instead of one tensor. @default false */
  sequence?: boolean
}

/** A node attribute: an integer, a float or a list of integers (AttributeProto). */
export type OnnxAttribute =
  | { name: string, int: number }
  | { name: string, float: number }
  | { name: string, ints: number[] }

export interface OnnxNode {
  opType: string
  inputs: string[]
  outputs: string[]
  name?: string
  attributes?: OnnxAttribute[]
}

export interface OnnxGraph {
  name: string
  nodes: OnnxNode[]
  initializers: OnnxTensor[]
  inputs: OnnxValueInfo[]
  outputs: OnnxValueInfo[]
}

export interface OnnxModel {
  /** ModelProto.ir_version (onnx.proto enum Version). */
  irVersion: number
  /** Operator sets imported; domain '' (or absent) is the default ONNX domain. */
  opsets: Array<{ domain?: string, version: number }>
  producerName: string
  producerVersion?: string
  graph: OnnxGraph
}

// Protobuf wire types (protobuf encoding spec).
const VARINT = 0
const LEN = 2
const I32 = 5

const textEncoder = new TextEncoder()

/** Appends protobuf fields to a growing byte list. */
class ProtoWriter {
  private readonly parts: Uint8Array[] = []
  private length = 0

  private push (bytes: Uint8Array): void {
    this.parts.push(bytes)
    this.length += bytes.length
  }

  private tag (field: number, wireType: number): void {
    this.varint(BigInt(field * 8 + wireType))
  }

  /** Two's complement 64-bit for negatives, as protobuf int64 requires (10 bytes). */
  private varint (value: bigint): void {
    let v = BigInt.asUintN(64, value)
    const out: number[] = []
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80)
      v >>= 7n
    }
    out.push(Number(v))
    this.push(Uint8Array.from(out))
  }

  int (field: number, value: number): this {
    if (!Number.isSafeInteger(value)) throw new RangeError(`protobuf field ${field}: ${value} is not a safe integer`)
    this.tag(field, VARINT)
    this.varint(BigInt(value))
    return this
  }

  float (field: number, value: number): this {
    this.tag(field, I32)
    const b = new Uint8Array(4)
    new DataView(b.buffer).setFloat32(0, value, true)
    this.push(b)
    return this
  }

  bytes (field: number, value: Uint8Array): this {
    this.tag(field, LEN)
    this.varint(BigInt(value.length))
    this.push(value)
    return this
  }

  string (field: number, value: string): this {
    return this.bytes(field, textEncoder.encode(value))
  }

  message (field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter()
    build(inner)
    return this.bytes(field, inner.finish())
  }

  finish (): Uint8Array {
    const out = new Uint8Array(this.length)
    let at = 0
    for (const p of this.parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }
}

// AttributeProto.AttributeType values (onnx.proto).
const ATTR_FLOAT = 1
const ATTR_INT = 2
const ATTR_INTS = 7

function writeTensor (w: ProtoWriter, t: OnnxTensor): void {
  // TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9.
  for (const d of t.dims) w.int(1, d)
  w.int(2, t.dataType)
  w.string(8, t.name)
  w.bytes(9, t.raw)
}

function writeValueInfo (w: ProtoWriter, v: OnnxValueInfo): void {
  // ValueInfoProto: name = 1, type = 2 → TypeProto: tensor_type = 1 →
  // TypeProto.Tensor: elem_type = 1, shape = 2 → TensorShapeProto: dim = 1 →
  // Dimension: dim_value = 1 | dim_param = 2.
  // A sequence: TypeProto: sequence_type = 4 → TypeProto.Sequence: elem_type = 1 → TypeProto.
  w.string(1, v.name)
  const tensorType = (type: ProtoWriter): void => {
    type.message(1, tensor => {
      tensor.int(1, v.elemType)
      tensor.message(2, shape => {
        for (const d of v.shape) {
          shape.message(1, dim => { if (typeof d === 'number') dim.int(1, d); else dim.string(2, d) })
        }
      })
    })
  }
  w.message(2, type => {
    if (v.sequence === true) type.message(4, seq => { seq.message(1, tensorType) })
    else tensorType(type)
  })
}

function writeAttribute (w: ProtoWriter, a: OnnxAttribute): void {
  // AttributeProto: name = 1, f = 2, i = 3, ints = 8, type = 20.
  w.string(1, a.name)
  if ('float' in a) {
    w.float(2, a.float)
    w.int(20, ATTR_FLOAT)
  } else if ('int' in a) {
    w.int(3, a.int)
    w.int(20, ATTR_INT)
  } else {
    // proto2 `repeated int64` without [packed]: one field per element.
    for (const i of a.ints) w.int(8, i)
    w.int(20, ATTR_INTS)
  }
}

function writeNode (w: ProtoWriter, n: OnnxNode): void {
  // NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5.
  for (const i of n.inputs) w.string(1, i)
  for (const o of n.outputs) w.string(2, o)
  if (n.name !== undefined) w.string(3, n.name)
  w.string(4, n.opType)
  for (const a of n.attributes ?? []) w.message(5, aw => { writeAttribute(aw, a) })
}

function writeGraph (w: ProtoWriter, g: OnnxGraph): void {
  // GraphProto: node = 1, name = 2, initializer = 5, input = 11, output = 12.
  for (const n of g.nodes) w.message(1, nw => { writeNode(nw, n) })
  w.string(2, g.name)
  for (const t of g.initializers) w.message(5, tw => { writeTensor(tw, t) })
  for (const i of g.inputs) w.message(11, vw => { writeValueInfo(vw, i) })
  for (const o of g.outputs) w.message(12, vw => { writeValueInfo(vw, o) })
}

/** Serializes a model to ONNX protobuf bytes (what `.onnx` files hold). */
export function encodeModel (m: OnnxModel): Uint8Array {
  // ModelProto: ir_version = 1, producer_name = 2, producer_version = 3, graph = 7,
  // opset_import = 8 → OperatorSetIdProto: domain = 1, version = 2.
  const w = new ProtoWriter()
  w.int(1, m.irVersion)
  w.string(2, m.producerName)
  if (m.producerVersion !== undefined) w.string(3, m.producerVersion)
  w.message(7, gw => { writeGraph(gw, m.graph) })
  for (const o of m.opsets) {
    w.message(8, ow => {
      if (o.domain !== undefined && o.domain !== '') ow.string(1, o.domain)
      ow.int(2, o.version)
    })
  }
  return w.finish()
}

/** A FLOAT initializer from numbers (rounded to float32), row-major. */
export function floatTensor (name: string, dims: number[], values: ArrayLike<number>): OnnxTensor {
  const count = dims.reduce((a, b) => a * b, 1)
  if (values.length !== count) throw new RangeError(`tensor ${name}: ${values.length} values for shape [${dims.join(', ')}]`)
  const raw = new Uint8Array(count * 4)
  const view = new DataView(raw.buffer)
  for (let i = 0; i < count; i++) view.setFloat32(i * 4, values[i] as number, true)
  return { name, dataType: OnnxDataType.FLOAT, dims, raw }
}
