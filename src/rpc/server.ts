import http from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from '../util/logger.ts'
import type { Metrics } from '../metrics/index.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { BadPathError, BodyBudgetError, BodyTimeoutError, HttpError } from './errors.ts'
import { BodyBudget, readBody } from './body.ts'
import { operatorNeeded, verifyRequestOperator, type OperatorCheck, type OperatorRoute, type RequestOperator } from './operator.ts'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { Counter } from 'prom-client'
import { gaugeFn } from '../metrics/index.ts'
import {
  BODY_TIMEOUT_MS, HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, MAX_ADMIN_BODY_BYTES,
  MAX_BODY_BYTES_IN_FLIGHT, MAX_CONNECTIONS
} from './constants.ts'

export { HttpError }

export interface RpcRequest {
  method: string
  path: string
  params: Record<string, string>
  query: URLSearchParams
  headers: http.IncomingHttpHeaders
  /** Reads the body as JSON, capped at `maxBytes`; bad JSON is a 400. */
  json: (maxBytes?: number) => Promise<unknown>
  /**
   * Reads the whole body, capped at `maxBytes` (413), counted in the port's body budget (503
   * when full) and due within the body deadline (408). Routes that stream a body (model
   * uploads) read `raw` instead and are bounded by the idle timeout.
   */
  body: (maxBytes: number) => Promise<Buffer>
  raw: http.IncomingMessage
  /**
   * The operator who signed this request, on routes registered with `operator` (verified
   * before the handler runs; a streamed body is checked with verifiedStream). Undefined in
   * insecure mode.
   */
  operator?: RequestOperator
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
  operator?: OperatorRoute
  handler: RouteHandler
}

/** `Authorization: Bearer <token>`, the scheme in any case (RFC 9110 §11.1); the token, or undefined. */
const BEARER = /^bearer +(\S+) *$/i

export interface RpcServerComponents {
  logger: Logger
  metrics: Metrics
  /** Checks operator signatures on routes that change the cluster; omitted = none checked. */
  operators?: OperatorCheck
}

export interface RpcServerInit {
  host: string
  port: number
  /** When set, every route not marked open needs `Authorization: Bearer <token>` (RFC 6750). */
  token?: string
  /** Body deadline after the headers. @default BODY_TIMEOUT_MS (tests set it short) */
  bodyTimeoutMs?: number
  /** Body bytes buffered at once over all requests. @default MAX_BODY_BYTES_IN_FLIGHT */
  maxBodyBytesInFlight?: number
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
  private readonly budget: BodyBudget
  private readonly bodyTimeoutMs: number
  private readonly bodyRefused: Counter<'reason'>

  constructor (components: RpcServerComponents, init: RpcServerInit) {
    this.components = components
    this.init = init
    this.budget = new BodyBudget(init.maxBodyBytesInFlight ?? MAX_BODY_BYTES_IN_FLIGHT)
    this.bodyTimeoutMs = init.bodyTimeoutMs ?? BODY_TIMEOUT_MS
    const registry = components.metrics.registry
    const budget = this.budget
    if (registry.getSingleMetric('astrad_rpc_body_in_flight_bytes') == null) {
      gaugeFn(registry, 'astrad_rpc_body_in_flight_bytes', 'Request-body bytes the RPC port holds in memory now (bounded by MAX_BODY_BYTES_IN_FLIGHT)', () => budget.bytes)
      gaugeFn(registry, 'astrad_rpc_body_budget_bytes', 'The RPC port\'s budget of request-body bytes held at once', () => budget.limit)
    }
    this.bodyRefused = (registry.getSingleMetric('astrad_rpc_body_refused_total') as Counter<'reason'> | undefined) ??
      new Counter({ name: 'astrad_rpc_body_refused_total', help: 'Request bodies refused before they were whole, by reason (budget: 503, timeout: 408)', labelNames: ['reason'], registers: [registry] })
    this.server = http.createServer({
      headersTimeout: HEADERS_TIMEOUT_MS,
      // A whole-request deadline would cut off a large model upload; an idle socket is cut
      // off instead (setTimeout below), slow headers by headersTimeout, and a buffered body
      // (req.body/json) by the body deadline in readBody (BODY_TIMEOUT_MS).
      requestTimeout: 0,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS
    }, (req, res) => { void this.dispatch(req, res) })
    this.server.setTimeout(IDLE_TIMEOUT_MS, socket => { socket.destroy() })
    this.server.maxConnections = MAX_CONNECTIONS
  }

  /**
   * Registers a route; `:name` segments become params. `operator`: the route changes the
   * cluster and needs a signed operator request (src/rpc/operator.ts).
   */
  route (method: string, path: string, handler: RouteHandler, options: { open?: boolean, operator?: OperatorRoute } = {}): void {
    const keys: string[] = []
    const pattern = new RegExp('^' + path.replace(/\/:([a-zA-Z]+)/g, (_, k: string) => { keys.push(k); return '/([^/]+)' }) + '/?$')
    this.routes.push({ method, pattern, keys, name: path, open: options.open === true, operator: options.operator, handler })
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

  /**
   * The first route (in registration order) for this method and path, with its match; HEAD is
   * answered by the GET route, without the body (RFC 9110 §9.3.2). One pass over the routes, each
   * pattern run once: the hot path (an infer request) pays no list building. Throws 404 or 405.
   */
  private match (method: string, pathname: string): { route: Route, m: RegExpExecArray } {
    let get: { route: Route, m: RegExpExecArray } | undefined
    for (const route of this.routes) {
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET' && get === undefined)) continue
      const m = route.pattern.exec(pathname)
      if (m == null) continue
      if (route.method === method) return { route, m }
      get = { route, m }
    }
    if (get !== undefined) return get
    // Nothing for this method: a 405 when the path has other methods, else a 404.
    const matches = this.routes.filter(r => r.pattern.test(pathname))
    if (matches.length === 0) throw new HttpError(404, `no route ${pathname}`)
    const allowed = [...new Set(matches.flatMap(r => r.method === 'GET' ? ['GET', 'HEAD'] : [r.method]))].join(', ')
    // RFC 9110 §15.5.6: a 405 lists the methods the resource has in Allow.
    throw new HttpError(405, `${method} not allowed on ${pathname} (allowed: ${allowed})`, 'ERR_HTTP', { allow: allowed })
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
    // The body deadline counts from here (the headers are in); the budget's bytes are held
    // until the answer is done.
    const since = Date.now()
    const lease = this.budget.lease()
    res.once('close', lease.release)
    // Read once: an operator route reads the body to verify it before its handler does.
    let read: Promise<Buffer> | undefined
    const body = async (maxBytes: number): Promise<Buffer> => await (read ??= readBody(req, maxBytes, { lease, timeoutMs: this.bodyTimeoutMs, since }).catch((err: unknown) => {
      if (err instanceof BodyBudgetError) this.bodyRefused.labels({ reason: 'budget' }).inc()
      if (err instanceof BodyTimeoutError) this.bodyRefused.labels({ reason: 'timeout' }).inc()
      throw err
    }))
    try {
      const { route, m } = this.match(req.method ?? 'GET', url.pathname)
      routeName = route.name
      if (!route.open) this.authorize(req)
      const params: Record<string, string> = {}
      route.keys.forEach((k, i) => { params[k] = decodeSegment(m[i + 1] ?? '') })
      let operator: RequestOperator | undefined
      const operators = this.components.operators
      if (operators != null && operatorNeeded(route.operator, url.searchParams)) {
        const streamed = route.operator !== true && route.operator?.streamed === true
        operator = await verifyRequestOperator(operators, req, rawUrl, streamed ? undefined : await body(MAX_ADMIN_BODY_BYTES))
      }
      out = await route.handler({
        method: req.method ?? 'GET',
        path: url.pathname,
        params,
        query: url.searchParams,
        headers: req.headers,
        json: async (max = MAX_ADMIN_BODY_BYTES) => await parseJson(await body(max)),
        body,
        raw: req,
        operator
      })
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500
      // Client mistakes (4xx, a bad path included) and load shedding are the client's to see
      // (and the metrics'), not an operator's error.
      if (status >= 500 && !(err instanceof BodyBudgetError)) this.components.logger.error({ err: errorMessage(err), path: url.pathname }, 'rpc handler failed')
      else this.components.logger.debug({ err: errorMessage(err), path: url.pathname.slice(0, 200), status }, 'rpc request refused')
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

/** A path parameter, percent-decoded; malformed escapes (`%ff%fe`, `%zz`) are a 400. */
function decodeSegment (segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    throw new BadPathError(segment)
  }
}

async function parseJson (buf: Buffer): Promise<unknown> {
  const text = buf.toString('utf8')
  if (text === '') return undefined
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new HttpError(400, `body is not valid JSON: ${errorMessage(err)}`)
  }
}
