import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DEV_DIR, DRM_CLASS_DIR, MAX_DETECTED_DEVICES, NVIDIA_PROC_DIR, PCI_VENDORS } from './constants.ts'

/** An accelerator seen on this machine. */
export interface DetectedDevice {
  /** nvidia, amd, intel, virtio, or the PCI vendor id when unknown. */
  kind: string
  /** The card's model where the driver says it (NVIDIA), else the device node. */
  name: string
  /** Where it was seen (/proc/driver/nvidia/gpus/…, /dev/nvidia0, /sys/class/drm/renderD128). */
  source: string
}

/** Where to look (tests point these at a fake tree). */
export interface DetectPaths {
  nvidiaProc: string
  dev: string
  drm: string
}

export const SYSTEM_PATHS: DetectPaths = { nvidiaProc: NVIDIA_PROC_DIR, dev: DEV_DIR, drm: DRM_CLASS_DIR }

async function list (dir: string): Promise<string[]> {
  return await readdir(dir).catch(() => [])
}

/** The `Model:` line of an NVIDIA `information` file. */
export function nvidiaModel (information: string): string | undefined {
  const line = information.split('\n').find(l => /^Model:/i.test(l))
  return line?.slice(line.indexOf(':') + 1).trim() || undefined
}

/**
 * NVIDIA cards from the kernel driver's /proc entries (with their model names), else from the
 * /dev/nvidiaN device nodes; then other GPUs from DRM render nodes, by PCI vendor (an NVIDIA
 * render node is the same card, not counted twice). Nothing here needs a GPU library.
 */
export async function detectDevices (paths: DetectPaths = SYSTEM_PATHS): Promise<DetectedDevice[]> {
  const found: DetectedDevice[] = []
  for (const bus of (await list(paths.nvidiaProc)).sort()) {
    const source = join(paths.nvidiaProc, bus)
    const info = await readFile(join(source, 'information'), 'utf8').catch(() => '')
    found.push({ kind: 'nvidia', name: nvidiaModel(info) ?? `NVIDIA GPU ${bus}`, source })
  }
  if (found.length === 0) {
    const nodes = (await list(paths.dev)).filter(n => /^nvidia\d+$/.test(n)).sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
    for (const n of nodes) found.push({ kind: 'nvidia', name: `NVIDIA GPU ${n.slice(6)}`, source: join(paths.dev, n) })
  }
  for (const node of (await list(paths.drm)).filter(n => /^renderD\d+$/.test(n)).sort()) {
    const vendor = (await readFile(join(paths.drm, node, 'device', 'vendor'), 'utf8').catch(() => '')).trim().toLowerCase()
    const kind = PCI_VENDORS[vendor] ?? (vendor === '' ? 'gpu' : vendor)
    if (kind === 'nvidia' && found.some(d => d.kind === 'nvidia')) continue
    found.push({ kind, name: node, source: join(paths.drm, node) })
  }
  return found.slice(0, MAX_DETECTED_DEVICES)
}
