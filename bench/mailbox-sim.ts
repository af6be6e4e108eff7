// Simulated nodes of bench:mailbox (forked by bench/mailbox.ts): N nodes, each with its own
// peer id, cell and MailboxState, multiplexed over a few real libp2p client hosts (createHost:
// TCP, Noise, Yamux, gossipsub) connected to the one resource.
//
// Each node behaves as MailboxPuller (src/mailbox/puller.ts) does: a pull session at a time
// (a request during a session makes it go round once more), pages until `more` is false — over
// the long-lived pull streams of `/astra/mailbox-pull/1.1.0` (SimConfig.streamsPerHost per
// client host, shared by its nodes), or one `/astra/mailbox/1.0.0` stream per page as the baseline — a pull every PULL_INTERVAL_MS, and on a digest showing something newer
// a pull after a random delay in [0, DIGEST_JITTER_MS). What it leaves out: the state file (a
// real node fsyncs mailbox.json per page; 1,000 of them here would measure this disk, not the
// resource), failover to other resources (there is one), and the effects of actions (recorded
// with the time they came out of MailboxState.receive).
//
// Calls (bench/mailbox-ipc.ts):
//   init {SimConfig}               → {peerIds, cells}; every node starts with a snapshot pull
//   caughtUp {source, rev}         → nodes whose cursor is at that rev and who are not pulling
//   applied {id, timeoutMs}        → wall-clock times at which nodes applied notice `id` (a
//                                    `message` action), once all have or at the timeout
//   throughput {inflight, ms, protocol}  periodic and digest pulls paused; `inflight` workers each pull
//                                  for a caught-up node not already pulling, back to back
//   auto {on}                      pause / resume periodic and digest-driven pulls
//   usage                          CPU time, pull counts and errors
//   exit

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { createHost, request, type Host } from '../src/p2p/index.ts'
import { PullStreams } from '../src/mailbox/pull-stream.ts'
import { clientErrorReason } from '../src/clusterlog/metrics.ts'
import { MailboxState } from '../src/mailbox/state.ts'
import { decodeDigest, decodePullResponse, encodePullRequest, type Digest } from '../src/mailbox/wire.ts'
import type { NodeIdentity } from '../src/mailbox/notice.ts'
import {
  DIGEST_JITTER_MS, MAILBOX_PROTOCOL, MAILBOX_TOPIC, MAX_PULL_PAGES, MAX_PULL_RESPONSE_BYTES, PULL_INTERVAL_MS, PULL_TIMEOUT_MS
} from '../src/mailbox/constants.ts'
import { errorMessage } from '../src/util/errors.ts'
import { serveIpc, wallNow } from './mailbox-ipc.ts'

export interface SimConfig {
  /** Index of this simulator process (names, cells). */
  sim: number
  nodes: number
  hosts: number
  /**
   * Pulls one client host has open at once. A real node has its own connection with one pull at
   * a time; here ~125 nodes share one, and libp2p refuses more than 64 streams of a protocol per
   * connection (MAILBOX_MAX_INBOUND_STREAMS on the resource, 64 outbound by default).
   */
  perHostInflight: number
  /**
   * Long-lived pull streams one client host keeps open to the resource. A real node keeps one; a
   * client host here carries ~125 nodes, whose pulls are pipelined over these few streams.
   */
  streamsPerHost: number
  cells: number
  resourceAddr: string
  resourcePeer: string
}

export interface SimUsage {
  cpuUs: number
  pulls: number
  pages: number
  errors: Record<string, number>
  lastError: string | null
  /** A node applied the same notice twice (exactly-once broken): must stay 0. */
  duplicates: number
  rssBytes: number
}

export interface ThroughputResult {
  pulls: number
  errors: number
  elapsedMs: number
  /** Every pull's latency (ms, µs resolution), ascending: request until the page is merged. */
  latencies: number[]
}

export interface AppliedResult {
  /** Wall-clock ms (mailbox-ipc wallNow) at which each node that applied it did. */
  times: number[]
  missing: number
}

/** Lets at most `max` calls run at once; the rest wait in order. */
class Gate {
  private active = 0
  private readonly waiting: Array<() => void> = []
  private readonly max: number

  constructor (max: number) { this.max = max }

  async run<T> (fn: () => Promise<T>): Promise<T> {
    while (this.active >= this.max) await new Promise<void>(resolve => { this.waiting.push(resolve) })
    this.active++
    try {
      return await fn()
    } finally {
      this.active--
      this.waiting.shift()?.()
    }
  }
}

interface ClientHost {
  host: Host
  gate: Gate
  nodes: SimNode[]
  /** Long-lived pull streams to the resource, shared by this host's nodes (SimConfig.streamsPerHost). */
  streams: PullStreams
}

/** Which protocol pulls use: `stream` (long-lived, as MailboxPuller now does) or `oneshot` (/astra/mailbox/1.0.0, the baseline). */
export type PullProtocol = 'stream' | 'oneshot'
let protocol: PullProtocol = 'stream'

let resourcePeer: PeerId | undefined
const hosts: ClientHost[] = []
const nodes: SimNode[] = []
/** Periodic and digest-driven pulls run (paused while throughput is measured). */
let auto = true
let pulls = 0
let pages = 0
const errors: Record<string, number> = {}
let lastError: string | null = null
let duplicates = 0
/** Notice id → wall-clock times at which nodes applied it. */
const appliedAt = new Map<string, number[]>()

class SimNode {
  readonly self: NodeIdentity
  readonly state: MailboxState
  private readonly client: ClientHost
  private session?: Promise<void>
  private again = false
  private seenRevision = 0
  private jitterTimer?: NodeJS.Timeout
  private readonly applied = new Set<string>()

  constructor (self: NodeIdentity, client: ClientHost) {
    this.self = self
    this.client = client
    this.state = new MailboxState(self)
  }

  get pulling (): boolean { return this.session != null }

  /** MailboxPuller.pull: one session at a time; a call during one makes it run once more. */
  async pull (): Promise<void> {
    if (this.session != null) {
      this.again = true
      return await this.session
    }
    this.session = (async () => {
      try {
        do {
          this.again = false
          await this.pullOnce()
        } while (this.again)
      } finally {
        this.session = undefined
      }
    })()
    return await this.session
  }

  /** MailboxPuller.onDigest. */
  onDigest (d: Digest): void {
    const cursor = this.state.cursor
    const newer = cursor != null && cursor.source === d.source ? d.rev > cursor.rev : d.revision > this.seenRevision || cursor == null
    if (!newer || this.jitterTimer != null) return
    this.jitterTimer = setTimeout(() => {
      this.jitterTimer = undefined
      if (auto) void this.pull()
    }, Math.floor(Math.random() * DIGEST_JITTER_MS))
  }

  /** MailboxPuller.pullOnce + drain against the one resource; failures are counted. */
  private async pullOnce (): Promise<void> {
    const peer = resourcePeer as PeerId
    const { host, gate } = this.client
    pulls++
    try {
      for (let page = 0; page < MAX_PULL_PAGES; page++) {
        const payload = encodePullRequest({ node: this.self.peerId, cell: this.self.cell, cursor: this.state.cursor })
        const bytes = await gate.run(async () => protocol === 'stream'
          ? await this.client.streams.pull(peer, payload, { timeoutMs: PULL_TIMEOUT_MS })
          : await request(host, peer, MAILBOX_PROTOCOL, payload, { timeoutMs: PULL_TIMEOUT_MS, maxResponseBytes: MAX_PULL_RESPONSE_BYTES }))
        const res = decodePullResponse(bytes)
        pages++
        if (res.revision > this.seenRevision) this.seenRevision = res.revision
        const at = wallNow()
        for (const action of this.state.receive(res, Date.now())) {
          if (action.type !== 'message') continue
          const id = action.notice.id
          if (this.applied.has(id)) { duplicates++; continue }
          this.applied.add(id)
          let times = appliedAt.get(id)
          if (times == null) appliedAt.set(id, times = [])
          times.push(at)
        }
        if (!res.more) return
      }
    } catch (err) {
      const reason = clientErrorReason(err)
      errors[reason] = (errors[reason] ?? 0) + 1
      lastError = errorMessage(err)
    }
  }
}

async function init (cfg: SimConfig): Promise<{ peerIds: string[], cells: string[] }> {
  resourcePeer = peerIdFromString(cfg.resourcePeer)
  const addr = multiaddr(cfg.resourceAddr)
  for (let h = 0; h < cfg.hosts; h++) {
    const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: [], relay: { reserve: 'never' } })
    await host.start()
    await host.dial(addr)
    const client: ClientHost = { host, gate: new Gate(cfg.perHostInflight), nodes: [], streams: new PullStreams(host, { streamsPerPeer: cfg.streamsPerHost }) }
    // One subscription per connection; a digest fans out to the host's simulated nodes, as it
    // reaches each real node's own puller.
    host.services.pubsub.subscribe(MAILBOX_TOPIC)
    host.services.pubsub.addEventListener('message', (evt: CustomEvent<Message>) => {
      if (evt.detail.topic !== MAILBOX_TOPIC || !auto) return
      let d: Digest
      try { d = decodeDigest(evt.detail.data) } catch { errors.bad_digest = (errors.bad_digest ?? 0) + 1; return }
      for (const node of client.nodes) node.onDigest(d)
    })
    hosts.push(client)
  }
  for (let i = 0; i < cfg.nodes; i++) {
    const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const client = hosts[i % hosts.length] as ClientHost
    const node = new SimNode({ peerId, cell: `cell-${(cfg.sim + i) % cfg.cells}` }, client)
    client.nodes.push(node)
    nodes.push(node)
  }
  for (const node of nodes) {
    // Real nodes start at different times: the 5 s ticks are spread over the interval.
    const first = setTimeout(() => {
      const timer = setInterval(() => { if (auto) void node.pull() }, PULL_INTERVAL_MS)
      timer.unref()
    }, Math.random() * PULL_INTERVAL_MS)
    first.unref()
    void node.pull()
  }
  return { peerIds: nodes.map(n => n.self.peerId), cells: nodes.map(n => n.self.cell) }
}

function caughtUp (args: { source: string, rev: number }): number {
  return nodes.filter(n => !n.pulling && n.state.cursor?.source === args.source && n.state.cursor.rev >= args.rev).length
}

async function applied (args: { id: string, timeoutMs: number }): Promise<AppliedResult> {
  const deadline = performance.now() + args.timeoutMs
  while ((appliedAt.get(args.id)?.length ?? 0) < nodes.length && performance.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  const times = [...(appliedAt.get(args.id) ?? [])]
  return { times, missing: nodes.length - times.length }
}

async function throughput (args: { inflight: number, ms: number, protocol: PullProtocol }): Promise<ThroughputResult> {
  auto = false
  const before = protocol
  try {
    // Pulls already under way finish first, so exactly `inflight` run during the window.
    const idleBy = performance.now() + 10_000
    while (nodes.some(n => n.pulling) && performance.now() < idleBy) await new Promise(resolve => setTimeout(resolve, 10))
    protocol = args.protocol
    const latencies: number[] = []
    const errorsBefore = Object.values(errors).reduce((a, b) => a + b, 0)
    let next = 0
    const pick = (): SimNode => {
      // inflight ≤ nodes, so a free node is at most `inflight` steps away.
      for (;;) {
        const node = nodes[next++ % nodes.length] as SimNode
        if (!node.pulling) return node
      }
    }
    const t0 = performance.now()
    const until = t0 + args.ms
    await Promise.all(Array.from({ length: Math.min(args.inflight, nodes.length) }, async () => {
      while (performance.now() < until) {
        const node = pick()
        const s = performance.now()
        await node.pull()
        latencies.push(performance.now() - s)
      }
    }))
    const elapsedMs = performance.now() - t0
    return {
      pulls: latencies.length,
      errors: Object.values(errors).reduce((a, b) => a + b, 0) - errorsBefore,
      elapsedMs,
      latencies: latencies.sort((a, b) => a - b).map(x => Math.round(x * 1000) / 1000)
    }
  } finally {
    protocol = before
    auto = true
  }
}

/** Pauses or resumes periodic and digest-driven pulls (the resource is busy with something else). */
function setAuto (args: { on: boolean }): void {
  auto = args.on
}

function usage (): SimUsage {
  const cpu = process.cpuUsage()
  return { cpuUs: cpu.user + cpu.system, pulls, pages, errors: { ...errors }, lastError, duplicates, rssBytes: process.memoryUsage().rss }
}

async function exit (): Promise<void> {
  auto = false
  setImmediate(() => {
    void (async () => {
      await Promise.allSettled(hosts.map(async c => { await c.streams.close(); await c.host.stop() }))
      process.exit(0)
    })()
  })
}

serveIpc({
  init: async args => await init(args as SimConfig),
  caughtUp: args => caughtUp(args as { source: string, rev: number }),
  applied: async args => await applied(args as { id: string, timeoutMs: number }),
  throughput: async args => await throughput(args as { inflight: number, ms: number, protocol: PullProtocol }),
  auto: args => { setAuto(args as { on: boolean }) },
  usage,
  exit
})
