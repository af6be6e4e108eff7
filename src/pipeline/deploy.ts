import { withAuth, type ClusterLogAccess } from '../clusterlog/index.ts'
import { modelKind } from '../transfer/kinds.ts'
import { appKind, InvalidAppError } from '../placement/app.ts'
import type { ModelSignature } from '../serving/types.ts'
import { checkWiring, compilePipeline } from './graph.ts'
import { parsePipelineSpec, pipelineKind, stageAppName, stageNeedsRoll, type PipelineRecord, type StageVersion } from './spec.ts'

export type Change = 'created' | 'scaled' | 'rolled' | 'unchanged'

/** What `app deploy` answers for a pipeline: the record written, and what changed, per stage. */
export interface PipelineDeployResult {
  pipeline: PipelineRecord
  change: Change
  /** Per stage: created, scaled, rolled (its own generation bumped) or unchanged; removed stages are absent. */
  stages: Record<string, Change>
  author?: string
}

/**
 * Deploys (creates or changes) a pipeline. Every stage keeps its own generation: only a stage
 * whose model, resources, threads or queue change rolls; scaling a stage, rewiring the steps or
 * changing another stage leaves its replicas alone. `signatureOf`: a model's signature where the
 * scheduler knows it, to check the wiring now rather than when the replicas load.
 */
export async function deployPipeline (
  clusterLog: ClusterLogAccess, input: unknown, deployedBy: string, auth?: string, now = Date.now(),
  signatureOf?: (model: string) => ModelSignature | undefined
): Promise<PipelineDeployResult> {
  const spec = parsePipelineSpec(input)
  const plan = compilePipeline(spec)
  for (const [stage, s] of Object.entries(spec.stages)) {
    const model = await clusterLog.get(modelKind, s.model)
    if (model?.value == null || model.deleted) throw new InvalidAppError(`pipeline spec: stages.${stage}.model: no model ${s.model} in the cluster (see: astrad model ls)`)
  }
  // One name space with apps: KServe serves both by name.
  const app = await clusterLog.get(appKind, spec.name)
  if (app?.value != null && !app.deleted) throw new InvalidAppError(`pipeline spec: name: an app named '${spec.name}' exists (app rm it first, or pick another name)`)
  const stageOf = await stageOwner(clusterLog, spec.name)
  if (stageOf != null && stageOf !== spec.name) throw new InvalidAppError(`pipeline spec: name: '${spec.name}' is a stage app of pipeline '${stageOf}'`)
  for (const stage of Object.keys(spec.stages)) {
    const name = stageAppName(spec.name, stage)
    const taken = await clusterLog.get(appKind, name)
    if (taken?.value != null && !taken.deleted) throw new InvalidAppError(`pipeline spec: stages.${stage}: its app name '${name}' is taken by an app`)
    const other = await clusterLog.get(pipelineKind, name)
    if (other?.value != null && !other.deleted) throw new InvalidAppError(`pipeline spec: stages.${stage}: its app name '${name}' is taken by a pipeline`)
  }
  if (signatureOf != null) {
    const { problems } = checkWiring(plan, stage => signatureOf(spec.stages[stage]!.model))
    if (problems.length > 0) throw new InvalidAppError(`pipeline spec: the steps do not fit the stages' models: ${problems.join('; ')}`)
  }

  const existing = await clusterLog.get(pipelineKind, spec.name)
  const prev = existing?.value != null && !existing.deleted ? existing.value : undefined
  const stages: Record<string, StageVersion> = {}
  const changes: Record<string, Change> = {}
  for (const [stage, s] of Object.entries(spec.stages)) {
    const before = prev?.spec.stages[stage]
    const version = prev?.stages[stage]
    if (before == null || version == null) {
      stages[stage] = { generation: 1, changedAt: now }
      changes[stage] = 'created'
    } else if (stageNeedsRoll(before, s)) {
      stages[stage] = { generation: version.generation + 1, changedAt: now }
      changes[stage] = 'rolled'
    } else if (JSON.stringify(before) !== JSON.stringify(s)) {
      stages[stage] = version
      changes[stage] = 'scaled'
    } else {
      stages[stage] = version
      changes[stage] = 'unchanged'
    }
  }
  let change: Change = 'created'
  if (prev != null) {
    const values = Object.values(changes)
    change = values.includes('rolled') || values.includes('created') ? 'rolled' : JSON.stringify(prev.spec) === JSON.stringify(spec) ? 'unchanged' : 'scaled'
    if (change === 'unchanged') return { pipeline: prev, change, stages: changes, ...(existing?.author != null ? { author: existing.author } : {}) }
  }
  const record: PipelineRecord = { spec, generation: (prev?.generation ?? 0) + 1, stages, deployedAt: now, deployedBy }
  const entry = await withAuth(clusterLog, auth).put(pipelineKind, spec.name, record)
  return { pipeline: entry.value ?? record, change, stages: changes, ...(entry.author != null ? { author: entry.author } : {}) }
}

/**
 * Why a single-model app may not take `name`: a pipeline of that name, or a pipeline's stage app.
 * Undefined when it may.
 */
export async function pipelineNameConflict (clusterLog: ClusterLogAccess, name: string): Promise<string | undefined> {
  const same = await clusterLog.get(pipelineKind, name)
  if (same?.value != null && !same.deleted) return `a pipeline named '${name}' exists`
  const owner = await stageOwner(clusterLog, name)
  return owner != null ? `'${name}' is stage '${name.slice(owner.length + 1)}' of pipeline '${owner}'` : undefined
}

/** The pipeline whose stage app is named `name`, if any. */
async function stageOwner (clusterLog: ClusterLogAccess, name: string): Promise<string | undefined> {
  // Stage apps are PIPELINE.STAGE and stage names have no '.': the pipeline is all before the last dot.
  const last = name.lastIndexOf('.')
  if (last < 0) return undefined
  const owner = await clusterLog.get(pipelineKind, name.slice(0, last))
  const stage = name.slice(last + 1)
  return owner?.value != null && !owner.deleted && owner.value.spec.stages[stage] != null ? owner.value.spec.name : undefined
}
