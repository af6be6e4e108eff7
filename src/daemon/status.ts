import { VERSION } from '../version.ts'
import type { Role } from '../config/index.ts'
import type { NodeState } from '../membership/index.ts'
import type { Daemon } from './index.ts'

/** `GET /v1/status` and `astrad status --json`: the contract of ARCHITECTURE §3. */
export interface StatusDocument {
  self: {
    peerId: string
    name: string
    roles: Role[]
    version: string
    addrs: string[]
    cell: string
    state: string
    rpc?: { host: string, port: number }
    /** Present on resources: the local cluster log's revision. */
    clusterLog?: { revision: number }
  }
  view: { source: string, stalenessMs: number, error?: string }
  nodes: Array<{
    peerId: string
    name: string
    cell: string
    state: NodeState
    roles: Role[]
    cores: number
    gpus: number
    cpuUtil: number
    inflight: number
    lastSeenMs: number
    replicas: number
  }>
  apps: unknown[]
  models: unknown[]
  notices: unknown[]
}

export async function buildStatus (daemon: Daemon): Promise<StatusDocument> {
  const host = daemon.host
  const self: StatusDocument['self'] = {
    peerId: host.peerId.toString(),
    name: daemon.config.name,
    roles: daemon.config.roles,
    version: VERSION,
    addrs: host.getMultiaddrs().map(String),
    cell: daemon.config.cell,
    state: daemon.state,
    rpc: daemon.rpcAddress,
    clusterLog: daemon.clusterLogStats
  }
  let view: StatusDocument['view']
  let nodes: StatusDocument['nodes'] = []
  try {
    const list = await daemon.onlineList(AbortSignal.timeout(5_000))
    view = { source: list.source, stalenessMs: list.stalenessMs }
    nodes = list.records.map(r => ({
      peerId: r.hb.peerId,
      name: r.hb.name,
      cell: r.hb.cell,
      state: r.state,
      roles: r.hb.roles,
      cores: r.hb.cores,
      gpus: r.hb.gpus,
      cpuUtil: Math.round(r.hb.cpuUtil * 1000) / 1000,
      inflight: r.hb.inflight,
      lastSeenMs: r.ageMs,
      replicas: r.hb.readyReplicas
    })).sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
  } catch (err) {
    view = { source: 'none', stalenessMs: -1, error: err instanceof Error ? err.message : String(err) }
  }
  return { self, view, nodes, apps: [], models: [], notices: [] }
}
