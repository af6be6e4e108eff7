import { writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ModelLoadError, inferenceConstants, type InferencePool, type PoolComponents, type PoolInit } from '../inference/index.ts'
import { DEMO_EXAMPLE_INPUT, DEMO_FEATURES, DEMO_INPUT, demoModel, demoReference } from '../demo/index.ts'
import { errorMessage } from '../util/errors.ts'
import { MAX_PROBE_REASON_CHARS, PROBE_TIMEOUT_MS } from './constants.ts'
import type { ProviderProbe } from './providers.ts'

const { PROVIDERS_DIR_ENV } = inferenceConstants

export type CreatePool = (components: PoolComponents, init: PoolInit, signal?: AbortSignal) => Promise<InferencePool>

/** Largest difference from the reference answer a working provider may show (GPU float math differs from the CPU's in the last bits). */
export const PROBE_TOLERANCE = 1e-3

/** Writes the probe's model (the demo classifier, 300 bytes) into `dir` and returns its path. */
export async function writeProbeModel (dir: string): Promise<string> {
  await mkdir(dir, { recursive: true })
  const file = join(dir, 'probe.onnx')
  await writeFile(file, demoModel())
  return file
}

/** onnxruntime's words for a provider library that is not there, with what it means here. */
export function explain (provider: string, reason: string): string {
  const bare = reason.replace(/^no execution provider could start: [a-z]+: /, '')
  if ((provider === 'cuda' || provider === 'tensorrt') && /Failed to load (shared )?library/i.test(bare)) {
    return `libonnxruntime_providers_${provider}.so could not be loaded (not installed beside libonnxruntime.so.1 — the npm package has cpu and webgpu only; ${PROVIDERS_DIR_ENV} names where an operator put it — or a library it needs is missing; see docs/gpus.md): ${bare}`
  }
  if (provider === 'webgpu' && /adapter/i.test(bare)) {
    // onnxruntime leads with its source file and a lambda's signature: the words are at the end.
    const at = bare.indexOf('Failed to get a WebGPU adapter')
    return `no Vulkan device Dawn accepts (a GPU driver, or Mesa ≥ 25 for a software one; see docs/gpus.md): ${at >= 0 ? bare.slice(at) : bare}`
  }
  return bare
}

function clip (reason: string): string {
  return reason.length > MAX_PROBE_REASON_CHARS ? `${reason.slice(0, MAX_PROBE_REASON_CHARS - 1)}…` : reason
}

/**
 * Whether `provider` works here: a one-worker pool (the same worker threads and native runtime
 * that serve, so the single executable is probed as it runs) on the tiny demo model, made to run
 * on that provider alone, answers one request within PROBE_TOLERANCE of the reference. Bounded by
 * `timeoutMs`: a probe past it is failed at once and its worker closed whenever it returns
 * (a thread inside onnxruntime cannot be stopped).
 */
export async function probeProvider (createPool: CreatePool, components: PoolComponents, modelPath: string, provider: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProviderProbe> {
  const t0 = performance.now()
  const ms = (): number => Math.round(performance.now() - t0)
  const timedOut = Symbol('timeout')
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof timedOut>(resolve => { timer = setTimeout(() => { resolve(timedOut) }, timeoutMs) })
  const creating = createPool(components, { modelPath, name: `probe-${provider}`, workers: 1, maxQueue: 0, executionProviders: [provider] })
  try {
    const pool = await Promise.race([creating, deadline])
    if (pool === timedOut) {
      creating.then(async p => { await p.close() }, () => {})
      return { state: 'failed', reason: `no session within ${timeoutMs} ms`, ms: ms() }
    }
    try {
      const data = new Uint8Array(new Float32Array(DEMO_EXAMPLE_INPUT).buffer)
      const run = pool.infer({ inputs: [{ name: DEMO_INPUT, datatype: 'FP32', shape: [1, DEMO_FEATURES], data }], deadline: Date.now() + timeoutMs })
      const out = await Promise.race([run, deadline])
      if (out === timedOut) return { state: 'failed', reason: `session created, but no answer within ${timeoutMs} ms`, ms: ms() }
      const got = new Float32Array(out.outputs[0]!.data.slice().buffer)
      const want = demoReference([[...DEMO_EXAMPLE_INPUT]])[0]!
      const diff = Math.max(...want.map((w, i) => Math.abs(w - (got[i] ?? Number.NaN))))
      if (!(diff <= PROBE_TOLERANCE)) return { state: 'failed', reason: `wrong answer: differs from the reference by ${diff} (tolerance ${PROBE_TOLERANCE})`, ms: ms() }
      return { state: 'ok', ms: ms() }
    } finally {
      await pool.close()
    }
  } catch (err) {
    return { state: 'failed', reason: clip(explain(provider, err instanceof ModelLoadError ? err.reason : errorMessage(err))), ms: ms() }
  } finally {
    clearTimeout(timer)
  }
}
