import type { RpcServer } from '../rpc/index.ts'
import { HttpError } from '../rpc/index.ts'
import type { Daemon } from './index.ts'
import { buildStatus } from './status.ts'

/** `GET /v1/self`. */
export interface SelfInfo {
  peerId: string
  name: string
  roles: string[]
  /** 'secure': writes that change the cluster need a signed operator request. */
  security: 'secure' | 'insecure'
}

/** Admin routes of the RPC port (health is KServe's: src/serving/kserve). */
export function registerRoutes (rpc: RpcServer, daemon: Daemon): void {
  rpc.route('GET', '/v1/status', async () => {
    if (daemon.state === 'created' || daemon.state === 'starting') throw new HttpError(503, 'daemon is starting')
    return { status: 200, body: await buildStatus(daemon) }
  })

  // Who this daemon is, cheaply: the CLI signs operator requests for this peer id (the
  // audience) and sends them unsigned to an insecure daemon.
  rpc.route('GET', '/v1/self', () => {
    if (daemon.state === 'created' || daemon.state === 'starting') throw new HttpError(503, 'daemon is starting')
    const self: SelfInfo = {
      peerId: daemon.host.peerId.toString(),
      name: daemon.config.name,
      roles: daemon.config.roles,
      security: daemon.security?.mode ?? 'insecure'
    }
    return { status: 200, body: self }
  })

  rpc.route('POST', '/v1/drain', () => {
    const state = daemon.state
    if (state === 'running') void daemon.drain()
    return { status: 202, body: { state: daemon.state } }
  })

  // Cordon is an operator action on the node's own RPC port (token-protected off loopback, as
  // drain); schedulers learn of it from the node's ledger and signed heartbeat.
  const cordon = (cordoned: boolean) => () => {
    if (daemon.state !== 'running' && daemon.state !== 'draining') throw new HttpError(503, `daemon is ${daemon.state}`, 'ERR_UNAVAILABLE')
    if (daemon.ledger == null) throw new HttpError(409, `this daemon (roles ${daemon.config.roles.join(',')}) has no node role: cordon the node's own daemon (its --rpc)`, 'ERR_NOT_NODE')
    daemon.setCordoned(cordoned)
    return { status: 200, body: { name: daemon.config.name, cordoned, replicas: daemon.ledger.all().length } }
  }
  rpc.route('POST', '/v1/cordon', cordon(true))
  rpc.route('POST', '/v1/uncordon', cordon(false))

  rpc.route('GET', '/metrics', async () => ({
    status: 200,
    text: await daemon.metrics.registry.metrics(),
    headers: { 'content-type': daemon.metrics.registry.contentType }
  }))
}
