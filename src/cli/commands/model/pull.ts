import { createHash, randomBytes } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import { access, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { RpcClient } from '../../../rpc/index.ts'
import type { ModelInfo, TransferInfo } from '../../../transfer/index.ts'
import { AstradError, ConfigError, RequestError } from '../../../util/errors.ts'
import { createProgress, RateMeter, type ProgressStream } from './progress.ts'

/** The daemon reported the pull as failed (no source, no space …). */
export class TransferFailedError extends AstradError {
  constructor (model: ModelInfo, reason: string) {
    super(`pull of ${model.id.slice(0, 12)} (${model.name}) failed: ${reason}`, 'ERR_TRANSFER_FAILED')
    this.name = 'TransferFailedError'
  }
}

/** The daemon reported progress that did not move for too long. */
export class TransferStalledError extends AstradError {
  constructor (model: ModelInfo, ms: number) {
    super(`pull of ${model.id.slice(0, 12)} (${model.name}) made no progress for ${Math.round(ms / 1000)}s; see: astrad status`, 'ERR_STALLED')
    this.name = 'TransferStalledError'
  }
}

/** The bytes received for --output are not the model's: nothing was written. */
export class IntegrityError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_HASH_MISMATCH')
    this.name = 'IntegrityError'
  }
}

/** Polls per second while a pull runs (~4 Hz: a smooth bar at negligible cost to the daemon). */
export const POLL_INTERVAL_MS = 250
/** The daemon fails a pull after 60 s without progress; this is only a backstop against a daemon that never does. */
const CLIENT_STALL_MS = 5 * 60_000
/** Consecutive poll timeouts tolerated (a daemon busy moving bytes may answer late). */
const MAX_POLL_TIMEOUTS = 3
/** How long the data stream of --output may move no byte. */
const DATA_IDLE_MS = 60_000

const HEX64 = /^[0-9a-f]{64}$/

export interface PullInit {
  progressStream: ProgressStream | null
  pollIntervalMs?: number
  /** Stops waiting (Ctrl-C); the daemon keeps pulling. */
  signal?: AbortSignal
}

export interface PullResult {
  transfer: TransferInfo
  /** The daemon held the model complete before the pull. */
  alreadyHeld: boolean
  /** Wall time from the pull request until the daemon reported it complete. */
  elapsedMs: number
  /** Bytes fetched during this pull (less than the size when a partial download resumed). */
  fetchedBytes: number
}

/** `POST /v1/models/:id/pull`, then polls `GET /v1/transfers/:id` until complete or failed. */
export async function pullModel (client: RpcClient, model: ModelInfo, init: PullInit): Promise<PullResult> {
  const started = Date.now()
  let t = await client.call<TransferInfo>('POST', `/v1/models/${model.id}/pull`)
  const alreadyHeld = t.state === 'complete'
  const initialBytes = t.haveBytes
  if (t.state === 'downloading') {
    const progress = await createProgress(init.progressStream, 'pulling', model.size)
    let lastBytes = t.haveBytes
    let lastMove = Date.now()
    let timeouts = 0
    try {
      while (t.state === 'downloading') {
        progress.update({ done: t.haveBytes, rateBps: t.rateBps, peers: t.peers, etaSeconds: t.etaSeconds })
        try {
          await sleep(init.pollIntervalMs ?? POLL_INTERVAL_MS, undefined, { signal: init.signal })
        } catch {
          throw new AstradError(`interrupted; the daemon keeps pulling ${model.id.slice(0, 12)} (see: astrad status)`, 'ERR_INTERRUPTED')
        }
        try {
          t = await client.call<TransferInfo>('GET', `/v1/transfers/${model.id}`)
          timeouts = 0
        } catch (err) {
          if (err instanceof RequestError && err.code === 'ERR_TIMEOUT' && ++timeouts < MAX_POLL_TIMEOUTS) continue
          throw err
        }
        if (t.haveBytes !== lastBytes) {
          lastBytes = t.haveBytes
          lastMove = Date.now()
        } else if (Date.now() - lastMove > CLIENT_STALL_MS) {
          throw new TransferStalledError(model, Date.now() - lastMove)
        }
      }
      progress.update({ done: t.haveBytes, rateBps: t.rateBps, peers: t.peers, etaSeconds: 0 })
    } finally {
      progress.stop()
    }
  }
  if (t.state === 'failed') throw new TransferFailedError(model, `${t.error ?? 'no reason given'}${t.errorCode != null ? ` (${t.errorCode})` : ''}`)
  return { transfer: t, alreadyHeld, elapsedMs: Date.now() - started, fetchedBytes: Math.max(0, t.haveBytes - initialBytes) }
}

/**
 * Checks --output before anything is pulled: not a directory, in a directory that exists and
 * is writable. Returns the absolute path.
 */
export async function checkOutput (path: string): Promise<string> {
  const abs = resolve(path)
  try {
    if ((await stat(abs)).isDirectory()) throw new ConfigError('--output', `${path} is a directory; give a file name`)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError('--output', `cannot use ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  const dir = dirname(abs)
  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory')
    await access(dir, fsc.W_OK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ConfigError('--output', code === 'ENOENT' ? `directory ${dir} does not exist` : `cannot write in ${dir}: ${code ?? (err as Error).message}`)
  }
  return abs
}

export interface SavedModel {
  path: string
  size: number
  sha256: string
}

/**
 * `GET /v1/models/:id/data` into `path`: streamed into a temporary file beside it while it is
 * hashed, compared with the daemon's X-Astrad-Sha256 (the manifest's whole-file hash) and with
 * the model's `sha256` from the cluster log, fsynced, then renamed over `path`. On any
 * failure (mismatch, short body, disk full, `signal`) the temporary file is removed and `path`
 * is untouched.
 */
export async function saveModel (client: RpcClient, model: ModelInfo, path: string, init: { progressStream: ProgressStream | null, signal?: AbortSignal }): Promise<SavedModel> {
  const res = await client.stream('GET', `/v1/models/${model.id}/data`, { idleTimeoutMs: DATA_IDLE_MS, signal: init.signal })
  const expected = String(res.headers['x-astrad-sha256'] ?? '').toLowerCase()
  const declared = Number(res.headers['content-length'])
  const refuse = (message: string): never => {
    res.destroy()
    throw new IntegrityError(message)
  }
  if (!HEX64.test(expected)) refuse('the daemon sent the model without an X-Astrad-Sha256 header; nothing was written')
  if (model.sha256 !== expected) refuse(`the daemon's X-Astrad-Sha256 ${expected} is not the manifest's ${model.sha256}; nothing was written`)
  if (declared !== model.size) refuse(`the daemon sends ${String(res.headers['content-length'])} bytes, the model has ${model.size}; nothing was written`)

  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.astrad-tmp`)
  let fh: FileHandle | undefined
  const progress = await createProgress(init.progressStream, 'saving', model.size)
  try {
    fh = await open(tmp, 'wx', 0o644)
    const hash = createHash('sha256')
    const meter = new RateMeter()
    const started = Date.now()
    let written = 0
    let lastDraw = 0
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (written + chunk.length > model.size) throw new IntegrityError(`the daemon sent more than the model's ${model.size} bytes; nothing was written`)
      hash.update(chunk)
      let off = 0
      while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten
      written += chunk.length
      const now = Date.now()
      if (now - lastDraw >= 100) {
        lastDraw = now
        const rate = now - started < 500 ? 0 : meter.sample(written, now)
        progress.update({ done: written, rateBps: rate, etaSeconds: rate > 0 ? (model.size - written) / rate : null })
      }
    }
    if (written !== model.size) throw new IntegrityError(`the daemon sent ${written} of ${model.size} bytes; nothing was written`)
    const got = hash.digest('hex')
    if (got !== expected) throw new IntegrityError(`SHA-256 mismatch: received ${got}, expected ${expected}; nothing was written`)
    progress.update({ done: written, rateBps: written / Math.max((Date.now() - started) / 1000, 0.001), etaSeconds: 0 })
    await fh.sync()
    await fh.close()
    fh = undefined
    await rename(tmp, path)
    await syncDir(dirname(path))
    return { path, size: written, sha256: got }
  } catch (err) {
    res.destroy()
    await fh?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    if (init.signal?.aborted === true) throw new AstradError(`interrupted; ${path} was not written`, 'ERR_INTERRUPTED')
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new AstradError(`no space left to write ${path}; nothing was written`, 'ERR_NO_SPACE')
    if (err instanceof AstradError) throw err
    if ((err as Error).message === 'aborted' || (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      throw new RequestError(`the daemon closed the data stream early; ${path} was not written`, 'ERR_SHORT_BODY')
    }
    throw new AstradError(`cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'ERR_WRITE')
  } finally {
    progress.stop()
  }
}

/** Makes a rename durable; some filesystems cannot fsync a directory, which is not an error here. */
async function syncDir (dir: string): Promise<void> {
  let d: FileHandle | undefined
  try {
    d = await open(dir, 'r')
    await d.sync()
  } catch {} finally {
    await d?.close().catch(() => {})
  }
}
