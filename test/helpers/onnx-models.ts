import { encodeModel, OnnxDataType } from '../../src/demo/index.ts'

/** Name of the sequence output of sequenceOutputModel(). */
export const SEQUENCE_OUTPUT = 'seq'

/**
 * A valid ONNX model whose output is not a tensor: `seq = SequenceConstruct(x)`, a sequence of
 * float tensors (like the sequence/map outputs of sklearn classifiers converted to ONNX, e.g.
 * onnxruntime's logreg_iris). onnxruntime loads it; astrad cannot serve it over KServe v2.
 */
export function sequenceOutputModel (): Uint8Array {
  return encodeModel({
    irVersion: 7,
    opsets: [{ version: 13 }],
    producerName: 'astrad-test',
    graph: {
      name: 'sequence_output',
      nodes: [{ opType: 'SequenceConstruct', inputs: ['x'], outputs: [SEQUENCE_OUTPUT] }],
      initializers: [],
      inputs: [{ name: 'x', elemType: OnnxDataType.FLOAT, shape: ['batch', 4] }],
      outputs: [{ name: SEQUENCE_OUTPUT, elemType: OnnxDataType.FLOAT, shape: ['batch', 4], sequence: true }]
    }
  })
}
