import { RequestError, errorMessage } from '../util/errors.ts'

/** Client of a daemon's RPC port, used by the CLI (status, drain …). */
export class RpcClient {
  readonly base: string
  private readonly token?: string

  constructor (hostPort: { host: string, port: number }, token?: string) {
    const host = hostPort.host.includes(':') ? `[${hostPort.host}]` : hostPort.host
    this.base = `http://${host}:${hostPort.port}`
    this.token = token
  }

  async call<T = unknown> (method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
    let res: Response
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(this.token != null ? { authorization: `Bearer ${this.token}` } : {})
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(timeoutMs)
      })
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code
      if (cause === 'ECONNREFUSED') throw new RequestError(`no astrad daemon answers at ${this.base} (is it running? see --rpc)`, 'ERR_UNREACHABLE')
      throw new RequestError(`cannot reach ${this.base}: ${cause ?? errorMessage(err)}`, 'ERR_UNREACHABLE')
    }
    const text = await res.text()
    let data: unknown
    try { data = text === '' ? undefined : JSON.parse(text) } catch { data = text }
    if (!res.ok) {
      const msg = (data as { error?: string } | undefined)?.error ?? `HTTP ${res.status}`
      throw new RequestError(`${method} ${path}: ${msg}`, `ERR_HTTP_${res.status}`)
    }
    return data as T
  }
}
