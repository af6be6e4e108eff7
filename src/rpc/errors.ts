import { AstradError } from '../util/errors.ts'

/** An error that maps to an HTTP status with `{"error": "..."}` (and headers the status needs). */
export class HttpError extends AstradError {
  readonly status: number
  readonly headers?: Record<string, string>
  constructor (status: number, message: string, code = 'ERR_HTTP', headers?: Record<string, string>) {
    super(message, code)
    this.name = 'HttpError'
    this.status = status
    this.headers = headers
  }
}

/**
 * The port's budget of buffered body bytes (MAX_BODY_BYTES_IN_FLIGHT) is full: 503 with
 * Retry-After, refused before more of the body is read, and the connection is closed.
 */
export class BodyBudgetError extends HttpError {
  constructor (limit: number, retryAfterS: number) {
    super(503, `the server holds ${limit} bytes of request bodies already; retry in ${retryAfterS} s`, 'ERR_BODY_BUDGET', { 'retry-after': String(retryAfterS), connection: 'close' })
    this.name = 'BodyBudgetError'
  }
}

/** The request body was not whole within the body deadline (slowloris): 408, connection closed. */
export class BodyTimeoutError extends HttpError {
  constructor (timeoutMs: number) {
    super(408, `the request body was not complete within ${timeoutMs} ms of its headers`, 'ERR_BODY_TIMEOUT', { connection: 'close' })
    this.name = 'BodyTimeoutError'
  }
}

/** A path segment is not valid percent-encoded UTF-8 (`%ff%fe`): 400 on every route. */
export class BadPathError extends HttpError {
  constructor (segment: string) {
    super(400, `the path segment ${JSON.stringify(segment.slice(0, 100))} is not valid percent-encoded UTF-8`, 'ERR_BAD_PATH')
    this.name = 'BadPathError'
  }
}
