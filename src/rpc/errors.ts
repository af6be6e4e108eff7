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
