import http from 'node:http'
import { RequestError, errorMessage } from '../util/errors.ts'

/**
 * Client of a daemon's RPC port, used by the CLI (status, drain …). node:http rather than
 * fetch: fetch refuses the WHATWG "bad ports" (6000, 6665-6669 …) an operator may have chosen.
 */
export class RpcClient {
  readonly base: string
  private readonly hostPort: { host: string, port: number }
  private readonly token?: string

  constructor (hostPort: { host: string, port: number }, token?: string) {
    const host = hostPort.host.includes(':') ? `[${hostPort.host}]` : hostPort.host
    this.base = `http://${host}:${hostPort.port}`
    this.hostPort = hostPort
    this.token = token
  }

  async call<T = unknown> (method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
    const payload = body !== undefined ? Buffer.from(JSON.stringify(body)) : undefined
    const { status, text } = await new Promise<{ status: number, text: string }>((resolve, reject) => {
      const req = http.request({
        host: this.hostPort.host,
        port: this.hostPort.port,
        method,
        path,
        agent: false,
        headers: {
          ...(payload != null ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          ...(this.token != null ? { authorization: `Bearer ${this.token}` } : {})
        },
        signal: AbortSignal.timeout(timeoutMs)
      }, res => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }) })
        res.on('error', reject)
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') reject(new RequestError(`no astrad daemon answers at ${this.base} (is it running? see --rpc)`, 'ERR_UNREACHABLE'))
        else if (err.name === 'AbortError') reject(new RequestError(`${this.base} did not answer within ${timeoutMs} ms`, 'ERR_TIMEOUT'))
        else reject(new RequestError(`cannot reach ${this.base}: ${err.code ?? errorMessage(err)}`, 'ERR_UNREACHABLE'))
      })
      req.end(payload)
    })
    let data: unknown
    try { data = text === '' ? undefined : JSON.parse(text) } catch { data = text }
    if (status < 200 || status >= 300) {
      const msg = (data as { error?: string } | undefined)?.error ?? `HTTP ${status}`
      throw new RequestError(`${method} ${path}: ${msg}`, `ERR_HTTP_${status}`)
    }
    return data as T
  }
}
