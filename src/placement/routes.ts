import { HttpError, type RpcServer } from '../rpc/index.ts'
import { withAuth, type ClusterLogAccess } from '../clusterlog/index.ts'
import { AstradError } from '../util/errors.ts'
import { modelKind } from '../transfer/kinds.ts'
import { appKind, needsRoll, parseAppSpec, InvalidAppError, type AppRecord, type AppSpec } from './app.ts'
import type { AppStatus, Placer } from './placer.ts'
import { APP_NAME_PATTERN } from './constants.ts'
import { pipelineKind, isPipelineSpec, stageApps, type PipelineRecord } from '../pipeline/spec.ts'
import { deployPipeline, pipelineNameConflict } from '../pipeline/deploy.ts'
import type { PipelineStatus } from '../pipeline/backend.ts'

export interface AppRoutesContext {
  clusterLog: () => ClusterLogAccess
  /** Present on schedulers: placement counts for `app ls`. */
  placer: () => Placer | undefined
  /** Peer id written as `deployedBy` (the daemon the operator deployed through). */
  self: () => string
  /** Present on schedulers: pipelines' stages and readiness for `app ls`. */
  pipelineStatus?: () => PipelineStatus[] | undefined
}

/** What `app deploy` answers: the record written and whether it scaled or rolled. */
export interface DeployResult {
  app: AppRecord
  change: 'created' | 'scaled' | 'rolled' | 'unchanged'
  /** The operator recorded as the author of the change (of the unchanged record's last change). */
  author?: string
}

/** An app as `app ls` lists it: its spec and, on a scheduler, its placement. */
export interface AppListEntry {
  spec: AppSpec
  generation: number
  deployedAt: number
  /** The operator who made the last change (cluster-log author; 'insecure' with --insecure). */
  author?: string
  /** The daemon it was deployed through (its peer id; the record's deployedBy). */
  via: string
  status?: AppStatus
  /** Set on the apps a pipeline's stages run as. */
  pipeline?: { name: string, stage: string }
}

/** A pipeline as `app ls` lists it: its spec, its stages' versions and, on a scheduler, its status. */
export interface PipelineListEntry {
  name: string
  spec: PipelineRecord['spec']
  generation: number
  stages: PipelineRecord['stages']
  deployedAt: number
  author?: string
  via: string
  status?: PipelineStatus
}

/**
 * Deploys (creates, scales or rolls) an app. Shared by the route and the demo deploy at start.
 * `auth`: the signed operator request (required where the write lands, unless --insecure).
 */
export async function deployApp (clusterLog: ClusterLogAccess, input: unknown, deployedBy: string, auth?: string, now = Date.now()): Promise<DeployResult> {
  const spec = parseAppSpec(input)
  const conflict = await pipelineNameConflict(clusterLog, spec.name)
  if (conflict != null) throw new InvalidAppError(`app spec: name: ${conflict} (redeploy the pipeline to change it)`)
  const model = await clusterLog.get(modelKind, spec.model)
  if (model?.value == null || model.deleted) throw new InvalidAppError(`model: no model ${spec.model} in the cluster (see: astrad model ls)`)
  const existing = await clusterLog.get(appKind, spec.name)
  const prev = existing?.value != null && !existing.deleted ? existing.value : undefined
  let generation = 1
  let change: DeployResult['change'] = 'created'
  if (prev != null) {
    const rolled = needsRoll(prev.spec, spec)
    generation = rolled ? prev.generation + 1 : prev.generation
    change = rolled ? 'rolled' : JSON.stringify(prev.spec) === JSON.stringify(spec) ? 'unchanged' : 'scaled'
    if (change === 'unchanged') return { app: prev, change, ...authorOf(existing) }
  }
  const record: AppRecord = { spec, generation, deployedAt: now, deployedBy }
  const entry = await withAuth(clusterLog, auth).put(appKind, spec.name, record)
  return { app: entry.value ?? record, change, ...authorOf(entry) }
}

function authorOf (entry: { author?: string } | undefined): { author?: string } {
  return entry?.author != null ? { author: entry.author } : {}
}

/** `/v1/apps…` on the RPC port. */
export function registerAppRoutes (rpc: RpcServer, ctx: AppRoutesContext): void {
  const toHttp = (err: unknown): unknown => {
    if (err instanceof InvalidAppError) return new HttpError(400, err.message, err.code)
    if (err instanceof AstradError && err.code === 'ERR_FORBIDDEN') return new HttpError(403, `cluster log: ${err.message}`, err.code)
    if (err instanceof AstradError && !(err instanceof HttpError)) return new HttpError(503, `cluster log: ${err.message}`, err.code)
    return err
  }

  rpc.route('POST', '/v1/apps', async req => {
    const body = await req.json()
    try {
      const placer = ctx.placer()
      const result = isPipelineSpec(body)
        ? await deployPipeline(ctx.clusterLog(), body, ctx.self(), req.operator?.jwt, Date.now(), placer != null ? m => placer.modelSignature(m) : undefined)
        : await deployApp(ctx.clusterLog(), body, ctx.self(), req.operator?.jwt)
      await ctx.placer()?.reloadApps()
      return { status: result.change === 'created' ? 201 : 200, body: result }
    } catch (err) {
      throw toHttp(err)
    }
  }, { operator: true })

  rpc.route('GET', '/v1/apps', async () => {
    try {
      const [entries, pipelineEntries] = await Promise.all([ctx.clusterLog().list(appKind), ctx.clusterLog().list(pipelineKind)])
      const status = new Map((ctx.placer()?.status() ?? []).map(s => [s.name, s]))
      const records: Array<{ record: AppRecord, author?: string }> = entries.flatMap(e => e.value != null && !e.deleted ? [{ record: e.value, ...authorOf(e) }] : [])
      const pipelineRecords = pipelineEntries.flatMap(e => e.value != null && !e.deleted ? [{ value: e.value, ...authorOf(e) }] : [])
      for (const e of pipelineRecords) for (const record of stageApps(e.value)) records.push({ record, ...authorOf(e) })
      const apps: AppListEntry[] = records.map(({ record: r, author }) => {
        const item: AppListEntry = { spec: r.spec, generation: r.generation, deployedAt: r.deployedAt, ...(author != null ? { author } : {}), via: r.deployedBy }
        if (r.pipeline != null) item.pipeline = { name: r.pipeline.name, stage: r.pipeline.stage }
        const s = status.get(r.spec.name)
        if (s != null && s.generation === r.generation) item.status = s
        return item
      }).sort((a, b) => a.spec.name.localeCompare(b.spec.name))
      const pipelineStatus = new Map((ctx.pipelineStatus?.() ?? []).map(s => [s.name, s]))
      const pipelines: PipelineListEntry[] = pipelineRecords.map(e => {
        const r = e.value
        const item: PipelineListEntry = { name: r.spec.name, spec: r.spec, generation: r.generation, stages: r.stages, deployedAt: r.deployedAt, ...authorOf(e), via: r.deployedBy }
        const s = pipelineStatus.get(r.spec.name)
        if (s != null && s.generation === r.generation) item.status = s
        return item
      }).sort((a, b) => a.name.localeCompare(b.name))
      return { status: 200, body: { apps, pipelines } }
    } catch (err) {
      throw toHttp(err)
    }
  })

  rpc.route('DELETE', '/v1/apps/:name', async req => {
    const name = req.params.name ?? ''
    if (!APP_NAME_PATTERN.test(name)) throw new HttpError(400, 'bad app name', 'ERR_BAD_REQUEST')
    try {
      // A pipeline goes with all its stages (the placer releases their replicas).
      const pipeline = await ctx.clusterLog().get(pipelineKind, name)
      if (pipeline?.value != null && !pipeline.deleted) {
        await ctx.clusterLog().delete(pipelineKind, name, { auth: req.operator?.jwt })
        await ctx.placer()?.reloadApps()
        return { status: 200, body: { name, removed: true, stages: Object.keys(pipeline.value.spec.stages) } }
      }
      const existing = await ctx.clusterLog().get(appKind, name)
      if (existing?.value == null || existing.deleted) {
        const conflict = await pipelineNameConflict(ctx.clusterLog(), name)
        if (conflict != null) throw new HttpError(400, `${conflict}: remove the pipeline (app rm ${name.slice(0, name.lastIndexOf('.'))}) or redeploy it without the stage`, 'ERR_PIPELINE_STAGE')
        throw new HttpError(404, `no app '${name}'`, 'ERR_NOT_FOUND')
      }
      await ctx.clusterLog().delete(appKind, name, { auth: req.operator?.jwt })
      await ctx.placer()?.reloadApps()
      return { status: 200, body: { name, removed: true } }
    } catch (err) {
      throw toHttp(err)
    }
  }, { operator: true })
}
