import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** Build and machine helpers shared by the benchmarks. */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

function newestMtime (dir: string): number {
  let newest = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs)
  }
  return newest
}

/** Rebuilds dist/astrad when it is missing or older than src/, so the numbers match the code. */
export function ensureBuilt (o: { bin: string, build: boolean }, log: (m: string) => void): void {
  const exists = fs.existsSync(o.bin)
  if (!o.build) {
    if (!exists) throw new Error(`${o.bin} not found (npm run build)`)
    return
  }
  if (exists && fs.statSync(o.bin).mtimeMs >= newestMtime(path.join(ROOT, 'src'))) return
  log(exists ? 'dist/astrad is older than src/: rebuilding' : 'dist/astrad missing: building')
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.ts')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
}

/** Kernel clock ticks per second (for /proc/<pid>/stat CPU times). */
export function clockTicks (): number {
  try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 }
}
