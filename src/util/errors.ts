/**
 * Error classes shared across astrad. Every failure that crosses the CLI, the RPC port or the
 * wire has a stable `code`; tests check `name`/`code`, never message text.
 */
export class AstradError extends Error {
  readonly code: string
  constructor (message: string, code: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'AstradError'
    this.code = code
  }
}

/** A user-supplied value (flag, env var, config file key) is invalid. Exit code 2. */
export class ConfigError extends AstradError {
  readonly key: string
  constructor (key: string, message: string) {
    super(`${key}: ${message}`, 'ERR_CONFIG')
    this.name = 'ConfigError'
    this.key = key
  }
}

/** Bytes from the network (or disk) that do not decode. Dropped and counted, never fatal. */
export class DecodeError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_DECODE')
    this.name = 'DecodeError'
  }
}

/** A request to a peer or to the daemon failed (unreachable, refused, timed out). */
export class RequestError extends AstradError {
  constructor (message: string, code = 'ERR_REQUEST', options?: ErrorOptions) {
    super(message, code, options)
    this.name = 'RequestError'
  }
}

/** An operation was called in a lifecycle state that does not allow it (stop before start …). */
export class LifecycleError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_LIFECYCLE')
    this.name = 'LifecycleError'
  }
}

export function errorMessage (err: unknown): string {
  if (err instanceof Error) return err.message
  // libp2p sometimes rejects a dial with the DOM Event that ended it (a stream or connection
  // closing): "[object Event]" would say nothing.
  if (typeof Event !== 'undefined' && err instanceof Event) return `ended by a '${err.type}' event`
  return String(err)
}
