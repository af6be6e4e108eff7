import { InvalidArgumentError } from 'commander'
import type { RpcClient } from '../../../rpc/index.ts'
import { AstradError, ConfigError, RequestError } from '../../../util/errors.ts'
import { parseRate } from '../../../config/units.ts'
import type { ModelInfo } from '../../../transfer/index.ts'

/** The flags every `model` subcommand takes (see rpc-options.ts). */
export interface RpcFlags {
  rpc?: string
  rpcToken?: string
}

/** No model in the cluster log matches the id or prefix given. */
export class ModelNotFoundError extends AstradError {
  constructor (given: string) {
    super(`no model ${given} (see: astrad model ls)`, 'ERR_NOT_FOUND')
    this.name = 'ModelNotFoundError'
  }
}

/** An id prefix that matches several models. */
export class AmbiguousModelIdError extends AstradError {
  readonly matches: string[]
  constructor (given: string, matches: string[]) {
    const shown = matches.slice(0, 3).map(id => id.slice(0, Math.min(64, given.length + 4)) + '…').join(', ')
    super(`${given} matches ${matches.length} models (${shown}${matches.length > 3 ? ', …' : ''}); give more characters`, 'ERR_AMBIGUOUS')
    this.name = 'AmbiguousModelIdError'
    this.matches = matches
  }
}

/** The shortest id prefix accepted: 8 hex digits = 4 bytes, few collisions in any real cluster. */
export const MIN_ID_PREFIX = 8

const ID_RE = /^[0-9a-f]{8,64}$/

/** Checks an ID argument's shape (a usage error, before any request). Returns it lower-cased. */
export function checkIdArgument (raw: string): string {
  const id = raw.trim().toLowerCase()
  if (!ID_RE.test(id)) {
    throw new ConfigError('ID', `expected a model id or its first ${MIN_ID_PREFIX}+ hex characters, got '${raw}' (see: astrad model ls)`)
  }
  return id
}

/**
 * Resolves a full id or an unambiguous prefix to the model's description: a full id through
 * `GET /v1/models/:id`, a prefix through `GET /v1/models`.
 */
export async function resolveModel (client: RpcClient, raw: string): Promise<ModelInfo> {
  const given = checkIdArgument(raw)
  if (given.length === 64) {
    try {
      return await client.call<ModelInfo>('GET', `/v1/models/${given}`)
    } catch (err) {
      if (err instanceof RequestError && err.code === 'ERR_HTTP_404') throw new ModelNotFoundError(given)
      throw err
    }
  }
  const { models } = await client.call<{ models: ModelInfo[] }>('GET', '/v1/models')
  const matches = models.filter(m => m.id.startsWith(given))
  if (matches.length === 0) throw new ModelNotFoundError(given)
  if (matches.length > 1) throw new AmbiguousModelIdError(given, matches.map(m => m.id))
  return matches[0] as ModelInfo
}

/** `--name`: what the daemon accepts (1-200 characters, no control characters). */
export function parseNameArgument (value: string): string {
  if (!/^[^\u0000-\u001f\u007f]{1,200}$/.test(value)) throw new InvalidArgumentError('expected 1-200 printable characters.')
  return value
}
