import { encodeModel, floatTensor, OnnxDataType, type OnnxGraph, type OnnxNode, type OnnxTensor } from './onnx-writer.ts'
import { mulberry32 } from '../util/random.ts'

/**
 * Batchable models for tests and benchmarks of dynamic batching (docs/batching.md), generated
 * here: every input and output has a variable axis 0, and rows never mix (each output row is a
 * function of its input row alone).
 */

export interface MlpOptions {
  /** Input features per row. */
  features: number
  /** Width of each hidden layer. */
  hidden: number
  /** Hidden layers (MatMul + Add + Relu each, ≥ 1). */
  layers: number
  /** Output width. */
  outputs: number
  /** Weight generator seed. @default 1 */
  seed?: number
}

/**
 * x [batch, features] → layers × (MatMul, Add, Relu) → `h` [batch, hidden] → MatMul, Add → `y`
 * [batch, outputs]. Weights are multiples of 1/64 scaled by 1/√width (exact in float32) so the
 * activations stay in range through the layers. Two outputs so a client's output filter is
 * exercised.
 */
export function mlpModel (o: MlpOptions): Uint8Array {
  const next = mulberry32(o.seed ?? 1)
  const take = (n: number, fanIn: number): number[] => {
    const scale = 2 ** -Math.ceil(Math.log2(Math.sqrt(fanIn)))
    return Array.from({ length: n }, () => (((next() % 129) - 64) / 64) * scale)
  }
  const nodes: OnnxNode[] = []
  const initializers: OnnxTensor[] = []
  let last = 'x'
  let width = o.features
  for (let i = 0; i < o.layers; i++) {
    const out = i === o.layers - 1 ? 'h' : `h${i}`
    initializers.push(floatTensor(`W${i}`, [width, o.hidden], take(width * o.hidden, width)), floatTensor(`b${i}`, [o.hidden], take(o.hidden, width)))
    nodes.push(
      { opType: 'MatMul', name: `fc${i}`, inputs: [last, `W${i}`], outputs: [`m${i}`] },
      { opType: 'Add', name: `bias${i}`, inputs: [`m${i}`, `b${i}`], outputs: [`a${i}`] },
      { opType: 'Relu', name: `relu${i}`, inputs: [`a${i}`], outputs: [out] }
    )
    last = out
    width = o.hidden
  }
  initializers.push(floatTensor('Wout', [width, o.outputs], take(width * o.outputs, width)), floatTensor('bout', [o.outputs], take(o.outputs, width)))
  nodes.push(
    { opType: 'MatMul', name: 'fcout', inputs: [last, 'Wout'], outputs: ['mout'] },
    { opType: 'Add', name: 'biasout', inputs: ['mout', 'bout'], outputs: ['y'] }
  )
  return opset13Model({
    name: 'astrad_batch_mlp',
    nodes,
    initializers,
    inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', o.features] }],
    outputs: [
      { name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', o.outputs] },
      { name: 'h', elemType: OnnxDataType.FLOAT, shape: ['batch', o.hidden] }
    ]
  })
}

/**
 * x [batch, len] → `y` = tanh(x) [batch, len]: a variable second dimension, so requests of
 * different lengths are valid and must never share a run.
 */
export function tanhModel (): Uint8Array {
  return opset13Model({
    name: 'astrad_batch_tanh',
    nodes: [{ opType: 'Tanh', name: 'tanh', inputs: ['x'], outputs: ['y'] }],
    initializers: [],
    inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', 'len'] }],
    outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 'len'] }]
  })
}

/** A graph as a model file: IR 7 with opset 13 (ONNX 1.8, read by every onnxruntime since 1.6). */
export function opset13Model (graph: OnnxGraph): Uint8Array {
  return encodeModel({ irVersion: 7, opsets: [{ version: 13 }], producerName: 'astrad-batch-test', producerVersion: '1', graph })
}
