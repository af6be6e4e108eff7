// The build stamp: a content hash of everything dist/astrad is made from, written beside it
// (dist/astrad.inputs) after a successful build. `node scripts/build.ts --if-changed` (npm start)
// skips the build when the executable exists and its stamp matches the inputs.

import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * What the executable is built from, relative to the checkout: the sources and build scripts
 * (folders, walked), the dependency lock (node_modules and the Node binary follow it), the
 * version and the SEA and TypeScript settings.
 */
export const BUILD_INPUTS = ['src', 'scripts', 'package.json', 'package-lock.json', 'pkg.config.json', 'tsconfig.json']

function files (root: string, path: string): string[] {
  const full = join(root, path)
  if (!existsSync(full)) return []
  if (!statSync(full).isDirectory()) return [path]
  return readdirSync(full, { withFileTypes: true })
    .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    .flatMap(e => e.isDirectory() ? files(root, join(path, e.name)) : e.isFile() ? [join(path, e.name)] : [])
}

/**
 * SHA-256 over the path and content of every input file, in a fixed order, and over `options`
 * (entry, output, strip: another build of the same sources is another executable).
 */
export function inputsHash (root: string, options: Record<string, unknown> = {}, inputs: string[] = BUILD_INPUTS): string {
  const hash = createHash('sha256').update(JSON.stringify(options)).update('\0')
  for (const input of inputs) {
    for (const file of files(root, input)) {
      hash.update(file).update('\0').update(readFileSync(join(root, file))).update('\0')
    }
  }
  return hash.digest('hex')
}

/** The stamp file of an executable. */
export function stampPath (exe: string): string {
  return `${exe}.inputs`
}

/** True when `exe` exists and was built from inputs with this hash. */
export function isUpToDate (exe: string, hash: string): boolean {
  try {
    return existsSync(exe) && readFileSync(stampPath(exe), 'utf8').trim() === hash
  } catch {
    return false
  }
}

/** Removed when a build starts (a failed build leaves no stamp), written when it succeeds. */
export function clearStamp (exe: string): void {
  rmSync(stampPath(exe), { force: true })
}

export function writeStamp (exe: string, hash: string): void {
  writeFileSync(stampPath(exe), hash + '\n')
}
