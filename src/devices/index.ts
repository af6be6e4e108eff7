import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import type { PoolComponents } from '../inference/index.ts'
import { EXECUTION_PROVIDERS, PROBE_STOP_GRACE_MS } from './constants.ts'
import { detectDevices, SYSTEM_PATHS, type DetectedDevice, type DetectPaths } from './detect.ts'
import { probeProvider, writeProbeModel, type CreatePool } from './probe.ts'
import { isGpuProvider, type ProviderProbe } from './providers.ts'

/**
 * A node's accelerators (docs/gpus.md): the cards it offers (`--gpus`, their performance factor
 * `--gpu-perf`), the devices detected on the machine, and which onnxruntime execution providers
 * actually work here — probed once at start, in worker threads, in the background (CPU serving
 * never waits for it). The report travels in the node's ledger to schedulers, who place GPU
 * replicas by it; the node speaks only for itself there (the ledger is read from the node).
 */

export { EXECUTION_PROVIDERS, GPU_PROVIDERS, MAX_GPU_PERF, DEFAULT_GPU_PERF } from './constants.ts'
export { isExecutionProvider, isGpuProvider, wantsGpu, usableOn, probesWithWebgpuHeld, type ExecutionProvider, type ProviderProbe } from './providers.ts'
export { detectDevices, nvidiaModel, type DetectedDevice, type DetectPaths } from './detect.ts'
export { probeProvider, writeProbeModel, explain, PROBE_TOLERANCE, type CreatePool } from './probe.ts'
export { BusySampler } from './utilization.ts'
export * as devicesConstants from './constants.ts'

/** What a node says about its accelerators (ledger snapshot `devices`, `astrad status`). */
export interface DeviceReport {
  /** Kind of the cards offered: the detected make (nvidia, amd, intel …), `gpu` when declared but not detected, `none` without cards. */
  kind: string
  /** Cards offered to placement (`--gpus`). */
  count: number
  /** Performance factor per card (`--gpu-perf`; 1 = reference card), the routing weight's capacity term. */
  perf: number
  /** Accelerators seen on the machine (whether offered or not). */
  detected: DetectedDevice[]
  /** Per execution provider: works, failed (why), or still probing. */
  providers: Record<string, ProviderProbe>
  /** webgpu works but no GPU was detected: Dawn runs on a software Vulkan device (Mesa llvmpipe). */
  software?: boolean
}

export interface DevicesInit {
  /** Cards this node offers (`--gpus`). */
  gpus: number
  /** Performance factor per card (`--gpu-perf`). */
  gpuPerf: number
  /** A directory the probe may write its tiny model into. */
  probeDir: string
  /** Where to look for devices (tests). */
  paths?: DetectPaths
}

export interface DevicesComponents {
  logger: Logger
  createPool: CreatePool
}

/** Why GPU providers are not probed on a node that offers no cards. */
export const NOT_OFFERED = 'not probed: this node offers no cards (--gpus 0)'

export class Devices {
  private readonly components: DevicesComponents
  private readonly init: DevicesInit
  private detected: DetectedDevice[] = []
  private readonly probes: Record<string, ProviderProbe> = {}
  private readonly listeners = new Set<() => void>()
  private running?: Promise<void>
  private stopped = false

  constructor (components: DevicesComponents, init: DevicesInit) {
    this.components = components
    this.init = init
    // A node that offers no cards probes nothing (no worker, no onnxruntime load at start): its
    // GPU providers are moot, and cpu is what every replica there proves on loading.
    for (const p of EXECUTION_PROVIDERS) {
      this.probes[p] = init.gpus > 0 ? { state: 'probing' } : isGpuProvider(p) ? { state: 'failed', reason: NOT_OFFERED } : { state: 'ok' }
    }
  }

  /** Detects and probes in the background; `settled()` resolves when done. */
  start (): void {
    this.running ??= this.run().catch((err: unknown) => {
      this.components.logger.warn({ err: errorMessage(err) }, 'device probe failed')
    })
  }

  /** Resolves once detection and every probe have finished. */
  async settled (): Promise<void> {
    await this.running
  }

  /**
   * No further probe starts; waits (up to PROBE_STOP_GRACE_MS) for the one in progress to end and
   * close its worker, so the process never exits with a thread inside onnxruntime.
   */
  async stop (): Promise<void> {
    this.stopped = true
    this.listeners.clear()
    if (this.running == null) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.running, new Promise<void>(resolve => { timer = setTimeout(resolve, PROBE_STOP_GRACE_MS) })])
    clearTimeout(timer)
  }

  onChange (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  report (): DeviceReport {
    const { gpus, gpuPerf } = this.init
    const kinds = [...new Set(this.detected.map(d => d.kind))]
    const kind = gpus === 0 ? 'none' : kinds.length === 1 ? kinds[0]! : kinds.length > 1 ? kinds.join('+') : 'gpu'
    const report: DeviceReport = { kind, count: gpus, perf: gpuPerf, detected: this.detected.map(d => ({ ...d })), providers: structuredClone(this.probes) }
    if (this.probes.webgpu?.state === 'ok' && this.detected.length === 0) report.software = true
    return report
  }

  private emit (): void {
    if (this.stopped) return
    for (const l of this.listeners) l()
  }

  private async run (): Promise<void> {
    const log = this.components.logger
    this.detected = await detectDevices(this.init.paths ?? SYSTEM_PATHS)
    if (this.detected.length > 0 && this.init.gpus === 0) {
      log.info({ detected: this.detected.map(d => `${d.kind} ${d.name}`) }, 'accelerators detected but not offered: start with --gpus N to place GPU replicas here')
    }
    this.emit()
    const toProbe = EXECUTION_PROVIDERS.filter(p => this.probes[p]!.state === 'probing')
    if (toProbe.length === 0) return
    const model = await writeProbeModel(this.init.probeDir)
    // One at a time: probes are CPU work on a machine that is serving.
    for (const provider of toProbe) {
      if (this.stopped) return
      const result = await probeProvider(this.components.createPool, { logger: log }, model, provider)
      this.probes[provider] = result
      log.info({ provider, state: result.state, ms: result.ms, reason: result.reason }, 'execution provider probed')
      this.emit()
    }
  }
}
