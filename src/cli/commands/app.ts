import { readFile } from 'node:fs/promises'
import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { table, ago } from '../format.ts'
import { AstradError, ConfigError, errorMessage } from '../../util/errors.ts'
import { resolveModel, type RpcFlags } from './model/shared.ts'
import type { AppListEntry, DeployResult, PipelineListEntry } from '../../placement/index.ts'
import type { PipelineDeployResult } from '../../pipeline/deploy.ts'
import { ROUTING_WEIGHTS } from '../../placement/constants.ts'

/** The spec file cannot be read or is not JSON. */
export class AppSpecFileError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_APP_SPEC')
    this.name = 'AppSpecFileError'
  }
}

/** Reads a spec file; a model given as an id prefix (≥ 8 hex) is resolved to its full id. */
async function readSpec (file: string, flags: RpcFlags): Promise<Record<string, unknown>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new AppSpecFileError(`cannot read ${file}: ${errorMessage(err)}`)
  }
  let spec: unknown
  try {
    spec = JSON.parse(text)
  } catch (err) {
    throw new AppSpecFileError(`${file} is not JSON: ${errorMessage(err)}`)
  }
  if (spec == null || typeof spec !== 'object' || Array.isArray(spec)) throw new AppSpecFileError(`${file} must hold one JSON object`)
  const s = spec as Record<string, unknown>
  const resolve = async (o: Record<string, unknown>): Promise<void> => {
    if (typeof o.model === 'string' && /^[0-9a-f]{8,63}$/.test(o.model)) o.model = (await resolveModel(rpcClient(flags), o.model)).id
  }
  await resolve(s)
  // A pipeline: each stage names its model.
  if (s.stages != null && typeof s.stages === 'object' && !Array.isArray(s.stages)) {
    for (const stage of Object.values(s.stages as Record<string, unknown>)) {
      if (stage != null && typeof stage === 'object' && !Array.isArray(stage)) await resolve(stage as Record<string, unknown>)
    }
  }
  return s
}

/** Pipelines: one row each, then a row per stage (its app, generation, desired/placed/ready). */
export function renderPipelines (pipelines: PipelineListEntry[]): string {
  const rows: string[][] = []
  for (const p of pipelines) {
    const state = p.status == null ? '-' : p.status.ready ? 'ready' : 'not ready'
    rows.push([p.name, String(p.generation), '', '', '', '', `${p.spec.steps.length} step(s)`, ago(Math.max(0, Date.now() - p.deployedAt)), p.author ?? '-', state, p.status != null && !p.status.ready ? p.status.lastError ?? '' : ''])
    for (const [stage, spec] of Object.entries(p.spec.stages)) {
      const st = p.status?.stages[stage]
      rows.push([
        `  ${stage}`, String(p.stages[stage]?.generation ?? '-'), String(spec.replicas), st != null ? String(st.placed) : '-', st != null ? String(st.ready) : '-',
        spec.model.slice(0, 12), spec.expose ? `exposed as ${p.name}.${stage}` : `app ${p.name}.${stage}`, '', '', '', st?.lastError != null && st.ready < st.desired ? st.lastError : ''
      ])
    }
  }
  return table(['PIPELINE/STAGE', 'GEN', 'DESIRED', 'PLACED', 'READY', 'MODEL', 'STEPS/APP', 'DEPLOYED', 'BY', 'STATE', 'NOTE'], rows)
}

/** An autoscaled app's bounds and target, `1..8 @2` (fixed: `-`). */
function scaleText (a: AppListEntry): string {
  const s = a.spec.autoscaling
  return s != null ? `${s.minReplicas}..${s.maxReplicas} @${s.targetOngoingRequests}` : '-'
}

/** The note of an app row: rolling, a placement/load error, else the last scaling decision. */
function appNote (a: AppListEntry): string {
  const st = a.status
  if (st?.old != null && st.old > 0) return `rolling (${st.old} old)`
  if (st?.lastError != null && st.ready < st.desired) return st.lastError
  return st?.autoscaling?.reason ?? ''
}

/** An app's batching block, `32 [8,16] 2ms` (max, preferred sizes, delay); off: `-`. */
function batchText (a: AppListEntry): string {
  const b = a.spec.batching
  if (b == null) return '-'
  return [String(b.maxBatchSize), b.preferredBatchSizes != null ? `[${b.preferredBatchSizes.join(',')}]` : '', `${b.maxQueueDelayMs}ms`].filter(x => x !== '').join(' ')
}

export function renderApps (apps: AppListEntry[]): string {
  return table(
    ['NAME', 'MODEL', 'GEN', 'DESIRED', 'PLACED', 'READY', 'AUTOSCALE', 'CPU', 'GPU', 'THREADS', 'BATCH', 'CELLS', 'DEPLOYED', 'BY', 'NOTE'],
    apps.map(a => [
      a.spec.name, a.spec.model.slice(0, 12), String(a.generation), String(a.status?.desired ?? a.spec.replicas),
      a.status != null ? String(a.status.placed) : '-', a.status != null ? String(a.status.ready) : '-', scaleText(a),
      String(a.spec.resources.cpu), String(a.spec.resources.gpu), String(a.spec.threads), batchText(a),
      a.spec.cells != null ? Object.entries(a.spec.cells).map(([c, n]) => `${c}:${n}`).join(',') : '-',
      ago(Math.max(0, Date.now() - a.deployedAt)),
      a.author ?? '-',
      appNote(a)
    ])
  )
}

/** `astrad app deploy|ls|rm`: apps of the cluster, through the daemon at --rpc. */
export function appCommand (io: CliIo): Command {
  const sub = (name: string): Command => withRpcOptions(new Command(name))
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })

  const deploy = sub('deploy')
    .description(`deploy an app from a JSON spec, or scale/roll it if it exists: {"name","model","replicas","resources"?:{"cpu"?,"gpu"?}, "cells"?, "timeoutMs"?, "maxQueue"?, "threads"?, "routing"?: ${ROUTING_WEIGHTS.join('|')}, "autoscaling"?: {"minReplicas","maxReplicas","targetOngoingRequests"?,"upscaleDelayMs"?,"downscaleDelayMs"?,"maxReplicasPerSecond"?}, "batching"?: {"maxBatchSize","preferredBatchSizes"?,"maxQueueDelayMs"?}} (cpu defaults to threads, gpu to 0); or a pipeline: {"name","stages":{"STAGE":{app fields…,"expose"?}},"steps":[{"stage"|"switch"|"split","inputs"?}],"outputs"?} (docs/pipelines.md); prints the app name`)
    .argument('<FILE>', 'the spec (JSON)')
    .option('--json', 'print the stored record and the kind of change')
    .action(async (file: string, flags: RpcFlags & { json?: boolean }) => {
      const spec = await readSpec(file, flags)
      const result = await rpcClient(flags).call<DeployResult | PipelineDeployResult>('POST', '/v1/apps', spec)
      if (flags.json === true) io.stdout(JSON.stringify(result) + '\n')
      else if ('pipeline' in result) {
        const p = result.pipeline
        io.stdout(`${p.spec.name}\n`)
        const stages = Object.entries(result.stages).map(([stage, change]) => `${stage} ${change} (generation ${p.stages[stage]?.generation ?? '?'}, ${p.spec.stages[stage]?.replicas ?? '?'} replica(s))`)
        io.stderr(`${p.spec.name}: pipeline ${result.change} (generation ${p.generation}); stages: ${stages.join(', ')}\n`)
      } else {
        // The name alone on stdout (the app's id); what changed goes to stderr for humans.
        io.stdout(`${result.app.spec.name}\n`)
        io.stderr(`${result.app.spec.name}: ${result.change} (generation ${result.app.generation}, ${result.app.spec.replicas} replica(s))\n`)
      }
    })

  const ls = sub('ls')
    .description('list apps with desired, placed and ready replicas')
    .option('--json', 'print {"apps": [...]}')
    .action(async (flags: RpcFlags & { json?: boolean }) => {
      const doc = await rpcClient(flags).call<{ apps: AppListEntry[], pipelines?: PipelineListEntry[] }>('GET', '/v1/apps')
      const pipelines = doc.pipelines ?? []
      if (flags.json === true) io.stdout(JSON.stringify(doc) + '\n')
      else if (doc.apps.length === 0 && pipelines.length === 0) io.stdout('no apps (deploy one: astrad app deploy FILE)\n')
      else {
        // Stage apps are listed under their pipeline.
        const apps = doc.apps.filter(a => a.pipeline == null)
        if (apps.length > 0) io.stdout(renderApps(apps))
        if (pipelines.length > 0) io.stdout((apps.length > 0 ? '\n' : '') + renderPipelines(pipelines))
      }
    })

  const rm = sub('rm')
    .description('remove an app, or a pipeline with all its stages; their replicas are released')
    .argument('<NAME>', 'app name')
    .action(async (name: string, flags: RpcFlags) => {
      if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw new ConfigError('NAME', 'an app name is 1-63 of a-z 0-9 . _ -')
      await rpcClient(flags).call('DELETE', `/v1/apps/${encodeURIComponent(name)}`)
      io.stdout(`${name}: removed\n`)
    })

  return new Command('app')
    .description('deploy, list and remove apps (models served with replicas)')
    .addCommand(deploy)
    .addCommand(ls)
    .addCommand(rm)
}
