import { z } from 'zod'
import { defineKind } from '../clusterlog/index.ts'
import { AstradError } from '../util/errors.ts'
import { parseForPeople } from '../util/schema.ts'
import { batchingKey, batchingSchema, type BatchingSpec } from '../batching/spec.ts'
import { EXECUTION_PROVIDERS, isExecutionProvider, wantsGpu, type ExecutionProvider } from '../devices/index.ts'
import {
  APP_NAME_PATTERN, DEFAULT_GPU, DEFAULT_MAX_QUEUE, DEFAULT_THREADS, DEFAULT_TIMEOUT_MS, MAX_CPU, MAX_GPU, MAX_QUEUE, MAX_REPLICAS,
  MAX_THREADS, MAX_TIMEOUT_MS, ROUTING_WEIGHTS, AUTOSCALE_DEFAULTS, MAX_SCALE_DELAY_MS, MAX_REPLICAS_PER_SECOND
} from './constants.ts'

/**
 * Resources one replica reserves on a node's ledger. In a spec both may be left out: `cpu`
 * defaults to `threads` (each worker thread runs one onnxruntime session on one core), `gpu`
 * to 0 (constants.ts).
 */
export interface Resources {
  cpu: number
  gpu: number
}

/** What an operator deploys (`astrad app deploy FILE`). */
export interface AppSpec {
  name: string
  /** Model id (SHA-256 of its manifest, see `astrad model ls`). */
  model: string
  replicas: number
  resources: Resources
  /** Replicas per cell (label of a node, `--cell`); their sum is `replicas`. */
  cells?: Record<string, number>
  /** Per-request deadline when the client gives none. */
  timeoutMs: number
  /** Requests waiting per replica beyond which the node answers 429. */
  maxQueue: number
  /** Worker threads (onnxruntime sessions) per replica. */
  threads: number
  /**
   * Routing weight function (docs/routing.md): `measured` (default: capacity measured from
   * answers, divided by backlog), `article` (the AstraRay formula), `static` (capacity only).
   */
  routing: RoutingWeight
  /**
   * Replicas follow the traffic between minReplicas and maxReplicas (docs/autoscaling.md); then
   * `replicas` is the floor the app starts from, and the owning scheduler decides the count.
   */
  autoscaling?: Autoscaling
  /**
   * Dynamic batching (docs/batching.md): requests combined along axis 0 into one run. Absent:
   * off. A model without a batch dimension fails its replicas with the reason.
   */
  batching?: BatchingSpec
  /**
   * onnxruntime execution providers in order of preference (docs/gpus.md), e.g.
   * `["cuda", "webgpu", "cpu"]`: a replica runs on the first that starts on its node; `cpu` last
   * allows falling back (said in status). Absent: `cpu`, or `["webgpu", "cpu"]` when
   * resources.gpu > 0 (see providersOf).
   */
  executionProviders?: ExecutionProvider[]
}

/** An app's autoscaling block (docs/autoscaling.md), defaults filled in. */
export interface Autoscaling {
  minReplicas: number
  maxReplicas: number
  /** Requests in flight per replica the scaler aims at (Ray Serve's target_ongoing_requests). */
  targetOngoingRequests: number
  /** How long more replicas must be wanted before they are added. */
  upscaleDelayMs: number
  /** How long fewer replicas must be enough before any is removed. */
  downscaleDelayMs: number
  /** Replicas placed per second at most for this app (a burst cannot take the whole fleet at once). */
  maxReplicasPerSecond: number
}

export { ROUTING_WEIGHTS }
export type RoutingWeight = typeof ROUTING_WEIGHTS[number]

/** The app as stored in the cluster log (kind `app`, key = name). */
export interface AppRecord {
  spec: AppSpec
  /**
   * Bumped when a change needs new replicas (model, resources, threads, queue): the owner rolls
   * the app to it. Scaling (replicas, cells) and timeouts keep the generation.
   */
  generation: number
  deployedAt: number
  deployedBy: string
  /**
   * Set on the apps a pipeline's stages run as (src/pipeline): never stored, expanded from the
   * pipeline's record. `expose`: callable by its own name on the KServe endpoint.
   */
  pipeline?: { name: string, stage: string, expose: boolean }
}

/** A spec that cannot be deployed (schema, unknown model, cells vs replicas). */
export class InvalidAppError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_INVALID_APP')
    this.name = 'InvalidAppError'
  }
}

const cellName = z.string().min(1).max(63)
const cpu = z.number().min(0).max(MAX_CPU)
const gpu = z.number().int().min(0).max(MAX_GPU)

export const appSpecSchema = z.object({
  name: z.string().regex(APP_NAME_PATTERN, 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit'),
  model: z.string().regex(/^[0-9a-f]{64}$/, 'must be a model id (64 hex digits; see astrad model ls)'),
  replicas: z.number().int().min(0).max(MAX_REPLICAS).optional(),
  resources: z.object({ cpu: cpu.optional(), gpu: gpu.optional() }).strict().optional(),
  cells: z.record(cellName, z.number().int().min(0).max(MAX_REPLICAS)).optional(),
  timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).default(DEFAULT_TIMEOUT_MS),
  maxQueue: z.number().int().min(0).max(MAX_QUEUE).default(DEFAULT_MAX_QUEUE),
  threads: z.number().int().min(1).max(MAX_THREADS).default(DEFAULT_THREADS),
  routing: z.enum(ROUTING_WEIGHTS).default('measured'),
  executionProviders: z.array(z.string()).min(1).max(EXECUTION_PROVIDERS.length).optional(),
  autoscaling: z.object({
    minReplicas: z.number().int().min(0).max(MAX_REPLICAS),
    maxReplicas: z.number().int().min(1).max(MAX_REPLICAS),
    targetOngoingRequests: z.number().gt(0).max(MAX_QUEUE).default(AUTOSCALE_DEFAULTS.targetOngoingRequests),
    upscaleDelayMs: z.number().int().min(0).max(MAX_SCALE_DELAY_MS).default(AUTOSCALE_DEFAULTS.upscaleDelayMs),
    downscaleDelayMs: z.number().int().min(0).max(MAX_SCALE_DELAY_MS).default(AUTOSCALE_DEFAULTS.downscaleDelayMs),
    maxReplicasPerSecond: z.number().int().min(1).max(MAX_REPLICAS_PER_SECOND).default(AUTOSCALE_DEFAULTS.maxReplicasPerSecond)
  }).strict().optional(),
  batching: batchingSchema.optional()
}).strict()

/**
 * Validates a spec an operator wrote. `replicas` may be left out when `cells` gives the counts;
 * if both are given they must agree.
 */
export function parseAppSpec (input: unknown): AppSpec {
  const parsed = parseForPeople(appSpecSchema, input)
  if (!parsed.success) throw new InvalidAppError(`app spec: ${parsed.problems}`)
  const s = parsed.data
  let replicas = s.replicas
  if (s.cells != null) {
    const sum = Object.values(s.cells).reduce((a, b) => a + b, 0)
    if (replicas != null && replicas !== sum) throw new InvalidAppError(`app spec: replicas (${replicas}) differs from the sum of cells (${sum})`)
    replicas = sum
  }
  const a = s.autoscaling
  if (a != null) {
    if (a.maxReplicas < a.minReplicas) throw new InvalidAppError(`app spec: autoscaling.maxReplicas (${a.maxReplicas}) is below autoscaling.minReplicas (${a.minReplicas})`)
    if (s.cells != null) throw new InvalidAppError('app spec: autoscaling and cells cannot be combined (give replicas per cell, or autoscaling without cells)')
    if (replicas != null && (replicas < a.minReplicas || replicas > a.maxReplicas)) throw new InvalidAppError(`app spec: replicas (${replicas}) is outside autoscaling's ${a.minReplicas}..${a.maxReplicas}`)
    replicas ??= a.minReplicas
  }
  if (replicas == null) throw new InvalidAppError('app spec: replicas is required (or give cells, or autoscaling)')
  const resources: Resources = { cpu: s.resources?.cpu ?? s.threads, gpu: s.resources?.gpu ?? DEFAULT_GPU }
  if (resources.cpu === 0 && resources.gpu === 0) throw new InvalidAppError('app spec: resources must reserve some cpu or gpu (both are 0)')
  const spec: AppSpec = { name: s.name, model: s.model, replicas, resources, timeoutMs: s.timeoutMs, maxQueue: s.maxQueue, threads: s.threads, routing: s.routing }
  if (s.executionProviders != null) spec.executionProviders = checkProviders(s.executionProviders, resources)
  if (s.cells != null) spec.cells = s.cells
  if (a != null) spec.autoscaling = a
  if (s.batching != null) spec.batching = s.batching
  return spec
}

/**
 * executionProviders: known names, none twice; a GPU provider reserves cards (resources.gpu ≥ 1)
 * and cards are reserved only for a GPU provider.
 */
function checkProviders (list: string[], resources: Resources): ExecutionProvider[] {
  const seen = new Set<string>()
  for (const [i, p] of list.entries()) {
    if (!isExecutionProvider(p)) throw new InvalidAppError(`app spec: executionProviders[${i}]: '${p}' is not an execution provider (known: ${EXECUTION_PROVIDERS.join(', ')})`)
    if (seen.has(p)) throw new InvalidAppError(`app spec: executionProviders[${i}]: '${p}' is listed twice`)
    seen.add(p)
  }
  if (wantsGpu(list) && resources.gpu === 0) {
    throw new InvalidAppError(`app spec: executionProviders names a GPU provider (${list.join(', ')}) but resources.gpu is 0: reserve the cards a replica uses (resources.gpu ≥ 1)`)
  }
  if (!wantsGpu(list) && resources.gpu > 0) {
    throw new InvalidAppError(`app spec: resources.gpu is ${resources.gpu} but executionProviders (${list.join(', ')}) names no GPU provider: add one (cuda, tensorrt, webgpu) or reserve no cards`)
  }
  return list as ExecutionProvider[]
}

/**
 * The providers an app's replicas try, in order: its list; without one, `cpu` — or, for an app
 * reserving cards, `webgpu` then `cpu` (the card is used where the node can, and a fallback is
 * shown in status, never silent).
 */
export function providersOf (spec: Pick<AppSpec, 'executionProviders' | 'resources'>): ExecutionProvider[] {
  return spec.executionProviders ?? (spec.resources.gpu > 0 ? ['webgpu', 'cpu'] : ['cpu'])
}

/** Whether going from `a` to `b` needs new replicas (a roll) rather than a scale. */
export function needsRoll (a: AppSpec, b: AppSpec): boolean {
  return a.model !== b.model || a.resources.cpu !== b.resources.cpu || a.resources.gpu !== b.resources.gpu ||
    a.threads !== b.threads || a.maxQueue !== b.maxQueue || batchingKey(a.batching) !== batchingKey(b.batching) ||
    providersOf(a).join() !== providersOf(b).join()
}

/** As stored: parseAppSpec has filled in the replica count and the resources. */
export const storedAppSpecSchema = appSpecSchema.extend({
  replicas: z.number().int().min(0).max(MAX_REPLICAS),
  resources: z.object({ cpu, gpu }).strict(),
  executionProviders: z.array(z.enum(EXECUTION_PROVIDERS)).min(1).max(EXECUTION_PROVIDERS.length).optional()
})

export const appKind = defineKind<AppRecord>('app', z.object({
  spec: storedAppSpecSchema,
  generation: z.number().int().min(1),
  deployedAt: z.number().int().min(0),
  deployedBy: z.string().min(1).max(128)
}).strict() as unknown as z.ZodType<AppRecord>)
