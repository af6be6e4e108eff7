// CPU cost of one resource daemon ingesting heartbeats from many nodes at 1 Hz.
// One real `astrad start --role resource`; N simulated nodes = N real libp2p hosts (own
// identity each, so every heartbeat is signed by the peer it names) spread over a few simulator
// processes (bench/lib/hb-sim.ts). CPU time of the resource is read from /proc/<pid>/stat.

import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { forkTs, sleep, now, stop, waitFor, type Managed } from './procs.ts'
import { startDaemon, status, getText, cpuTicks, memory, metric, clusterKeyFor, type AstradDaemon } from './astrad.ts'
import type { SimConfig, SimStats } from './hb-sim.ts'

export interface IngestOptions {
  bin: string
  root: string
  nodes: number
  sims: number
  windowSec: number
  baselineSec: number
  settleSec: number
  clockTicks: number
  log: (msg: string) => void
}

export interface IngestResult {
  virtualNodes: number
  simulatorProcesses: number
  windowSec: number
  rampUpSec: number
  idle: { cpuPctOfOneCore: number, windowSec: number }
  resource: {
    cpuPctOfOneCore: number
    cpuSec: number
    heartbeats: number
    heartbeatsPerSec: number
    usPerHeartbeat: number
    /** Above the idle baseline (the resource's own timers, gossip heartbeat, …). */
    usPerHeartbeatAboveIdle: number
    rssBytes: number
    hwmBytes: number
    eventLoopLagP99Ms: number | null
    connections: number | null
  }
  falsePositives: {
    /** Digests published during the window: each is a state change; 0 = no node changed state. */
    digestsPublished: number
    heartbeatsDropped: number
    /** States in the resource's view at the end of the window. */
    endStates: Record<string, number>
    notAliveAtEnd: number
  }
  simulators: {
    published: number
    publishErrors: number
    maxGapMs: number
    disconnects: number
    loopDelayP99MsMax: number
    cpuPctOfOneCore: number
    rssBytesTotal: number
    perSim: SimStats[]
  }
  hostCpuPctOfOneCore: number | null
}

const SIM_MODULE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'hb-sim.ts')

interface Sim {
  proc: Managed
  messages: Array<{ type: string, [k: string]: unknown }>
  waiters: Array<(m: { type: string, [k: string]: unknown }) => boolean>
}

function startSim (cfg: SimConfig): Sim {
  // Room for ~250 libp2p hosts per process.
  const proc = forkTs(`sim${cfg.sim}`, SIM_MODULE, [JSON.stringify(cfg)], ['--max-old-space-size=4096'])
  const sim: Sim = { proc, messages: [], waiters: [] }
  proc.child.on('message', (m: { type: string, [k: string]: unknown }) => {
    sim.messages.push(m)
    sim.waiters = sim.waiters.filter(w => !w(m))
  })
  return sim
}

async function nextMessage (sim: Sim, type: string, timeoutMs: number): Promise<{ type: string, [k: string]: unknown }> {
  const found = sim.messages.find(m => m.type === type || m.type === 'error')
  if (found != null) {
    sim.messages.splice(sim.messages.indexOf(found), 1)
    if (found.type === 'error') throw new Error(`${sim.proc.name}: ${String(found.error)}`)
    return found
  }
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${sim.proc.name}: no '${type}' within ${timeoutMs} ms; ${sim.proc.tail.join('\n')}`)) }, timeoutMs)
    void sim.proc.exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`${sim.proc.name} exited ${code ?? signal}: ${sim.proc.tail.join('\n')}`))
    })
    sim.waiters.push(m => {
      if (m.type !== type && m.type !== 'error') return false
      clearTimeout(timer)
      sim.messages.splice(sim.messages.indexOf(m), 1)
      if (m.type === 'error') reject(new Error(`${sim.proc.name}: ${String(m.error)}`))
      else resolve(m)
      return true
    })
  })
}

/** Whole-machine CPU ticks from the first line of /proc/stat (user nice system idle iowait …). */
function readProcStat (): { busy: number, total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? []
  const idle = (f[3] ?? 0) + (f[4] ?? 0)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

export async function runIngest (o: IngestOptions): Promise<IngestResult> {
  const root = path.join(o.root, 'ingest')
  const resource: AstradDaemon = await startDaemon({ bin: o.bin, root, name: 'res', roles: 'resource' })
  const pid = resource.proc.child.pid as number
  const doc0 = await status(resource.rpcPort)
  const addr = doc0.self.addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  if (addr == null) throw new Error('resource has no loopback address')
  const resourceAddr = addr.includes('/p2p/') ? addr : `${addr}/p2p/${resource.peerId}`
  const clusterKey = await clusterKeyFor(root)

  // Idle baseline: the resource alone (its own heartbeat, gossipsub heartbeat, timers).
  await sleep(2_000)
  let c0 = cpuTicks(pid)
  let w0 = now()
  await sleep(o.baselineSec * 1_000)
  const idleSec = (now() - w0) / 1_000
  const idlePct = ((cpuTicks(pid) - c0) / o.clockTicks) / idleSec * 100
  o.log(`ingest: idle resource ${idlePct.toFixed(2)} % of one core over ${idleSec.toFixed(1)} s`)

  const rampStart = now()
  const sims: Sim[] = []
  let first = 0
  for (let s = 0; s < o.sims; s++) {
    const count = Math.floor(o.nodes / o.sims) + (s < o.nodes % o.sims ? 1 : 0)
    // The resource refuses more than 10 inbound connections mid-upgrade: 2 dials per simulator.
    sims.push(startSim({ sim: s, count, firstIndex: first, total: o.nodes, resource: resourceAddr, clusterKey, dialConcurrency: 2 }))
    first += count
  }
  await Promise.all(sims.map(async s => await nextMessage(s, 'ready', 180_000)))
  o.log(`ingest: ${o.nodes} virtual nodes connected in ${((now() - rampStart) / 1000).toFixed(1)} s; waiting for all alive at the resource`)
  const expect = o.nodes + 1
  let alive = 0
  await waitFor(`${expect} alive at the resource`, async () => {
    const doc = await status(resource.rpcPort, 5_000)
    alive = doc.nodes.filter(n => n.state === 'alive').length
    return alive === expect ? true : undefined
  }, 60_000, 1_000).catch((err: Error) => { throw new Error(`${err.message} (${alive} alive at the last look)`) })
  const rampUpSec = (now() - rampStart) / 1_000
  o.log(`ingest: ${expect} alive after ${rampUpSec.toFixed(1)} s; settling ${o.settleSec} s, then measuring ${o.windowSec} s`)
  await sleep(o.settleSec * 1_000)

  // Window: counters before and after, CPU ticks in between. Nothing polls the resource inside.
  for (const s of sims) s.proc.child.send({ cmd: 'mark' })
  await Promise.all(sims.map(async s => await nextMessage(s, 'marked', 10_000)))
  const m0 = await getText(resource.rpcPort, '/metrics', 5_000)
  const h0 = readProcStat()
  c0 = cpuTicks(pid)
  w0 = now()
  await sleep(o.windowSec * 1_000)
  const c1 = cpuTicks(pid)
  const windowSec = (now() - w0) / 1_000
  const h1 = readProcStat()
  const m1 = await getText(resource.rpcPort, '/metrics', 5_000)
  for (const s of sims) s.proc.child.send({ cmd: 'stats' })
  const perSim = (await Promise.all(sims.map(async s => await nextMessage(s, 'stats', 10_000)))).map(m => m.stats as SimStats)
  const doc1 = await status(resource.rpcPort, 10_000)
  const mem = memory(pid)

  const cpuSec = (c1 - c0) / o.clockTicks
  const received = 'astrad_membership_heartbeats_received_total'
  const heartbeats = metric(m1, received) - metric(m0, received)
  const endStates: Record<string, number> = {}
  for (const n of doc1.nodes) endStates[n.state] = (endStates[n.state] ?? 0) + 1
  const idleCpuSec = idlePct / 100 * windowSec
  const lag = metric(m1, 'nodejs_eventloop_lag_p99_seconds')
  const simCpuMs = perSim.reduce((a, s) => a + s.cpuMs, 0)
  const simWallMs = Math.max(...perSim.map(s => s.wallMs))
  const ncpu = availableParallelism()

  const result: IngestResult = {
    virtualNodes: o.nodes,
    simulatorProcesses: o.sims,
    windowSec,
    rampUpSec,
    idle: { cpuPctOfOneCore: idlePct, windowSec: idleSec },
    resource: {
      cpuPctOfOneCore: cpuSec / windowSec * 100,
      cpuSec,
      heartbeats,
      heartbeatsPerSec: heartbeats / windowSec,
      usPerHeartbeat: heartbeats > 0 ? cpuSec * 1e6 / heartbeats : NaN,
      usPerHeartbeatAboveIdle: heartbeats > 0 ? Math.max(0, cpuSec - idleCpuSec) * 1e6 / heartbeats : NaN,
      rssBytes: mem.rss,
      hwmBytes: mem.hwm,
      eventLoopLagP99Ms: lag > 0 ? lag * 1000 : null,
      connections: metric(m1, 'astrad_p2p_connections')
    },
    falsePositives: {
      digestsPublished: metric(m1, 'astrad_membership_digests_published_total') - metric(m0, 'astrad_membership_digests_published_total'),
      heartbeatsDropped: metric(m1, 'astrad_membership_heartbeats_dropped_total') - metric(m0, 'astrad_membership_heartbeats_dropped_total'),
      endStates,
      notAliveAtEnd: doc1.nodes.filter(n => n.state !== 'alive').length
    },
    simulators: {
      published: perSim.reduce((a, s) => a + s.published, 0),
      publishErrors: perSim.reduce((a, s) => a + s.publishErrors, 0),
      maxGapMs: Math.max(...perSim.map(s => s.maxGapMs)),
      disconnects: perSim.reduce((a, s) => a + s.disconnects, 0),
      loopDelayP99MsMax: Math.max(...perSim.map(s => s.loopDelayP99Ms)),
      cpuPctOfOneCore: simCpuMs / simWallMs * 100,
      rssBytesTotal: perSim.reduce((a, s) => a + s.rssBytes, 0),
      perSim
    },
    hostCpuPctOfOneCore: h1.total > h0.total ? (h1.busy - h0.busy) / (h1.total - h0.total) * 100 * ncpu : null
  }

  for (const s of sims) { if (s.proc.child.connected) s.proc.child.send({ cmd: 'stop' }) }
  await Promise.all(sims.map(async s => {
    await Promise.race([s.proc.exited, sleep(10_000)])
    await stop(s.proc, 'SIGKILL', 3_000)
  }))
  // Graceful stop (SIGTERM; SIGKILL after 5 s), so a profiling wrapper can write its profile.
  await stop(resource.proc, 'SIGTERM', 5_000)
  return result
}
