// In-process simulation of the membership tier for bench:scale goal 3 (docs/scale.md): N nodes,
// R resources, K schedulers on a virtual clock, no network. It runs astrad's real code for
// everything between the wire and the view: encodeHeartbeat at the node, decodeHeartbeat and
// OnlineList.ingest/tick at the resource that owns the node's shard, encodeRecords for change
// digests (coalesced DIGEST_COALESCE_MS, split at MAX_RECORDS_PER_DIGEST) and snapshots,
// decodeRecords + OnlineList.merge at the other resources and at every scheduler, and
// OnlineList.forget after a scheduler's pull — with the real timers' periods from
// src/membership/constants.ts.
//
// What it leaves out: gossipsub, yamux, Noise and TCP (their per-message and per-connection
// costs are added from measurements in docs/scale.md), signature checks (measured apart by
// model-calibrate.ts), the trust checks, and the time a message spends in transit (a parameter,
// 0 by default: delivery at the instant of the flush).
//
// Sharding as the article draws it (goal 2 of issue 14): shard = FNV-1a(peer id) mod R
// (`heartbeatTopic`), resource r hears only the nodes of shard r and judges their silence
// (`own`, a real OnlineList with ingest and tick); what the others publish it merges into a
// second real OnlineList (`rest`) that it never ticks, since silence there is not its to judge.
// Today's code subscribes every resource to every shard, so each resource does the work of
// R = 1: the baseline is the same simulation with R = 1.

import { FakeClock } from '../../src/util/time.ts'
import { seededRandom } from '../../src/util/random.ts'
import { OnlineList, type NodeRecord } from '../../src/membership/online-list.ts'
import { encodeHeartbeat, decodeHeartbeat, heartbeatTopic, type Heartbeat, type AnnouncedState } from '../../src/membership/heartbeat.ts'
import { encodeRecords, decodeRecords } from '../../src/membership/records.ts'
import {
  HEARTBEAT_INTERVAL_MS, TICK_INTERVAL_MS, DIGEST_COALESCE_MS, MAX_RECORDS_PER_DIGEST, VIEW_PULL_INTERVAL_MS,
  ANTI_ENTROPY_INTERVAL_MS, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_RECORDS
} from '../../src/membership/constants.ts'

export interface SimParams {
  nodes: number
  resources: number
  schedulers: number
  /** Churn: leave events per node per second (half crashes, half drains); each node comes back. */
  churnPerNodePerS: number
  /** Simulated time before the measured window (the join storm settles, churn reaches steady state). */
  warmupMs: number
  windowMs: number
  /** A stopped node restarts (new incarnation) this long after it stopped. */
  restartAfterMs: number
  /** A draining node sends `left` and stops this long after `draining`. */
  drainMs: number
  /** Heartbeat timer jitter, ± this fraction of the period (bench/lib/hb-sim.ts uses 10 %). */
  jitter: number
  /** One-way delivery delay of digests and pulls (0: no network in the simulation). */
  transitMs: number
  seed: number
}

export const DEFAULT_SIM: Omit<SimParams, 'nodes' | 'resources'> = {
  schedulers: 2,
  // 1 % of the nodes leave (and come back) per minute: a rolling upgrade of the whole cluster
  // every ~100 min on top of failures — pessimistic for a steady cluster.
  churnPerNodePerS: 0.01 / 60,
  warmupMs: 12_000,
  windowMs: 20_000,
  restartAfterMs: 10_000,
  drainMs: 1_000,
  jitter: 0.1,
  transitMs: 0,
  seed: 1
}

/** CPU µs spent by one resource in each part of its work during the window. */
export interface ResourceCpu {
  ingest: number
  tick: number
  digestEncode: number
  digestMerge: number
  snapshotServe: number
  antiEntropy: number
}

export interface SimResult {
  params: SimParams
  /** Heartbeats ingested per resource in the window (all resources together / R). */
  heartbeatsPerResource: number
  /** Mean over resources, µs of CPU per simulated second, by part. */
  resourceCpuUsPerS: ResourceCpu & { total: number }
  /** Mean over schedulers, µs of CPU per simulated second (digest merges, pulls). */
  schedulerCpuUsPerS: { digests: number, pulls: number, total: number }
  /** Node side, µs per heartbeat encoded (paid by the nodes, not the resources). */
  nodeEncodeUs: number
  /** Bytes per simulated second in the window. */
  digestBytesPerResourcePerS: number
  digestsPerResourcePerS: number
  /** Digest payload bytes one scheduler (or one resource) receives per second, from all resources. */
  digestBytesInPerS: number
  digestsInPerS: number
  digestRecordsInPerS: number
  /** Pull (snapshot) bytes one scheduler receives per second; and per resource for anti-entropy. */
  pullBytesPerSchedulerPerS: number
  antiEntropyBytesPerResourcePerS: number
  /** Bytes of one scheduler pull (every shard once) and one anti-entropy pull (one shard). */
  bytesPerPull: number
  bytesPerAntiEntropyPull: number
  /** Largest snapshot served, and whether it fits MAX_SNAPSHOT_BYTES (the real pull's cap). */
  largestSnapshotBytes: number
  snapshotsOverCap: number
  /** Mean record size in digests (bytes on the wire, per record). */
  recordBytes: number
  /** State changes published in the window, all resources. */
  changes: number
  events: { crashes: number, drains: number, rejoins: number }
  /** ms from the event to every scheduler's view showing it. */
  staleness: { crashDead: number[], drainDraining: number[], rejoinAlive: number[] }
  /** Node records never seen at some scheduler by the end; nodes alive but not alive in a view. */
  missing: number
  /** `suspect`/`dead` concluded about a node that was beating (at the owner resource). */
  falseSuspects: number
  /** Records in each scheduler's view at the end (should be N). */
  viewSizes: number[]
  /** Heap bytes in use at the end (all lists of all parties) per node. */
  heapBytesPerNode: number
  wallMs: number
}

interface SimNode {
  peerId: string
  shard: number
  hb: Heartbeat
  running: boolean
  /** Virtual time of the next beat. */
  next: number
}

interface Tracked { kind: 'crash' | 'drain' | 'rejoin', at: number, want: (r: NodeRecord) => boolean, seenBy: Set<number>, inWindow: boolean }

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'

/** A peer id of a real one's shape and length (Ed25519: `12D3KooW` + 44 base58 characters). */
export function fakePeerId (rand: () => number): string {
  let s = '12D3KooW'
  for (let i = 0; i < 44; i++) s += B58[Math.floor(rand() * 58)]
  return s
}

/** A node's heartbeat with the field sizes of a real one (name, cell, measured figures). */
export function sampleHeartbeat (peerId: string, i: number, incarnation: number): Heartbeat {
  return {
    peerId,
    incarnation,
    seq: 0,
    state: 'alive',
    cordoned: false,
    roles: ['node'],
    name: `node-${String(i).padStart(7, '0')}`,
    cell: `cell-${i % 64}`,
    cores: 16,
    gpus: 1,
    gpuPerf: 1,
    cpuUtil: 0.35,
    gpuUtil: 0.5,
    inflight: 3,
    ledgerVersion: 12,
    readyReplicas: 2,
    modelsDigest: 0x5eed,
    mailboxCursor: 40,
    uploadLimit: 0,
    downloadLimit: 0,
    uploadRate: 1000,
    downloadRate: 2000,
    transfers: 0
  }
}

function cpuNow (): number {
  const u = process.cpuUsage()
  return u.user + u.system
}

const WHEEL = 4096

/**
 * Runs the simulation. `onProgress` is told each simulated second (for logs). Synchronous: the
 * virtual clock advances 1 ms per step and everything due in that millisecond runs in order.
 */
export function simulate (p: SimParams, onProgress?: (simS: number) => void): SimResult {
  const wall0 = performance.now()
  const rand = seededRandom(p.seed)
  const clock = new FakeClock()
  const t0 = clock.now()
  const R = p.resources
  const K = p.schedulers
  const endMs = p.warmupMs + p.windowMs

  const nodes: SimNode[] = []
  const byPeer = new Map<string, number>()
  const wheel: number[][] = Array.from({ length: WHEEL }, () => [])
  for (let i = 0; i < p.nodes; i++) {
    const peerId = fakePeerId(rand)
    const shard = R === 1 ? 0 : Number(heartbeatTopic(peerId, R).slice('astra/hb/1/'.length))
    const next = Math.floor(rand() * HEARTBEAT_INTERVAL_MS)
    nodes.push({ peerId, shard, hb: sampleHeartbeat(peerId, i, t0 - 60_000), running: true, next })
    byPeer.set(peerId, i)
    wheel[next % WHEEL]!.push(i)
  }

  const own = Array.from({ length: R }, () => new OnlineList(clock))
  const rest = Array.from({ length: R }, () => new OnlineList(clock))
  const views = Array.from({ length: K }, () => new OnlineList(clock))
  const pending = Array.from({ length: R }, () => new Map<string, NodeRecord>())
  const flushAt: Array<number | undefined> = new Array(R).fill(undefined)
  /** Digests and pull results in transit: [due ms, action]. */
  const transit: Array<[number, () => void]> = []

  const cpu: ResourceCpu[] = Array.from({ length: R }, () => ({ ingest: 0, tick: 0, digestEncode: 0, digestMerge: 0, snapshotServe: 0, antiEntropy: 0 }))
  const schedCpu = Array.from({ length: K }, () => ({ digests: 0, pulls: 0 }))
  let encodeUs = 0
  let encodes = 0
  let ingested = 0
  let digestBytes = 0
  let digestCount = 0
  let digestRecords = 0
  let pullBytes = 0
  let aeBytes = 0
  let pulls = 0
  let aePulls = 0
  let largestSnapshot = 0
  let overCap = 0
  let changes = 0
  let falseSuspects = 0
  const events = { crashes: 0, drains: 0, rejoins: 0 }
  const staleness = { crashDead: [] as number[], drainDraining: [] as number[], rejoinAlive: [] as number[] }
  const tracked = new Map<string, Tracked>()
  const restarts: Array<[number, number]> = []
  const leaves: Array<[number, number]> = []
  let inWindow = false
  let elapsed = 0

  const track = (peerId: string, kind: Tracked['kind'], want: (r: NodeRecord) => boolean): void => {
    tracked.set(peerId, { kind, at: elapsed, want, seenBy: new Set(), inWindow })
  }

  /** A scheduler's view changed: does it complete a tracked event? */
  const seen = (k: number, rec: NodeRecord): void => {
    const t = tracked.get(rec.hb.peerId)
    if (t == null || !t.want(rec) || t.seenBy.has(k)) return
    t.seenBy.add(k)
    if (t.seenBy.size < K) return
    tracked.delete(rec.hb.peerId)
    if (!t.inWindow) return
    const ms = elapsed - t.at
    if (t.kind === 'crash') staleness.crashDead.push(ms)
    else if (t.kind === 'drain') staleness.drainDraining.push(ms)
    else staleness.rejoinAlive.push(ms)
  }

  const queue = (r: number, recs: Array<NodeRecord | undefined>): void => {
    for (const c of recs) {
      if (c == null) continue
      if (c.state === 'suspect' || c.state === 'dead') {
        const n = nodes[byPeer.get(c.hb.peerId)!]!
        if (n.running && n.hb.incarnation === c.hb.incarnation) falseSuspects++
      }
      pending[r]!.set(c.hb.peerId, c)
      if (inWindow) changes++
    }
    if (pending[r]!.size > 0 && flushAt[r] == null) flushAt[r] = elapsed + DIGEST_COALESCE_MS
  }

  /** Heartbeats encoded this millisecond, per owning resource, decoded and ingested together. */
  const inbox: Uint8Array[][] = Array.from({ length: R }, () => [])

  const send = (i: number): void => {
    const n = nodes[i]!
    n.hb.seq++
    inbox[n.shard]!.push(encodeHeartbeat(n.hb))
    if (inWindow) encodes++
  }

  /** Each resource takes what its nodes sent this millisecond (CPU measured per batch). */
  const deliverBeats = (): void => {
    for (let r = 0; r < R; r++) {
      const batch = inbox[r]!
      if (batch.length === 0) continue
      inbox[r] = []
      const changed: Array<NodeRecord | undefined> = []
      const c = cpuNow()
      for (const bytes of batch) changed.push(own[r]!.ingest(decodeHeartbeat(bytes)))
      if (inWindow) { cpu[r]!.ingest += cpuNow() - c; ingested += batch.length }
      queue(r, changed)
    }
  }

  const beat = (i: number): void => {
    send(i)
    deliverBeats()
  }

  const flush = (r: number): void => {
    flushAt[r] = undefined
    const recs = [...pending[r]!.values()]
    pending[r]!.clear()
    const now = clock.now()
    for (let i = 0; i < recs.length; i += MAX_RECORDS_PER_DIGEST) {
      const slice = recs.slice(i, i + MAX_RECORDS_PER_DIGEST)
      const c = cpuNow()
      const bytes = encodeRecords(slice, now)
      if (inWindow) { cpu[r]!.digestEncode += cpuNow() - c; digestBytes += bytes.length; digestCount++; digestRecords += slice.length }
      const w = inWindow
      transit.push([elapsed + p.transitMs, () => {
        // Every other resource and every scheduler gets the digest once (gossipsub's copies are
        // not simulated); each decodes it itself, as its validator does.
        for (let q = 0; q < R; q++) {
          if (q === r) continue
          const c1 = cpuNow()
          for (const wr of decodeRecords(bytes, MAX_RECORDS_PER_DIGEST)) rest[q]!.merge(wr)
          if (w) cpu[q]!.digestMerge += cpuNow() - c1
        }
        for (let k = 0; k < K; k++) {
          const c1 = cpuNow()
          for (const wr of decodeRecords(bytes, MAX_RECORDS_PER_DIGEST)) {
            const ch = views[k]!.merge(wr)
            if (ch != null) seen(k, ch)
          }
          if (w) schedCpu[k]!.digests += cpuNow() - c1
        }
      }])
    }
  }

  /** A snapshot of resource r's shard, as serveOnlineList encodes it. */
  const snapshot = (r: number): Uint8Array => {
    const c = cpuNow()
    const bytes = encodeRecords(own[r]!.all(), clock.now())
    if (inWindow) cpu[r]!.snapshotServe += cpuNow() - c
    if (bytes.length > largestSnapshot) largestSnapshot = bytes.length
    return bytes
  }

  const pull = (k: number): void => {
    // One pull per shard (its owner's list): a resource's whole list would pass the 8 MiB cap
    // near 50 k nodes (docs/scale.md). Counted over the cap when even one shard passes it.
    if (inWindow) pulls++
    for (let r = 0; r < R; r++) {
      const bytes = snapshot(r)
      if (bytes.length > MAX_SNAPSHOT_BYTES) { overCap++; continue }
      if (inWindow) pullBytes += bytes.length
      const w = inWindow
      transit.push([elapsed + 2 * p.transitMs, () => {
        const c = cpuNow()
        for (const wr of decodeRecords(bytes, MAX_SNAPSHOT_RECORDS)) {
          const ch = views[k]!.merge(wr)
          if (ch != null) seen(k, ch)
        }
        views[k]!.forget()
        if (w) schedCpu[k]!.pulls += cpuNow() - c
      }])
    }
  }

  const antiEntropy = (r: number): void => {
    if (R === 1) return
    let q = Math.floor(rand() * (R - 1))
    if (q >= r) q++
    const bytes = snapshot(q)
    if (bytes.length > MAX_SNAPSHOT_BYTES) { overCap++; return }
    if (inWindow) { aeBytes += bytes.length; aePulls++ }
    const w = inWindow
    transit.push([elapsed + 2 * p.transitMs, () => {
      const c = cpuNow()
      for (const wr of decodeRecords(bytes, MAX_SNAPSHOT_RECORDS)) rest[r]!.merge(wr)
      if (w) cpu[r]!.antiEntropy += cpuNow() - c
    }])
  }

  const leave = (i: number): void => {
    const n = nodes[i]!
    if (!n.running || n.hb.state !== 'alive') return
    if (rand() < 0.5) {
      n.running = false
      events.crashes += inWindow ? 1 : 0
      track(n.peerId, 'crash', r => r.state === 'dead' && r.hb.incarnation === n.hb.incarnation)
      restarts.push([elapsed + p.restartAfterMs, i])
    } else {
      events.drains += inWindow ? 1 : 0
      n.hb.state = 'draining'
      track(n.peerId, 'drain', r => r.state === 'draining' && r.hb.incarnation === n.hb.incarnation)
      beat(i) // the out-of-rhythm announcement
      leaves.push([elapsed + p.drainMs, i])
    }
  }

  const setState = (i: number, state: AnnouncedState): void => { nodes[i]!.hb.state = state }

  const churnPerMs = p.churnPerNodePerS * p.nodes / 1000
  const tickPhase = Array.from({ length: R }, (_, r) => Math.floor(r * TICK_INTERVAL_MS / R))
  const pullPhase = Array.from({ length: K }, (_, k) => Math.floor(k * VIEW_PULL_INTERVAL_MS / K))
  const aePhase = Array.from({ length: R }, (_, r) => Math.floor(r * ANTI_ENTROPY_INTERVAL_MS / R))
  const interval = HEARTBEAT_INTERVAL_MS
  const jitterMs = interval * p.jitter

  for (elapsed = 0; elapsed < endMs; elapsed++) {
    clock.advance(elapsed === 0 ? 0 : 1)
    if (elapsed === p.warmupMs) inWindow = true
    if (elapsed % 1000 === 0) onProgress?.(elapsed / 1000)

    // Deliveries due now.
    if (transit.length > 0) {
      let keep = 0
      const due: Array<() => void> = []
      for (const item of transit) {
        if (item[0] <= elapsed) due.push(item[1])
        else transit[keep++] = item
      }
      transit.length = keep
      for (const fn of due) fn()
    }

    // Heartbeats due now.
    const slot = wheel[elapsed % WHEEL]!
    if (slot.length > 0) {
      wheel[elapsed % WHEEL] = []
      const c = cpuNow()
      let sent = 0
      for (const i of slot) {
        const n = nodes[i]!
        if (!n.running || n.next !== elapsed) continue
        send(i)
        sent++
        n.next = elapsed + Math.max(1, Math.round(interval + (rand() * 2 - 1) * jitterMs))
        wheel[n.next % WHEEL]!.push(i)
      }
      // The nodes' side (encoding, with the loop's own small cost), apart from the resources'.
      if (inWindow && sent > 0) encodeUs += cpuNow() - c
      deliverBeats()
    }

    // Drained nodes leave; stopped nodes restart with a new incarnation.
    for (let j = leaves.length - 1; j >= 0; j--) {
      const [at, i] = leaves[j]!
      if (at > elapsed) continue
      leaves.splice(j, 1)
      setState(i, 'left')
      beat(i)
      nodes[i]!.running = false
      restarts.push([elapsed + p.restartAfterMs, i])
    }
    for (let j = restarts.length - 1; j >= 0; j--) {
      const [at, i] = restarts[j]!
      if (at > elapsed) continue
      restarts.splice(j, 1)
      const n = nodes[i]!
      n.hb = { ...n.hb, incarnation: clock.now(), seq: 0, state: 'alive' }
      n.running = true
      events.rejoins += inWindow ? 1 : 0
      const inc = n.hb.incarnation
      track(n.peerId, 'rejoin', r => r.state === 'alive' && r.hb.incarnation === inc)
      beat(i)
      n.next = elapsed + interval
      wheel[n.next % WHEEL]!.push(i)
    }

    // Churn: Poisson-ish arrivals at the configured rate.
    // Churn: a Bernoulli trial per millisecond for the fraction, whole events for the rest.
    for (let e = Math.floor(churnPerMs) + (rand() < churnPerMs % 1 ? 1 : 0); e > 0; e--) leave(Math.floor(rand() * p.nodes))

    for (let r = 0; r < R; r++) {
      if (elapsed % TICK_INTERVAL_MS === tickPhase[r]) {
        const c = cpuNow()
        const ch = own[r]!.tick()
        if (inWindow) cpu[r]!.tick += cpuNow() - c
        queue(r, ch)
      }
      if (flushAt[r] != null && flushAt[r]! <= elapsed) flush(r)
      if (elapsed % ANTI_ENTROPY_INTERVAL_MS === aePhase[r]) antiEntropy(r)
    }
    for (let k = 0; k < K; k++) {
      if (elapsed % VIEW_PULL_INTERVAL_MS === pullPhase[k]) pull(k)
    }
  }

  const s = p.windowMs / 1000
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
  const rc: ResourceCpu = {
    ingest: mean(cpu.map(c => c.ingest)) / s,
    tick: mean(cpu.map(c => c.tick)) / s,
    digestEncode: mean(cpu.map(c => c.digestEncode)) / s,
    digestMerge: mean(cpu.map(c => c.digestMerge)) / s,
    snapshotServe: mean(cpu.map(c => c.snapshotServe)) / s,
    antiEntropy: mean(cpu.map(c => c.antiEntropy)) / s
  }
  const sc = { digests: mean(schedCpu.map(c => c.digests)) / s, pulls: mean(schedCpu.map(c => c.pulls)) / s }
  let missing = 0
  for (const n of nodes) {
    for (const v of views) {
      const rec = v.get(n.peerId)
      if (rec == null || (n.running && n.hb.state === 'alive' && rec.state !== 'alive' && !tracked.has(n.peerId))) missing++
    }
  }
  const heap = process.memoryUsage().heapUsed
  return {
    params: p,
    heartbeatsPerResource: ingested / R,
    resourceCpuUsPerS: { ...rc, total: Object.values(rc).reduce((a, b) => a + b, 0) },
    schedulerCpuUsPerS: { ...sc, total: sc.digests + sc.pulls },
    nodeEncodeUs: encodeUs / Math.max(1, encodes),
    digestBytesPerResourcePerS: digestBytes / R / s,
    digestsPerResourcePerS: digestCount / R / s,
    digestBytesInPerS: digestBytes / s,
    digestsInPerS: digestCount / s,
    digestRecordsInPerS: digestRecords / s,
    pullBytesPerSchedulerPerS: pullBytes / K / s,
    antiEntropyBytesPerResourcePerS: aeBytes / R / s,
    bytesPerPull: pullBytes / Math.max(1, pulls),
    bytesPerAntiEntropyPull: aeBytes / Math.max(1, aePulls),
    largestSnapshotBytes: largestSnapshot,
    snapshotsOverCap: overCap,
    recordBytes: digestRecords > 0 ? (digestBytes - digestCount * 5) / digestRecords : 0,
    changes,
    events,
    staleness,
    missing,
    falseSuspects,
    viewSizes: views.map(v => v.size),
    heapBytesPerNode: heap / p.nodes,
    wallMs: performance.now() - wall0
  }
}
