import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { AstradError, errorMessage } from '../util/errors.ts'
import type { RequestSigner, RpcClient } from '../rpc/client.ts'
import type { OperatorCredential } from '../trust/files.ts'
import { OPERATOR_CREDENTIAL_FILE, OPERATOR_HEADER } from '../trust/constants.ts'

// The trust code (jose, zod) is loaded only when a write goes to a secure daemon: reads and
// `status` start without it.
const files = async (): Promise<typeof import('../trust/files.ts')> => await import('../trust/files.ts')
const signing = async (): Promise<typeof import('../trust/operator.ts')> => await import('../trust/operator.ts')

/**
 * The CLI side of operator authentication (docs/security.md "Operator writes"): every request
 * that changes the cluster is signed with the operator's credential for the daemon it goes to
 * (its peer id, from `GET /v1/self`), over the exact method, path and body sent. Requests to an
 * insecure daemon go unsigned.
 */

/** No credential could be found or read for a write to a secure daemon. */
export class CredentialError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_CREDENTIAL')
    this.name = 'CredentialError'
  }
}

/** `GET /v1/self` (src/daemon/routes.ts SelfInfo). */
interface SelfInfo {
  peerId: string
  security: 'secure' | 'insecure'
}

export interface CredentialSources {
  /** `--credential FILE`. */
  credential?: string
  env?: NodeJS.ProcessEnv
  home?: string
}

/** Whether `method target` changes the cluster: the trust layer's writeScope, which the daemon checks too. */
export async function isClusterWrite (method: string, target: string): Promise<boolean> {
  return (await signing()).writeScope(method, target).length > 0
}

/**
 * The operator credential, from the first of: --credential FILE, ASTRAD_CREDENTIAL (a file
 * path, or the credential's JSON itself), $ASTRAD_DATA_DIR/operator.cred, ~/.astrad/operator.cred
 * (the one-host cluster's, written by its daemon). A named source that cannot be read is an
 * error; the data-dir files are skipped when absent.
 */
export async function loadCredential (sources: CredentialSources = {}): Promise<OperatorCredential> {
  const env = sources.env ?? process.env
  if (sources.credential != null) return await readNamed(sources.credential, '--credential')
  const fromEnv = env.ASTRAD_CREDENTIAL?.trim()
  if (fromEnv != null && fromEnv !== '') {
    if (!fromEnv.startsWith('{')) return await readNamed(fromEnv, 'ASTRAD_CREDENTIAL')
    try {
      return await (await files()).parseOperatorCredential(fromEnv, 'ASTRAD_CREDENTIAL')
    } catch (err) {
      throw new CredentialError(errorMessage(err))
    }
  }
  const looked: string[] = []
  const dirs = [env.ASTRAD_DATA_DIR, path.join(sources.home ?? os.homedir(), '.astrad')].filter((d): d is string => d != null && d !== '')
  for (const dir of dirs) {
    const file = path.join(dir, OPERATOR_CREDENTIAL_FILE)
    looked.push(file)
    if (fs.existsSync(file)) return await readNamed(file, file)
  }
  throw new CredentialError(`this changes the cluster and needs an operator credential; none found (looked at --credential, ASTRAD_CREDENTIAL, ${looked.join(', ')}): create one with 'astrad cluster operator NAME --cluster-key FILE' and pass --credential FILE`)
}

async function readNamed (file: string, source: string): Promise<OperatorCredential> {
  try {
    return await (await files()).readOperatorCredential(file)
  } catch (err) {
    throw new CredentialError(`${source}: ${errorMessage(err)}`)
  }
}

/**
 * Signs the cluster writes an RpcClient sends: asks the daemon who it is once, loads the
 * credential once (only when a write is made), adds the `astrad-operator` header.
 */
export function operatorSigner (sources: CredentialSources = {}): RequestSigner {
  let self: Promise<SelfInfo | undefined> | undefined
  let cred: Promise<OperatorCredential> | undefined
  return async (req, client: RpcClient): Promise<Record<string, string>> => {
    // GET and HEAD never change the cluster; whether another method does is asked of the trust
    // code only when the daemon is secure.
    if (req.method === 'GET' || req.method === 'HEAD') return {}
    const info = await (self ??= client.call<SelfInfo>('GET', '/v1/self').catch((err: unknown) => {
      // A daemon from before operator authentication has no /v1/self and checks nothing.
      if ((err as { code?: string }).code === 'ERR_HTTP_404') return undefined
      self = undefined
      throw err
    }))
    if (info == null || info.security !== 'secure') return {}
    if (!await isClusterWrite(req.method, req.path)) return {}
    const credential = await (cred ??= loadCredential(sources).catch((err: unknown) => { cred = undefined; throw err }))
    const body = req.body instanceof Uint8Array ? req.body : { sha256: await req.body.sha256() }
    const jwt = await (await signing()).signOperatorRequest(credential, { method: req.method, path: req.path, body, audience: info.peerId })
    return { [OPERATOR_HEADER]: jwt }
  }
}
