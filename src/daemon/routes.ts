import type { RpcServer } from '../rpc/index.ts'
import { HttpError } from '../rpc/index.ts'
import type { Daemon } from './index.ts'
import { buildStatus } from './status.ts'

/** Admin and health routes of the RPC port. */
export function registerRoutes (rpc: RpcServer, daemon: Daemon): void {
  rpc.route('GET', '/v2/health/live', () => ({ status: 200, body: { live: true } }), { open: true })
  // KServe readiness: the daemon is up and joined, and (on a scheduler) its router can route.
  rpc.route('GET', '/v2/health/ready', () => daemon.ready && (daemon.router?.serverReady() ?? true)
    ? { status: 200, body: { ready: true } }
    : { status: 503, body: { ready: false, state: daemon.state } }, { open: true })

  rpc.route('GET', '/v1/status', async () => {
    if (daemon.state === 'created' || daemon.state === 'starting') throw new HttpError(503, 'daemon is starting')
    return { status: 200, body: await buildStatus(daemon) }
  })

  rpc.route('POST', '/v1/drain', () => {
    const state = daemon.state
    if (state === 'running') void daemon.drain()
    return { status: 202, body: { state: daemon.state } }
  })

  rpc.route('GET', '/metrics', async () => ({
    status: 200,
    text: await daemon.metrics.registry.metrics(),
    headers: { 'content-type': daemon.metrics.registry.contentType }
  }))
}
