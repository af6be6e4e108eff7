import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Daemon } from '../../src/daemon/index.ts'
import {
  createOperatorCredential, readClusterSecret, readOperatorCredential, signOperatorRequest, trustConstants, type OperatorCredential
} from '../../src/trust/index.ts'
import type { TestCluster } from './cluster.ts'

/**
 * Operator credentials for tests: a credential the TestCluster's key vouches for, signatures
 * for a daemon's RPC port, and fetch() of the RPC port with the signature in its header.
 */

/** The operator name tests sign as. */
export const TEST_OPERATOR = 'tester'

const credentials = new WeakMap<TestCluster, Map<string, Promise<{ cred: OperatorCredential, file: string }>>>()

/** An operator credential named `name` for `cluster` (created once), and its file. */
export async function operatorCredential (cluster: TestCluster, name = TEST_OPERATOR): Promise<{ cred: OperatorCredential, file: string }> {
  let byName = credentials.get(cluster)
  if (byName == null) credentials.set(cluster, byName = new Map())
  let made = byName.get(name)
  if (made == null) {
    made = (async () => {
      const secret = await readClusterSecret(await cluster.clusterKey())
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-op-'))
      cluster.dirs.push(dir)
      const file = path.join(dir, 'operator.cred')
      fs.writeFileSync(file, await createOperatorCredential(secret, name), { mode: 0o600 })
      return { cred: await readOperatorCredential(file), file }
    })()
    byName.set(name, made)
  }
  return await made
}

/** A signed operator request for `daemon`'s RPC port (also the `auth` of a direct cluster-log write through it). */
export async function operatorAuth (cluster: TestCluster, daemon: Daemon, method: string, target: string, body: Uint8Array | string = new Uint8Array(0), cred?: OperatorCredential): Promise<string> {
  const c = cred ?? (await operatorCredential(cluster)).cred
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  return await signOperatorRequest(c, { method, path: target, body: bytes, audience: daemon.host.peerId.toString() })
}

export interface Answer {
  status: number
  body: any
  headers: Headers
}

/** The RPC base URL of a daemon. */
export function rpcUrl (daemon: Daemon): string {
  const a = daemon.rpcAddress
  if (a == null) throw new Error('daemon has no RPC address')
  return `http://${a.host}:${a.port}`
}

/**
 * `method target` on `daemon`'s RPC port with a JSON body, signed by the cluster's test
 * operator unless `sign` is false (or a credential to sign with, or a ready header value).
 */
export async function operatorFetch (cluster: TestCluster, daemon: Daemon, method: string, target: string, body?: unknown, options: { sign?: boolean | OperatorCredential | string } = {}): Promise<Answer> {
  const payload = body === undefined ? '' : JSON.stringify(body)
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' }
  const sign = options.sign ?? true
  if (typeof sign === 'string') headers[trustConstants.OPERATOR_HEADER] = sign
  else if (sign !== false) headers[trustConstants.OPERATOR_HEADER] = await operatorAuth(cluster, daemon, method, target, payload, sign === true ? undefined : sign)
  const res = await fetch(rpcUrl(daemon) + target, { method, headers, body: body === undefined ? undefined : payload, signal: AbortSignal.timeout(30_000) })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch {}
  return { status: res.status, body: parsed, headers: res.headers }
}
