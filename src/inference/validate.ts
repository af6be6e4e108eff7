import { DATATYPE_SIZE, InvalidInferRequestError, type InferRequest, type ModelSignature, type TensorSpec } from '../serving/types.ts'
import { elementCount, scanBytesElements } from './codec.ts'

/**
 * Checks a request against the model's signature before it reaches a session, so a bad request
 * costs a 400 with a message naming the input instead of an onnxruntime error (or a crash)
 * inside a worker: every model input present exactly once and no other, datatype equal, rank
 * equal, every fixed dimension equal, data length = elements × element size (BYTES: well-formed
 * length-prefixed UTF-8 elements, as many as the shape says); requested outputs must exist.
 */
export function validateInputs (signature: ModelSignature, req: InferRequest): void {
  if (!Array.isArray(req.inputs)) throw new InvalidInferRequestError('request has no inputs array')
  const specs = new Map(signature.inputs.map(s => [s.name, s]))
  const seen = new Set<string>()
  for (const tensor of req.inputs) {
    const name = String(tensor.name)
    const spec = specs.get(name)
    if (spec === undefined) throw new InvalidInferRequestError(`unknown input '${name}' (model inputs: ${names(signature.inputs)})`)
    if (seen.has(name)) throw new InvalidInferRequestError(`input '${name}' given more than once`)
    seen.add(name)
    if (tensor.datatype !== spec.datatype) {
      throw new InvalidInferRequestError(`input '${name}': datatype ${String(tensor.datatype)}, the model expects ${spec.datatype}`)
    }
    checkShape(name, tensor.shape, spec)
    checkData(name, tensor.data, tensor.shape, spec)
  }
  for (const spec of signature.inputs) {
    if (!seen.has(spec.name)) throw new InvalidInferRequestError(`missing input '${spec.name}' (${spec.datatype} ${formatShape(spec.shape)})`)
  }
  if (req.outputs !== undefined) {
    if (!Array.isArray(req.outputs)) throw new InvalidInferRequestError('requested outputs must be a list of names')
    const outputs = new Set(signature.outputs.map(s => s.name))
    const asked = new Set<string>()
    for (const name of req.outputs) {
      if (!outputs.has(name)) throw new InvalidInferRequestError(`unknown output '${String(name)}' requested (model outputs: ${names(signature.outputs)})`)
      if (asked.has(name)) throw new InvalidInferRequestError(`output '${name}' requested more than once`)
      asked.add(name)
    }
  }
}

function checkShape (name: string, shape: unknown, spec: TensorSpec): asserts shape is number[] {
  if (!Array.isArray(shape) || !shape.every(d => Number.isSafeInteger(d) && d >= 0)) {
    throw new InvalidInferRequestError(`input '${name}': shape must be a list of non-negative integers`)
  }
  if (shape.length !== spec.shape.length) {
    throw new InvalidInferRequestError(`input '${name}': shape ${formatShape(shape)} has rank ${shape.length}, the model expects rank ${spec.shape.length} ${formatShape(spec.shape)}`)
  }
  for (let i = 0; i < shape.length; i++) {
    const want = spec.shape[i]!
    if (want !== -1 && shape[i] !== want) {
      throw new InvalidInferRequestError(`input '${name}': shape ${formatShape(shape)} does not match the model's ${formatShape(spec.shape)} (dimension ${i} must be ${want})`)
    }
  }
}

function checkData (name: string, data: unknown, shape: number[], spec: TensorSpec): void {
  if (!(data instanceof Uint8Array)) throw new InvalidInferRequestError(`input '${name}': data must be raw bytes`)
  const count = elementCount(shape)
  if (spec.datatype === 'BYTES') {
    const scan = scanBytesElements(data)
    if ('error' in scan) throw new InvalidInferRequestError(`input '${name}': malformed BYTES data: ${scan.error}`)
    if (scan.count !== count) throw new InvalidInferRequestError(`input '${name}': ${scan.count} BYTES elements, shape ${formatShape(shape)} needs ${count}`)
    return
  }
  const size = DATATYPE_SIZE[spec.datatype]!
  if (data.byteLength !== count * size) {
    throw new InvalidInferRequestError(`input '${name}': ${data.byteLength} bytes of data, shape ${formatShape(shape)} of ${spec.datatype} needs ${count * size}`)
  }
}

function names (specs: readonly TensorSpec[]): string {
  return specs.map(s => s.name).join(', ')
}

function formatShape (shape: readonly number[]): string {
  return `[${shape.join(', ')}]`
}
