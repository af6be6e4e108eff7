/**
 * The Open Inference Protocol (KServe v2) HTTP layer of the RPC port: health, metadata and
 * infer routes, the JSON and binary tensor codecs, and the astrad_inference_* metrics.
 * See docs/kserve.md.
 */
export { registerKServeRoutes, type KServeComponents } from './routes.ts'
export { decodeInferRequest, type DecodedInferRequest, type RequestedOutput } from './request.ts'
export { encodeInferResponse, type EncodedInferResponse } from './response.ts'
export {
  checkShape, checkTensorData, dataToJson, decodeElements, elementCount, encodeBytesElements, encodeElements,
  flattenData, isDataType, splitBytesElements, tensorFromJson, type TensorValue
} from './codec.ts'
export { toHalfBits, fromHalfBits } from './fp16.ts'
export { createInferenceMetrics, FAILURE_REASONS, type InferenceMetrics, type InferenceMetricsSources, type InferenceSample, type FailureReason, type ModelVersion } from './metrics.ts'
export * from './constants.ts'
export { decodeInferResponse, jsonElements, parseJsonExact, tensorOfValue, NotATensorError, type DecodedInferResponse, type DecodedOutput, type ModelMetadata } from './client.ts'
