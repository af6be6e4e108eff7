/**
 * Limits and defaults of the Open Inference Protocol (KServe v2) HTTP layer. Each says why.
 * Spec: kserve/open-inference-protocol `specification/protocol/inference_rest.md`; binary
 * tensors: Triton's `docs/protocol/extension_binary_data.md`.
 */

/** `name` of the server metadata answer (`GET /v2`). */
export const SERVER_NAME = 'astrad'

/**
 * Extensions listed by `GET /v2`. "binary_tensor_data" is the name Triton's clients look for
 * (extension_binary_data.md: "Triton reports binary_tensor_data in the extensions field").
 */
export const EXTENSIONS = ['binary_tensor_data'] as const

/**
 * Largest infer request body (JSON header + binary tensors): 64 MiB, beyond it 413. Large
 * enough for a batch of full-HD FP32 images in binary (6 × 1920×1080×3×4 B ≈ 149 MB would not
 * fit; 2 would), small enough that a few concurrent uploads cannot exhaust the daemon's heap.
 * Bigger inputs belong in several requests.
 */
export const MAX_INFER_BODY_BYTES = 64 * 1024 * 1024

/**
 * Largest tensor the edge builds from JSON, in raw bytes (FP64 data as short JSON numbers like
 * `0,` expands 4×: a 64 MiB body could otherwise ask for 256 MiB). Checked before allocating.
 */
export const MAX_TENSOR_BYTES = 128 * 1024 * 1024

/** Most dimensions a tensor may have (ONNX models stay far below; bounds the nesting walk). */
export const MAX_RANK = 32

/** Most inputs or requested outputs in one request (bounds per-request bookkeeping). */
export const MAX_TENSORS = 1024

/** Deadline of a request that names none: 30 s (the default per-request deadline). */
export const DEFAULT_TIMEOUT_MS = 30_000

/**
 * Longest deadline a client may ask for: 10 min. Longer ones are clamped; a request that holds
 * a queue slot longer than this is a batch job, not serving.
 */
export const MAX_TIMEOUT_MS = 10 * 60_000

/**
 * Header carrying the JSON part's length in a binary request or response (Triton's binary
 * tensor data extension). Node lower-cases incoming header names.
 */
export const HEADER_LENGTH_HEADER = 'inference-header-content-length'

/**
 * Optional deadline header in milliseconds (astrad's own; Triton has no HTTP deadline header,
 * only the "timeout" request parameter in microseconds, which is accepted too). The smaller of
 * the two wins.
 */
export const TIMEOUT_HEADER = 'astrad-timeout-ms'

/** Seconds of Retry-After on a 429/503 whose error carries none. */
export const DEFAULT_RETRY_AFTER_S = 1

/**
 * Prefix of the per-model inference metrics: Triton's `nv_inference_` renamed, as the style's
 * `astrad_<area>_` asks (a Prometheus relabel rule turns one into the other: docs/kserve.md).
 */
export const METRICS_PREFIX = 'astrad_inference_'

/**
 * Latency histogram buckets (seconds): 1 ms … 30 s, roughly ×2.5 apart, covering a tiny model
 * on CPU up to the default deadline.
 */
export const LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * Largest JSON infer request body (no Inference-Header-Content-Length): 16 MiB, a quarter of
 * the binary cap. JSON.parse runs on the event loop: a 57 MB JSON body blocked it ~2 s in the
 * chaos run (long enough for a resource to mark the daemon dead); 16 MiB keeps one parse to a
 * few hundred ms. Large tensors belong in the binary tensor data extension, whose bytes are not
 * parsed; the 413 says so.
 */
export const MAX_JSON_INFER_BODY_BYTES = 16 * 1024 * 1024
