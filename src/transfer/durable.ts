import { open, type FileHandle } from 'node:fs/promises'

/**
 * fsync, few at a time, and directory fsyncs shared by the renames that wait for them.
 *
 * Node runs every fsync on the libuv thread pool (4 threads). A received piece's commit is two
 * fsyncs (the temp file, then its directory after the rename), each 10–700 ms on a loaded
 * disk; with a lane's commit running while its next piece streams, a download's commits took
 * every thread, and the opens, reads and writes of the pieces still arriving waited behind
 * them (a piece's first byte came 200–600 ms after its request; docs/bench-transfer.md).
 * `maxConcurrent` fsyncs at once leave the rest of the pool to them.
 *
 * A directory fsync makes every rename done in it before the fsync started durable, so one
 * that has not started yet serves every commit that renamed meanwhile (group commit): eight
 * pieces landing together cost one directory fsync, not eight.
 */
export class Durable {
  private readonly maxConcurrent: number
  private running = 0
  private readonly waiting: Array<() => void> = []
  /** Per directory, the fsync that has not started yet (joined by later renames). */
  private readonly dirSyncs = new Map<string, Promise<void>>()
  /** fsyncs done (files, directories) and the most that ran at once. */
  readonly stats = { files: 0, dirs: 0, maxRunning: 0 }

  constructor (maxConcurrent: number) {
    this.maxConcurrent = maxConcurrent
  }

  /** fsync of an open file, within the limit. */
  async syncFile (fh: FileHandle): Promise<void> {
    await this.run(async () => {
      this.stats.files++
      await fh.sync()
    })
  }

  /**
   * Resolves once `dir` was fsynced after this call: every rename into it done before the
   * call is durable then. Rejects with the fsync's error.
   */
  async syncDir (dir: string): Promise<void> {
    let pending = this.dirSyncs.get(dir)
    if (pending == null) {
      // Started from a microtask, so it is in the map before it can take itself out.
      pending = Promise.resolve().then(async () => {
        await this.run(async () => {
          // From here on a rename may not be covered: later callers start a new sync.
          this.dirSyncs.delete(dir)
          this.stats.dirs++
          await fsyncDir(dir)
        })
      })
      this.dirSyncs.set(dir, pending)
    }
    await pending
  }

  private async run (fn: () => Promise<void>): Promise<void> {
    if (this.running >= this.maxConcurrent) await new Promise<void>(resolve => { this.waiting.push(resolve) })
    else this.running++
    this.stats.maxRunning = Math.max(this.stats.maxRunning, this.running)
    try {
      await fn()
    } finally {
      // The slot passes straight to the next waiter (running stays counted).
      const next = this.waiting.shift()
      if (next != null) next()
      else this.running--
    }
  }
}

export async function fsyncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}
