// Node-ledger simulator (a child process of bench/scale/placement.ts, forked with IPC).
// Hosts `count` simulated nodes: each is a real libp2p host of its own (own Ed25519 identity,
// own TCP listener on 127.0.0.1, the cluster's private-network key, a member certificate with
// the `node` role) answering `/astra/reserve/1.0.0` with the daemon's own handler
// (serveReservations: the request schema, the trust guard that admits schedulers only, the
// ledger's atomic check-and-commit). What a real node has and these do not: heartbeats,
// gossipsub traffic, model loading (replicas stay `loading`), the RPC port.
//
// argv[2]: JSON LedgerSimConfig. IPC in: {cmd:'stats'}, {cmd:'reset'} (every ledger releases
// all it holds, as if the replicas ended), {cmd:'stop'}. IPC out: {type:'ready'|'stats'|'reset'|'error'}.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createHost, type Host } from '../../src/p2p/host.ts'
import { Trust, issueMemberCert, pskBytes, readClusterSecret } from '../../src/trust/index.ts'
import { Ledger, serveReservations } from '../../src/placement/index.ts'
import { silentLogger } from '../../src/util/logger.ts'

export interface LedgerSimConfig {
  sim: number
  count: number
  /** Cores (cpu capacity) of each simulated node. */
  cores: number
  /** The cluster key file (private-network key + the key that signs certificates). */
  clusterKey: string
}

export interface SimNode {
  peerId: string
  addr: string
  cores: number
}

export interface LedgerSimStats {
  sim: number
  accepted: number
  rejected: number
  badRequests: number
  /** Replicas held now, and the most cpu any ledger has committed beyond its capacity (≤ 0: never overcommitted). */
  held: number
  maxOvercommit: number
  cpuMs: number
  wallMs: number
  rssBytes: number
}

interface SimLedger { host: Host, ledger: Ledger }

const config = JSON.parse(process.argv[2] ?? '{}') as LedgerSimConfig
const send = (msg: unknown): void => { process.send?.(msg) }
const sims: SimLedger[] = []
let accepted = 0
let rejected = 0
let badRequests = 0
let markCpu = process.cpuUsage()
let markWall = performance.now()

async function startOne (): Promise<SimNode> {
  const secret = await readClusterSecret(config.clusterKey)
  const privateKey = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(privateKey).toString()
  const host = await createHost({ privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: pskBytes(secret.psk) })
  const trust = new Trust({ clusterPublic: secret.key.publicKey, selfCert: await issueMemberCert(secret.key.privateKey, peerId, ['node']), logger: silentLogger() })
  await trust.attach(host)
  await host.start()
  const ledger = new Ledger({ cpu: config.cores, gpu: 0 })
  await serveReservations(host, ledger, { onBadRequest: () => { badRequests++ }, onReserve: ok => { if (ok) accepted++; else rejected++ } })
  sims.push({ host, ledger })
  const addr = host.getMultiaddrs().find(a => a.toString().includes('/tcp/'))
  if (addr == null) throw new Error(`simulated node ${peerId} has no TCP address`)
  return { peerId, addr: addr.toString(), cores: config.cores }
}

function stats (): LedgerSimStats {
  const cpu = process.cpuUsage(markCpu)
  let held = 0
  let maxOvercommit = -Infinity
  for (const s of sims) {
    const snap = s.ledger.snapshot()
    held += snap.replicas.length
    maxOvercommit = Math.max(maxOvercommit, snap.used.cpu - snap.capacity.cpu)
  }
  return { sim: config.sim, accepted, rejected, badRequests, held, maxOvercommit, cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - markWall, rssBytes: process.memoryUsage().rss }
}

async function main (): Promise<void> {
  const nodes: SimNode[] = []
  for (let i = 0; i < config.count; i++) nodes.push(await startOne())
  send({ type: 'ready', nodes })
}

process.on('message', (msg: { cmd: string }) => {
  if (msg.cmd === 'stats') {
    send({ type: 'stats', stats: stats() })
  } else if (msg.cmd === 'mark') {
    markCpu = process.cpuUsage()
    markWall = performance.now()
    accepted = rejected = badRequests = 0
    send({ type: 'mark' })
  } else if (msg.cmd === 'reset') {
    for (const s of sims) for (const r of s.ledger.all()) s.ledger.release(r.replica)
    send({ type: 'reset' })
  } else if (msg.cmd === 'stop') {
    void Promise.allSettled(sims.map(async s => { await s.host.stop() })).then(() => process.exit(0))
  }
})
process.on('disconnect', () => { process.exit(0) })

main().catch(err => {
  send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  process.exit(1)
})
