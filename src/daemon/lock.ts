import fs from 'node:fs'
import path from 'node:path'
import { AstradError, ConfigError, errorMessage } from '../util/errors.ts'
import { LOCK_FILE } from './constants.ts'

/** Data dirs locked by this process (a lock file naming our own pid may be a stale one from a
 * previous container whose astrad was also pid 1, so the pid alone cannot tell). */
const heldHere = new Set<string>()

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function unusable (dataDir: string, reason: string): ConfigError {
  return new ConfigError('--data-dir', `cannot use ${dataDir}: ${reason}`)
}

function reasonOf (err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  switch (code) {
    case 'ENOENT': return 'a parent directory does not exist and cannot be created there (ENOENT)'
    case 'EACCES': case 'EPERM': return `permission denied (${code})`
    case 'EROFS': return 'read-only file system (EROFS)'
    case 'ENOTDIR': return 'a part of the path is not a directory (ENOTDIR)'
    case 'ENOSPC': return 'no space left on device (ENOSPC)'
    default: return errorMessage(err)
  }
}

/**
 * Creates the data dir and its missing parents, one level at a time. (Node's recursive mkdir
 * retries forever where a parent refuses new entries with ENOENT, as /proc does: issue 16.)
 * Fails with a ConfigError naming the directory and the reason.
 */
function ensureDataDir (dataDir: string): void {
  const missing: string[] = []
  let dir = path.resolve(dataDir)
  for (;;) {
    let stat: fs.Stats | undefined
    try {
      stat = fs.statSync(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw unusable(dataDir, reasonOf(err))
    }
    if (stat != null) {
      if (!stat.isDirectory()) throw unusable(dataDir, dir === path.resolve(dataDir) ? 'it is not a directory' : `${dir} is not a directory`)
      break
    }
    missing.unshift(dir)
    const parent = path.dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode: 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(d).isDirectory()) continue
      throw unusable(dataDir, reasonOf(err))
    }
  }
}

/**
 * Takes the data dir's lock: two daemons on one data dir would share an identity and corrupt
 * each other's state. A lock left by a dead process is taken over.
 */
export function lockDataDir (dataDir: string): () => void {
  ensureDataDir(dataDir)
  const file = path.join(dataDir, LOCK_FILE)
  if (heldHere.has(file)) throw new AstradError(`data dir ${dataDir} is in use by another daemon in this process`, 'ERR_DATA_DIR_LOCKED')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600)
      fs.writeSync(fd, String(process.pid))
      fs.closeSync(fd)
      heldHere.add(file)
      return () => {
        heldHere.delete(file)
        try { fs.unlinkSync(file) } catch {}
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw unusable(dataDir, `cannot write its lock file: ${reasonOf(err)}`)
      }
      let text: string
      try { text = fs.readFileSync(file, 'utf8') } catch (readErr) { throw unusable(dataDir, `cannot read its lock file: ${reasonOf(readErr)}`) }
      const pid = Number(text.trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new AstradError(`data dir ${dataDir} is in use by astrad process ${pid}; give each daemon its own --data-dir`, 'ERR_DATA_DIR_LOCKED')
      }
      fs.rmSync(file, { force: true })
    }
  }
  throw new AstradError(`cannot lock data dir ${dataDir}`, 'ERR_DATA_DIR')
}
