/** Device detection and execution-provider probing: names, limits and timings, each with its reason. */

/**
 * Execution providers an app spec may name (onnxruntime's own names). `webgpu` ships inside
 * onnxruntime-node 1.30 (Dawn over Vulkan: NVIDIA, AMD and Intel cards alike); `cuda` and
 * `tensorrt` are not in the npm package and work only where an operator installed their
 * libraries beside libonnxruntime.so.1; `cpu` always works.
 */
export const EXECUTION_PROVIDERS = ['cuda', 'tensorrt', 'webgpu', 'cpu'] as const
/** The providers that run on an accelerator card (an app naming one reserves cards). */
export const GPU_PROVIDERS = ['cuda', 'tensorrt', 'webgpu'] as const

/**
 * One provider's probe (a tiny session created and run once in a worker thread) may take this
 * long: session creation on webgpu/llvmpipe took ~0.7 s here, and the machine may be 8× loaded.
 * A probe past it counts as failed (its worker is left to finish and is closed then).
 */
export const PROBE_TIMEOUT_MS = 60_000

/**
 * Stopping waits this long for a probe in progress to finish and close its worker: the process
 * exits after the daemon stops, and a thread ended inside onnxruntime's session creation can take
 * the process down with it (docs/inference.md). A probe takes ~1 s here; a hung one is left.
 */
export const PROBE_STOP_GRACE_MS = 10_000

/** Devices listed per node at most (the ledger answer stays small). */
export const MAX_DETECTED_DEVICES = 16
/** A probe failure's reason as kept and sent to schedulers: the first 300 characters say it. */
export const MAX_PROBE_REASON_CHARS = 300

/** Where the NVIDIA kernel driver lists its cards (one directory per card, an `information` file each). */
export const NVIDIA_PROC_DIR = '/proc/driver/nvidia/gpus'
/** NVIDIA device nodes: /dev/nvidia0, /dev/nvidia1 … (nvidiactl and nvidia-uvm are not cards). */
export const DEV_DIR = '/dev'
/** DRM render nodes (any GPU with a kernel driver: AMD, Intel, NVIDIA, virtual). */
export const DRM_CLASS_DIR = '/sys/class/drm'

/** PCI vendor ids of DRM devices, for the device kind. */
export const PCI_VENDORS: Record<string, string> = {
  '0x10de': 'nvidia',
  '0x1002': 'amd',
  '0x8086': 'intel',
  '0x1af4': 'virtio'
}

/** Largest --gpu-perf: a card 100× the reference is a typo. The heartbeat carries it ×100 in a u16. */
export const MAX_GPU_PERF = 100
/** The routing weight's reference card. */
export const DEFAULT_GPU_PERF = 1
