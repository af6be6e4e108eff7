import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { AstradError, errorMessage } from '../util/errors.ts'
import { OPERATOR_HEADER } from '../trust/constants.ts'
import { HttpError } from './errors.ts'

/**
 * Operator authentication of the routes that change the cluster (docs/security.md "Operator
 * writes"): such a route needs the `astrad-operator` header, a request signed with an operator
 * credential for this daemon over the exact method, path and body. Missing: 401 with a
 * challenge naming the scheme; invalid, expired, for another daemon or another body: 403 with
 * the reason. The verified request travels on with the cluster-log writes it causes.
 */

/** What the RPC port needs of the trust layer (src/trust's Trust has it). */
export interface OperatorCheck {
  /** false with --insecure: no operator is checked. */
  readonly secure: boolean
  verifyOperator: (jwt: unknown, request: { method: string, path: string, body?: Uint8Array }) => Promise<RequestOperator | undefined>
}

/** The operator of a verified request, as handlers see it. */
export interface RequestOperator {
  /** Operator name from the credential the cluster key signed. */
  name: string
  /** SHA-256 (hex) of the body the operator signed (a streamed body is checked against it). */
  bodyHash: string
  /** The signed request, forwarded with every cluster-log write it causes (`auth`). */
  jwt: string
}

/**
 * A route's operator requirement: `true` (always, body buffered and checked before the
 * handler), or `when` the query makes it a cluster write, and `streamed` for a body the
 * handler streams (checked with {@link verifiedStream} as it is read).
 */
export type OperatorRoute = true | { when?: (query: URLSearchParams) => boolean, streamed?: boolean }

/** The authentication scheme named in the 401 challenge (RFC 9110 §11.6.1). */
export const OPERATOR_SCHEME = 'AstradOperator'

const HOW_TO_SIGN = 'sign it with an operator credential: astrad ... --credential FILE or ASTRAD_CREDENTIAL; create one with: astrad cluster operator NAME --cluster-key FILE'

/** 401: the route changes the cluster and the request carries no operator signature. */
export class OperatorRequiredError extends HttpError {
  constructor (method: string, path: string) {
    super(401, `${method} ${path} changes the cluster: ${HOW_TO_SIGN}`, 'ERR_UNAUTHORIZED', {
      'www-authenticate': `${OPERATOR_SCHEME} realm="astrad", header="${OPERATOR_HEADER}"`
    })
    this.name = 'OperatorRequiredError'
  }
}

/** 403: the operator signature is there but does not hold (reason in the message). */
export class OperatorRefusedError extends HttpError {
  constructor (reason: string) {
    super(403, `operator signature refused: ${reason}`, 'ERR_FORBIDDEN')
    this.name = 'OperatorRefusedError'
  }
}

/** Whether `route` needs an operator for this request. */
export function operatorNeeded (route: OperatorRoute | undefined, query: URLSearchParams): boolean {
  if (route == null) return false
  return route === true || route.when == null || route.when(query)
}

/** The header's value, or undefined when absent (one value: a repeated header is refused by verification). */
export function operatorHeader (req: IncomingMessage): string | undefined {
  const v = req.headers[OPERATOR_HEADER]
  return Array.isArray(v) ? v.join(', ') : v
}

/**
 * Verifies the request's operator signature; `body` undefined for a streamed body. Throws
 * OperatorRequiredError or OperatorRefusedError; undefined in insecure mode.
 */
export async function verifyRequestOperator (check: OperatorCheck, req: IncomingMessage, target: string, body: Uint8Array | undefined): Promise<RequestOperator | undefined> {
  if (!check.secure) return undefined
  const method = req.method ?? 'GET'
  const jwt = operatorHeader(req)
  try {
    // Asked even without a header, so the refusal is counted and logged like any other.
    return await check.verifyOperator(jwt === '' ? undefined : jwt, { method, path: target, body })
  } catch (err) {
    if (jwt == null || jwt === '') throw new OperatorRequiredError(method, target.split('?')[0] ?? target)
    if (err instanceof AstradError && err.code === 'ERR_FORBIDDEN') throw new OperatorRefusedError(err.message)
    throw new OperatorRefusedError(errorMessage(err))
  }
}

/**
 * A streamed body of `size` bytes as it arrives, hashed on the way. The chunk that completes it
 * is handed on only if the whole body is the one the operator signed; otherwise the rest of the
 * body is read and dropped (the request stays whole, so its answer can be sent) and
 * OperatorRefusedError is thrown, so the consumer fails before it records anything.
 */
export async function * verifiedStream (source: AsyncIterable<Uint8Array>, operator: RequestOperator | undefined, size: number): AsyncGenerator<Uint8Array> {
  if (operator == null) {
    yield * source
    return
  }
  const hash = createHash('sha256')
  let seen = 0
  let verdict: 'pending' | 'signed' | 'refused' = 'pending'
  for await (const chunk of source) {
    if (verdict === 'refused') continue
    if (verdict === 'signed') {
      verdict = 'refused'
      continue
    }
    hash.update(chunk)
    seen += chunk.length
    if (seen >= size) {
      verdict = hash.digest('hex') === operator.bodyHash ? 'signed' : 'refused'
      if (verdict === 'refused') continue
    }
    yield chunk
  }
  if (verdict === 'pending') verdict = hash.digest('hex') === operator.bodyHash ? 'signed' : 'refused'
  if (verdict === 'refused') throw new OperatorRefusedError('body differs from the one signed')
}
