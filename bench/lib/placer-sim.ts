// One scheduler for the placement benchmark (a child process of bench/scale/placement.ts, forked
// with IPC). It runs the daemon's own placement code: a real libp2p host with a scheduler
// certificate, the real ReserveClient, LedgerView and Placer. What stands in for the rest of a
// daemon: the membership view is an OnlineList fed once with one heartbeat per simulated node
// and per scheduler (no heartbeats follow, so ledger versions in heartbeats never move: a
// scheduler learns of the others' reservations only from the ledgers its own reserves return,
// Omega's optimistic concurrency at its most pessimistic), and the cluster log is the app list
// the benchmark deploys.
//
// argv[2]: JSON PlacerSimConfig. IPC in: {cmd:'setup', nodes, schedulers} → 'warm' once every
// node's ledger is in the view; {cmd:'go', apps} deploys the apps (placing starts); {cmd:'halt'}
// stops placing and answers 'stats'; {cmd:'stop'}. IPC out: {type:'id'|'warm'|'stats'|'error'}.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, type Host } from '../../src/p2p/host.ts'
import { Trust, issueMemberCert, pskBytes, readClusterSecret } from '../../src/trust/index.ts'
import { LedgerView, Placer, ReserveClient, parseAppSpec, type AppRecord, type ReserveApi } from '../../src/placement/index.ts'
import { OnlineList, type Heartbeat } from '../../src/membership/index.ts'
import { ChangeListeners } from '../../src/membership/view.ts'
import type { ClusterLogAccess } from '../../src/clusterlog/index.ts'
import { AstradError } from '../../src/util/errors.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { systemClock } from '../../src/util/time.ts'
import type { SimNode } from './ledger-sim.ts'

export interface PlacerSimConfig {
  index: number
  clusterKey: string
}

export interface AppsSpec {
  prefix: string
  count: number
  replicas: number
  cpu: number
}

export interface PlacerSimStats {
  index: number
  /** Replicas placed (an accepted reservation that ended a placement) between go and halt. */
  placed: number
  /** Reservations sent, by answer: accepted, rejected by the node (conflict or full), failed (unreachable, timeout). */
  accepted: number
  rejected: number
  failed: number
  /** Placements that needed more than one reservation. */
  retried: number
  /** Per placement: ms from the pick to the accepted reservation. */
  latencyMs: number[]
  /** Per reservation: ms of the round trip (request to answer, parse included). */
  rttMs: number[]
  /** ms from go to the last placement, and whether every owned replica was placed by then. */
  lastPlacedMs: number
  done: boolean
  owned: number
  cpuMs: number
  wallMs: number
  /** CPU of this process while connected and idle (between warm and go), ms per s: libp2p's own upkeep. */
  idleCpuMsPerSec: number
  rssBytes: number
}

const config = JSON.parse(process.argv[2] ?? '{}') as PlacerSimConfig
const send = (msg: unknown): void => { process.send?.(msg) }
const MODEL = 'e'.repeat(64)
/** The node's refusals (src/placement/ledger.ts ReservationRejectedError), as the placer counts them. */
const CONFLICTS = new Set(['ERR_NO_CAPACITY', 'ERR_DRAINING', 'ERR_CORDONED', 'ERR_TOO_MANY', 'ERR_DUPLICATE'])

let host: Host | undefined
let ledgers: LedgerView | undefined
let placer: Placer | undefined
let apps: AppRecord[] = []
let halted = false
let goAt = 0
let cpuAtGo = process.cpuUsage()
let warmAt = 0
let cpuAtWarm = process.cpuUsage()
let idleCpuMsPerSec = 0
const s: Omit<PlacerSimStats, 'cpuMs' | 'wallMs' | 'rssBytes' | 'done' | 'owned' | 'idleCpuMsPerSec'> = {
  index: config.index, placed: 0, accepted: 0, rejected: 0, failed: 0, retried: 0, latencyMs: [], rttMs: [], lastPlacedMs: 0
}

function heartbeat (peerId: string, roles: Heartbeat['roles'], name: string, cores: number): Heartbeat {
  return {
    peerId, incarnation: 1, seq: 1, state: 'alive', cordoned: false, roles, name, cell: 'default', cores, gpus: 0, gpuPerf: 1,
    cpuUtil: 0, gpuUtil: 0, inflight: 0, ledgerVersion: 0, readyReplicas: 0, modelsDigest: 0, mailboxCursor: 0,
    uploadLimit: 0, downloadLimit: 0, uploadRate: 0, downloadRate: 0, transfers: 0
  }
}

async function start (): Promise<void> {
  const secret = await readClusterSecret(config.clusterKey)
  const privateKey = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(privateKey).toString()
  host = await createHost({ privateKey, listen: [], swarmKey: pskBytes(secret.psk) })
  const trust = new Trust({ clusterPublic: secret.key.publicKey, selfCert: await issueMemberCert(secret.key.privateKey, peerId, ['scheduler']), logger: silentLogger() })
  await trust.attach(host)
  await host.start()
  send({ type: 'id', peerId })
}

/**
 * The real client, timed; after halt it refuses at once so the placer's round ends sooner (its
 * picks still run: with 1,000 nodes and thousands of replicas left, seconds of CPU after the
 * window, which the window's figures leave out).
 */
function timedClient (real: ReserveClient): ReserveApi {
  return {
    reserve: async (peer, reservation, signal) => {
      if (halted) throw new AstradError('benchmark window over', 'ERR_HALTED')
      const t = performance.now()
      try {
        const ledger = await real.reserve(peer, reservation, signal)
        if (!halted) { s.accepted++; s.rttMs.push(performance.now() - t) }
        return ledger
      } catch (err) {
        if (!halted) {
          const code = err instanceof AstradError ? err.code : ''
          if (CONFLICTS.has(code)) s.rejected++
          else s.failed++
          s.rttMs.push(performance.now() - t)
        }
        throw err
      }
    },
    release: async (peer, replica, signal) => await real.release(peer, replica, signal),
    ledger: async (peer, signal) => await real.ledger(peer, signal)
  }
}

async function setup (nodes: SimNode[], schedulers: string[]): Promise<void> {
  if (host == null) throw new Error('setup before the host started')
  const t0 = performance.now()
  const list = new OnlineList(systemClock)
  const listeners = new ChangeListeners()
  for (const [i, id] of schedulers.entries()) list.ingest(heartbeat(id, ['scheduler'], `sched-${i}`, 2))
  for (const [i, n] of nodes.entries()) {
    list.ingest(heartbeat(n.peerId, ['node'], `sim-${i}`, n.cores))
    await host.peerStore.merge(peerIdFromString(n.peerId), { multiaddrs: [multiaddr(n.addr)] })
  }
  const view = { list, onChange: (l: Parameters<ChangeListeners['add']>[0]) => listeners.add(l), stalenessMs: () => 0 }
  const client = timedClient(new ReserveClient(host))
  ledgers = new LedgerView({ view, client, logger: silentLogger() })
  ledgers.start()
  const deadline = performance.now() + 600_000
  for (;;) {
    const missing = nodes.filter(n => ledgers!.get(n.peerId) == null).length
    if (missing === 0) break
    if (performance.now() > deadline) throw new Error(`scheduler ${config.index}: ${missing} of ${nodes.length} ledgers still unread after 600 s`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const clusterLog = { list: async () => apps.map(v => ({ kind: 'app', key: v.spec.name, value: v, deleted: false })) } as unknown as ClusterLogAccess
  placer = new Placer({
    view,
    ledgers,
    client,
    clusterLog: () => clusterLog,
    logger: silentLogger(),
    clock: systemClock,
    onPlaced: (ms, attempts) => {
      if (halted) return
      s.placed++
      if (attempts > 1) s.retried++
      s.latencyMs.push(ms)
      s.lastPlacedMs = performance.now() - goAt
    }
  }, { self: host.peerId.toString() })
  warmAt = performance.now()
  cpuAtWarm = process.cpuUsage()
  send({ type: 'warm', ms: warmAt - t0 })
}

function go (spec: AppsSpec): void {
  const deployedAt = Date.now()
  apps = Array.from({ length: spec.count }, (_, i) => ({
    spec: parseAppSpec({ name: `${spec.prefix}-${i}`, model: MODEL, replicas: spec.replicas, resources: { cpu: spec.cpu, gpu: 0 } }),
    generation: 1,
    deployedAt,
    deployedBy: 'bench'
  }))
  cpuAtGo = process.cpuUsage()
  goAt = performance.now()
  const idle = process.cpuUsage(cpuAtWarm)
  idleCpuMsPerSec = (idle.user + idle.system) / 1000 / Math.max(0.001, (goAt - warmAt) / 1000)
  placer!.start()
}

async function halt (): Promise<PlacerSimStats> {
  halted = true
  const wallMs = performance.now() - goAt
  const cpu = process.cpuUsage(cpuAtGo)
  await placer?.stop()
  ledgers?.stop()
  // Owned apps fully placed (every replica of each in this scheduler's own ledger copies).
  const byApp = placer?.replicasByApp() ?? new Map()
  const mine = placer?.status().filter(a => a.owner === host?.peerId.toString()) ?? []
  const done = mine.every(a => (byApp.get(a.name)?.length ?? 0) >= a.desired)
  return { ...s, done, owned: mine.length, cpuMs: (cpu.user + cpu.system) / 1000, wallMs, idleCpuMsPerSec, rssBytes: process.memoryUsage().rss }
}

process.on('message', (msg: { cmd: string, nodes?: SimNode[], schedulers?: string[], apps?: AppsSpec }) => {
  const fail = (err: unknown): void => { send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }) }
  if (msg.cmd === 'setup') setup(msg.nodes ?? [], msg.schedulers ?? []).catch(fail)
  else if (msg.cmd === 'go') { try { go(msg.apps!) } catch (err) { fail(err) } }
  else if (msg.cmd === 'halt') halt().then(stats => { send({ type: 'stats', stats }) }, fail)
  else if (msg.cmd === 'stop') void Promise.allSettled([host?.stop()]).then(() => process.exit(0))
})
process.on('disconnect', () => { process.exit(0) })

start().catch(err => {
  send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  process.exit(1)
})
