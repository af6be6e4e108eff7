import { demoModel, demoCurl, DEMO_APP } from '../demo/index.ts'
import { deployApp, type DeployResult } from '../placement/index.ts'
import { readOperatorCredential, signOperatorRequest } from '../trust/index.ts'
import { AstradError } from '../util/errors.ts'
import type { Daemon } from './index.ts'

/** How long `astrad start` waits for the demo replica before printing the example anyway. */
const DEMO_READY_TIMEOUT_MS = 60_000

/**
 * `astrad start` with no arguments: adds the built-in demo model (generated, no download; the
 * same bytes every time, so the same model id) and deploys it as app `demo` with one replica.
 * Idempotent: a restart finds both already there.
 */
export async function deployDemo (daemon: Daemon, signal?: AbortSignal): Promise<{ deploy: DeployResult, ready: boolean, curl: string }> {
  const bytes = demoModel()
  const sign = await localOperator(daemon)
  const added = await daemon.transfer.add((async function * () { yield bytes })(), bytes.length, 'astrad demo classifier', signal, await sign('POST', '/v1/models', bytes))
  const spec = { name: DEMO_APP, model: added.id, replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1 }
  const auth = await sign('POST', '/v1/apps', Buffer.from(JSON.stringify(spec)))
  const deploy = await deployApp(daemon.clusterLog, spec, daemon.host.peerId.toString(), auth)
  daemon.placer?.appsChanged()
  const deadline = Date.now() + DEMO_READY_TIMEOUT_MS
  let ready = false
  while (!ready && Date.now() < deadline && daemon.state === 'running' && signal?.aborted !== true) {
    ready = daemon.router?.model(DEMO_APP)?.ready === true
    if (!ready) await new Promise(resolve => setTimeout(resolve, 100))
  }
  const rpc = daemon.rpcAddress ?? { host: '127.0.0.1', port: 7070 }
  return { deploy, ready, curl: demoCurl(rpc) }
}

/**
 * The demo's writes are signed like any operator's: with the credential this host's daemon wrote
 * for its operator (security.operatorCredential, a one-host cluster's local-admin), for itself;
 * read once. Signs nothing with --insecure.
 */
async function localOperator (daemon: Daemon): Promise<(method: string, path: string, body: Uint8Array) => Promise<string | undefined>> {
  const security = daemon.security
  if (security?.mode !== 'secure') return async () => undefined
  if (security.operatorCredential == null) throw new AstradError('the demo deploy needs this host\'s operator credential (a daemon holding the cluster key writes it); deploy with astrad app deploy instead', 'ERR_CREDENTIAL')
  const cred = await readOperatorCredential(security.operatorCredential)
  const audience = daemon.host.peerId.toString()
  return async (method, path, body) => await signOperatorRequest(cred, { method, path, body, audience })
}
