import { peerIdFromString } from '@libp2p/peer-id'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import type { InflightCounter, MembershipView, NodeRecord } from '../membership/index.ts'
import type { LedgerView, Placer, RoutingWeight } from '../placement/index.ts'
import { Balancer, articleWeight, measuredWeight, staticWeight, type NodeLoad, type WeightFunction } from '../routing/index.ts'
import { inferChainRemote, inferRemote, runChain, RemoteInferError, type Chain } from './infer-protocol.ts'
import type { ReplicaHost } from './replicas.ts'
import {
  DeadlineError, ModelNotFoundError, QueueFullError, ServingError, UnavailableError,
  type InferRequest, type InferResult, type ModelSignature, type ModelStatus, type ServingBackend
} from './types.ts'
import { FAIL_TIMEOUT_MS, MAX_FAILS, MAX_RETRIES, SLOW_START_MS, WEIGHT_INTERVAL_MS } from './constants.ts'
import type { AppLoadMeter } from '../autoscale/load.ts'
import { MAX_HELD_PER_APP } from '../autoscale/constants.ts'

export interface RouterComponents {
  libp2p: Host
  view: MembershipView
  ledgers: LedgerView
  placer: Placer
  logger: Logger
  registry?: Registry
  /** The node role in this process: its replicas are called directly, no network. */
  local?: { peerId: string, host: ReplicaHost, inflight: InflightCounter }
  /** The daemon accepts requests (running, not stopping). */
  ready: () => boolean
  /** Counts requests in flight per app: the load autoscaling follows (src/autoscale). */
  meter?: AppLoadMeter
  /** A request is being held for an app scaled to zero: reconcile now (placement). */
  onHold?: (app: string) => void
}

const WEIGHTS: Record<RoutingWeight, WeightFunction> = { measured: measuredWeight, article: articleWeight, static: staticWeight }

interface AppRoute {
  balancer: Balancer
  routing: RoutingWeight
  /** Nodes with a ready replica, by peer id. */
  nodes: Map<string, NodeRecord>
  signature?: ModelSignature
}

/** Whether a failed request goes to another node: transport failures yes, the replica's answers no. */
export function retryable (err: unknown): err is ServingError {
  if (err instanceof RemoteInferError) return err.phase !== 'answered'
  return err instanceof QueueFullError || err instanceof UnavailableError
}

/** Nodes that take new requests: alive only (draining, suspect, dead, left are routed around). */
function routable (rec: NodeRecord): boolean {
  return rec.state === 'alive'
}

function loadOf (rec: NodeRecord): NodeLoad {
  const hb = rec.hb
  return { cores: hb.cores, gpus: hb.gpus, gpuPerf: hb.gpuPerf, cpuUtil: hb.cpuUtil, gpuUtil: hb.gpuUtil, inflight: hb.inflight }
}

/**
 * The scheduler's request router (ServingBackend of the KServe layer): per app, the nodes with
 * a ready replica, weighted from their heartbeats (recomputed every 3 s and at once on changes)
 * and picked by smooth weighted round-robin. A failed node is skipped and the request sent to
 * another while its deadline allows; failing nodes are ejected for a while (nginx max_fails).
 */
export class Router implements ServingBackend {
  private readonly components: RouterComponents
  private readonly routes = new Map<string, AppRoute>()
  private readonly inflightByNode = new Map<string, number>()
  private timer?: NodeJS.Timeout
  private pending = false
  private unsubscribe: Array<() => void> = []
  private readonly retries?: Counter<'app' | 'reason'>
  /** Requests waiting for the first replica of an app scaled to zero. */
  private readonly held = new Map<string, Set<() => void>>()

  constructor (components: RouterComponents) {
    this.components = components
    const registry = components.registry
    if (registry != null) {
      const registers = [registry]
      this.retries = new Counter({ name: 'astrad_routing_retries_total', help: 'Requests sent to another node after a node failed them, by reason', labelNames: ['app', 'reason'], registers })
      const routes = this.routes
      new Gauge({ // eslint-disable-line no-new
        name: 'astrad_routing_weight',
        help: 'Routing weight of each node with a ready replica, per app (0 = ejected)',
        labelNames: ['app', 'node'],
        registers,
        collect () {
          this.reset()
          for (const [app, r] of routes) {
            for (const s of r.balancer.states()) this.set({ app, node: r.nodes.get(s.id)?.hb.name ?? s.id }, s.ejected ? 0 : s.weight)
          }
        }
      })
      const inflight = this.inflightByNode
      const view = components.view
      new Gauge({ // eslint-disable-line no-new
        name: 'astrad_routing_inflight',
        help: 'Requests this router has in flight on each node',
        labelNames: ['node'],
        registers,
        collect () {
          this.reset()
          for (const [id, n] of inflight) this.set({ node: view.list.get(id)?.hb.name ?? id }, n)
        }
      })
    }
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { this.refresh() }, WEIGHT_INTERVAL_MS)
    this.unsubscribe.push(this.components.view.onChange(() => { this.refreshSoon() }))
    this.unsubscribe.push(this.components.ledgers.onChange(() => { this.refreshSoon() }))
    this.refresh()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    for (const u of this.unsubscribe) u()
    this.unsubscribe = []
  }

  /** State changes (a drain, a death, a replica ready) reach the routing table at once. */
  private refreshSoon (): void {
    if (this.pending) return
    this.pending = true
    queueMicrotask(() => {
      this.pending = false
      this.refresh()
    })
  }

  /** Rebuilds every app's node set and weights from the current view and ledgers. */
  refresh (): void {
    const { placer, view, ledgers } = this.components
    const byApp = new Map<string, { nodes: Map<string, NodeRecord>, signature?: ModelSignature, sigGen: number }>()
    for (const rec of view.list.all()) {
      if (!routable(rec) || !rec.hb.roles.includes('node')) continue
      const ledger = ledgers.get(rec.hb.peerId)
      if (ledger == null) continue
      for (const r of ledger.replicas) {
        if (r.state !== 'ready') continue
        let entry = byApp.get(r.app)
        if (entry == null) byApp.set(r.app, entry = { nodes: new Map(), sigGen: 0 })
        entry.nodes.set(rec.hb.peerId, rec)
        if (r.signature != null && r.generation >= entry.sigGen) { entry.signature = r.signature; entry.sigGen = r.generation }
      }
    }
    for (const record of placer.appRecords()) {
      const name = record.spec.name
      let route = this.routes.get(name)
      const routing = record.spec.routing ?? 'measured'
      if (route == null || route.routing !== routing) {
        route = {
          balancer: new Balancer({
            weight: WEIGHTS[routing],
            maxFails: MAX_FAILS,
            failTimeoutMs: FAIL_TIMEOUT_MS,
            slowStartMs: SLOW_START_MS,
            // nginx max_conns: a node with 2 requests per core (card) in flight from this router
            // is passed over while another has room.
            inflight: id => this.inflightByNode.get(id) ?? 0
          }),
          routing,
          nodes: new Map()
        }
        this.routes.set(name, route)
      }
      const entry = byApp.get(name)
      route.nodes = entry?.nodes ?? new Map()
      if (entry?.signature != null) route.signature = entry.signature
      route.balancer.update([...route.nodes.values()].map(rec => ({ id: rec.hb.peerId, load: loadOf(rec) })))
      if (route.nodes.size > 0) this.release(name)
    }
    for (const name of this.routes.keys()) if (placer.app(name) == null) this.routes.delete(name)
  }

  serverReady (): boolean {
    return this.components.ready()
  }

  models (): string[] {
    return this.components.placer.appRecords().map(r => r.spec.name).sort()
  }

  model (name: string): ModelStatus | undefined {
    const record = this.components.placer.app(name)
    if (record == null) return undefined
    const route = this.routes.get(name)
    const status: ModelStatus = {
      name,
      versions: [String(record.generation)],
      platform: 'onnxruntime_onnx',
      ready: (route?.nodes.size ?? 0) > 0
    }
    if (route?.signature != null) status.signature = route.signature
    return status
  }

  /** Routing weights per app and node, for `astrad status`. */
  weights (): Array<{ app: string, node: string, weight: number, ejected: boolean, inflight: number }> {
    const out = []
    for (const [app, r] of this.routes) {
      for (const s of r.balancer.states()) out.push({ app, node: s.id, weight: s.weight, ejected: s.ejected, inflight: this.inflightByNode.get(s.id) ?? 0 })
    }
    return out
  }

  /** Requests held for `app` (scaled to zero, waiting for its first replica). */
  heldCount (app: string): number {
    return this.held.get(app)?.size ?? 0
  }

  async infer (name: string, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    const record = this.components.placer.app(name)
    if (record == null) throw new ModelNotFoundError(name)
    // Only autoscaled apps are measured: the others' load is nobody's decision (and costs nothing here).
    const end = record.spec.autoscaling != null ? this.components.meter?.begin(name) : undefined
    try {
      let route = this.routes.get(name)
      if ((route == null || route.nodes.size === 0) && record.spec.autoscaling?.minReplicas === 0) {
        await this.hold(name, req.deadline, signal)
        route = this.routes.get(name)
      }
      if (route == null || route.nodes.size === 0) throw new UnavailableError(`no replica of '${name}' is ready`, 'ERR_NO_REPLICA')
      return await this.route(name, route, req, signal)
    } finally {
      end?.()
    }
  }

  /**
   * Scale from zero: the request waits (bounded per app, and by its deadline) while the owner
   * places a replica, then goes on as if nothing happened but its latency.
   */
  private async hold (app: string, deadline: number, signal?: AbortSignal): Promise<void> {
    let waiting = this.held.get(app)
    if (waiting == null) this.held.set(app, waiting = new Set())
    if (waiting.size >= MAX_HELD_PER_APP) throw new UnavailableError(`'${app}' is scaled to zero and ${MAX_HELD_PER_APP} requests already wait for its first replica`, 'ERR_NO_REPLICA')
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const wake = (): void => { resolve() }
    waiting.add(wake)
    const timer = setTimeout(() => { reject(new DeadlineError(`'${app}' is scaled to zero and no replica became ready within the request's deadline`)) }, Math.max(0, deadline - Date.now()))
    const onAbort = (): void => { reject(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
    this.components.onHold?.(app)
    try {
      await promise
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      waiting.delete(wake)
      if (waiting.size === 0) this.held.delete(app)
    }
  }

  /** Wakes the requests held for `app`: a replica is ready. */
  private release (app: string): void {
    const waiting = this.held.get(app)
    if (waiting == null) return
    for (const wake of waiting) wake()
  }

  private async route (name: string, route: AppRoute, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    const exclude = new Set<string>()
    let lastError: ServingError | undefined
    let sawFull = false
    for (let attempt = 0; attempt <= MAX_RETRIES; attempt++) {
      if (Date.now() >= req.deadline) throw new DeadlineError(`deadline passed after ${attempt} attempt(s)`)
      const id = route.balancer.pick(exclude)
      if (id == null) break
      exclude.add(id)
      const done = this.track(id)
      try {
        const result = await this.call(id, name, req, signal)
        route.balancer.success(id, result.computeMs)
        return result
      } catch (err) {
        // Retried elsewhere: the node never ran it (unreachable, refused, full) or lost it with
        // its connection. Answers (bad input, model errors) and deadlines go to the client.
        if (!retryable(err)) throw err
        lastError = err
        if (err.status === 429) {
          sawFull = true
        } else if (err.code !== 'ERR_DRAINING' && err.code !== 'ERR_NO_REPLICA') {
          // Unreachable or cut off mid-request: count against the node (passive ejection).
          route.balancer.failure(id)
        }
        const reason = err.status === 429 ? 'full' : err instanceof RemoteInferError ? err.phase : err.code
        this.retries?.inc({ app: name, reason })
        this.components.logger.debug({ app: name, node: id, code: err.code, err: errorMessage(err) }, 'request failed on a node; trying another')
      } finally {
        done()
      }
    }
    if (sawFull) throw new QueueFullError(`every replica of '${name}' tried is at its queue limit`)
    throw lastError ?? new UnavailableError(`no replica of '${name}' is ready`, 'ERR_NO_REPLICA')
  }

  /**
   * A node to run all of `apps` (a pipeline's stages) in one chained call, picked by the first
   * app's smooth weighted round-robin — only when every node with a ready replica of the first
   * app has one of each of the others too. (With uneven placement the first app's other nodes
   * would get no pipeline traffic at all; then the stages are routed one by one.)
   */
  pickCommon (apps: readonly string[]): string | undefined {
    const routes = apps.map(a => this.routes.get(a))
    const first = routes[0]
    if (first == null || first.nodes.size === 0 || routes.some(r => r == null)) return undefined
    for (const id of first.nodes.keys()) if (!routes.every(r => r!.nodes.has(id))) return undefined
    return first.balancer.pick()
  }

  /**
   * Runs a chain of apps on one node (pickCommon): in this process when the node is this daemon,
   * else over CHAIN_PROTOCOL. Transport failures count against the node as for any request.
   */
  async callChain (id: string, chain: Chain, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    const first = this.routes.get(chain.steps[0]!.app)
    const done = this.track(id)
    const end = this.components.meter != null ? chain.steps.map(s => this.components.placer.app(s.app)?.spec.autoscaling != null ? this.components.meter!.begin(s.app) : undefined) : []
    try {
      // This daemon's own replicas run the chain here, each step as call() runs a local request.
      const result = this.components.local?.peerId === id
        ? await runChain(chain, req, async (app, r, s) => await this.call(id, app, r, s), signal ?? new AbortController().signal)
        : await inferChainRemote(this.components.libp2p, peerIdFromString(id), chain, req, signal)
      first?.balancer.success(id, result.computeMs)
      return result
    } catch (err) {
      if (err instanceof RemoteInferError && err.phase !== 'answered' && err.code !== 'ERR_DRAINING' && err.code !== 'ERR_NO_REPLICA' && err.status !== 429) first?.balancer.failure(id)
      throw err
    } finally {
      done()
      for (const e of end) e?.()
    }
  }

  private track (id: string): () => void {
    this.inflightByNode.set(id, (this.inflightByNode.get(id) ?? 0) + 1)
    return () => {
      const n = (this.inflightByNode.get(id) ?? 1) - 1
      if (n <= 0) this.inflightByNode.delete(id)
      else this.inflightByNode.set(id, n)
    }
  }

  private async call (id: string, app: string, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    const local = this.components.local
    if (local != null && id === local.peerId) {
      const end = local.inflight.begin()
      try {
        return await local.host.infer(app, req, signal)
      } finally {
        end()
      }
    }
    return await inferRemote(this.components.libp2p, peerIdFromString(id), app, req, signal)
  }
}
