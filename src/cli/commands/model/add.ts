import { createHash } from 'node:crypto'
import { open, stat, type FileHandle } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { basename } from 'node:path'
import { Transform, pipeline } from 'node:stream'
import type { RpcClient } from '../../../rpc/index.ts'
import { AstradError, ConfigError } from '../../../util/errors.ts'
import { createProgress, RateMeter, type ProgressStream } from './progress.ts'

/** `POST /v1/models` answers this. */
export interface AddedModel {
  id: string
  name: string
  size: number
  pieceSize: number
  pieces: number
}

/** The file shrank or grew while it was being sent: what the daemon got is not the file. */
export class FileChangedError extends AstradError {
  constructor (file: string, sent: number, size: number) {
    super(`${file} changed while it was sent (${sent} bytes read, ${size} expected); nothing was added`, 'ERR_FILE_CHANGED')
    this.name = 'FileChangedError'
  }
}

/** How long the upload may move no byte (the daemon hashes and fsyncs as it receives). */
const UPLOAD_IDLE_MS = 120_000

/** SHA-256 of a file's first `size` bytes (the bytes sent), for the operator signature. */
async function sha256Of (fh: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of fh.createReadStream({ start: 0, end: size - 1, highWaterMark: 1024 * 1024, autoClose: false })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Checks FILE before anything is sent: a missing, unreadable, empty or non-regular file is a usage error. */
async function checkFile (file: string): Promise<Stats> {
  let st: Stats
  try {
    st = await stat(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ConfigError('FILE', code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file}: ${code ?? String(err)}`)
  }
  if (st.isDirectory()) throw new ConfigError('FILE', `${file} is a directory; give a model file`)
  if (!st.isFile()) throw new ConfigError('FILE', `${file} is not a regular file (its size must be known before it is sent)`)
  if (st.size === 0) throw new ConfigError('FILE', `${file} is empty`)
  return st
}

/**
 * Streams FILE to the daemon (`POST /v1/models?name=`), with Content-Length from stat and a
 * progress bar on `progressStream` when it is a terminal.
 */
export async function addModel (client: RpcClient, file: string, init: { name?: string, progressStream: ProgressStream | null, signal?: AbortSignal }): Promise<AddedModel> {
  const st = await checkFile(file)
  const size = st.size
  const name = init.name ?? basename(file)
  let fh
  try {
    fh = await open(file, 'r')
  } catch (err) {
    throw new ConfigError('FILE', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  const progress = await createProgress(init.progressStream, 'uploading', size)
  const meter = new RateMeter()
  const started = Date.now()
  let sent = 0
  let lastDraw = 0
  const draw = (force: boolean): void => {
    const now = Date.now()
    if (!force && now - lastDraw < 100) return
    lastDraw = now
    if (sent === size) {
      progress.update({ done: sent, rateBps: sent / Math.max((now - started) / 1000, 0.001), etaSeconds: 0 })
      return
    }
    const rate = now - started < 500 ? 0 : meter.sample(sent, now)
    progress.update({ done: sent, rateBps: rate, etaSeconds: rate > 0 ? (size - sent) / rate : null })
  }
  const counter = new Transform({
    transform (chunk: Buffer, _enc, cb) {
      sent += chunk.length
      draw(false)
      cb(null, chunk)
    },
    flush (cb) {
      draw(true)
      cb(sent === size ? null : new FileChangedError(file, sent, size))
    }
  })
  // Exactly the stat size is read (end is inclusive): a file that grows meanwhile is cut there,
  // one that shrinks fails the flush check and the request is cut short.
  const source = fh.createReadStream({ start: 0, end: size - 1, highWaterMark: 1024 * 1024, autoClose: false })
  pipeline(source, counter, () => {})
  try {
    const res = await client.stream('POST', `/v1/models?name=${encodeURIComponent(name)}`, {
      body: counter,
      bodySha256: async () => await sha256Of(fh, size),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      idleTimeoutMs: UPLOAD_IDLE_MS,
      signal: init.signal
    })
    const chunks: Buffer[] = []
    for await (const chunk of res) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    try {
      return JSON.parse(text) as AddedModel
    } catch {
      throw new AstradError(`the daemon answered POST /v1/models with something that is not JSON: ${text.slice(0, 100)}`, 'ERR_DECODE')
    }
  } catch (err) {
    if (init.signal?.aborted === true) throw new AstradError(`interrupted; ${file} was not added`, 'ERR_INTERRUPTED')
    throw err
  } finally {
    progress.stop()
    source.destroy()
    await fh.close().catch(() => {})
  }
}
