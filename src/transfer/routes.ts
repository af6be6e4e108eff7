import { z } from 'zod'
import { HttpError, verifiedStream, type RpcServer, type RpcRequest } from '../rpc/index.ts'
import { AstradError, DecodeError, errorMessage } from '../util/errors.ts'
import { modelIdSchema } from './manifest.ts'
import { TransferError, type TransferService } from './service.ts'
import { MAX_PIECES, MAX_PIECE_SIZE } from './constants.ts'
import { forgetsModel } from '../trust/operator.ts'

/**
 * `/v1/models…`, `/v1/transfers…` on the RPC port (the contract is
 * docs/transfer.md). `service` is read at request time: routes exist before the daemon has
 * started its parts.
 */
export function registerTransferRoutes (rpc: RpcServer, service: () => TransferService | undefined): void {
  const svc = (): TransferService => {
    const s = service()
    if (s == null) throw new HttpError(503, 'daemon is starting')
    return s
  }
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      throw toHttp(err)
    }
  }
  const idParam = (req: RpcRequest): string => {
    const parsed = modelIdSchema.safeParse(req.params.id)
    if (!parsed.success) throw new HttpError(400, 'a model id is 64 lower-case hex characters (see: astrad model ls)', 'ERR_BAD_REQUEST')
    return parsed.data
  }

  rpc.route('POST', '/v1/models', async req => await guard(async () => {
    const name = req.query.get('name') ?? ''
    if (!/^[^\u0000-\u001f]{1,200}$/.test(name)) throw new HttpError(400, '?name= must be 1-200 printable characters', 'ERR_BAD_REQUEST')
    const declared = req.headers['content-length']
    const size = Number(declared)
    if (declared == null || !Number.isSafeInteger(size)) throw new HttpError(411, 'Content-Length is required (the model size picks its piece size)', 'ERR_BAD_REQUEST')
    if (size < 1) throw new HttpError(400, 'the model is empty', 'ERR_BAD_REQUEST')
    if (size > MAX_PIECE_SIZE * MAX_PIECES) throw new HttpError(413, `a model may have at most ${MAX_PIECE_SIZE * MAX_PIECES} bytes`, 'ERR_TOO_LARGE')
    const aborted = new AbortController()
    req.raw.once('aborted', () => { aborted.abort(new AstradError('upload aborted by the client', 'ERR_ABORTED')) })
    const added = await svc().add(verifiedStream(req.raw, req.operator, size), size, name, aborted.signal, req.operator?.jwt)
    return { status: 201, body: added }
  }), { operator: { streamed: true } })

  rpc.route('GET', '/v1/models', async () => await guard(async () => ({ status: 200, body: { models: await svc().models() } })))

  rpc.route('GET', '/v1/models/:id', async req => await guard(async () => {
    const id = idParam(req)
    const info = await svc().model(id)
    if (info == null) throw new HttpError(404, `no model ${id}`, 'ERR_NOT_FOUND')
    return { status: 200, body: info }
  }))

  rpc.route('POST', '/v1/models/:id/pull', async req => await guard(async () => {
    const info = await svc().pull(idParam(req))
    return { status: info.state === 'complete' ? 200 : 202, body: info }
  }))

  rpc.route('GET', '/v1/models/:id/data', async req => await guard(async () => {
    const model = svc().readModel(idParam(req))
    return {
      status: 200,
      stream: model.stream,
      headers: { 'content-length': String(model.size), 'x-astrad-sha256': model.sha256, 'content-type': 'application/octet-stream' }
    }
  }))

  rpc.route('DELETE', '/v1/models/:id', async req => await guard(async () => {
    const id = idParam(req)
    const forget = forgetsModel(req.query)
    await svc().remove(id, forget, req.operator?.jwt)
    return { status: 200, body: { id, removed: true, forgotten: forget } }
  }), { operator: { when: forgetsModel } })

  rpc.route('GET', '/v1/transfers', () => {
    const s = svc()
    return { status: 200, body: { transfers: s.transfers(), limits: s.limitsInfo() } }
  })

  rpc.route('GET', '/v1/transfers/:id', req => {
    const id = idParam(req)
    const info = svc().transfer(id)
    if (info == null) throw new HttpError(404, `no transfer of model ${id} on this daemon (start one: astrad model pull)`, 'ERR_NOT_FOUND')
    return { status: 200, body: info }
  })

}

const STATUS_BY_CODE: Record<string, number> = {
  ERR_FORBIDDEN: 403,
  ERR_NOT_FOUND: 404,
  ERR_INCOMPLETE: 409,
  ERR_PINNED: 409,
  ERR_ROLE: 409,
  ERR_NO_SPACE: 507,
  ERR_DECODE: 400,
  ERR_ABORTED: 400,
  ERR_INVALID_ENTRY: 400,
  ERR_UNREACHABLE: 503,
  ERR_TIMEOUT: 503,
  ERR_NO_TRACKER: 503
}

function toHttp (err: unknown): unknown {
  if (err instanceof HttpError) return err
  if (err instanceof TransferError) return new HttpError(err.status, err.message, err.code)
  if (err instanceof DecodeError) return new HttpError(400, err.message, err.code)
  if (err instanceof AstradError) return new HttpError(STATUS_BY_CODE[err.code] ?? 500, err.message, err.code)
  return new HttpError(500, errorMessage(err), 'ERR_INTERNAL')
}
