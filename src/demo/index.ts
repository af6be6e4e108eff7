/**
 * The built-in demo: a small ONNX classifier the project generates itself, deployed as app
 * `demo` by `astrad start` with no arguments, and the curl command that calls it.
 */
export {
  DEMO_APP, DEMO_INPUT, DEMO_OUTPUT, DEMO_FEATURES, DEMO_HIDDEN, DEMO_CLASSES, DEMO_EXAMPLE_INPUT,
  demoModel, demoReference, demoRequestBody, demoCurl
} from './demo-model.ts'
export {
  encodeModel, floatTensor, OnnxDataType,
  type OnnxModel, type OnnxGraph, type OnnxNode, type OnnxTensor, type OnnxValueInfo, type OnnxAttribute
} from './onnx-writer.ts'
