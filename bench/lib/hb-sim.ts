// Heartbeat simulator (a child process of bench/membership.ts, forked with IPC).
// Runs `count` real libp2p hosts (own Ed25519 identity each, so gossipsub signs every heartbeat
// with the identity it claims, as the resource requires), connects each to the resource, and
// publishes one heartbeat per host per second, phases spread evenly over the second plus jitter.
//
// argv[2]: JSON SimConfig. IPC in: {cmd:'mark'} resets window counters, {cmd:'stats'} asks for
// SimStats, {cmd:'stop'} stops the hosts and exits. IPC out: {type:'progress'|'ready'|'stats'|'error'}.

import { monitorEventLoopDelay } from 'node:perf_hooks'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Host } from '../../src/p2p/host.ts'
import { encodeHeartbeat, heartbeatTopic, type Heartbeat } from '../../src/membership/heartbeat.ts'
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_SHARDS } from '../../src/membership/constants.ts'
import { createSimHost } from './sim-host.ts'
import { readClusterSecret } from '../../src/trust/index.ts'

export interface SimConfig {
  /** Index of this simulator (0..). */
  sim: number
  /** Number of virtual nodes in this process. */
  count: number
  /** Global index of the first virtual node (names sim-<index>). */
  firstIndex: number
  /** Total virtual nodes over all simulators (to spread phases over the second). */
  total: number
  /** Resource multiaddr with /p2p/<id>. */
  resource: string
  /** The resource's cluster key file (bench/lib/astrad.ts clusterKeyFor). */
  clusterKey: string
  /** Concurrent dials from this process (the resource accepts ≤ 10 pending inbound upgrades). */
  dialConcurrency: number
  /** One source address for all hosts (nodes behind one NAT); default: one per node. */
  sharedSourceIp?: string
}

export interface SimStats {
  sim: number
  hosts: number
  connected: number
  /** Heartbeats published since the last mark. */
  published: number
  publishErrors: number
  /** Largest gap between two heartbeats of one virtual node since the last mark (ms). */
  maxGapMs: number
  /** Connection losses to the resource since start. */
  disconnects: number
  /** Event-loop delay since the last mark (ms). */
  loopDelayP99Ms: number
  loopDelayMaxMs: number
  /** CPU time of this process since the last mark (ms, user+system) and the wall time (ms). */
  cpuMs: number
  wallMs: number
  rssBytes: number
  heapUsedBytes: number
}

interface Virtual {
  index: number
  host: Host
  peerId: string
  topic: string
  incarnation: number
  seq: number
  timer?: NodeJS.Timeout
  lastAt: number
}

const config = JSON.parse(process.argv[2] ?? '{}') as SimConfig
const send = (msg: unknown): void => { process.send?.(msg) }

const virtuals: Virtual[] = []
let published = 0
let publishErrors = 0
let maxGapMs = 0
let disconnects = 0
let markCpu = process.cpuUsage()
let markWall = performance.now()
const loop = monitorEventLoopDelay({ resolution: 10 })
loop.enable()

function localAddress (index: number): string {
  if (config.sharedSourceIp != null) return config.sharedSourceIp
  // 127.1.0.0/16 and up: one loopback source address per virtual node.
  const n = index + 1
  return `127.${1 + Math.floor(n / 65_536)}.${Math.floor(n / 256) % 256}.${n % 256}`
}

function heartbeat (v: Virtual): Heartbeat {
  return {
    peerId: v.peerId,
    incarnation: v.incarnation,
    seq: v.seq++,
    state: 'alive',
    cordoned: false,
    roles: ['node'],
    name: `sim-${v.index}`,
    cell: 'default',
    cores: 8,
    gpus: v.index % 4 === 0 ? 1 : 0,
    gpuPerf: 1,
    cpuUtil: Math.random(),
    gpuUtil: 0,
    inflight: Math.floor(Math.random() * 4),
    ledgerVersion: 0,
    readyReplicas: 0,
    modelsDigest: 0,
    mailboxCursor: 0,
    uploadLimit: 0,
    downloadLimit: 0,
    uploadRate: 0,
    downloadRate: 0,
    transfers: 0
  }
}

function beat (v: Virtual): void {
  const t = performance.now()
  if (v.lastAt > 0) maxGapMs = Math.max(maxGapMs, t - v.lastAt)
  v.lastAt = t
  v.host.services.pubsub.publish(v.topic, encodeHeartbeat(heartbeat(v))).then(
    () => { published++ },
    () => { publishErrors++ }
  )
}

async function dialAll (resource: ReturnType<typeof multiaddr>): Promise<void> {
  let next = 0
  let connected = 0
  const worker = async (): Promise<void> => {
    while (next < virtuals.length) {
      const v = virtuals[next++] as Virtual
      for (let attempt = 0; ; attempt++) {
        try {
          await v.host.dial(resource, { signal: AbortSignal.timeout(10_000) })
          break
        } catch (err) {
          if (attempt >= 20) throw err
          await new Promise(resolve => setTimeout(resolve, 200 + Math.random() * 300))
        }
      }
      connected++
      if (connected % 25 === 0) send({ type: 'progress', sim: config.sim, connected })
    }
  }
  await Promise.all(Array.from({ length: config.dialConcurrency }, async () => { await worker() }))
}

function stats (): SimStats {
  const cpu = process.cpuUsage(markCpu)
  const mem = process.memoryUsage()
  return {
    sim: config.sim,
    hosts: virtuals.length,
    connected: virtuals.filter(v => v.host.getConnections().length > 0).length,
    published,
    publishErrors,
    maxGapMs,
    disconnects,
    loopDelayP99Ms: loop.percentile(99) / 1e6,
    loopDelayMaxMs: loop.max / 1e6,
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs: performance.now() - markWall,
    rssBytes: mem.rss,
    heapUsedBytes: mem.heapUsed
  }
}

function mark (): void {
  published = 0
  publishErrors = 0
  maxGapMs = 0
  markCpu = process.cpuUsage()
  markWall = performance.now()
  loop.reset()
}

async function stopAll (): Promise<void> {
  for (const v of virtuals) clearInterval(v.timer)
  await Promise.allSettled(virtuals.map(async v => { await v.host.stop() }))
}

async function main (): Promise<void> {
  const resource = multiaddr(config.resource)
  const secret = await readClusterSecret(config.clusterKey)
  for (let i = 0; i < config.count; i++) {
    const index = config.firstIndex + i
    const host = await createSimHost({ privateKey: await generateKeyPair('Ed25519'), localAddress: localAddress(index), secret })
    await host.start()
    const peerId = host.peerId.toString()
    host.addEventListener('peer:disconnect', () => { disconnects++ })
    virtuals.push({ index, host, peerId, topic: heartbeatTopic(peerId, HEARTBEAT_SHARDS), incarnation: Date.now(), seq: 0, lastAt: 0 })
  }
  send({ type: 'progress', sim: config.sim, created: virtuals.length })
  await dialAll(resource)
  // Start beating: phase of node k is k/total of the interval, plus up to ±10% jitter, then
  // every HEARTBEAT_INTERVAL_MS on its own timer (as a real daemon's setInterval).
  // Phases are offsets within the wall-clock second, so all simulators share one schedule.
  for (const v of virtuals) {
    const phase = (v.index / config.total) * HEARTBEAT_INTERVAL_MS + (Math.random() - 0.5) * 0.2 * HEARTBEAT_INTERVAL_MS
    const delay = (((phase - Date.now()) % HEARTBEAT_INTERVAL_MS) + HEARTBEAT_INTERVAL_MS) % HEARTBEAT_INTERVAL_MS
    setTimeout(() => {
      beat(v)
      v.timer = setInterval(() => { beat(v) }, HEARTBEAT_INTERVAL_MS)
    }, delay)
  }
  mark()
  send({ type: 'ready', sim: config.sim, peers: virtuals.map(v => v.peerId) })
}

process.on('message', (msg: { cmd?: string }) => {
  if (msg.cmd === 'mark') { mark(); send({ type: 'marked', sim: config.sim }) }
  if (msg.cmd === 'stats') send({ type: 'stats', stats: stats() })
  if (msg.cmd === 'stop') {
    void stopAll().finally(() => { process.exit(0) })
  }
})
// The parent vanished: do not linger.
process.on('disconnect', () => { process.exit(0) })
process.on('unhandledRejection', () => { /* a network library's stray rejection: ignore, counted elsewhere */ })

main().catch((err: unknown) => {
  send({ type: 'error', sim: config.sim, error: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  process.exit(1)
})
