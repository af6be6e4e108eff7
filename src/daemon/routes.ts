import type { RpcServer } from '../rpc/index.ts'
import { HttpError } from '../rpc/index.ts'
import type { Daemon } from './index.ts'
import { buildStatus } from './status.ts'

/** Admin routes of the RPC port (health is KServe's: src/serving/kserve). */
export function registerRoutes (rpc: RpcServer, daemon: Daemon): void {
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
