import { z } from 'zod'
import { HttpError, type RpcServer, type RpcRequest } from '../rpc/index.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import { MAX_AUDIENCE } from './constants.ts'
import { NoticeError, type NoticeAdmin, type NoticeView } from './admin.ts'

/**
 * `/v1/notices…` on the RPC port (docs/mailbox.md "Operating notices"). `admin` is read at
 * request time: routes exist before the daemon has started its parts.
 */

/** Node names, peer ids and cells are short; anything longer is not one. */
const ENTRY = z.string().max(200)
const LIST = z.array(ENTRY).max(MAX_AUDIENCE)

const publishBody = z.object({
  kind: z.string().max(64),
  data: z.unknown(),
  canary: LIST.optional(),
  cells: LIST.optional(),
  nodes: LIST.optional(),
  expires: z.union([z.string().max(64), z.number()]).optional()
}).strict()

const canaryBody = z.object({ nodes: LIST }).strict()
/** Every notice write changes the cluster: it needs a signed operator request (src/rpc/operator.ts). */
const WRITE = { operator: true } as const
const editBody = z.object({ data: z.unknown() }).strict()

export function registerNoticeRoutes (rpc: RpcServer, admin: () => NoticeAdmin | undefined): void {
  const get = (): NoticeAdmin => {
    const a = admin()
    if (a == null) throw new HttpError(503, 'daemon is starting')
    return a
  }
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      throw toHttp(err)
    }
  }
  const body = async <T>(req: RpcRequest, schema: z.ZodType<T>, expected: string): Promise<T> => {
    const raw = await req.json()
    const parsed = schema.safeParse(raw)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      throw new HttpError(400, `expected ${expected}${issue != null ? `: ${issue.path.join('.') || '(body)'}: ${issue.message}` : ''}`, 'ERR_BAD_REQUEST')
    }
    return parsed.data
  }
  const id = (req: RpcRequest): string => req.params.id ?? ''
  const ok = (view: NoticeView, status = 200): { status: number, body: NoticeView } => ({ status, body: view })

  rpc.route('GET', '/v1/notices', async () => await guard(async () => ({ status: 200, body: { notices: await get().list() } })))

  rpc.route('POST', '/v1/notices', async req => await guard(async () => {
    const b = await body(req, publishBody, '{"kind", "data", "canary"?: [node], "cells"?: [cell], "nodes"?: [node], "expires"?: "2h" | ISO date | ms}')
    return ok(await get().publish(b, { auth: req.operator?.jwt }), 201)
  }), WRITE)

  rpc.route('GET', '/v1/notices/:id', async req => await guard(async () => ok(await get().get(id(req)))))

  rpc.route('POST', '/v1/notices/:id/canary', async req => await guard(async () => {
    const b = await body(req, canaryBody, '{"nodes": [node name or peer id, …]}')
    return ok(await get().setCanary(id(req), b.nodes, { auth: req.operator?.jwt }))
  }), WRITE)

  rpc.route('POST', '/v1/notices/:id/promote', async req => await guard(async () => ok(await get().promote(id(req), { auth: req.operator?.jwt }))), WRITE)
  rpc.route('POST', '/v1/notices/:id/stop', async req => await guard(async () => ok(await get().stop(id(req), { auth: req.operator?.jwt }))), WRITE)
  rpc.route('POST', '/v1/notices/:id/recall', async req => await guard(async () => ok(await get().recall(id(req), { auth: req.operator?.jwt }))), WRITE)

  rpc.route('POST', '/v1/notices/:id/edit', async req => await guard(async () => {
    const b = await body(req, editBody, '{"data": {…}}')
    return ok(await get().edit(id(req), b.data, { auth: req.operator?.jwt }))
  }), WRITE)
}

function toHttp (err: unknown): unknown {
  if (err instanceof HttpError) return err
  if (err instanceof NoticeError) return new HttpError(err.status, err.message, err.code)
  if (err instanceof AstradError && err.code === 'ERR_FORBIDDEN') return new HttpError(403, err.message, err.code)
  if (err instanceof AstradError) return new HttpError(500, err.message, err.code)
  return new HttpError(500, errorMessage(err), 'ERR_INTERNAL')
}
