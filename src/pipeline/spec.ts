import { z } from 'zod'
import { defineKind } from '../clusterlog/index.ts'
import { parseForPeople } from '../util/schema.ts'
import { errorMessage } from '../util/errors.ts'
import { batchingKey } from '../batching/spec.ts'
import { InvalidAppError, parseAppSpec, storedAppSpecSchema, type AppRecord, type AppSpec } from '../placement/app.ts'
import { APP_NAME_PATTERN, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS } from '../placement/constants.ts'
import {
  CONDITION_OPS, CONDITION_REDUCERS, MAX_CASES, MAX_OUTPUTS, MAX_STAGES, MAX_STEP_INPUTS, MAX_STEPS, REQUEST_SOURCE,
  STAGE_NAME_PATTERN, STEP_NAME_PATTERN
} from './constants.ts'

/**
 * A pipeline (docs/pipelines.md): stages, each an app of its own, and steps saying how tensors
 * flow between them. This file holds the spec as an operator writes it, its normal form as the
 * cluster log stores it, and the structural checks (names, references, order, bounds); the
 * checks against the models' signatures are in wiring.ts.
 */

/** One stage: the fields of a single-model app, and whether it is callable by its own name. */
export type StageSpec = Omit<AppSpec, 'name'> & { expose: boolean }

export type ConditionOp = typeof CONDITION_OPS[number]
export type ConditionReducer = typeof CONDITION_REDUCERS[number]

/** A switch case's condition: a request parameter or a reduced numeric tensor. */
export type Condition =
  | { parameter: string, op: ConditionOp, value: string | number | boolean }
  | { tensor: string, op: ConditionOp, value: number, reduce: ConditionReducer }

export interface SwitchCase { when?: Condition, stage: string }
export interface SplitCase { stage: string, weight: number }

/**
 * Where a step's inputs come from: one source whose tensors all pass under their own names
 * (`$request` or a step's name), or a map from the stage's input name to `SOURCE.TENSOR`.
 */
export type StepInputs = string | Record<string, string>

/** A step in normal form: its name and inputs always given. */
export type StepSpec = { name: string, inputs: StepInputs } & (
  | { stage: string }
  | { switch: SwitchCase[] }
  | { split: SplitCase[] }
)

export interface PipelineSpec {
  name: string
  /** The deadline of the whole pipeline when the client gives none. */
  timeoutMs: number
  stages: Record<string, StageSpec>
  steps: StepSpec[]
  /** Output name → `STEP.TENSOR`; absent: the sinks' outputs. */
  outputs?: Record<string, string>
}

/** A stage's deployment as the pipeline record keeps it: its own generation, so it rolls alone. */
export interface StageVersion {
  generation: number
  /** When the stage's spec last changed (its replicas' deployment, like an app's deployedAt). */
  changedAt: number
}

/** The pipeline as stored in the cluster log (kind `pipeline`, key = name). */
export interface PipelineRecord {
  spec: PipelineSpec
  /** Bumped by every change (the KServe version of the pipeline). */
  generation: number
  stages: Record<string, StageVersion>
  deployedAt: number
  deployedBy: string
}

/** The app a stage runs as. */
export function stageAppName (pipeline: string, stage: string): string {
  return `${pipeline}.${stage}`
}

/** The stages a step may call. */
export function stepStages (step: StepSpec): string[] {
  if ('stage' in step) return [step.stage]
  if ('switch' in step) return step.switch.map(c => c.stage)
  return step.split.map(c => c.stage)
}

/** A parsed reference: `$request`, `STEP`, `$request.NAME` or `STEP.NAME` (tensor names may hold dots). */
export interface Ref {
  source: string
  tensor?: string
}

export function parseRef (ref: string): Ref {
  const dot = ref.indexOf('.')
  if (dot < 0) return { source: ref }
  return { source: ref.slice(0, dot), tensor: ref.slice(dot + 1) }
}

const refSchema = z.string().min(1).max(300)
const tensorName = z.string().min(1).max(256)
const conditionSchema = z.union([
  z.object({
    parameter: z.string().min(1).max(128),
    op: z.enum(CONDITION_OPS).default('=='),
    value: z.union([z.string().max(1024), z.number(), z.boolean()])
  }).strict(),
  z.object({
    tensor: refSchema,
    op: z.enum(CONDITION_OPS),
    value: z.number(),
    reduce: z.enum(CONDITION_REDUCERS).default('any')
  }).strict()
], { error: 'must be {"parameter", "op", "value"} or {"tensor", "op", "value", "reduce"?}' })
const inputsSchema = z.union([refSchema, z.record(tensorName, refSchema)], { error: 'must be a source ("$request" or a step name) or a map {"stageInput": "SOURCE.TENSOR"}' })
const stepSchema = z.object({
  name: z.string().regex(STEP_NAME_PATTERN, 'must be 1-24 of a-z 0-9 _ - starting with a letter or digit').optional(),
  stage: z.string().min(1).max(64).optional(),
  switch: z.array(z.object({ when: conditionSchema.optional(), stage: z.string().min(1).max(64) }).strict()).min(1).max(MAX_CASES).optional(),
  split: z.array(z.object({ stage: z.string().min(1).max(64), weight: z.number().int().min(0).max(1_000_000) }).strict()).min(1).max(MAX_CASES).optional(),
  inputs: inputsSchema.optional()
}).strict()
const nameSchema = z.string().regex(APP_NAME_PATTERN, 'must be 1-63 of a-z 0-9 . _ - starting with a letter or digit')

/** What an operator writes. A stage's own fields are checked by the app spec's rules. */
const pipelineInputSchema = z.object({
  name: nameSchema,
  timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).default(DEFAULT_TIMEOUT_MS),
  stages: z.record(z.string().max(64), z.record(z.string(), z.unknown())),
  steps: z.array(stepSchema).min(1).max(MAX_STEPS),
  outputs: z.record(tensorName, refSchema).optional()
}).strict()

/** Whether a body is a pipeline spec rather than a single-model app spec. */
export function isPipelineSpec (input: unknown): boolean {
  return typeof input === 'object' && input !== null && !Array.isArray(input) && 'stages' in input
}

function invalid (message: string): InvalidAppError {
  return new InvalidAppError(`pipeline spec: ${message}`)
}

/**
 * Validates a pipeline spec an operator wrote and returns its normal form (every step named,
 * every step's inputs given, every stage's defaults filled in). Errors name the field.
 */
export function parsePipelineSpec (input: unknown): PipelineSpec {
  const parsed = parseForPeople(pipelineInputSchema, input)
  if (!parsed.success) throw invalid(parsed.problems)
  const s = parsed.data
  const stageNames = Object.keys(s.stages)
  if (stageNames.length === 0) throw invalid('stages must name at least one stage')
  if (stageNames.length > MAX_STAGES) throw invalid(`stages: at most ${MAX_STAGES} stages (got ${stageNames.length})`)
  const stages: Record<string, StageSpec> = {}
  for (const name of stageNames) {
    if (!STAGE_NAME_PATTERN.test(name)) throw invalid(`stages.${name}: a stage name is 1-24 of a-z 0-9 _ - starting with a letter or digit (no '.')`)
    const app = stageAppName(s.name, name)
    if (!APP_NAME_PATTERN.test(app)) throw invalid(`stages.${name}: the stage's app name '${app}' is longer than 63 characters; shorten the pipeline or stage name`)
    const { expose, ...fields } = s.stages[name]!
    if (expose !== undefined && typeof expose !== 'boolean') throw invalid(`stages.${name}.expose must be true or false`)
    let appSpec: AppSpec
    try {
      appSpec = parseAppSpec({ timeoutMs: s.timeoutMs, ...fields, name: app })
    } catch (err) {
      throw invalid(`stages.${name}: ${errorMessage(err).replace(/^app spec: /, '')}`)
    }
    const { name: _app, ...rest } = appSpec
    stages[name] = { ...rest, expose: expose === true }
  }

  const steps: StepSpec[] = []
  const seen = new Set<string>()
  s.steps.forEach((raw, i) => {
    const where = `steps[${i}]`
    const kinds = (['stage', 'switch', 'split'] as const).filter(k => raw[k] !== undefined)
    if (kinds.length !== 1) throw invalid(`${where}: a step has exactly one of "stage", "switch" or "split" (got ${kinds.length === 0 ? 'none' : kinds.join(' and ')})`)
    const name = raw.name ?? raw.stage
    if (name == null) throw invalid(`${where}: a ${kinds[0]} step needs a "name"`)
    if (!STEP_NAME_PATTERN.test(name)) throw invalid(`${where}.name: '${name}' must be 1-24 of a-z 0-9 _ - (it is the step's name)`)
    if (seen.has(name)) throw invalid(`${where}.name: two steps are named '${name}'`)
    const at = `step '${name}'`
    const known = (stage: string, field: string): string => {
      if (s.stages[stage] == null) throw invalid(`${at} ${field}: no stage '${stage}' (stages: ${stageNames.join(', ')})`)
      return stage
    }
    let body: StepSpec
    const inputs = raw.inputs ?? (i === 0 ? REQUEST_SOURCE : steps[i - 1]!.name)
    if (raw.stage !== undefined) {
      body = { name, stage: known(raw.stage, 'stage'), inputs }
    } else if (raw.switch !== undefined) {
      raw.switch.forEach((c, j) => {
        known(c.stage, `switch[${j}].stage`)
        if (c.when == null && j !== raw.switch!.length - 1) throw invalid(`${at} switch[${j}]: a case without "when" is the default and must come last`)
      })
      body = { name, switch: raw.switch.map(c => c.when != null ? { when: c.when as Condition, stage: c.stage } : { stage: c.stage }), inputs }
    } else {
      raw.split!.forEach((c, j) => { known(c.stage, `split[${j}].stage`) })
      if (!raw.split!.some(c => c.weight > 0)) throw invalid(`${at} split: at least one weight must be above 0`)
      body = { name, split: raw.split!.map(c => ({ stage: c.stage, weight: c.weight })), inputs }
    }
    if (typeof inputs !== 'string' && Object.keys(inputs).length > MAX_STEP_INPUTS) throw invalid(`${at} inputs: at most ${MAX_STEP_INPUTS} inputs`)
    // References: the request or an earlier step; a later one would make a cycle.
    const checkRef = (ref: string, field: string, whole: boolean): void => {
      const r = parseRef(ref)
      if (!whole && r.tensor == null) throw invalid(`${at} ${field}: '${ref}' must name a tensor, SOURCE.TENSOR`)
      if (whole && r.tensor != null) throw invalid(`${at} ${field}: '${ref}' must be a whole source ("$request" or a step name), or give a map`)
      if (r.tensor === '') throw invalid(`${at} ${field}: '${ref}' names no tensor after the '.'`)
      if (r.source === REQUEST_SOURCE) return
      if (r.source === name) throw invalid(`${at} ${field}: '${ref}' reads the step itself (a cycle)`)
      if (!seen.has(r.source)) {
        const later = s.steps.slice(i + 1).some(t => (t.name ?? t.stage) === r.source)
        throw invalid(later
          ? `${at} ${field}: '${ref}' reads step '${r.source}', which comes later; a step reads only the request and earlier steps (this would be a cycle)`
          : `${at} ${field}: '${ref}' reads no known source ("${REQUEST_SOURCE}" or a step: ${[...seen].join(', ') || 'none yet'})`)
      }
    }
    if (typeof inputs === 'string') checkRef(inputs, 'inputs', true)
    else for (const [k, ref] of Object.entries(inputs)) checkRef(ref, `inputs.${k}`, false)
    if ('switch' in body) {
      body.switch.forEach((c, j) => { if (c.when != null && 'tensor' in c.when) checkRef(c.when.tensor, `switch[${j}].when.tensor`, false) })
    }
    seen.add(name)
    steps.push(body)
  })

  for (const stage of stageNames) {
    if (!steps.some(step => stepStages(step).includes(stage))) throw invalid(`stages.${stage}: no step uses this stage (it would hold replicas for nothing)`)
  }
  const spec: PipelineSpec = { name: s.name, timeoutMs: s.timeoutMs, stages, steps }
  if (s.outputs != null) {
    const entries = Object.entries(s.outputs)
    if (entries.length === 0) throw invalid('outputs: give at least one output, or leave "outputs" out')
    if (entries.length > MAX_OUTPUTS) throw invalid(`outputs: at most ${MAX_OUTPUTS}`)
    for (const [out, ref] of entries) {
      const r = parseRef(ref)
      if (r.tensor == null || r.tensor === '') throw invalid(`outputs.${out}: '${ref}' must name a tensor, STEP.TENSOR`)
      if (r.source !== REQUEST_SOURCE && !seen.has(r.source)) throw invalid(`outputs.${out}: '${ref}' reads no step '${r.source}' (steps: ${[...seen].join(', ')})`)
    }
    spec.outputs = s.outputs
  }
  return spec
}

/** Whether a stage's change needs new replicas (as an app's: model, resources, threads, queue). */
export function stageNeedsRoll (a: StageSpec, b: StageSpec): boolean {
  return a.model !== b.model || a.resources.cpu !== b.resources.cpu || a.resources.gpu !== b.resources.gpu ||
    a.threads !== b.threads || a.maxQueue !== b.maxQueue || batchingKey(a.batching) !== batchingKey(b.batching)
}

/**
 * The apps a pipeline's stages run as: ordinary app records (placed, scaled, rolled and routed
 * like any app), each with the stage's own generation, marked with the pipeline they belong to.
 */
export function stageApps (record: PipelineRecord): AppRecord[] {
  return Object.entries(record.spec.stages).map(([stage, s]) => {
    const { expose, ...fields } = s
    const version = record.stages[stage] ?? { generation: record.generation, changedAt: record.deployedAt }
    return {
      spec: { ...fields, name: stageAppName(record.spec.name, stage) },
      generation: version.generation,
      deployedAt: version.changedAt,
      deployedBy: record.deployedBy,
      pipeline: { name: record.spec.name, stage, expose }
    }
  })
}

const storedStage = storedAppSpecSchema.omit({ name: true }).extend({ expose: z.boolean() })
const storedStep = z.object({
  name: z.string().regex(STEP_NAME_PATTERN),
  inputs: inputsSchema,
  stage: z.string().optional(),
  switch: z.array(z.object({ when: conditionSchema.optional(), stage: z.string() }).strict()).optional(),
  split: z.array(z.object({ stage: z.string(), weight: z.number().int().min(0) }).strict()).optional()
}).strict()

export const pipelineKind = defineKind<PipelineRecord>('pipeline', z.object({
  spec: z.object({
    name: nameSchema,
    timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS),
    stages: z.record(z.string().regex(STAGE_NAME_PATTERN), storedStage),
    steps: z.array(storedStep).min(1).max(MAX_STEPS),
    outputs: z.record(tensorName, refSchema).optional()
  }).strict(),
  generation: z.number().int().min(1),
  stages: z.record(z.string().regex(STAGE_NAME_PATTERN), z.object({ generation: z.number().int().min(1), changedAt: z.number().int().min(0) }).strict()),
  deployedAt: z.number().int().min(0),
  deployedBy: z.string().min(1).max(128)
}).strict() as unknown as z.ZodType<PipelineRecord>)
