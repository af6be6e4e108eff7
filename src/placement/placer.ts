import { randomBytes } from 'node:crypto'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import { AstradError, errorMessage } from '../util/errors.ts'
import type { MembershipView, NodeRecord } from '../membership/index.ts'
import type { ClusterLogAccess } from '../clusterlog/index.ts'
import { appKind, providersOf, type AppRecord } from './app.ts'
import { probesWithWebgpuHeld, usableOn, wantsGpu } from '../devices/index.ts'
import { pipelineKind, stageApps, type PipelineRecord } from '../pipeline/spec.ts'
import type { ModelSignature } from '../serving/types.ts'
import type { Autoscaler } from '../autoscale/autoscaler.ts'
import type { Decision, LoadBoard } from '../autoscale/load.ts'
import type { Ledger, LedgerReplica, LedgerSnapshot, Reservation } from './ledger.ts'
import type { LedgerView } from './ledger-view.ts'
import type { ReserveApi } from './protocol.ts'
import { rendezvousOwner } from './rendezvous.ts'
import {
  APPS_REFRESH_MS, FAILED_NODE_BACKOFF_MS, MAX_REPLICA_ERROR_CHARS, MAX_RESERVE_ATTEMPTS, PLACE_CONCURRENCY, REBALANCE_INTERVAL_MS, RECONCILE_DEBOUNCE_MS,
  RECONCILE_INTERVAL_MS
} from './constants.ts'

/** One replica as the scheduler sees it: where it is and in what state. */
export interface PlacedReplica {
  node: NodeRecord
  replica: LedgerReplica
}

/** An app's placement as `astrad status` and `astrad app ls` show it. */
export interface AppStatus {
  name: string
  model: string
  generation: number
  desired: number
  /** Replicas of the current generation on live nodes (loading or ready). */
  placed: number
  ready: number
  /** Replicas of older generations still running (during a roll). */
  old: number
  /** Peer id of the scheduler that owns the app's placement. */
  owner?: string
  cells?: Record<string, { desired: number, placed: number, ready: number }>
  /**
   * Why the app is short of ready replicas: the last load failure (`replica failed to load on
   * n2: …`) or why a replica could not be placed. Cleared once the desired count is ready.
   */
  lastError?: string
  /**
   * An autoscaled app: the owner's decision (its `desired` is `desired` above), the load it saw,
   * its target and bounds, and why it last changed. Absent until the owner has published one.
   */
  autoscaling?: Decision & { target: number, min: number, max: number }
  /**
   * Apps naming a GPU provider (docs/gpus.md): the ordered list, and each replica of the current
   * generation with the provider it really runs on and, if it fell back, why.
   */
  executionProviders?: string[]
  replicas?: Array<{ node: string, state: string, provider?: string, fallback?: string }>
}

export interface PlacerComponents {
  view: MembershipView
  ledgers: LedgerView
  client: ReserveApi
  clusterLog: () => ClusterLogAccess
  logger: Logger
  clock: Clock
  registry?: Registry
  /** The node role in this process: reserved on directly. */
  local?: { peerId: string, ledger: Ledger }
  /** Autoscaling (src/autoscale): the owner's decisions, and every scheduler's published ones. */
  autoscale?: {
    scaler: Autoscaler
    board: LoadBoard
    /** Requests this scheduler holds for an app scaled to zero. */
    held: (app: string) => number
  }
  /**
   * Called for each replica placed: how long its placement took (the pick and every
   * reservation until one was accepted, ms) and how many reservations it sent.
   */
  onPlaced?: (ms: number, attempts: number) => void
}

export interface PlacerInit {
  /** This scheduler's peer id. */
  self: string
}

/** Nodes that may host replicas: announced alive (not draining, not suspect or dead). */
function placeable (rec: NodeRecord): boolean {
  return rec.state === 'alive' && rec.hb.roles.includes('node')
}

/** Replicas that still count: their node is up (a suspect node may come back). */
function counts (rec: NodeRecord): boolean {
  return rec.state === 'alive' || rec.state === 'suspect'
}

/**
 * What the owner remembers about one deployment of an app (its record as last written: a
 * redeploy, scale or roll, or `app rm` and a new deploy, starts afresh).
 */
interface AppNotes {
  deployment: string
  /** node → time until which it is not tried again (a replica failed to load there). */
  backoff: Map<string, number>
  lastError?: string
  /** The last load failure, kept while no other node can take the replica. */
  loadError?: string
  /** The new replica of a rebalancing move in flight (loading). */
  moving?: string
  lastMoveAt: number
  /** When replicas were placed in the last second (autoscaling's maxReplicasPerSecond). */
  placedAt: number[]
}

/** Reservations this scheduler has sent to one node and not yet had answered. */
interface InFlight {
  cpu: number
  gpu: number
  /** app → replicas of it in flight to the node. */
  apps: Map<string, number>
}

function deploymentOf (record: AppRecord): string {
  return `${record.generation}/${record.deployedAt}`
}

/**
 * Starlink placement (ARCHITECTURE §2): every scheduler sees every node's ledger; the owner of
 * an app (rendezvous hash over live schedulers) places its replicas optimistically — it picks
 * the best node from its view and sends `reserve`; the node's ledger accepts or rejects
 * atomically; a rejection (another scheduler got there first) is counted and the next node is
 * tried. The owner reconciles every second and at once on membership changes.
 */
export class Placer {
  private readonly components: PlacerComponents
  private readonly init: PlacerInit
  private apps = new Map<string, AppRecord>()
  private pipelines = new Map<string, PipelineRecord>()
  private appsAt = Number.NEGATIVE_INFINITY
  private running = false
  private again = false
  private timer?: NodeJS.Timeout
  private debounce?: NodeJS.Timeout
  private unsubscribe: Array<() => void> = []
  private readonly notes = new Map<string, AppNotes>()
  /**
   * Per node, the reservations in flight from this scheduler (an app's replicas are placed
   * PLACE_CONCURRENCY at a time): the picks made meanwhile count them as used, so they neither
   * pile an app's replicas on one node nor send a node more than its view says it can take.
   */
  private readonly inFlight = new Map<string, InFlight>()
  private readonly reservations?: Counter<'result'>
  private readonly releases?: Counter<'reason'>
  private readonly placeSeconds?: Histogram

  constructor (components: PlacerComponents, init: PlacerInit) {
    this.components = components
    this.init = init
    if (components.registry != null) {
      const registers = [components.registry]
      this.reservations = new Counter({ name: 'astrad_placement_reservations_total', help: 'Reservations sent by this scheduler, by result (accepted, rejected = conflict or full, error = unreachable)', labelNames: ['result'], registers })
      this.releases = new Counter({ name: 'astrad_placement_releases_total', help: 'Replicas released by this scheduler, by reason (scale, roll, failed, removed, rebalance)', labelNames: ['reason'], registers })
      this.placeSeconds = new Histogram({ name: 'astrad_placement_seconds', help: 'Time to place one replica: the pick and every reservation until one was accepted', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers })
    }
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { void this.tick() }, RECONCILE_INTERVAL_MS)
    this.unsubscribe.push(this.components.view.onChange(() => { this.soon() }))
    this.unsubscribe.push(this.components.ledgers.onChange(() => { this.soon() }))
    void this.tick()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    clearTimeout(this.debounce)
    this.timer = undefined
    for (const u of this.unsubscribe) u()
    this.unsubscribe = []
    while (this.running) await new Promise(resolve => setTimeout(resolve, 10))
  }

  /** Re-reads the app list at the next reconcile (after a deploy or rm on this daemon). */
  appsChanged (): void {
    this.appsAt = Number.NEGATIVE_INFINITY
    this.soon()
  }

  /**
   * Re-reads the app list now (after a deploy or rm through this daemon): resolves once this
   * scheduler serves the new list, so a request right after `app deploy` finds the app (a 503
   * until a replica is ready, or held if it scales from zero) instead of a 404.
   */
  async reloadApps (): Promise<void> {
    this.appsAt = Number.NEGATIVE_INFINITY
    try {
      await this.refreshApps()
    } catch (err) {
      this.components.logger.debug({ err: errorMessage(err) }, 'app list not readable after a change; the next reconcile reads it')
    }
    this.soon()
  }

  /** Reconciles shortly (coalescing bursts of changes). */
  soon (): void {
    if (this.timer == null || this.debounce != null) return
    this.debounce = setTimeout(() => {
      this.debounce = undefined
      void this.tick()
    }, RECONCILE_DEBOUNCE_MS)
  }

  /** The app records last read from the cluster log. */
  appRecords (): AppRecord[] {
    return [...this.apps.values()]
  }

  app (name: string): AppRecord | undefined {
    return this.apps.get(name)
  }

  /** The pipeline records last read from the cluster log (their stages are among appRecords()). */
  pipelineRecords (): PipelineRecord[] {
    return [...this.pipelines.values()]
  }

  pipeline (name: string): PipelineRecord | undefined {
    return this.pipelines.get(name)
  }

  /**
   * A model's signature as a loaded replica reported it, from any app's replica in this
   * scheduler's ledgers (deploys check a pipeline's wiring with it).
   */
  modelSignature (model: string): ModelSignature | undefined {
    for (const node of this.components.view.list.all()) {
      const ledger = this.components.ledgers.get(node.hb.peerId)
      if (ledger == null) continue
      for (const r of ledger.replicas) if (r.model === model && r.signature != null) return r.signature
    }
    return undefined
  }

  /** The owning scheduler of an app, from this daemon's view. */
  owner (app: string, schedulers = this.schedulers()): string | undefined {
    return rendezvousOwner(app, schedulers)
  }

  /** An autoscaled app's decision: this scheduler's if it owns the app, else the one its owner published. */
  private decisionOf (app: string): Decision | undefined {
    const auto = this.components.autoscale
    if (auto == null) return undefined
    return auto.scaler.decision(app) ?? auto.board.decision(app, this.components.clock.now())
  }

  /** Peer ids of the schedulers alive in this view (the candidates for ownership). */
  private schedulers (): string[] {
    const out: string[] = []
    for (const rec of this.components.view.list.all()) {
      if (rec.state === 'alive' && rec.hb.roles.includes('scheduler')) out.push(rec.hb.peerId)
    }
    return out
  }

  /** Every replica in the ledgers this scheduler holds, grouped by app. */
  replicasByApp (): Map<string, PlacedReplica[]> {
    const out = new Map<string, PlacedReplica[]>()
    for (const node of this.components.view.list.all()) {
      if (!node.hb.roles.includes('node')) continue
      const ledger = this.components.ledgers.get(node.hb.peerId)
      if (ledger == null) continue
      for (const replica of ledger.replicas) {
        let list = out.get(replica.app)
        if (list == null) out.set(replica.app, list = [])
        list.push({ node, replica })
      }
    }
    return out
  }

  status (): AppStatus[] {
    const byApp = this.replicasByApp()
    const schedulers = this.schedulers()
    return [...this.apps.values()].sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map(record => {
      const { spec, generation } = record
      const live = (byApp.get(spec.name) ?? []).filter(p => counts(p.node) && p.replica.state !== 'failed')
      const current = live.filter(p => p.replica.generation === generation)
      const decision = this.decisionOf(spec.name)
      const status: AppStatus = {
        name: spec.name,
        model: spec.model,
        generation,
        desired: spec.autoscaling != null && decision != null ? decision.desired : spec.replicas,
        placed: current.length,
        ready: current.filter(p => p.replica.state === 'ready').length,
        old: live.length - current.length,
        owner: this.owner(spec.name, schedulers)
      }
      if (spec.cells != null) {
        status.cells = {}
        for (const [cell, want] of Object.entries(spec.cells)) {
          const inCell = current.filter(p => p.node.hb.cell === cell)
          status.cells[cell] = { desired: want, placed: inCell.length, ready: inCell.filter(p => p.replica.state === 'ready').length }
        }
      }
      const notes = this.notes.get(spec.name)
      if (notes?.lastError != null && notes.deployment === deploymentOf(record)) status.lastError = notes.lastError
      const providers = providersOf(spec)
      if (wantsGpu(providers)) {
        status.executionProviders = providers
        status.replicas = current.map(p => ({
          node: p.node.hb.name,
          state: p.replica.state,
          ...(p.replica.provider != null ? { provider: p.replica.provider } : {}),
          ...(p.replica.fallback != null ? { fallback: p.replica.fallback } : {})
        }))
      }
      const a = spec.autoscaling
      if (a != null && decision != null) status.autoscaling = { ...decision, target: a.targetOngoingRequests, min: a.minReplicas, max: a.maxReplicas }
      return status
    })
  }

  private async refreshApps (): Promise<void> {
    const now = this.components.clock.now()
    if (now - this.appsAt < APPS_REFRESH_MS) return
    const [entries, pipelineEntries] = await Promise.all([
      this.components.clusterLog().list(appKind),
      this.components.clusterLog().list(pipelineKind)
    ])
    const apps = new Map<string, AppRecord>()
    for (const e of entries) if (e.value != null && !e.deleted) apps.set(e.key, e.value)
    // A pipeline's stages are apps of their own (src/pipeline). Deploys refuse a name taken by
    // the other kind; should two daemons race, the plain app keeps its name.
    const pipelines = new Map<string, PipelineRecord>()
    for (const e of pipelineEntries) {
      if (e.value == null || e.deleted || apps.has(e.key)) continue
      pipelines.set(e.key, e.value)
      for (const stage of stageApps(e.value)) {
        if (apps.has(stage.spec.name)) this.components.logger.warn({ pipeline: e.key, app: stage.spec.name }, 'a pipeline stage\'s app name is taken by an app; the stage is not placed')
        else apps.set(stage.spec.name, stage)
      }
    }
    this.apps = apps
    this.pipelines = pipelines
    this.appsAt = now
  }

  /** One reconcile round over the apps this scheduler owns. Never runs twice at once. */
  async tick (): Promise<void> {
    if (this.running) {
      this.again = true
      return
    }
    this.running = true
    try {
      do {
        this.again = false
        try {
          await this.refreshApps()
        } catch (err) {
          this.components.logger.debug({ err: errorMessage(err) }, 'app list not readable; placing from the last one')
        }
        for (const name of this.notes.keys()) if (!this.apps.has(name)) this.notes.delete(name)
        const byApp = this.replicasByApp()
        const names = new Set([...this.apps.keys(), ...byApp.keys()])
        const schedulers = this.schedulers()
        const owned = new Set<string>()
        for (const name of names) {
          if (this.owner(name, schedulers) !== this.init.self) continue
          owned.add(name)
          try {
            await this.reconcile(name, this.apps.get(name), byApp.get(name) ?? [])
          } catch (err) {
            this.components.logger.warn({ app: name, err: errorMessage(err) }, 'reconcile failed')
          }
        }
        this.components.autoscale?.scaler.retain(owned)
      } while (this.again && this.timer != null)
    } finally {
      this.running = false
    }
  }

  private async reconcile (name: string, record: AppRecord | undefined, replicas: PlacedReplica[]): Promise<void> {
    const live = replicas.filter(p => counts(p.node))
    // Removed app: release everything it still holds, and forget its back-offs and notes.
    if (record == null) {
      this.notes.delete(name)
      for (const p of live) await this.release(p, 'removed')
      return
    }
    const notes = this.notesOf(record)
    const { generation } = record
    // Replicas that failed to load: free them, and keep away from that node for a while.
    for (const p of live.filter(r => r.replica.state === 'failed')) {
      if (p.replica.generation === generation) {
        notes.loadError = notes.lastError = `replica failed to load on ${p.node.hb.name}: ${p.replica.error ?? 'no reason given'}`
        notes.backoff.set(p.node.hb.peerId, this.components.clock.now() + FAILED_NODE_BACKOFF_MS)
      }
      await this.release(p, 'failed')
    }
    const healthy = live.filter(p => p.replica.state !== 'failed')
    let current = healthy.filter(p => p.replica.generation === generation)
    // An autoscaled app: the count is the owner's decision now, within the spec's bounds.
    const auto = this.components.autoscale
    if (record.spec.autoscaling != null && auto != null) {
      const desired = auto.scaler.desired(record, current.length, auto.held(name))
      record = { ...record, spec: { ...record.spec, replicas: desired } }
    }
    const { spec } = record
    const old = healthy.filter(p => p.replica.generation !== generation)
    const readyCurrent = current.filter(p => p.replica.state === 'ready').length

    // A rebalancing move: its new replica stands outside the plan while it loads; once it is
    // ready it counts, and the replica in excess is taken from the most crowded node.
    const moving = notes.moving != null ? current.find(p => p.replica.replica === notes.moving) : undefined
    if (moving?.replica.state !== 'loading') notes.moving = undefined
    const moved = moving?.replica.state === 'ready'
    if (moving != null && !moved) current = current.filter(p => p !== moving)

    const { missing, excess } = this.plan(record, current)
    let unplaced = 0
    // An autoscaled app places at most maxReplicasPerSecond (the rest on the next rounds).
    const now = this.components.clock.now()
    notes.placedAt = notes.placedAt.filter(t => now - t < 1_000)
    const budget = spec.autoscaling != null ? Math.max(0, spec.autoscaling.maxReplicasPerSecond - notes.placedAt.length) : Infinity
    // Up to PLACE_CONCURRENCY placements at once: each pick sees the others' reservations in
    // flight (inFlight) and the replicas placed so far (current grows as they land).
    const todo = missing.slice(0, budget)
    const noRoom: Array<string | undefined> = []
    const noteBefore = notes.lastError
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < todo.length) {
        const cell = todo[next++]
        if (await this.placeOne(record, cell, current) != null) notes.placedAt.push(now)
        else noRoom.push(cell)
      }
    }
    await Promise.all(Array.from({ length: Math.min(PLACE_CONCURRENCY, todo.length) }, worker))
    // A pick made while other reservations were in flight may have counted one twice (a ledger
    // copy can hold a reservation before its answer is in): what found no room is tried once
    // more, one at a time, with nothing in flight.
    for (const cell of todo.length > 1 ? noRoom.splice(0) : []) {
      if (await this.placeOne(record, cell, current) != null) notes.placedAt.push(now)
      else noRoom.push(cell)
    }
    // Every replica found room in the end: a "no room" note from the first pass is not news.
    if (noRoom.length === 0) notes.lastError = noteBefore
    unplaced += noRoom.length
    // Scale down: drop loading replicas before ready ones, and never below the desired ready count.
    let ready = readyCurrent
    for (const p of excess.sort((a, b) => stateOrder(a) - stateOrder(b))) {
      if (p.replica.state === 'ready') {
        if (ready - 1 < spec.replicas) continue
        ready--
      }
      await this.release(p, moved ? 'rebalance' : 'scale')
    }
    // Roll: old replicas go once enough new ones are ready (ready capacity never drops), or
    // one at a time when the new ones cannot be placed because the old ones hold the room.
    let keepOld = Math.max(0, spec.replicas - readyCurrent)
    const byPreference = old.sort((a, b) => stateOrder(a) - stateOrder(b))
    for (const p of byPreference) {
      if (p.replica.state === 'ready' && keepOld > 0) { keepOld--; continue }
      await this.release(p, 'roll')
    }
    if (unplaced > 0 && old.length > 0 && readyCurrent < spec.replicas) {
      const victim = old.find(p => p.replica.state === 'ready')
      if (victim != null) await this.release(victim, 'roll')
    }
    if (unplaced === 0 && readyCurrent >= spec.replicas) {
      // At the desired ready count: an earlier failure or "no room" (a roll's surge) is history.
      notes.lastError = undefined
      notes.loadError = undefined
      if (missing.length === 0 && excess.length === 0 && old.length === 0 && moving == null) await this.rebalance(record, notes, current)
    }
  }

  /**
   * Moves one replica from a node holding two or more of the app's replicas to an eligible node
   * holding none (in the same cell when the app has cells): the new one is placed now, the one
   * in excess is released once the new one is ready (reconcile), so ready capacity never drops.
   * At most one move per app per REBALANCE_INTERVAL_MS.
   */
  private async rebalance (record: AppRecord, notes: AppNotes, current: PlacedReplica[]): Promise<void> {
    const now = this.components.clock.now()
    if (now - notes.lastMoveAt < REBALANCE_INTERVAL_MS) return
    const perNode = new Map<string, PlacedReplica[]>()
    for (const p of current) {
      const list = perNode.get(p.node.hb.peerId)
      if (list == null) perNode.set(p.node.hb.peerId, [p])
      else list.push(p)
    }
    let from: PlacedReplica[] | undefined
    for (const list of perNode.values()) if (list.length >= 2 && (from == null || list.length > from.length)) from = list
    if (from == null) return
    const source = from[0]!.node
    const cell = record.spec.cells != null ? source.hb.cell : undefined
    notes.lastMoveAt = now
    const placed = await this.placeOne(record, cell, current, { empty: true })
    if (placed == null) return
    notes.moving = placed.replica.replica
    this.components.logger.info({ app: record.spec.name, replica: placed.replica.replica, from: source.hb.name, to: placed.node.hb.name }, 'rebalancing: replica moving')
  }

  /**
   * Where replicas are missing (one entry per replica: its cell, or undefined for anywhere) and
   * which are in excess. With cells, a cell with no placeable node is lost: its replicas go to
   * the other cells and, when it returns, the ones that stood in for it become excess.
   */
  private plan (record: AppRecord, current: PlacedReplica[]): { missing: Array<string | undefined>, excess: PlacedReplica[] } {
    const { spec } = record
    const missing: Array<string | undefined> = []
    const excess: PlacedReplica[] = []
    // Replicas on nodes holding more of the app come last, so they are the ones in excess.
    const onNode = new Map<string, number>()
    for (const p of current) onNode.set(p.node.hb.peerId, (onNode.get(p.node.hb.peerId) ?? 0) + 1)
    current = [...current].sort((a, b) => onNode.get(a.node.hb.peerId)! - onNode.get(b.node.hb.peerId)!)
    if (spec.cells == null) {
      for (let i = current.length; i < spec.replicas; i++) missing.push(undefined)
      excess.push(...current.slice(spec.replicas))
      return { missing, excess }
    }
    const liveCells = new Set<string>()
    for (const rec of this.components.view.list.all()) if (placeable(rec)) liveCells.add(rec.hb.cell)
    const byCell = new Map<string, PlacedReplica[]>()
    for (const p of current) {
      let list = byCell.get(p.node.hb.cell)
      if (list == null) byCell.set(p.node.hb.cell, list = [])
      list.push(p)
    }
    let spill = 0
    const target = new Map<string, number>()
    for (const [cell, want] of Object.entries(spec.cells)) {
      if (liveCells.has(cell) || (byCell.get(cell)?.length ?? 0) > 0) target.set(cell, want)
      else spill += want
    }
    const surplus: PlacedReplica[] = []
    for (const [cell, list] of byCell) {
      const t = target.get(cell) ?? 0
      surplus.push(...list.slice(t))
      for (let i = list.length; i < t; i++) missing.push(cell)
    }
    for (const [cell, t] of target) if (!byCell.has(cell)) for (let i = 0; i < t; i++) missing.push(cell)
    // Surplus replicas stand in for lost cells first; what is left of the spill is placed anywhere.
    const standIns = Math.min(spill, surplus.length)
    for (let i = standIns; i < spill; i++) missing.push(undefined)
    excess.push(...surplus.slice(standIns))
    return { missing, excess }
  }

  /** The notes of the app's current deployment (fresh ones after a redeploy). */
  private notesOf (record: AppRecord): AppNotes {
    const deployment = deploymentOf(record)
    let notes = this.notes.get(record.spec.name)
    if (notes?.deployment !== deployment) {
      notes = { deployment, backoff: new Map(), lastMoveAt: Number.NEGATIVE_INFINITY, placedAt: [] }
      this.notes.set(record.spec.name, notes)
    }
    return notes
  }

  /**
   * Picks nodes by score and reserves until one accepts; the replica placed joins `current`.
   * `empty`: only nodes holding none of `current` (a rebalancing move), and no note when there
   * is none.
   */
  private async placeOne (record: AppRecord, cell: string | undefined, current: PlacedReplica[], options: { empty?: boolean } = {}): Promise<PlacedReplica | undefined> {
    const { spec, generation } = record
    const now = this.components.clock.now()
    const notes = this.notesOf(record)
    const backoff = notes.backoff
    const tried = new Set<string>()
    let backedOff = 0
    // An app naming a GPU provider goes only where one of its providers works, or where its
    // list allows cpu (nodes with a working GPU provider first); nodes that cannot say why.
    const providers = providersOf(spec)
    const gpuApp = wantsGpu(providers)
    const unusable: string[] = []
    const started = performance.now()
    for (let attempt = 0; attempt < MAX_RESERVE_ATTEMPTS; attempt++) {
      unusable.length = 0
      let best: { rec: NodeRecord, ledger: LedgerSnapshot, score: number } | undefined
      const onNode = new Map<string, number>()
      for (const p of current) onNode.set(p.node.hb.peerId, (onNode.get(p.node.hb.peerId) ?? 0) + 1)
      for (const rec of this.components.view.list.all()) {
        const id = rec.hb.peerId
        if (!placeable(rec) || tried.has(id)) continue
        if (cell != null && rec.hb.cell !== cell) continue
        if ((backoff.get(id) ?? 0) > now) { backedOff++; continue }
        const flying = this.inFlight.get(id)
        const same = (onNode.get(id) ?? 0) + (flying?.apps.get(spec.name) ?? 0)
        if (options.empty === true && same > 0) continue
        const ledger = this.components.ledgers.get(id)
        if (ledger == null || !ledger.accepting) continue
        const freeCpu = ledger.capacity.cpu - ledger.used.cpu - (flying?.cpu ?? 0)
        const freeGpu = ledger.capacity.gpu - ledger.used.gpu - (flying?.gpu ?? 0)
        if (freeCpu + 1e-9 < spec.resources.cpu || freeGpu < spec.resources.gpu) continue
        let onGpu = false
        if (gpuApp) {
          const usable = usableOn(providers, probesWithWebgpuHeld(ledger.devices?.providers, ledger.replicas))
          if (usable.use === 'no' || usable.use === 'unknown') {
            unusable.push(`${rec.hb.name}: ${usable.why}`)
            continue
          }
          onGpu = usable.use === 'gpu'
        }
        // Spread an app's replicas, then prefer a working GPU provider, roomy and idle nodes.
        const room = ledger.capacity.cpu > 0 ? freeCpu / ledger.capacity.cpu : 0
        const score = -same * 1000 + (onGpu ? 500 : 0) + room * 100 - rec.hb.cpuUtil * 10
        if (best == null || score > best.score) best = { rec, ledger, score }
      }
      if (best == null) {
        // A load failure is the real reason while the node it happened on is backed off.
        if (attempt === 0 && options.empty !== true) {
          notes.lastError = backedOff > 0 && notes.loadError != null
            ? notes.loadError
            : unusable.length > 0
              ? `no ${cell != null ? `node in cell ${cell}` : 'node'} with a free card can run ${providers.join(', ')}: ${unusable.join(' | ')}`.slice(0, MAX_REPLICA_ERROR_CHARS)
              : `no ${cell != null ? `node in cell ${cell}` : 'node'} with cpu ${spec.resources.cpu} gpu ${spec.resources.gpu} free`
        }
        return undefined
      }
      tried.add(best.rec.hb.peerId)
      const reservation: Reservation = {
        replica: `${spec.name}/${generation}/${randomBytes(4).toString('hex')}`,
        app: spec.name,
        generation,
        model: spec.model,
        resources: spec.resources,
        threads: spec.threads,
        maxQueue: spec.maxQueue,
        ...(spec.batching != null ? { batching: spec.batching } : {}),
        owner: this.init.self,
        ...(gpuApp ? { executionProviders: providers } : {})
      }
      const landed = this.fly(best.rec.hb.peerId, spec.name, spec.resources)
      try {
        const ledger = await this.reserveOn(best.rec, reservation, landed)
        this.reservations?.inc({ result: 'accepted' })
        const ms = performance.now() - started
        this.placeSeconds?.observe(ms / 1000)
        this.components.onPlaced?.(ms, attempt + 1)
        const replica = ledger.replicas.find(r => r.replica === reservation.replica)
        this.components.logger.info({ app: spec.name, replica: reservation.replica, node: best.rec.hb.name }, 'replica placed')
        if (replica == null) return undefined
        const placed = { node: best.rec, replica }
        current.push(placed)
        return placed
      } catch (err) {
        const code = err instanceof AstradError ? err.code : 'ERR_UNKNOWN'
        const conflict = code === 'ERR_NO_CAPACITY' || code === 'ERR_DRAINING' || code === 'ERR_CORDONED' || code === 'ERR_TOO_MANY' || code === 'ERR_DUPLICATE'
        this.reservations?.inc({ result: conflict ? 'rejected' : 'error' })
        this.components.logger.debug({ app: spec.name, node: best.rec.hb.name, code, err: errorMessage(err) }, 'reservation rejected; trying another node')
      } finally {
        landed()
      }
    }
    return undefined
  }

  /**
   * Counts a reservation in flight to `node` until the returned function is called (once its
   * answer is in this scheduler's ledger copy, so no pick counts it twice; later calls do nothing).
   */
  private fly (node: string, app: string, resources: { cpu: number, gpu: number }): () => void {
    let f = this.inFlight.get(node)
    if (f == null) this.inFlight.set(node, f = { cpu: 0, gpu: 0, apps: new Map() })
    f.cpu += resources.cpu
    f.gpu += resources.gpu
    f.apps.set(app, (f.apps.get(app) ?? 0) + 1)
    const flying = f
    let done = false
    return () => {
      if (done) return
      done = true
      flying.cpu -= resources.cpu
      flying.gpu -= resources.gpu
      const n = (flying.apps.get(app) ?? 1) - 1
      if (n > 0) flying.apps.set(app, n)
      else flying.apps.delete(app)
      if (flying.apps.size === 0) this.inFlight.delete(node)
    }
  }

  /** Reserves on the node; `landed` is called as the answer enters this scheduler's ledger copy. */
  private async reserveOn (rec: NodeRecord, reservation: Reservation, landed: () => void): Promise<LedgerSnapshot> {
    const local = this.components.local
    if (local != null && local.peerId === rec.hb.peerId) {
      local.ledger.reserve(reservation)
      landed()
      return local.ledger.snapshot()
    }
    const ledger = await this.components.client.reserve(rec.hb.peerId, reservation)
    landed()
    this.components.ledgers.update(rec.hb.peerId, rec.hb.incarnation, ledger)
    return ledger
  }

  private async release (p: PlacedReplica, reason: string): Promise<void> {
    const local = this.components.local
    try {
      if (local != null && local.peerId === p.node.hb.peerId) {
        local.ledger.release(p.replica.replica)
      } else {
        const ledger = await this.components.client.release(p.node.hb.peerId, p.replica.replica)
        this.components.ledgers.update(p.node.hb.peerId, p.node.hb.incarnation, ledger)
      }
      this.releases?.inc({ reason })
      this.components.logger.info({ app: p.replica.app, replica: p.replica.replica, node: p.node.hb.name, reason }, 'replica released')
    } catch (err) {
      this.components.logger.debug({ replica: p.replica.replica, err: errorMessage(err) }, 'release failed; retried next round')
    }
  }
}

/** Release order: failed, then loading, then ready. */
function stateOrder (p: PlacedReplica): number {
  return p.replica.state === 'failed' ? 0 : p.replica.state === 'loading' ? 1 : 2
}
