/**
 * Limits and defaults of the inference worker pools, in one place. Each says why.
 */

/**
 * onnxruntime intra-op threads per session. One: a pool scales by workers (one session each),
 * and N workers × M threads above the core count only adds contention (PLATFORM.md: 2 workers
 * with 1 thread each give ~1.6× one thread on 2 cores).
 */
export const DEFAULT_INTRA_OP_THREADS = 1

/**
 * Warm-up (worker.ts): symbolic dimensions are first 1; if the model refuses that, those whose
 * name matches BATCH_DIM stay 1 and the others get WARMUP_RETRY_DIM. 512: a window of 1 is too
 * short for some sequence models (Silero VAD's STFT needs ≥ 512 samples), and 512 tokens or
 * samples is a length most accept while small enough to be quick.
 */
export const WARMUP_RETRY_DIM = 512
export const BATCH_DIM = /batch/i

/**
 * A worker that died is replaced at once; a replacement that fails to load, or dies again before
 * finishing one run, is retried after RESTART_BACKOFF_MS × 2^(failures-1). After this many
 * consecutive failures the slot is given up (logged): a model that crashes every worker would
 * otherwise spin forever loading 50 MB sessions.
 */
export const MAX_RESTART_FAILURES = 3
export const RESTART_BACKOFF_MS = 100

/**
 * close() asks each worker to release its session and exit; one still busy in a long run()
 * (native code cannot be interrupted, and terminating the thread mid-run aborts the process)
 * is waited for, with a warning after this long.
 */
export const CLOSE_TIMEOUT_MS = 5_000

/** setTimeout's largest delay (2^31 - 1 ms, ~24.8 days); longer deadlines need no timer. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * SEA asset keys (pkg.config.json "assets"). The worker is a separate CommonJS bundle because
 * it must not be part of the main bundle (onnxruntime stays unloaded for `--version`, `status`);
 * the two native files cannot be bundled at all and are written to a cache directory at run time.
 */
export const WORKER_ASSET = 'inference/worker.cjs'
export const NATIVE_ASSETS = {
  /** The N-API addon, loaded with process.dlopen in each worker. */
  binding: { asset: 'onnxruntime/onnxruntime_binding.node', file: 'onnxruntime_binding.node' },
  /** The runtime; the binding's RUNPATH is $ORIGIN, so it must sit beside it under this soname. */
  library: { asset: 'onnxruntime/libonnxruntime.so.1', file: 'libonnxruntime.so.1' }
} as const

/**
 * Environment variable naming a directory of operator-installed onnxruntime provider libraries
 * (libonnxruntime_providers_cuda.so, _tensorrt.so, _shared.so: not in the npm package). onnxruntime
 * loads them only from beside libonnxruntime.so.1, which inside the executable is the cache
 * directory: they are symlinked there (docs/gpus.md).
 */
export const PROVIDERS_DIR_ENV = 'ASTRAD_ORT_PROVIDERS_DIR'
/** The provider libraries linked from PROVIDERS_DIR_ENV. */
export const PROVIDER_LIBRARY = /^libonnxruntime_providers_[a-z0-9_]+\.so(\.[0-9.]+)?$/

/** Environment variable that overrides the directory the native files are written to. */
export const NATIVE_DIR_ENV = 'ASTRAD_NATIVE_DIR'
/** Subdirectory of the user's cache directory ($XDG_CACHE_HOME or ~/.cache). */
export const CACHE_SUBDIR = 'astrad'
/** Hex digits of the content hash in the extracted directory's name: 64 bits, no collisions. */
export const NATIVE_HASH_CHARS = 16

/**
 * How long a pool that lists webgpu waits for the node's one webgpu session (see pool.ts,
 * webgpuHolder) to be freed by a replica being released before it skips webgpu.
 */
export const WEBGPU_WAIT_MS = 10_000
