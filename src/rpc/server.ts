import http from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from '../util/logger.ts'
import type { Metrics } from '../metrics/index.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { HttpError } from './errors.ts'
import { readBody } from './body.ts'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, MAX_ADMIN_BODY_BYTES } from './constants.ts'

export { HttpError }

export interface RpcRequest {
  method: string
  path: string
  params: Record<string, string>
  query: URLSearchParams
  headers: http.IncomingHttpHeaders
  /** Reads the body as JSON, capped at `maxBytes`; bad JSON is a 400. */
  json: (maxBytes?: number) => Promise<unknown>
  raw: http.IncomingMessage
}

export interface RpcResponse {
  status: number
  body?: unknown
  /** Pre-encoded body (metrics text); sent as is. */
  text?: string
  /** A binary body (KServe binary tensor extension); content-type defaults to octet-stream. */
  bytes?: Uint8Array
  /** A streamed body (model bytes), sent with backpressure; set content-length in headers. */
  stream?: AsyncIterable<Uint8Array>
  headers?: Record<string, string>
}

export type RouteHandler = (req: RpcRequest) => Promise<RpcResponse> | RpcResponse

interface Route {
  method: string
  pattern: RegExp
  keys: string[]
  name: string
  open: boolean
  handler: RouteHandler
}

/** `Authorization: Bearer <token>`, the scheme in any case (RFC 9110 §11.1); the token, or undefined. */
const BEARER = /^bearer +(\S+) *$/i

export interface RpcServerComponents {
  logger: Logger
  metrics: Metrics
}

export interface RpcServerInit {
  host: string
  port: number
  /** When set, every route not marked open needs `Authorization: Bearer <token>` (RFC 6750). */
  token?: string
}

/**
 * The daemon's local RPC port: a small router on node:http with JSON errors, body caps and
 * timeouts. Features register routes; `/v2/health/*` stay open so probes need no token.
 */
export class RpcServer {
  private readonly routes: Route[] = []
  private readonly server: http.Server
  private readonly components: RpcServerComponents
  private readonly init: RpcServerInit

  constructor (components: RpcServerComponents, init: RpcServerInit) {
    this.components = components
    this.init = init
    this.server = http.createServer({
      headersTimeout: HEADERS_TIMEOUT_MS,
      // A whole-request deadline would cut off a large model upload; an idle socket is cut
      // off instead (setTimeout below), and slow headers by headersTimeout.
      requestTimeout: 0,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS
    }, (req, res) => { void this.dispatch(req, res) })
    this.server.setTimeout(IDLE_TIMEOUT_MS, socket => { socket.destroy() })
  }

  /** Registers a route; `:name` segments become params. */
  route (method: string, path: string, handler: RouteHandler, options: { open?: boolean } = {}): void {
    const keys: string[] = []
    const pattern = new RegExp('^' + path.replace(/\/:([a-zA-Z]+)/g, (_, k: string) => { keys.push(k); return '/([^/]+)' }) + '/?$')
    this.routes.push({ method, pattern, keys, name: path, open: options.open === true, handler })
  }

  async listen (): Promise<{ host: string, port: number }> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { reject(new AstradError(`cannot listen on ${this.init.host}:${this.init.port}: ${err.message}`, 'ERR_RPC_LISTEN')) }
      this.server.once('error', onError)
      this.server.listen(this.init.port, this.init.host, () => {
        this.server.off('error', onError)
        resolve()
      })
    })
    const addr = this.server.address()
    if (addr == null || typeof addr === 'string') throw new AstradError('RPC server has no address', 'ERR_RPC_LISTEN')
    return { host: addr.address, port: addr.port }
  }

  get address (): { host: string, port: number } | undefined {
    const addr = this.server.address()
    return addr != null && typeof addr !== 'string' ? { host: addr.address, port: addr.port } : undefined
  }

  /** Stops accepting connections; waits for requests in progress (bounded by the caller). */
  async close (): Promise<void> {
    if (!this.server.listening) return
    const closed = new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    this.server.closeIdleConnections()
    await closed
  }

  /** Counter children by route and status, so a request does not hash a label object. */
  private readonly counted = new Map<string, { inc: () => void }>()

  private countRequest (route: string, status: number): void {
    const key = `${status} ${route}`
    let child = this.counted.get(key)
    if (child == null) {
      child = this.components.metrics.rpcRequests.labels({ route, code: String(status) })
      this.counted.set(key, child)
    }
    child.inc()
  }

  /** Throws 401 with the challenge RFC 9110 §15.5.2 requires unless the request has the token. */
  private authorize (req: http.IncomingMessage): void {
    if (this.init.token == null) return
    const header = req.headers.authorization
    const given = Buffer.from(BEARER.exec(header ?? '')?.[1] ?? '')
    const want = Buffer.from(this.init.token)
    if (given.length === want.length && timingSafeEqual(given, want)) return
    // RFC 6750 §3: no credentials, a bare challenge; wrong ones, error="invalid_token".
    const challenge = header == null ? 'Bearer realm="astrad"' : 'Bearer realm="astrad", error="invalid_token"'
    throw new HttpError(401, 'missing or wrong bearer token', 'ERR_HTTP', { 'www-authenticate': challenge })
  }

  private async dispatch (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // Path and query split by hand: `new URL` costs more than the rest of routing.
    const rawUrl = req.url ?? '/'
    const q = rawUrl.indexOf('?')
    const url = { pathname: q < 0 ? rawUrl : rawUrl.slice(0, q), searchParams: new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1)) }
    let routeName = 'unknown'
    let out: RpcResponse
    try {
      const matches = this.routes.filter(r => r.pattern.test(url.pathname))
      if (matches.length === 0) throw new HttpError(404, `no route ${url.pathname}`)
      // HEAD is answered by the GET route, without the body (RFC 9110 §9.3.2).
      const route = matches.find(r => r.method === req.method) ?? (req.method === 'HEAD' ? matches.find(r => r.method === 'GET') : undefined)
      if (route == null) {
        const allowed = [...new Set(matches.flatMap(m => m.method === 'GET' ? ['GET', 'HEAD'] : [m.method]))].join(', ')
        // RFC 9110 §15.5.6: a 405 lists the methods the resource has in Allow.
        throw new HttpError(405, `${req.method ?? '?'} not allowed on ${url.pathname} (allowed: ${allowed})`, 'ERR_HTTP', { allow: allowed })
      }
      routeName = route.name
      if (!route.open) this.authorize(req)
      const m = route.pattern.exec(url.pathname) as RegExpExecArray
      const params: Record<string, string> = {}
      route.keys.forEach((k, i) => { params[k] = decodeURIComponent(m[i + 1] ?? '') })
      out = await route.handler({
        method: req.method ?? 'GET',
        path: url.pathname,
        params,
        query: url.searchParams,
        headers: req.headers,
        json: async (max = MAX_ADMIN_BODY_BYTES) => await readJson(req, max),
        raw: req
      })
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500
      if (status >= 500) this.components.logger.error({ err: errorMessage(err), path: url.pathname }, 'rpc handler failed')
      const code = err instanceof AstradError && err.code !== 'ERR_HTTP' ? err.code : undefined
      out = { status, body: code != null ? { error: errorMessage(err), code } : { error: errorMessage(err) } }
      if (err instanceof HttpError && err.headers != null) out.headers = err.headers
    }
    this.countRequest(routeName, out.status)
    if (res.headersSent) return
    const headers: Record<string, string> = { ...out.headers }
    let payload: string | Uint8Array | undefined
    if (out.bytes != null) {
      payload = out.bytes
      headers['content-type'] ??= 'application/octet-stream'
    } else if (out.text != null) {
      payload = out.text
      headers['content-type'] ??= 'text/plain; charset=utf-8'
    } else if (out.body !== undefined) {
      payload = JSON.stringify(out.body)
      headers['content-type'] ??= 'application/json'
    }
    if (out.stream != null) {
      headers['content-type'] ??= 'application/octet-stream'
      res.writeHead(out.status, headers)
      if (req.method === 'HEAD') {
        // Not iterated: a generator that was never started holds nothing open.
        res.end()
        return
      }
      try {
        await pipeline(Readable.from(out.stream, { objectMode: false }), res)
      } catch (err) {
        // Headers are gone: all we can do is cut the connection so the client sees a short body.
        this.components.logger.warn({ err: errorMessage(err), path: url.pathname }, 'rpc stream failed')
        res.destroy()
      }
      return
    }
    // HEAD: the GET answer's headers, Content-Length included; node:http drops the body itself.
    if (req.method === 'HEAD' && payload != null) headers['content-length'] ??= String(typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength)
    res.writeHead(out.status, headers)
    res.end(payload)
  }
}

async function readJson (req: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  const text = (await readBody(req, maxBytes)).toString('utf8')
  if (text === '') return undefined
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new HttpError(400, `body is not valid JSON: ${errorMessage(err)}`)
  }
}
