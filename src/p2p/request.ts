import { lpStream } from '@libp2p/utils'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { AstradError, RequestError, errorMessage } from '../util/errors.ts'
import {
  MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, REQUEST_TIMEOUT_MS, MAX_INBOUND_REQUEST_STREAMS
} from './constants.ts'

/**
 * One-shot request/response over a libp2p stream: the client writes one length-prefixed
 * request, the server answers one length-prefixed envelope (status byte + body) and both close.
 * Every handler is capped in request size, response size, time and concurrent streams.
 */

const STATUS_OK = 0
const STATUS_ERROR = 1

/** An envelope: status byte OK + the body. */
export function okEnvelope (body: Uint8Array): Uint8Array {
  const envelope = new Uint8Array(body.length + 1)
  envelope[0] = STATUS_OK
  envelope.set(body, 1)
  return envelope
}

/** An envelope: status byte ERROR + `{code, message}` as JSON (code from an AstradError, else ERR_INTERNAL). */
export function errorEnvelope (err: unknown): Uint8Array {
  const code = err instanceof AstradError ? err.code : 'ERR_INTERNAL'
  const json = new TextEncoder().encode(JSON.stringify({ code, message: errorMessage(err) }))
  const envelope = new Uint8Array(json.length + 1)
  envelope[0] = STATUS_ERROR
  envelope.set(json, 1)
  return envelope
}

/** The body of an OK envelope, or the remote error as a RequestError (its code kept). */
export function openEnvelope (protocol: string, envelope: Uint8Array, peer: PeerId): Uint8Array {
  if (envelope.length === 0) throw new RequestError(`${protocol}: empty response`, 'ERR_BAD_RESPONSE')
  const body = envelope.subarray(1)
  if (envelope[0] === STATUS_OK) return body
  let remote: { code?: string, message?: string } = {}
  try { remote = JSON.parse(new TextDecoder().decode(body)) } catch {}
  throw new RequestError(`${protocol} refused by ${peer.toString()}: ${remote.message ?? 'unknown error'}`, remote.code ?? 'ERR_REMOTE')
}

export interface RequestOptions {
  signal?: AbortSignal
  timeoutMs?: number
  maxResponseBytes?: number
}

export async function request (libp2p: Libp2p, peer: PeerId, protocol: string, payload: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? REQUEST_TIMEOUT_MS)
  const signal = options.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
  let stream
  try {
    stream = await libp2p.dialProtocol(peer, protocol, { signal })
  } catch (err) {
    // Out of time (ours or the caller's) is a timeout, not an unreachable peer: callers retry
    // the latter at once and must not spend the caller's time twice.
    throw new RequestError(`cannot open ${protocol} to ${peer.toString()}: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_UNREACHABLE', { cause: err })
  }
  try {
    const lp = lpStream(stream, { maxDataLength: (options.maxResponseBytes ?? MAX_RESPONSE_BYTES) + 1 })
    await lp.write(payload, { signal })
    const envelope = (await lp.read({ signal })).subarray()
    await stream.close({ signal }).catch(() => {})
    return openEnvelope(protocol, envelope, peer)
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    if (err instanceof RequestError) throw err
    throw new RequestError(`${protocol} to ${peer.toString()} failed: ${errorMessage(err)}`, signal.aborted ? 'ERR_TIMEOUT' : 'ERR_REQUEST', { cause: err })
  }
}

export interface HandlerOptions {
  maxRequestBytes?: number
  maxResponseBytes?: number
  timeoutMs?: number
  maxInboundStreams?: number
  /** Called for every request that could not be served (bad input, timeouts); for counting. */
  onError?: (err: unknown, peer: PeerId) => void
  /**
   * Who may be served (e.g. `Trust.guard(libp2p, 'scheduler', protocol)`): called for every
   * request once it is read, before the handler; what it throws is answered as the error (a
   * TrustError: ERR_FORBIDDEN) and is not passed to `onError` (the trust layer counts refusals).
   */
  authorize?: (peer: PeerId) => Promise<void> | void
}

export type RequestHandler = (req: Uint8Array, peer: PeerId) => Promise<Uint8Array> | Uint8Array

export async function handleRequests (libp2p: Libp2p, protocol: string, handler: RequestHandler, options: HandlerOptions = {}): Promise<void> {
  const maxResponse = options.maxResponseBytes ?? MAX_RESPONSE_BYTES
  await libp2p.handle(protocol, async (stream, connection) => {
    const signal = AbortSignal.timeout(options.timeoutMs ?? REQUEST_TIMEOUT_MS)
    try {
      const lp = lpStream(stream, { maxDataLength: options.maxRequestBytes ?? MAX_REQUEST_BYTES })
      const req = (await lp.read({ signal })).subarray()
      let envelope: Uint8Array
      let authorized = options.authorize == null
      try {
        await options.authorize?.(connection.remotePeer)
        authorized = true
        const body = await handler(req, connection.remotePeer)
        if (body.length > maxResponse) throw new AstradError(`response of ${body.length} bytes exceeds ${maxResponse}`, 'ERR_TOO_LARGE')
        envelope = okEnvelope(body)
      } catch (err) {
        if (authorized) options.onError?.(err, connection.remotePeer)
        envelope = errorEnvelope(err)
      }
      await lp.write(envelope, { signal })
      await stream.close({ signal })
    } catch (err) {
      options.onError?.(err, connection.remotePeer)
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }, {
    maxInboundStreams: options.maxInboundStreams ?? MAX_INBOUND_REQUEST_STREAMS
  })
}
