import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import zlib from 'node:zlib'
import { promisify } from 'node:util'
import { AstradError } from '../util/errors.ts'
import { BodyBudgetError, BodyTimeoutError, HttpError } from './errors.ts'
import { BODY_BUDGET_RETRY_AFTER_S } from './constants.ts'

/**
 * Content codings of request and response bodies (RFC 9110 §8.4), as Triton's HTTP server has
 * them: gzip (x-gzip is its old name, §8.4.1.3) and deflate (the zlib format, §8.4.1.2) are
 * decoded, identity is no coding, anything else is a 415.
 */
export type Coding = 'gzip' | 'deflate'

/** The codings a client may send, for the Accept-Encoding of a 415 (§15.5.16). */
const ACCEPTED_CODINGS = 'gzip, deflate'

/** The request body ended with its connection (reset, aborted) before it was whole. */
export class BodyAbortedError extends AstradError {
  constructor () {
    super('the client closed the connection before the request body was whole', 'ERR_CANCELED')
    this.name = 'BodyAbortedError'
  }
}

/**
 * The port-wide count of request-body bytes held in memory (MAX_BODY_BYTES_IN_FLIGHT). Each
 * request takes bytes through its own lease, which gives them all back when its answer is done.
 */
export class BodyBudget {
  readonly limit: number
  private used = 0

  constructor (limit: number) {
    this.limit = limit
  }

  /** Bytes held now. */
  get bytes (): number { return this.used }

  /** A request's share: `take` adds bytes (false, taking none, when they do not fit); `release` returns them all. */
  lease (): BodyLease {
    let held = 0
    return {
      limit: this.limit,
      take: (n: number): boolean => {
        if (this.used + n > this.limit) return false
        this.used += n
        held += n
        return true
      },
      release: (): void => {
        this.used -= held
        held = 0
      }
    }
  }
}

export interface BodyLease {
  /** The port's whole budget, for the 503's message. */
  limit: number
  take: (n: number) => boolean
  release: () => void
}

export interface ReadBodyOptions {
  /** Counts the body's bytes in the port's budget; 503 (BodyBudgetError) when they do not fit. */
  lease?: BodyLease
  /** The body must be whole this long after `since`; 408 (BodyTimeoutError) after. */
  timeoutMs?: number
  /** When the deadline started counting (the request's headers); default now. */
  since?: number
}

/** The request's Content-Encoding: undefined for none (or identity), else its coding; 415 for others. */
function contentCoding (headers: IncomingHttpHeaders): Coding | undefined {
  const header = headers['content-encoding']
  if (header === undefined) return undefined
  const codings = header.split(',').map(c => c.trim().toLowerCase()).filter(c => c !== '' && c !== 'identity')
  if (codings.length === 0) return undefined
  const unsupported = (why: string): HttpError =>
    new HttpError(415, `Content-Encoding ${JSON.stringify(header)}: ${why}; send the body plain, gzip or deflate`, 'ERR_UNSUPPORTED_ENCODING', { 'accept-encoding': ACCEPTED_CODINGS })
  if (codings.length > 1) throw unsupported('one coding at most')
  const coding = codings[0]
  if (coding === 'gzip' || coding === 'x-gzip') return 'gzip'
  if (coding === 'deflate') return 'deflate'
  throw unsupported(`'${coding}' is not supported`)
}

/**
 * Reads a request body, at most `maxBytes` (413 beyond: before reading when Content-Length says
 * so, else once the bytes pass it; the rest is drained, not read, so the answer can still be
 * sent). A gzip or deflate body is decoded as it arrives, on libuv's thread pool (zlib streams),
 * never on the event loop, and the decoded size is capped too: a small body that inflates to
 * gigabytes stops at the cap. Another coding is a 415, undecodable data a 400. A connection that
 * fails mid-body rejects BodyAbortedError. With `options.lease` the bytes held count in the port's
 * budget (the declared Content-Length at once, else as they arrive): a body that does not fit is
 * a 503 before more of it is read. With `options.timeoutMs` a body not whole by then is a 408.
 */
export async function readBody (req: IncomingMessage, maxBytes: number, options: ReadBodyOptions = {}): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? '0')
  if (declared > maxBytes) throw new HttpError(413, `the request body of ${declared} bytes exceeds the limit of ${maxBytes} bytes`, 'ERR_TOO_LARGE')
  const coding = contentCoding(req.headers)
  const { lease, timeoutMs } = options
  // Bytes of this body counted in the budget so far: all of a declared identity body up front.
  let reserved = 0
  if (lease !== undefined && coding === undefined && declared > 0) {
    if (!lease.take(declared)) throw new BodyBudgetError(lease.limit, BODY_BUDGET_RETRY_AFTER_S)
    reserved = declared
  }
  const what = coding === undefined ? 'request body' : `decoded ${coding} request body`
  // Events rather than `for await`: the async iterator costs several µs per request.
  return await new Promise<Buffer>((resolve, reject) => {
    const inflate = coding === undefined ? undefined : coding === 'gzip' ? zlib.createGunzip() : zlib.createInflate()
    const chunks: Buffer[] = []
    let received = 0
    let kept = 0
    let settled = false
    let timer: NodeJS.Timeout | undefined
    const finish = (err?: Error): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onAborted)
      req.off('aborted', onAborted)
      if (err === undefined) {
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
        return
      }
      inflate?.destroy()
      // A refusal that closes the connection (408, 503) leaves the rest unread; others drain it.
      if (!(err instanceof BodyTimeoutError || err instanceof BodyBudgetError)) req.resume()
      reject(err)
    }
    const keep = (chunk: Buffer): void => {
      if (settled) return
      kept += chunk.length
      if (kept > maxBytes) { finish(new HttpError(413, `the ${what} exceeds the limit of ${maxBytes} bytes`, 'ERR_TOO_LARGE')); return }
      if (lease !== undefined && kept > reserved) {
        if (!lease.take(kept - reserved)) { finish(new BodyBudgetError(lease.limit, BODY_BUDGET_RETRY_AFTER_S)); return }
        reserved = kept
      }
      chunks.push(chunk)
    }
    const onData = (chunk: Buffer): void => {
      if (inflate === undefined) { keep(chunk); return }
      received += chunk.length
      if (received > maxBytes) { finish(new HttpError(413, `the ${coding} request body exceeds the limit of ${maxBytes} bytes`, 'ERR_TOO_LARGE')); return }
      if (!inflate.write(chunk)) {
        req.pause()
        inflate.once('drain', () => { if (!settled) req.resume() })
      }
    }
    const onEnd = (): void => {
      if (inflate === undefined) finish()
      else inflate.end()
    }
    // Anything but our own refusal is the connection failing mid-body (ECONNRESET, aborted).
    const onAborted = (): void => { finish(new BodyAbortedError()) }
    if (inflate !== undefined) {
      inflate.on('data', keep)
      inflate.on('end', () => { finish() })
      inflate.on('error', (err: Error) => { finish(new HttpError(400, `the ${coding} request body cannot be decoded: ${err.message}`, 'ERR_BAD_ENCODING')) })
    }
    if (req.complete && req.readableEnded) {
      onEnd()
      return
    }
    if (timeoutMs !== undefined) {
      const left = (options.since ?? Date.now()) + timeoutMs - Date.now()
      timer = setTimeout(() => { finish(new BodyTimeoutError(timeoutMs)) }, Math.max(0, left))
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onAborted)
    req.on('aborted', onAborted)
  })
}

/**
 * The coding to answer with from the request's Accept-Encoding (RFC 9110 §12.5.3): gzip or
 * deflate when the client lists one with a weight above 0 (gzip on a tie), else none. `*` is not
 * taken as a request for compression: clients that want it (Triton's, browsers) name it.
 */
export function acceptedCoding (header: string | undefined): Coding | undefined {
  if (header === undefined) return undefined
  let best: { coding: Coding, q: number } | undefined
  for (const part of header.split(',')) {
    const [name = '', ...params] = part.split(';').map(s => s.trim().toLowerCase())
    const coding: Coding | undefined = name === 'gzip' || name === 'x-gzip' ? 'gzip' : name === 'deflate' ? 'deflate' : undefined
    if (coding === undefined) continue
    const qParam = params.find(p => p.startsWith('q='))
    const q = qParam === undefined ? 1 : Number(qParam.slice(2))
    if (!(q > 0)) continue
    if (best === undefined || q > best.q || (q === best.q && coding === 'gzip')) best = { coding, q }
  }
  return best?.coding
}

const gzip = promisify(zlib.gzip)
const deflate = promisify(zlib.deflate)

/** Compresses a response body on the thread pool. */
export async function encodeBody (body: Uint8Array, coding: Coding): Promise<Buffer> {
  return coding === 'gzip' ? await gzip(body) : await deflate(body)
}
