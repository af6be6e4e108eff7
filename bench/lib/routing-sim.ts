// Routing quality in simulation (issue 4, benchmark 2): a deterministic discrete-event model of
// a mixed fleet behind the router, comparing dynamic-weight SWRR (the article's weights and a
// variant), static round-robin, static capacity-weighted SWRR and power-of-two-choices
// least-request. The router code under test is the real one (src/routing: Balancer, Swrr);
// only the nodes, their heartbeats and time are simulated.
//
//   node bench/lib/routing-sim.ts [--seed N] [--duration S] [--load F] [--routers 1,8]
//                                 [--policies a,b] [--json]
//
// bench/serve.ts imports `runRoutingSim(options?): RoutingSimResult` and `formatRoutingSim`.
// Both are stable: options only get new optional fields, results only new fields.

import {
  Balancer, Swrr, articleWeight, measuredWeight, staticWeight, type NodeLoad, type WeightFunction
} from '../../src/routing/index.ts'
import { seededRandom as rng } from '../../src/util/random.ts'

/** Heartbeat period of every simulated node (astrad's: 1 s). */
const HEARTBEAT_MS = 1_000
/** Routers recompute weights this often (the article: every 3 s). */
const WEIGHT_INTERVAL_MS = 3_000
/** In-flight limit per slot of the `-limit` policies (the Balancer's default with `inflight`). */
const LIMIT_PER_SLOT = 2

export interface RoutingSimOptions {
  /** RNG seed: the fleet's hidden speeds, arrivals, jitter, random picks. @default 1 */
  seed?: number
  /** Nodes, nominal speed ×1 … ×4. @default 20 */
  nodes?: number
  /** Measured window (s), after the warm-up. @default 120 */
  durationS?: number
  /** Not measured, at the start (s). @default 10 */
  warmupS?: number
  /** Offered load as a fraction of the fleet's true capacity. @default 0.75 */
  load?: number
  /** Service time of a request on a ×1 slot (ms, before jitter). @default 50 */
  baseServiceMs?: number
  /** Router counts to run (each router routes its share of arrivals on its own). @default [1, 8] */
  routers?: number[]
  /** Policies (keys of POLICIES). @default all */
  policies?: string[]
  /** The periodically slowed node (index, -1 = none), how much slower, how often, how long. */
  preempt?: { node?: number, factor?: number, everyS?: number, forS?: number, firstAtS?: number }
}

/** One policy at one router count. */
export interface PolicyResult {
  policy: string
  description: string
  /** Requests completed that arrived in the measured window. */
  done: number
  p50Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
  meanMs: number
  /** Busy fraction of each node's slots over the measured window. */
  utilization: { min: number, max: number, spread: number, stddev: number, perNode: number[] }
  /** Share of requests sent to the preempted node while slowed / otherwise. */
  preempted: { shareWhileSlowed: number, shareOtherwise: number }
}

export interface RoutingRun {
  routers: number
  policies: PolicyResult[]
  /** The goal per dynamic SWRR policy: p99 ≤ P2C and ≤ 0.5 × round-robin. */
  goals: Array<{ policy: string, p99Ms: number, p2cP99Ms: number, rrP99Ms: number, beatsP2c: boolean, underHalfRr: boolean }>
}

export interface RoutingSimResult {
  options: {
    seed: number
    nodes: number
    durationS: number
    warmupS: number
    load: number
    baseServiceMs: number
    routers: number[]
    policies: string[]
    preempt: { node: number, factor: number, everyS: number, forS: number, firstAtS: number }
  }
  fleet: Array<{ node: number, kind: 'cpu' | 'gpu', slots: number, reportedCapacity: number, trueCapacityRps: number }>
  capacityRps: number
  arrivalRps: number
  runs: RoutingRun[]
  cpuMs: number
}

interface SimNode {
  index: number
  kind: 'cpu' | 'gpu'
  slots: number
  /** True per-slot speed: a request of jitter 1 takes baseServiceMs / speed. */
  speed: number
  /** What its heartbeat reports. */
  cores: number
  gpus: number
  gpuPerf: number
  busy: number
  queue: number[]
  qHead: number
  inflight: number
  slowed: boolean
  /** ∫ busy slots dt (ms), and its value at the last heartbeat and at the window marks. */
  busyArea: number
  lastChange: number
  areaAtLastHb: number
  markArea: number
  lastHb: NodeLoad
}

/** A routing policy inside one router. */
interface Policy {
  pick: () => number
  /** Heartbeats to weights (every WEIGHT_INTERVAL_MS). */
  update: (loads: NodeLoad[]) => void
  /** The node answered a request this router sent; computeMs = its service time. */
  done: (node: number, computeMs: number) => void
}

interface PolicyContext {
  nodes: number
  /** This router's own in-flight count per node (what Envoy's least-request sees). */
  inflight: Int32Array
  random: () => number
  clock: { now: () => number }
}

interface PolicyDef {
  description: string
  create: (ctx: PolicyContext) => Policy
}

function balancerPolicy (weight: WeightFunction, ctx: PolicyContext, maxInflightPerSlot = 0): Policy {
  const balancer = new Balancer({
    weight,
    clock: ctx.clock,
    maxInflightPerSlot,
    inflight: (id) => ctx.inflight[Number(id)] as number
  })
  const ids = Array.from({ length: ctx.nodes }, (_, i) => String(i))
  return {
    pick: () => Number(balancer.pick()),
    update: (loads) => { balancer.update(loads.map((load, i) => ({ id: ids[i] as string, load }))) },
    done: (node, computeMs) => { balancer.success(ids[node] as string, computeMs) }
  }
}

/** The policies compared. Names are stable (bench/serve.ts and docs/routing.md use them). */
export const POLICIES: Readonly<Record<string, PolicyDef>> = {
  rr: {
    description: 'static round-robin (equal weights)',
    create: (ctx) => {
      const swrr = new Swrr()
      for (let i = 0; i < ctx.nodes; i++) swrr.set(String(i), 1)
      return { pick: () => Number(swrr.pick()), update: () => {}, done: () => {} }
    }
  },
  'swrr-static': {
    description: 'SWRR, static weights = reported capacity (cores, or GPUs × perf)',
    create: (ctx) => balancerPolicy(staticWeight, ctx)
  },
  'swrr-article': {
    description: "dynamic SWRR, the article's weight (articleWeight)",
    create: (ctx) => balancerPolicy(articleWeight, ctx)
  },
  'swrr-article-limit': {
    description: `swrr-article + at most ${LIMIT_PER_SLOT} in flight per slot from this router (max_conns)`,
    create: (ctx) => balancerPolicy(articleWeight, ctx, LIMIT_PER_SLOT)
  },
  'swrr-measured': {
    description: 'dynamic SWRR, variant weight (measuredWeight): measured capacity less backlog',
    create: (ctx) => balancerPolicy(measuredWeight, ctx)
  },
  'swrr-measured-limit': {
    description: `swrr-measured + at most ${LIMIT_PER_SLOT} in flight per slot from this router (max_conns)`,
    create: (ctx) => balancerPolicy(measuredWeight, ctx, LIMIT_PER_SLOT)
  },
  p2c: {
    description: 'power of two choices, least request (live in-flight counts of this router)',
    create: (ctx) => ({
      pick: () => {
        const a = Math.floor(ctx.random() * ctx.nodes)
        let b = Math.floor(ctx.random() * (ctx.nodes - 1))
        if (b >= a) b++
        const ia = ctx.inflight[a] as number
        const ib = ctx.inflight[b] as number
        return ia < ib ? a : ib < ia ? b : (ctx.random() < 0.5 ? a : b)
      },
      update: () => {},
      done: () => {}
    })
  }
}

/** Min-heap of events ordered by (time, insertion), in parallel arrays. */
class EventQueue {
  private readonly t: number[] = []
  private readonly s: number[] = []
  private readonly k: number[] = []
  private readonly a: number[] = []
  private n = 0
  private seq = 0

  get length (): number { return this.n }

  push (time: number, kind: number, arg: number): void {
    const seq = this.seq++
    let i = this.n++
    while (i > 0) {
      const p = (i - 1) >> 1
      const pt = this.t[p] as number
      if (pt < time || (pt === time && (this.s[p] as number) < seq)) break
      this.move(p, i)
      i = p
    }
    this.t[i] = time; this.s[i] = seq; this.k[i] = kind; this.a[i] = arg
  }

  /** Removes the earliest event into `out` ([time, kind, arg]). */
  pop (out: [number, number, number]): void {
    out[0] = this.t[0] as number; out[1] = this.k[0] as number; out[2] = this.a[0] as number
    const n = --this.n
    if (n === 0) return
    const time = this.t[n] as number
    const seq = this.s[n] as number
    const kind = this.k[n] as number
    const arg = this.a[n] as number
    let i = 0
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      if (c + 1 < n && this.before(c + 1, c)) c++
      const ct = this.t[c] as number
      if (ct > time || (ct === time && (this.s[c] as number) > seq)) break
      this.move(c, i)
      i = c
    }
    this.t[i] = time; this.s[i] = seq; this.k[i] = kind; this.a[i] = arg
  }

  private before (x: number, y: number): boolean {
    const tx = this.t[x] as number
    const ty = this.t[y] as number
    return tx < ty || (tx === ty && (this.s[x] as number) < (this.s[y] as number))
  }

  private move (from: number, to: number): void {
    this.t[to] = this.t[from] as number; this.s[to] = this.s[from] as number
    this.k[to] = this.k[from] as number; this.a[to] = this.a[from] as number
  }
}

const ARRIVAL = 0
const COMPLETE = 1
const HEARTBEAT = 2
const WEIGHTS = 3
const PREEMPT_ON = 4
const PREEMPT_OFF = 5
const MARK_START = 6
const MARK_END = 7

/** Nearest-rank quantile of sorted values. */
function quantile (sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number
}

function round (x: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

type ResolvedOptions = RoutingSimResult['options']

function resolve (o: RoutingSimOptions): ResolvedOptions {
  const nodes = o.nodes ?? 20
  const opts: ResolvedOptions = {
    seed: o.seed ?? 1,
    nodes,
    durationS: o.durationS ?? 120,
    warmupS: o.warmupS ?? 10,
    load: o.load ?? 0.75,
    baseServiceMs: o.baseServiceMs ?? 50,
    routers: o.routers ?? [1, 8],
    policies: o.policies ?? Object.keys(POLICIES),
    preempt: {
      node: o.preempt?.node ?? nodes - 1,
      factor: o.preempt?.factor ?? 5,
      everyS: o.preempt?.everyS ?? 30,
      forS: o.preempt?.forS ?? 10,
      firstAtS: o.preempt?.firstAtS ?? 20
    }
  }
  const check = (name: string, v: number, ok: boolean): void => { if (!ok || !Number.isFinite(v)) throw new RangeError(`${name}: invalid value ${v}`) }
  check('seed', opts.seed, Number.isInteger(opts.seed))
  check('nodes', nodes, Number.isInteger(nodes) && nodes >= 2)
  check('durationS', opts.durationS, opts.durationS > 0)
  check('warmupS', opts.warmupS, opts.warmupS >= 0)
  check('load', opts.load, opts.load > 0 && opts.load < 1)
  check('baseServiceMs', opts.baseServiceMs, opts.baseServiceMs > 0)
  check('preempt.node', opts.preempt.node, Number.isInteger(opts.preempt.node) && opts.preempt.node >= -1 && opts.preempt.node < nodes)
  check('preempt.factor', opts.preempt.factor, opts.preempt.factor >= 1)
  check('preempt.everyS', opts.preempt.everyS, opts.preempt.everyS > 0)
  check('preempt.forS', opts.preempt.forS, opts.preempt.forS >= 0)
  check('preempt.firstAtS', opts.preempt.firstAtS, opts.preempt.firstAtS >= 0)
  for (const r of opts.routers) check('routers', r, Number.isInteger(r) && r >= 1)
  for (const p of opts.policies) if (POLICIES[p] == null) throw new RangeError(`unknown policy '${p}' (known: ${Object.keys(POLICIES).join(', ')})`)
  return opts
}

/**
 * The fleet: node i has nominal speed ×1 … ×4 (linear in i). Even nodes are CPU nodes
 * (cores = 4 × nominal, one request per core), odd ones GPU nodes (2 GPUs, gpuPerf = 2 × nominal).
 * Each node's true per-slot speed differs from what it reports by a hidden factor 0.8 … 1.2
 * (CPU generations, clocks, noisy neighbours): the router knows capacity only roughly.
 */
function buildFleet (opts: ResolvedOptions): SimNode[] {
  const random = rng(opts.seed * 7919 + 17)
  const fleet: SimNode[] = []
  for (let i = 0; i < opts.nodes; i++) {
    const nominal = 1 + 3 * i / (opts.nodes - 1)
    const hidden = 0.8 + 0.4 * random()
    const cpu = i % 2 === 0
    const slots = cpu ? Math.round(4 * nominal) : 2
    const perSlot = cpu ? 4 * nominal / slots : 2 * nominal
    const cores = cpu ? slots : 8
    const gpus = cpu ? 0 : 2
    const gpuPerf = cpu ? 1 : Math.round(perSlot * 100) / 100
    fleet.push({
      index: i,
      kind: cpu ? 'cpu' : 'gpu',
      slots,
      speed: perSlot * hidden,
      cores,
      gpus,
      gpuPerf,
      busy: 0,
      queue: [],
      qHead: 0,
      inflight: 0,
      slowed: false,
      busyArea: 0,
      lastChange: 0,
      areaAtLastHb: 0,
      markArea: 0,
      lastHb: { cores, gpus, gpuPerf, cpuUtil: 0, gpuUtil: 0, inflight: 0 }
    })
  }
  return fleet
}

function capacityRpsOf (fleet: SimNode[], opts: ResolvedOptions): number {
  return fleet.reduce((s, f) => s + f.slots * f.speed * 1000 / opts.baseServiceMs, 0)
}

/**
 * One policy, one router count. Every run sees the same fleet, the same arrival times and the
 * same per-request jitter (common random numbers), so differences come from routing alone.
 */
function runPolicy (name: string, def: PolicyDef, routerCount: number, opts: ResolvedOptions): PolicyResult {
  const fleet = buildFleet(opts)
  const n = fleet.length
  const rate = capacityRpsOf(fleet, opts) * opts.load / 1000 // arrivals per ms
  const arrivals = rng(opts.seed)
  const routing = rng(opts.seed * 31 + 5)
  let now = 0
  const clock = { now: () => now }
  const routers = Array.from({ length: routerCount }, () => {
    const inflight = new Int32Array(n)
    return { inflight, policy: def.create({ nodes: n, inflight, random: routing, clock }) }
  })
  const loads = (): NodeLoad[] => fleet.map(f => f.lastHb)
  for (const r of routers) r.policy.update(loads())

  const startMs = opts.warmupS * 1000
  const endMs = startMs + opts.durationS * 1000
  let capacity = Math.ceil(rate * endMs * 1.1) + 1024
  let arrivalAt = new Float64Array(capacity)
  let jitterOf = new Float64Array(capacity)
  let serviceOf = new Float64Array(capacity)
  let routerOf = new Int32Array(capacity)
  let nodeOf = new Int32Array(capacity)
  let count = 0
  const latencies: number[] = []
  const pre = opts.preempt.node >= 0 ? fleet[opts.preempt.node] : undefined
  const share = { slowed: 0, slowedTo: 0, normal: 0, normalTo: 0 }

  const q = new EventQueue()
  const ev: [number, number, number] = [0, 0, 0]
  const exp = (): number => -Math.log(1 - arrivals())
  q.push(exp() / rate, ARRIVAL, 0)
  for (const f of fleet) q.push((f.index / n) * HEARTBEAT_MS, HEARTBEAT, f.index)
  q.push(WEIGHT_INTERVAL_MS, WEIGHTS, 0)
  if (pre != null) {
    for (let t = opts.preempt.firstAtS * 1000; t < endMs; t += opts.preempt.everyS * 1000) {
      q.push(t, PREEMPT_ON, pre.index)
      q.push(t + opts.preempt.forS * 1000, PREEMPT_OFF, pre.index)
    }
  }
  q.push(startMs, MARK_START, 0)
  q.push(endMs, MARK_END, 0)

  const account = (f: SimNode): void => {
    f.busyArea += f.busy * (now - f.lastChange)
    f.lastChange = now
  }
  // A request runs at the speed its node has when it starts (a slowdown does not stretch
  // requests already running).
  const start = (f: SimNode, req: number): void => {
    account(f)
    f.busy++
    const service = opts.baseServiceMs / f.speed * (jitterOf[req] as number) * (f.slowed ? opts.preempt.factor : 1)
    serviceOf[req] = service
    q.push(now + service, COMPLETE, req)
  }
  const grow = (): void => {
    capacity *= 2
    const g = <T extends Float64Array | Int32Array>(from: T, to: T): T => { to.set(from); return to }
    arrivalAt = g(arrivalAt, new Float64Array(capacity))
    jitterOf = g(jitterOf, new Float64Array(capacity))
    serviceOf = g(serviceOf, new Float64Array(capacity))
    routerOf = g(routerOf, new Int32Array(capacity))
    nodeOf = g(nodeOf, new Int32Array(capacity))
  }

  let pending = 0
  let arrivalsOpen = true
  while (q.length > 0) {
    q.pop(ev)
    now = ev[0]
    const kind = ev[1]
    if (kind === ARRIVAL) {
      if (now >= endMs) { arrivalsOpen = false; if (pending === 0) break; continue }
      if (count === capacity) grow()
      const req = count++
      arrivalAt[req] = now
      // Service jitter: 0.5 + Exp(mean 0.5): mean 1, coefficient of variation 0.5.
      jitterOf[req] = 0.5 + 0.5 * exp()
      const r = Math.floor(arrivals() * routers.length)
      routerOf[req] = r
      const router = routers[r] as typeof routers[number]
      const target = router.policy.pick()
      nodeOf[req] = target
      router.inflight[target] = (router.inflight[target] as number) + 1
      const f = fleet[target] as SimNode
      if (now >= startMs && pre != null) {
        if (pre.slowed) { share.slowed++; if (f === pre) share.slowedTo++ } else { share.normal++; if (f === pre) share.normalTo++ }
      }
      f.inflight++
      pending++
      if (f.busy < f.slots) start(f, req)
      else f.queue.push(req)
      q.push(now + exp() / rate, ARRIVAL, 0)
    } else if (kind === COMPLETE) {
      const req = ev[2]
      const target = nodeOf[req] as number
      const f = fleet[target] as SimNode
      const router = routers[routerOf[req] as number] as typeof routers[number]
      router.inflight[target] = (router.inflight[target] as number) - 1
      router.policy.done(target, serviceOf[req] as number)
      f.inflight--
      pending--
      account(f)
      f.busy--
      const at = arrivalAt[req] as number
      if (at >= startMs && at < endMs) latencies.push(now - at)
      if (f.qHead < f.queue.length) {
        start(f, f.queue[f.qHead++] as number)
        if (f.qHead > 4096 && f.qHead * 2 > f.queue.length) { f.queue = f.queue.slice(f.qHead); f.qHead = 0 }
      }
      if (!arrivalsOpen && pending === 0) break
    } else if (kind === HEARTBEAT) {
      // cpuUtil/gpuUtil: busy fraction of the slots over the last second; inflight: right now.
      const f = fleet[ev[2]] as SimNode
      account(f)
      const util = Math.min(1, (f.busyArea - f.areaAtLastHb) / (f.slots * HEARTBEAT_MS))
      f.areaAtLastHb = f.busyArea
      f.lastHb = { cores: f.cores, gpus: f.gpus, gpuPerf: f.gpuPerf, cpuUtil: f.kind === 'cpu' ? util : 0.05, gpuUtil: f.kind === 'gpu' ? util : 0, inflight: f.inflight }
      if (now < endMs) q.push(now + HEARTBEAT_MS, HEARTBEAT, f.index)
    } else if (kind === WEIGHTS) {
      const l = loads()
      for (const r of routers) r.policy.update(l)
      if (now < endMs) q.push(now + WEIGHT_INTERVAL_MS, WEIGHTS, 0)
    } else if (kind === PREEMPT_ON || kind === PREEMPT_OFF) {
      (fleet[ev[2]] as SimNode).slowed = kind === PREEMPT_ON
    } else if (kind === MARK_START) {
      for (const f of fleet) { account(f); f.markArea = f.busyArea }
    } else if (kind === MARK_END) {
      for (const f of fleet) { account(f); f.markArea = f.busyArea - f.markArea }
    }
  }
  const sorted = Float64Array.from(latencies).sort()
  const windowMs = endMs - startMs
  const perNode = fleet.map(f => f.markArea / (f.slots * windowMs))
  const mean = perNode.reduce((s, u) => s + u, 0) / n
  const stddev = Math.sqrt(perNode.reduce((s, u) => s + (u - mean) ** 2, 0) / n)
  const min = Math.min(...perNode)
  const max = Math.max(...perNode)
  return {
    policy: name,
    description: def.description,
    done: sorted.length,
    p50Ms: round(quantile(sorted, 0.5)),
    p99Ms: round(quantile(sorted, 0.99)),
    p999Ms: round(quantile(sorted, 0.999)),
    maxMs: round(sorted[sorted.length - 1] ?? NaN),
    meanMs: round(sorted.reduce((s, x) => s + x, 0) / Math.max(1, sorted.length)),
    utilization: { min: round(min, 3), max: round(max, 3), spread: round(max - min, 3), stddev: round(stddev, 3), perNode: perNode.map(u => round(u, 3)) },
    preempted: {
      shareWhileSlowed: round(share.slowed > 0 ? share.slowedTo / share.slowed : 0, 4),
      shareOtherwise: round(share.normal > 0 ? share.normalTo / share.normal : 0, 4)
    }
  }
}

/**
 * Runs every policy for every router count on the same fleet, arrivals and service times.
 * Deterministic for a seed; ~1 s of CPU per policy and router count at the defaults.
 */
export function runRoutingSim (options: RoutingSimOptions = {}): RoutingSimResult {
  const cpu0 = process.cpuUsage()
  const opts = resolve(options)
  const fleet = buildFleet(opts)
  const capacityRps = capacityRpsOf(fleet, opts)
  const runs = opts.routers.map((routers): RoutingRun => {
    const policies = opts.policies.map(p => runPolicy(p, POLICIES[p] as PolicyDef, routers, opts))
    const p2c = policies.find(p => p.policy === 'p2c')
    const rr = policies.find(p => p.policy === 'rr')
    const goals = p2c == null || rr == null
      ? []
      : policies.filter(p => p.policy.startsWith('swrr-') && p.policy !== 'swrr-static').map(p => ({
        policy: p.policy,
        p99Ms: p.p99Ms,
        p2cP99Ms: p2c.p99Ms,
        rrP99Ms: rr.p99Ms,
        beatsP2c: p.p99Ms <= p2c.p99Ms,
        underHalfRr: p.p99Ms <= 0.5 * rr.p99Ms
      }))
    return { routers, policies, goals }
  })
  const cpu = process.cpuUsage(cpu0)
  return {
    options: opts,
    fleet: fleet.map(f => ({
      node: f.index,
      kind: f.kind,
      slots: f.slots,
      reportedCapacity: round(staticWeight(f.lastHb), 2),
      trueCapacityRps: round(f.slots * f.speed * 1000 / opts.baseServiceMs)
    })),
    capacityRps: round(capacityRps),
    arrivalRps: round(capacityRps * opts.load),
    runs,
    cpuMs: Math.round((cpu.user + cpu.system) / 1000)
  }
}

/** Fixed-width tables of the result, one per router count (for the CLI and bench/serve.ts). */
export function formatRoutingSim (r: RoutingSimResult): string {
  const o = r.options
  const out = [
    `routing simulation: ${o.nodes} nodes (×1…×4), ${r.capacityRps} req/s capacity, ${r.arrivalRps} req/s offered (${round(o.load * 100)} %), ` +
    `node ${o.preempt.node} ÷${o.preempt.factor} for ${o.preempt.forS} s every ${o.preempt.everyS} s, ${o.durationS} s measured, seed ${o.seed}`
  ]
  const head = ['policy', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'util min', 'util max', 'spread', 'stddev', 'slowed share', 'done']
  for (const run of r.runs) {
    const rows = run.policies.map(p => [
      p.policy, p.p50Ms.toFixed(1), p.p99Ms.toFixed(1), p.p999Ms.toFixed(1), p.maxMs.toFixed(0),
      p.utilization.min.toFixed(3), p.utilization.max.toFixed(3), p.utilization.spread.toFixed(3), p.utilization.stddev.toFixed(3),
      `${(p.preempted.shareWhileSlowed * 100).toFixed(1)}/${(p.preempted.shareOtherwise * 100).toFixed(1)} %`, String(p.done)
    ])
    const w = head.map((h, i) => Math.max(h.length, ...rows.map(row => (row[i] as string).length)))
    const line = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] as number)).join('  ')
    out.push('', `${run.routers} router${run.routers === 1 ? '' : 's'}:`, line(head), ...rows.map(line))
    for (const g of run.goals) {
      out.push(`  goal ${g.policy}: p99 ${g.p99Ms} ms ≤ P2C ${g.p2cP99Ms} ms ${g.beatsP2c ? 'yes' : 'NO'}; ≤ 0.5 × RR ${round(0.5 * g.rrP99Ms)} ms ${g.underHalfRr ? 'yes' : 'NO'}`)
    }
  }
  out.push('', `(slowed share: % of requests sent to the preempted node while it was slowed / otherwise; cpu ${r.cpuMs} ms)`)
  return out.join('\n')
}

if (import.meta.main) {
  const { parseArgs } = await import('node:util')
  const usage = 'usage: node bench/lib/routing-sim.ts [--seed N] [--duration S] [--load F] [--routers 1,8] [--policies a,b] [--json]'
  let values
  try {
    values = parseArgs({
      options: {
        seed: { type: 'string' },
        duration: { type: 'string' },
        load: { type: 'string' },
        routers: { type: 'string' },
        policies: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' }
      },
      strict: true
    }).values
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${usage}\n`)
    process.exit(2)
  }
  if (values.help === true) {
    process.stdout.write(usage + '\n')
    process.exit(0)
  }
  const num = (v: string | undefined): number | undefined => v == null ? undefined : Number(v)
  try {
    const result = runRoutingSim({
      seed: num(values.seed),
      durationS: num(values.duration),
      load: num(values.load),
      routers: values.routers?.split(',').map(Number),
      policies: values.policies?.split(',')
    })
    process.stdout.write((values.json === true ? JSON.stringify(result, null, 2) : formatRoutingSim(result)) + '\n')
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    process.stderr.write(`${err.message}\n${usage}\n`)
    process.exit(2)
  }
}
