import fs from 'node:fs'
import path from 'node:path'
import { AstradError, errorMessage } from '../util/errors.ts'
import { syncDir, writeFileAtomic } from '../util/fs.ts'
import { CORDON_FILE } from './constants.ts'

/**
 * A cordon outlives the process, as Kubernetes' `spec.unschedulable` does: it is a file in the
 * node's data dir (present = cordoned; it says since when and how to lift it, for people reading it).
 */
export function readCordon (dataDir: string): boolean {
  return fs.existsSync(path.join(dataDir, CORDON_FILE))
}

/** Records the cordon (or lifts it) durably before the ledger changes. */
export function saveCordon (dataDir: string, cordoned: boolean, now: number): void {
  const file = path.join(dataDir, CORDON_FILE)
  try {
    if (cordoned) {
      writeFileAtomic(file, JSON.stringify({ cordoned: true, since: new Date(now).toISOString(), lift: 'astrad uncordon' }) + '\n')
    } else {
      fs.rmSync(file, { force: true })
      syncDir(dataDir)
    }
  } catch (err) {
    throw new AstradError(`cannot ${cordoned ? 'write' : 'remove'} ${file}: ${errorMessage(err)}`, 'ERR_IO')
  }
}
