import { EXECUTION_PROVIDERS, GPU_PROVIDERS } from './constants.ts'

export type ExecutionProvider = typeof EXECUTION_PROVIDERS[number]

/** A provider on one node: `ok` (a tiny session ran on it), `failed` (with why), `probing` (not known yet). */
export interface ProviderProbe {
  state: 'ok' | 'failed' | 'probing'
  reason?: string
  /** How long the probe took (ms). */
  ms?: number
}

export function isExecutionProvider (name: string): name is ExecutionProvider {
  return (EXECUTION_PROVIDERS as readonly string[]).includes(name)
}

export function isGpuProvider (name: string): boolean {
  return (GPU_PROVIDERS as readonly string[]).includes(name)
}

/** Whether an ordered preference names a GPU provider (then its replicas reserve cards). */
export function wantsGpu (providers: readonly string[]): boolean {
  return providers.some(isGpuProvider)
}

/**
 * What a node can do for an app's ordered provider list, from its probe results: `gpu` (a GPU
 * provider in the list works there), `fallback` (none does, but the list allows `cpu`), or
 * `no` with the reasons (per provider) — or `unknown` while the node still probes.
 */
export function usableOn (providers: readonly string[], probes: Readonly<Record<string, ProviderProbe>> | undefined): { use: 'gpu' | 'fallback' | 'unknown' | 'no', why: string } {
  if (probes == null) return { use: 'no', why: 'reports no execution providers (an astrad without device support)' }
  const reasons: string[] = []
  let probing = false
  for (const p of providers) {
    if (!isGpuProvider(p)) continue
    const probe = probes[p]
    if (probe?.state === 'ok') return { use: 'gpu', why: `${p} works` }
    if (probe?.state === 'probing') probing = true
    reasons.push(`${p}: ${probe?.state === 'probing' ? 'still probing' : probe?.reason ?? 'not probed'}`)
  }
  if (providers.includes('cpu')) return { use: 'fallback', why: reasons.join('; ') }
  return { use: probing ? 'unknown' : 'no', why: reasons.join('; ') }
}

/**
 * A node's probes as a new replica would find them: onnxruntime-node's WebGPU provider allows
 * one webgpu session per process (src/inference/pool.ts), so while a replica on the node runs
 * on webgpu, or is loading with webgpu in its list, webgpu counts as failed there, saying who
 * holds it. Placement then goes elsewhere, or falls back where the app's list allows cpu,
 * instead of sending a replica that would only wait and fail on the node.
 */
export function probesWithWebgpuHeld (
  probes: Readonly<Record<string, ProviderProbe>> | undefined,
  replicas: ReadonlyArray<{ app: string, state: string, provider?: string, executionProviders?: readonly string[] }>
): Readonly<Record<string, ProviderProbe>> | undefined {
  if (probes?.webgpu?.state !== 'ok') return probes
  const holder = replicas.find(r => r.state !== 'failed' && (r.provider === 'webgpu' || (r.state === 'loading' && r.provider == null && r.executionProviders?.includes('webgpu') === true)))
  if (holder == null) return probes
  return { ...probes, webgpu: { state: 'failed', reason: `held by a replica of ${holder.app}: this node already runs a webgpu session (one per node, docs/gpus.md)` } }
}
