import os from 'node:os'
import path from 'node:path'

export const ROLES = ['node', 'resource', 'scheduler'] as const
export type Role = typeof ROLES[number]

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export const LOG_FORMATS = ['json', 'pretty'] as const

/** The daemon's settings after merging flags > ASTRAD_* env > config file > defaults. */
export interface DaemonConfig {
  /** Roles this process runs. @default ['node', 'resource', 'scheduler'] (a one-host cluster) */
  roles: Role[]
  /** Human-readable name shown by `astrad status`. @default the host name */
  name: string
  /** Where the identity key, the cluster log and pieces live. @default ~/.astrad */
  dataDir: string
  /** libp2p listen multiaddrs. @default ['/ip4/0.0.0.0/tcp/7071'] */
  listen: string[]
  /** Peers to join through (multiaddr with or without /p2p, or host:port). @default [] */
  bootstrap: string[]
  /** Local RPC port (HTTP). @default 127.0.0.1:7070 */
  rpc: { host: string, port: number }
  /** Bearer token for the RPC port; required when it binds a non-loopback address. */
  rpcToken?: string
  /** Placement label: a Kubernetes cluster, a VM pool. @default 'default' */
  cell: string
  /** CPU cores this node offers. @default os.availableParallelism() */
  cores: number
  /** Accelerator cards this node offers. @default 0 */
  gpus: number
  /**
   * Performance factor of each card (1 = the reference card): the routing weight's capacity
   * term is gpus × gpuPerf (docs/gpus.md). @default 1
   */
  gpuPerf: number
  /**
   * Run without a cluster secret: anyone who reaches the P2P port may join and act in any role.
   * Said in status and the log. @default false (docs/security.md)
   */
  insecure?: boolean
  /** Path of the cluster key file (`astrad cluster init`): this daemon signs its own certificate. */
  clusterKey?: string
  /** A join token (`astrad cluster token`), or @FILE holding one. */
  joinToken?: string
  /** @default 'info' */
  logLevel: typeof LOG_LEVELS[number]
  /** Log lines as JSON or human-readable. @default pretty on a terminal, JSON otherwise */
  logFormat?: typeof LOG_FORMATS[number]
  /**
   * P2P upload limit in bytes/s: a number, 'unlimited', or 'auto' (measured at join and set
   * so model transfers never starve serving). @default 'auto'
   */
  uploadLimit: RateSetting
  /** P2P download limit in bytes/s, as uploadLimit. @default 'auto' */
  downloadLimit: RateSetting
  /**
   * What a resource may relay for peers behind NAT, in bytes/s (docs/nat.md): a rate,
   * 'unlimited', or 'auto' (half the default-route NIC's link speed on a resource without the
   * node role; unlimited where the speed is unknown). Relayed bytes also draw from the upload
   * limit, like any upload. @default 'auto'
   */
  relayLimit: RateSetting
  /** Bytes the model cache may hold before least-recently-used models are evicted. @default unlimited (disk watermarks only) */
  cacheSize?: number
  /** Bytes/s the background scrub re-hashes held model pieces at; 0 = off. @default 4 MB/s (transfer's SCRUB_RATE_BPS) */
  scrubRate?: number
  /** Ms a held piece's last hash may age before the scrub re-hashes it; 0 = continuously. @default 1 day (transfer's SCRUB_INTERVAL_MS) */
  scrubInterval?: number
  /** Addresses to announce instead of the listen addresses (a public IP in front of a pod). @default [] */
  announce: string[]
}

/** A rate limit as configured: bytes per second, no limit, or measured at join. */
export type RateSetting = number | 'auto' | 'unlimited'

export const DEFAULT_RPC_PORT = 7070
/** libp2p TCP port; 7071 sits next to the RPC port so one firewall rule pair covers astrad. */
export const DEFAULT_P2P_PORT = 7071

export function defaultConfig (): DaemonConfig {
  return {
    roles: [...ROLES],
    name: os.hostname(),
    dataDir: path.join(os.homedir(), '.astrad'),
    listen: [`/ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT}`],
    bootstrap: [],
    rpc: { host: '127.0.0.1', port: DEFAULT_RPC_PORT },
    cell: 'default',
    cores: os.availableParallelism(),
    gpus: 0,
    gpuPerf: 1,
    logLevel: 'info',
    uploadLimit: 'auto',
    downloadLimit: 'auto',
    relayLimit: 'auto',
    announce: []
  }
}
