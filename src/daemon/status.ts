import { VERSION } from '../version.ts'
import type { Role } from '../config/index.ts'
import type { NodeState, WireRecord } from '../membership/index.ts'
import type { Daemon } from './index.ts'
import { peerPaths, type NatStatus, type PeerPath, type HolePunchStatus, type RelayTrafficStats } from '../p2p/index.ts'
import type { ModelInfo, LimitsInfo, TransferInfo, RelayLimitInfo } from '../transfer/index.ts'
import type { AppStatus } from '../placement/index.ts'
import type { PipelineStatus } from '../pipeline/index.ts'
import { memberOf, type Member } from '../mailbox/admin.ts'
import type { Security } from '../trust/index.ts'
import type { DeviceReport } from '../devices/index.ts'

/** How this daemon holds its cluster secret (docs/security.md); no keys, only what an operator checks. */
export interface SecurityStatus {
  mode: Security['mode']
  /** insecure, cluster-key, join-token, membership (joined before: saved certificate) or created (one-host cluster). */
  source: Security['source']
  /** Roles its certificate grants (with --insecure: the roles it runs, unchecked). */
  roles: Role[]
  /** When its certificate expires (ms since the epoch); absent: until the cluster key changes. */
  certExpiresAt?: number
}

export function securityStatus (s: Security): SecurityStatus {
  return { mode: s.mode, source: s.source, roles: s.roles, ...(s.certExpiresAt != null ? { certExpiresAt: s.certExpiresAt } : {}) }
}

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
    /** How peers reach this daemon: public addresses, or a relay slot (docs/nat.md). */
    nat: NatStatus
    /** Absent from daemons older than issue 16. */
    security?: SecurityStatus
  }
  view: { source: string, stalenessMs: number, error?: string }
  nodes: Array<{
    peerId: string
    name: string
    cell: string
    state: NodeState
    /** The node was cordoned by its operator: no new replicas (from its heartbeat). */
    cordoned: boolean
    roles: Role[]
    cores: number
    gpus: number
    /** Performance factor per card (`--gpu-perf`), from the heartbeat. */
    gpuPerf: number
    /** Busy fraction of the node's cards (its GPU replicas' run time), from the heartbeat. */
    gpuUtil: number
    /**
     * Device kind, detected devices and working execution providers, where this daemon holds
     * the node's ledger (a scheduler) or is the node; absent otherwise and from older nodes.
     */
    devices?: DeviceReport
    cpuUtil: number
    inflight: number
    lastSeenMs: number
    /** When the node's process started (ms since the epoch, its own clock): `status` shows its age. */
    startedAt: number
    /** Ready replicas; 0 for a dead or left node, as are inflight, the rates and transfers. */
    replicas: number
    /** Routing weight this scheduler gives the node (largest over its apps; absent if it serves none). */
    weight?: number
    /** P2P limits in force (bytes/s, 0 = none) and recent rates, from the node's heartbeat. */
    uploadLimit: number
    downloadLimit: number
    uploadRate: number
    downloadRate: number
    /** Model downloads in progress on that node. */
    transfers: number
  }>
  /** Apps and their placement, as this daemon's scheduler sees them (empty without that role). */
  apps: Array<AppStatus & { weights: Array<{ node: string, name: string, weight: number, ejected: boolean, inflight: number }> }>
  /** Pipelines: each stage's desired/placed/ready and whether the pipeline is ready (empty without the scheduler role). */
  pipelines: PipelineStatus[]
  models: ModelInfo[]
  /** This daemon's downloads (in progress and recently finished). */
  transfers: TransferInfo[]
  /** This daemon's P2P limits and rates. */
  limits: LimitsInfo
  /** Notices in the public and private mailboxes and how far each has rolled out. */
  notices: NoticeSummary[]
  /** `message` notices in force on this daemon (node role), newest first. */
  messages: ActiveMessage[]
  /**
   * How this daemon reaches each connected peer: `direct` or `relayed` (through a resource), with
   * the latest hole punch it started with that peer (docs/nat.md). Its name where the view has it.
   */
  peers?: Array<PeerPath & { name?: string }>
  /** Hole punches this daemon started (on relayed connections it received) and their outcomes. */
  holePunch?: HolePunchStatus
  /** Resources: what they relay for peers behind NAT, counted and limited like uploads. */
  relay?: RelayStatus
}

export interface RelayStatus {
  /** Relay slots held for peers behind NAT. */
  reservations: number
  traffic: RelayTrafficStats
  limit: RelayLimitInfo
}

/** One notice as `astrad status --json` lists it (the contract). */
export interface NoticeSummary {
  id: string
  kind: string
  state: string
  /** 'all', 'cells: a,b', 'canary: n1,n2' (names), 'private: n1,n2'. */
  audience: string
  /**
   * Live nodes (alive, suspect or draining, node role) the current revision is for, plus nodes
   * that applied it and then left (a drain notice's targets exit).
   */
  targets: number
  /** Of those, nodes whose heartbeat reports a mailbox cursor at or past the current revision. */
  applied: number
  /** Of those that applied, nodes that have left since; absent from older daemons. */
  left?: number
  /** ms since the epoch; null = never. */
  expiresAt: number | null
  revision: number
}

/** A `message` notice in force on this node. */
export interface ActiveMessage {
  id: string
  level: 'info' | 'warn'
  text: string
  /** When the notice was published or last edited (ms since the epoch). */
  since: number
  expiresAt: number | null
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
    clusterLog: daemon.clusterLogStats,
    nat: host.services.nat.status,
    ...(daemon.security != null ? { security: securityStatus(daemon.security) } : {})
  }
  const weights = daemon.router?.weights() ?? []
  const nodeWeight = new Map<string, number>()
  for (const w of weights) if (!w.ejected) nodeWeight.set(w.node, Math.max(nodeWeight.get(w.node) ?? 0, w.weight))
  let view: StatusDocument['view']
  let nodes: StatusDocument['nodes'] = []
  let members: Member[] | undefined
  try {
    const list = await daemon.onlineList(AbortSignal.timeout(5_000))
    members = list.records.map(memberOf)
    view = { source: list.source, stalenessMs: list.stalenessMs }
    nodes = list.records.map(r => nodeEntry(r, nodeWeight.get(r.hb.peerId), daemon.nodeDevices(r.hb.peerId)))
      .sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
  } catch (err) {
    view = { source: 'none', stalenessMs: -1, error: err instanceof Error ? err.message : String(err) }
  }
  let models: ModelInfo[] = []
  try {
    models = await daemon.transfer.models()
  } catch (err) {
    view.error ??= `models: ${err instanceof Error ? err.message : String(err)}`
  }
  const names = new Map(nodes.map(n => [n.peerId, n.name]))
  const apps = (daemon.placer?.status() ?? []).map(a => ({
    ...a,
    weights: weights.filter(w => w.app === a.name).map(w => ({ node: w.node, name: names.get(w.node) ?? w.node, weight: round3(w.weight), ejected: w.ejected, inflight: w.inflight }))
  }))
  let notices: NoticeSummary[] = []
  try {
    notices = await daemon.noticeAdmin?.summaries(AbortSignal.timeout(5_000), members) ?? []
  } catch (err) {
    view.error ??= `notices: ${err instanceof Error ? err.message : String(err)}`
  }
  const peers = peerPaths(host, host.services.holePunch).map(p => ({ ...p, ...(names.has(p.peerId) ? { name: names.get(p.peerId) } : {}) }))
  const relay = daemon.relayStatus()
  return {
    self, view, nodes, apps, pipelines: daemon.pipelines?.status() ?? [], models, transfers: daemon.transfer.transfers(), limits: daemon.transfer.limitsInfo(), notices, messages: daemon.messages,
    peers, holePunch: host.services.holePunch.status(), ...(relay != null ? { relay } : {})
  }
}

/** A node of the status document from its online-list record and this scheduler's weight for it. */
export function nodeEntry (r: WireRecord, weight: number | undefined, devices?: DeviceReport): StatusDocument['nodes'][number] {
  // A dead or left node serves and moves nothing: its last heartbeat's figures are history.
  const live = r.state !== 'dead' && r.state !== 'left'
  return {
    peerId: r.hb.peerId,
    name: r.hb.name,
    cell: r.hb.cell,
    state: r.state,
    cordoned: r.hb.cordoned,
    roles: r.hb.roles,
    cores: r.hb.cores,
    gpus: r.hb.gpus,
    gpuPerf: r.hb.gpuPerf,
    gpuUtil: live ? Math.round(r.hb.gpuUtil * 1000) / 1000 : 0,
    ...(devices != null ? { devices } : {}),
    cpuUtil: Math.round(r.hb.cpuUtil * 1000) / 1000,
    inflight: live ? r.hb.inflight : 0,
    lastSeenMs: r.ageMs,
    startedAt: r.hb.incarnation,
    replicas: live ? r.hb.readyReplicas : 0,
    ...(weight != null ? { weight: round3(weight) } : {}),
    uploadLimit: r.hb.uploadLimit,
    downloadLimit: r.hb.downloadLimit,
    uploadRate: live ? r.hb.uploadRate : 0,
    downloadRate: live ? r.hb.downloadRate : 0,
    transfers: live ? r.hb.transfers : 0
  }
}

function round3 (n: number): number {
  return Math.round(n * 1000) / 1000
}
