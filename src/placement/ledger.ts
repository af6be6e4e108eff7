import { AstradError } from '../util/errors.ts'
import type { ModelSignature } from '../serving/types.ts'
import type { Resources } from './app.ts'
import type { BatchingSpec } from '../batching/spec.ts'
import type { DeviceReport, ExecutionProvider } from '../devices/index.ts'
import { MAX_REPLICA_ERROR_CHARS, MAX_REPLICAS_PER_NODE } from './constants.ts'

/** What a scheduler asks a node to hold. */
export interface Reservation {
  /** Unique id chosen by the scheduler: `<app>/<generation>/<random>`. */
  replica: string
  app: string
  generation: number
  model: string
  resources: Resources
  threads: number
  maxQueue: number
  /** The app's batching block (docs/batching.md); absent: off. */
  batching?: BatchingSpec
  /** Peer id of the scheduler that placed it. */
  owner: string
  /**
   * Execution providers to try in order (docs/gpus.md). Sent only for apps that name a GPU
   * provider: absent, the replica runs on cpu (and an older node accepts the reservation).
   */
  executionProviders?: ExecutionProvider[]
}

export type ReplicaState = 'loading' | 'ready' | 'failed'

export interface LedgerReplica extends Reservation {
  state: ReplicaState
  /** Why loading failed. */
  error?: string
  /** Inputs/outputs, once loaded. */
  signature?: ModelSignature
  /** The execution provider its sessions run on, once loaded (replicas with executionProviders only). */
  provider?: ExecutionProvider
  /** Why providers earlier in its list did not start, when it runs on a later one (a fallback). */
  fallback?: string
  /** Node clock ms when reserved. */
  since: number
}

/** A node's ledger as sent to schedulers. */
export interface LedgerSnapshot {
  /** Bumped on every change; also in each heartbeat so schedulers know when to re-read. */
  version: number
  capacity: Resources
  used: Resources
  /** false while the node drains or is cordoned: it accepts no reservation. */
  accepting: boolean
  /**
   * The operator cordoned the node (`astrad cordon`): no new replicas, the ones it holds keep
   * serving. Absent from nodes older than cordon.
   */
  cordoned?: boolean
  replicas: LedgerReplica[]
  /** The node's accelerators and working execution providers (src/devices); absent from older nodes. */
  devices?: DeviceReport
}

/** A reservation the node refuses; `code` says why (crosses the wire). */
export class ReservationRejectedError extends AstradError {
  constructor (message: string, code: 'ERR_NO_CAPACITY' | 'ERR_DRAINING' | 'ERR_CORDONED' | 'ERR_DUPLICATE' | 'ERR_TOO_MANY') {
    super(message, code)
    this.name = 'ReservationRejectedError'
  }
}

/** Float resources (cpu: 0.5) compared with a tolerance so 0.1 × 10 fits in 1. */
const EPSILON = 1e-9

/**
 * A node's capacity ledger: the one place that says yes or no to a reservation. Check and
 * commit happen in one synchronous call, so concurrent schedulers can never overcommit the node
 * (JavaScript runs one call at a time; there is no await between the check and the commit).
 */
export class Ledger {
  readonly capacity: Resources
  private readonly replicas = new Map<string, LedgerReplica>()
  private readonly listeners = new Set<(event: LedgerEvent) => void>()
  private versionValue = 0
  private accepting = true
  private cordonedValue = false
  private devicesValue?: DeviceReport
  private readonly now: () => number

  constructor (capacity: Resources, now: () => number = Date.now) {
    this.capacity = { ...capacity }
    this.now = now
  }

  get version (): number { return this.versionValue }

  used (): Resources {
    const used = { cpu: 0, gpu: 0 }
    for (const r of this.replicas.values()) {
      used.cpu += r.resources.cpu
      used.gpu += r.resources.gpu
    }
    return used
  }

  /** Reserves at once or throws ReservationRejectedError; never partially. */
  reserve (r: Reservation): LedgerReplica {
    if (!this.accepting) throw new ReservationRejectedError('node is draining', 'ERR_DRAINING')
    if (this.cordonedValue) throw new ReservationRejectedError('node is cordoned (astrad uncordon lifts it)', 'ERR_CORDONED')
    if (this.replicas.has(r.replica)) throw new ReservationRejectedError(`replica ${r.replica} already reserved`, 'ERR_DUPLICATE')
    if (this.replicas.size >= MAX_REPLICAS_PER_NODE) throw new ReservationRejectedError(`node holds ${this.replicas.size} replicas (limit ${MAX_REPLICAS_PER_NODE})`, 'ERR_TOO_MANY')
    const used = this.used()
    if (used.cpu + r.resources.cpu > this.capacity.cpu + EPSILON || used.gpu + r.resources.gpu > this.capacity.gpu + EPSILON) {
      throw new ReservationRejectedError(
        `needs cpu ${r.resources.cpu} gpu ${r.resources.gpu}, free cpu ${round(this.capacity.cpu - used.cpu)} gpu ${round(this.capacity.gpu - used.gpu)}`, 'ERR_NO_CAPACITY')
    }
    const replica: LedgerReplica = { ...r, resources: { ...r.resources }, state: 'loading', since: this.now() }
    this.replicas.set(r.replica, replica)
    this.bump({ type: 'reserved', replica })
    return replica
  }

  /** Frees a replica's resources; false if it was not held. */
  release (id: string): boolean {
    const replica = this.replicas.get(id)
    if (replica == null) return false
    this.replicas.delete(id)
    this.bump({ type: 'released', replica })
    return true
  }

  /** Records the outcome of loading (ready with its signature, or failed with the reason). */
  setState (id: string, state: ReplicaState, detail: { error?: string, signature?: ModelSignature, provider?: ExecutionProvider, fallback?: string } = {}): void {
    const replica = this.replicas.get(id)
    if (replica == null || replica.state === state) return
    replica.state = state
    if (detail.error != null) replica.error = detail.error.slice(0, MAX_REPLICA_ERROR_CHARS)
    if (detail.signature != null) replica.signature = detail.signature
    if (detail.provider != null) replica.provider = detail.provider
    if (detail.fallback != null) replica.fallback = detail.fallback.slice(0, MAX_REPLICA_ERROR_CHARS)
    this.bump({ type: 'state', replica })
  }

  /** Stops (or resumes) accepting reservations: a draining node takes no new work. */
  setAccepting (accepting: boolean): void {
    if (this.accepting === accepting) return
    this.accepting = accepting
    this.bump()
  }

  /**
   * Cordons (or uncordons) the node, as Kubernetes' unschedulable: it refuses new reservations,
   * and the replicas it holds stay placed and keep serving (drain is what leaves).
   */
  setCordoned (cordoned: boolean): void {
    if (this.cordonedValue === cordoned) return
    this.cordonedValue = cordoned
    this.bump()
  }

  get cordoned (): boolean { return this.cordonedValue }

  /** The node's device report (after detection, after each probe): schedulers re-read the ledger. */
  setDevices (report: DeviceReport): void {
    this.devicesValue = report
    this.bump()
  }

  get (id: string): LedgerReplica | undefined { return this.replicas.get(id) }

  all (): LedgerReplica[] { return [...this.replicas.values()] }

  readyCount (): number {
    let n = 0
    for (const r of this.replicas.values()) if (r.state === 'ready') n++
    return n
  }

  snapshot (): LedgerSnapshot {
    return {
      version: this.versionValue,
      capacity: { ...this.capacity },
      used: this.used(),
      accepting: this.accepting && !this.cordonedValue,
      cordoned: this.cordonedValue,
      replicas: this.all().map(r => ({ ...r })),
      ...(this.devicesValue != null ? { devices: this.devicesValue } : {})
    }
  }

  onChange (listener: (event: LedgerEvent) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private bump (event?: LedgerEvent): void {
    this.versionValue = (this.versionValue + 1) >>> 0
    if (event == null) return
    for (const l of this.listeners) l(event)
  }
}

export type LedgerEvent =
  | { type: 'reserved', replica: LedgerReplica }
  | { type: 'released', replica: LedgerReplica }
  | { type: 'state', replica: LedgerReplica }

function round (n: number): number {
  return Math.round(n * 1000) / 1000
}
