import http from 'node:http'
import type { Readable } from 'node:stream'
import { RequestError, errorMessage } from '../util/errors.ts'

/**
 * Adds headers to a request before it is sent: the CLI's operator signature (src/cli/operator.ts)
 * over the method, the path as sent (with its query) and the exact body bytes (or, for a
 * streamed body, their SHA-256).
 */
export type RequestSigner = (req: { method: string, path: string, body: Uint8Array | { sha256: () => Promise<string> } }, client: RpcClient) => Promise<Record<string, string>>

/** Options of {@link RpcClient.stream}. */
export interface StreamInit {
  /** A streamed request body (model bytes); give its length in `headers['content-length']`. */
  body?: Readable
  /** SHA-256 (hex) of `body`, computed only when the signer signs the request. */
  bodySha256?: () => Promise<string>
  headers?: Record<string, string>
  /** Fails the request when the connection moves no byte for this long (default 60 s). */
  idleTimeoutMs?: number
  signal?: AbortSignal
}

/**
 * Client of a daemon's RPC port, used by the CLI (status, drain …). node:http rather than
 * fetch: fetch refuses the WHATWG "bad ports" (6000, 6665-6669 …) an operator may have chosen.
 */
export class RpcClient {
  readonly base: string
  private readonly hostPort: { host: string, port: number }
  private readonly token?: string
  private readonly sign?: RequestSigner

  constructor (hostPort: { host: string, port: number }, token?: string, options: { sign?: RequestSigner } = {}) {
    const host = hostPort.host.includes(':') ? `[${hostPort.host}]` : hostPort.host
    this.base = `http://${host}:${hostPort.port}`
    this.hostPort = hostPort
    this.token = token
    this.sign = options.sign
  }

  async call<T = unknown> (method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
    const payload = body !== undefined ? Buffer.from(JSON.stringify(body)) : undefined
    const signed = await this.sign?.({ method, path, body: payload ?? EMPTY }, this)
    const { status, text } = await new Promise<{ status: number, text: string }>((resolve, reject) => {
      const req = http.request({
        host: this.hostPort.host,
        port: this.hostPort.port,
        method,
        path,
        agent: false,
        headers: {
          ...(payload != null ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          ...(this.token != null ? { authorization: `Bearer ${this.token}` } : {}),
          ...signed
        },
        signal: AbortSignal.timeout(timeoutMs)
      }, res => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }) })
        res.on('error', reject)
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.name === 'AbortError') reject(new RequestError(`${this.base} did not answer within ${timeoutMs} ms`, 'ERR_TIMEOUT'))
        else reject(this.unreachable(err))
      })
      req.end(payload)
    })
    if (status < 200 || status >= 300) throw httpError(method, path, status, text)
    let data: unknown
    try { data = text === '' ? undefined : JSON.parse(text) } catch { data = text }
    return data as T
  }

  /** A connection that failed before any answer: nobody listening, or a network error. */
  private unreachable (err: NodeJS.ErrnoException): RequestError {
    return err.code === 'ECONNREFUSED'
      ? new RequestError(`no astrad daemon answers at ${this.base} (is it running? see --rpc)`, 'ERR_UNREACHABLE')
      : new RequestError(`cannot reach ${this.base}: ${err.code ?? errorMessage(err)}`, 'ERR_UNREACHABLE')
  }

  /**
   * A request whose body and/or answer are byte streams (model upload, model data): no
   * deadline on the whole request, only on idle time. Resolves with the answer once its head
   * has arrived (the caller reads or destroys it); a non-2xx answer is read and thrown as in
   * {@link call}. An answer that arrives before the body is fully sent (a refusal) wins over the
   * write error that follows it.
   */
  async stream (method: string, path: string, init: StreamInit = {}): Promise<http.IncomingMessage> {
    const idleMs = init.idleTimeoutMs ?? 60_000
    const signed = await this.sign?.({ method, path, body: init.bodySha256 != null ? { sha256: init.bodySha256 } : EMPTY }, this)
    const { req, res } = await new Promise<{ req: http.ClientRequest, res: http.IncomingMessage }>((resolve, reject) => {
      let response: http.IncomingMessage | undefined
      const req = http.request({
        host: this.hostPort.host,
        port: this.hostPort.port,
        method,
        path,
        agent: false,
        headers: {
          ...init.headers,
          ...signed,
          // Not "close": a server that answers before reading the whole body (a refusal) then
          // drains it instead of closing, so the answer is not lost to an EPIPE/RST here.
          ...(init.body != null ? { connection: 'keep-alive' } : {}),
          ...(this.token != null ? { authorization: `Bearer ${this.token}` } : {})
        },
        signal: init.signal
      }, res => {
        response = res
        // agent: false has no pool; close the socket once the answer is read.
        res.once('end', () => { req.destroy() })
        if (init.body != null && !init.body.readableEnded) {
          init.body.unpipe(req)
          init.body.destroy()
        }
        resolve({ req, res })
      })
      req.setTimeout(idleMs, () => {
        const err = new RequestError(`${this.base} moved no byte for ${idleMs} ms`, 'ERR_TIMEOUT')
        response?.destroy(err)
        req.destroy(err)
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (response != null) return
        const bodyError = init.body?.errored
        init.body?.destroy()
        if (bodyError != null) reject(bodyError)
        else if (err instanceof RequestError) reject(err)
        else if (init.body != null && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) reject(new RequestError(`the daemon at ${this.base} closed the connection during the upload without an answer (see its log)`, 'ERR_CONNECTION_RESET'))
        else if (err.name === 'AbortError') reject(new RequestError(`${method} ${path} aborted`, 'ERR_ABORTED'))
        else reject(this.unreachable(err))
      })
      if (init.body != null) {
        init.body.once('error', err => { if (response == null) req.destroy(err) })
        init.body.pipe(req)
      } else {
        req.end()
      }
    })
    const status = res.statusCode ?? 0
    if (status >= 200 && status < 300) return res
    const chunks: Buffer[] = []
    let size = 0
    try {
      for await (const chunk of res) {
        size += (chunk as Buffer).length
        if (size <= 64 * 1024) chunks.push(chunk as Buffer)
      }
    } catch {}
    req.destroy()
    throw httpError(method, path, status, Buffer.concat(chunks).toString('utf8'))
  }
}

const EMPTY = new Uint8Array(0)

/** A non-2xx answer as an error: the daemon's `{"error": …}` message, else the status. */
function httpError (method: string, path: string, status: number, text: string): RequestError {
  let msg = `HTTP ${status}`
  try { msg = (JSON.parse(text) as { error?: string }).error ?? msg } catch {}
  return new RequestError(`${method} ${path}: ${msg}`, `ERR_HTTP_${status}`)
}
