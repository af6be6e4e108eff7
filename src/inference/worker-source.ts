import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import * as sea from 'node:sea'
import { NATIVE_ASSETS, PROVIDERS_DIR_ENV, WORKER_ASSET } from './constants.ts'
import { NativeRuntimeError } from './errors.ts'
import { cacheBases, contentHash, installNativeFiles, linkProviderLibraries, nativeDirName, type NativeFile } from './native-cache.ts'

/**
 * Content hash of the native assets, computed by scripts/build.ts (esbuild `define`) so a start
 * does not hash 46 MB to find the cache directory. Absent in other bundles: hashed then.
 */
declare const ASTRAD_NATIVE_HASH: string | undefined

/** How to start an inference worker in this process. */
export type WorkerSource =
  /** From sources: the TypeScript file, type-stripped by Node. */
  | { kind: 'file', url: URL }
  /** Single executable: the bundled worker's code, and the binding written to the cache directory. */
  | { kind: 'eval', code: string, nativeBindingPath: string }

let pending: Promise<WorkerSource> | undefined

/**
 * Resolved once per process (the first pool pays for writing the native files, if ever); a
 * failure is not cached, so a later pool may try again (e.g. after the disk was cleaned).
 */
export async function workerSource (): Promise<WorkerSource> {
  pending ??= resolveSource().catch((err: unknown) => {
    pending = undefined
    throw err
  })
  return pending
}

async function resolveSource (): Promise<WorkerSource> {
  if (!sea.isSea()) return { kind: 'file', url: new URL('./worker.ts', import.meta.url) }
  let code: string
  let files: NativeFile[]
  try {
    code = sea.getAsset(WORKER_ASSET, 'utf8')
    files = Object.values(NATIVE_ASSETS).map(a => ({ name: a.file, bytes: new Uint8Array(sea.getRawAsset(a.asset)) }))
  } catch (err) {
    throw new NativeRuntimeError(`this executable was built without the inference assets (${WORKER_ASSET}, ${Object.values(NATIVE_ASSETS).map(a => a.asset).join(', ')}): ${(err as Error).message}`, { cause: err })
  }
  const hash = typeof ASTRAD_NATIVE_HASH === 'string' ? ASTRAD_NATIVE_HASH : contentHash(files)
  let home: string | undefined
  try {
    home = homedir()
  } catch {
    home = undefined // no HOME and no passwd entry
  }
  const dir = await installNativeFiles(files, nativeDirName(hash), cacheBases(process.env, home, tmpdir(), process.getuid?.() ?? 0))
  // Operator-installed provider libraries (cuda, tensorrt) go beside libonnxruntime.so.1 (docs/gpus.md).
  const providers = process.env[PROVIDERS_DIR_ENV]
  if (providers !== undefined && providers !== '') await linkProviderLibraries(dir, providers)
  return { kind: 'eval', code, nativeBindingPath: join(dir, NATIVE_ASSETS.binding.file) }
}
