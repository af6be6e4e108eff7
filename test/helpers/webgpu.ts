import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createPool } from '../../src/inference/index.ts'
import { probeProvider, writeProbeModel, type ProviderProbe } from '../../src/devices/index.ts'
import { silentLogger } from '../../src/util/logger.ts'

/**
 * Whether the webgpu execution provider works on this machine (a GPU's Vulkan driver, or Mesa ≥ 25's
 * llvmpipe: `.ci/run` installs it from bookworm-backports), probed once per test file with the same
 * code the daemon uses. Tests that need it skip with the probe's reason where it does not.
 */

let cached: Promise<ProviderProbe> | undefined

/** A private XDG_RUNTIME_DIR (Dawn warns without one); set for this process and its workers. */
export function runtimeDir (): string {
  const dir = path.join(os.tmpdir(), `astrad-xdg-${process.getuid?.() ?? 0}`)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  return dir
}

export async function webgpuProbe (): Promise<ProviderProbe> {
  cached ??= (async () => {
    process.env.XDG_RUNTIME_DIR ??= runtimeDir()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-webgpu-probe-'))
    try {
      return await probeProvider(createPool, { logger: silentLogger() }, await writeProbeModel(dir), 'webgpu')
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })()
  return await cached
}

/** The reason to skip a webgpu test, printed so a CI log says why; undefined where webgpu works. */
export async function webgpuSkipReason (): Promise<string | undefined> {
  const probe = await webgpuProbe()
  if (probe.state === 'ok') return undefined
  const reason = `webgpu unavailable on this machine (install mesa-vulkan-drivers from bookworm-backports, see docs/gpus.md): ${probe.reason ?? probe.state}`
  console.log(`# SKIP ${reason}`)
  return reason
}
