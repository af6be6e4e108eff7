import { AstradError } from '../util/errors.ts'

/**
 * The model could not be loaded or warmed up (missing or unreadable file, not ONNX, an operator
 * onnxruntime does not have, an input kind astrad cannot feed). createPool rejects with it.
 */
export class ModelLoadError extends AstradError {
  /** Why, without the file path the message starts with: what an operator is shown (app ls). */
  readonly reason: string

  constructor (message: string, options?: ErrorOptions & { reason?: string }) {
    super(message, 'ERR_MODEL_LOAD', options)
    this.name = 'ModelLoadError'
    this.reason = options?.reason ?? message
  }
}

/**
 * onnxruntime's native files could not be made loadable (single executable only): no writable,
 * executable cache directory, or the one in ASTRAD_NATIVE_DIR is unusable.
 */
export class NativeRuntimeError extends AstradError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_NATIVE_RUNTIME', options)
    this.name = 'NativeRuntimeError'
  }
}
