import fs from 'node:fs'
import path from 'node:path'

/** fsyncs a directory, so a rename or unlink in it survives a crash. */
export function syncDir (dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

/** Writes a file atomically: temp file, fsync, rename, fsync of the directory. */
export function writeFileAtomic (file: string, data: string): void {
  const tmp = `${file}.tmp`
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    fs.writeSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  syncDir(path.dirname(file))
}
