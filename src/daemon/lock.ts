import fs from 'node:fs'
import path from 'node:path'
import { AstradError, errorMessage } from '../util/errors.ts'
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

/**
 * Takes the data dir's lock: two daemons on one data dir would share an identity and corrupt
 * each other's state. A lock left by a dead process is taken over.
 */
export function lockDataDir (dataDir: string): () => void {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
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
        throw new AstradError(`cannot lock data dir ${dataDir}: ${errorMessage(err)}`, 'ERR_DATA_DIR')
      }
      const pid = Number(fs.readFileSync(file, 'utf8').trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new AstradError(`data dir ${dataDir} is in use by astrad process ${pid}; give each daemon its own --data-dir`, 'ERR_DATA_DIR_LOCKED')
      }
      fs.rmSync(file, { force: true })
    }
  }
  throw new AstradError(`cannot lock data dir ${dataDir}`, 'ERR_DATA_DIR')
}
