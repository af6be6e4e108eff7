// The cluster of bench:pipeline: real `dist/astrad` processes on loopback, one
// resource,scheduler daemon (the client's entry: KServe v2 on its RPC port) and two node daemons
// (the replicas), so every stage call crosses processes over libp2p (/astra/infer). Two models:
// Silero VAD (real) and `gate` (y = x > GATE_THRESHOLD, written with the ONNX writer). Deployed twice in the
// same cluster, with the same replica counts and resources: as the plain apps `vad` and `gate`,
// and as the two stages of the pipeline `vad-gate` (docs/pipelines.md).

import fs from 'node:fs'
import path from 'node:path'
import { startDaemon, astradCli, loopbackAddr, getJson, type AstradDaemon } from './astrad.ts'
import { now, waitFor } from './procs.ts'
import { VAD_MODEL, gateModel } from '../../test/helpers/pipeline-models.ts'

/** The pipeline's name, and the names of the plain apps. */
export const PIPELINE = 'vad-gate'
export const APPS = { vad: 'vad', gate: 'gate' } as const
/**
 * gate's threshold. Silero VAD gives at most ~0.17 on the synthetic audio a bench can make (no
 * recorded speech ships with the packages here): at 0.5 every `speech` would be 0, and the
 * answer check could not tell a gate that always answers 0 from a right one. At 0.05 the loud
 * rows of the check cross it and the quiet ones do not.
 */
export const GATE_THRESHOLD = 0.05
/** Deploy → every app and stage with all its replicas ready. */
const READY_TIMEOUT_MS = 90_000
/** A node reaches the cluster log (through the resource) before `model add`. */
const LOG_TIMEOUT_MS = 30_000

export interface ClusterOptions {
  bin: string
  root: string
  /** Node daemons (each offers `coresPerNode`). */
  nodes: number
  /** Replicas of each app and of each stage (one per node when equal to `nodes`). */
  replicas: number
  /** Worker threads of every replica (its `threads`; `resources.cpu` is the same). */
  threads: number
  log: (m: string) => void
}

export interface PipelineCluster {
  scheduler: AstradDaemon
  nodes: AstradDaemon[]
  models: { vad: string, gate: string }
  /** The specs as deployed. */
  specs: { vad: unknown, gate: unknown, pipeline: unknown }
  /** ms from the first deploy to every app ready. */
  appsReadyMs: number
  /** ms from the pipeline's deploy to it and its stages ready; null when it is not. */
  pipelineReadyMs: number | null
  /** Why the pipeline is not served (deploy refused, not ready in time); null when it is. */
  pipelineError: string | null
  /** Replicas of each app (and stage app) per node name, as the scheduler's status lists them. */
  placement: Record<string, Record<string, number>>
}

interface AppEntry { spec: { name: string, replicas?: number }, status?: { desired: number, ready: number, lastError?: string } }

/** Ready replicas of each listed app (a pipeline's stages are apps `{pipeline}.{stage}`). */
async function appsReady (d: AstradDaemon): Promise<Map<string, AppEntry>> {
  const doc = await getJson<{ apps: AppEntry[] }>(d.rpcPort, '/v1/apps', 5_000)
  return new Map(doc.apps.map(a => [a.spec.name, a]))
}

async function addModel (o: ClusterOptions, node: AstradDaemon, file: string): Promise<string> {
  const out = (await astradCli(o.bin, node, ['model', 'add', file, '--json'], 120_000)).stdout
  let id: unknown
  try { id = (JSON.parse(out.trim()) as { id?: unknown }).id } catch {}
  if (typeof id !== 'string') throw new Error(`astrad model add ${path.basename(file)} --json printed no id: ${out.slice(0, 300)}`)
  return id
}

async function deploy (o: ClusterOptions, d: AstradDaemon, name: string, spec: unknown): Promise<void> {
  const file = path.join(o.root, `${name}.json`)
  fs.writeFileSync(file, JSON.stringify(spec, null, 2) + '\n')
  await astradCli(o.bin, d, ['app', 'deploy', file], 60_000)
}

/** Waits until each app named has its desired replicas ready and answers GET /v2/models/{m}/ready. */
async function waitReady (d: AstradDaemon, names: string[], kserve: string[], what: string): Promise<void> {
  await Promise.race([
    waitFor(what, async () => {
      const apps = await appsReady(d)
      for (const n of names) {
        const a = apps.get(n)
        // Thrown, so a timeout names what was missing (and the placer's last error).
        if (a?.status == null || a.status.ready < a.status.desired) throw new Error(`${n}: ${a == null ? 'not listed' : `${a.status?.ready ?? 0}/${a.status?.desired ?? '?'} ready${a.status?.lastError != null ? ` (${a.status.lastError})` : ''}`}`)
      }
      for (const m of kserve) {
        const res = await fetch(`http://127.0.0.1:${d.rpcPort}/v2/models/${m}/ready`, { signal: AbortSignal.timeout(2_000) })
        const text = await res.text()
        if (res.status !== 200) throw new Error(`GET /v2/models/${m}/ready: HTTP ${res.status} ${text.slice(0, 200)}`)
      }
      return true
    }, READY_TIMEOUT_MS, 200),
    d.proc.exited.then(({ code, signal }) => { throw new Error(`${d.name} exited ${code ?? signal}: ${d.proc.tail.slice(-10).join('\n')}`) })
  ])
}

/** Replicas per app per node name, from the scheduler's /v1/status (apps[].weights: one per replica). */
async function placementOf (scheduler: AstradDaemon): Promise<Record<string, Record<string, number>>> {
  const doc = await getJson<{ apps?: Array<{ name: string, weights?: Array<{ node: string, name?: string }> }> }>(scheduler.rpcPort, '/v1/status')
  const out: Record<string, Record<string, number>> = {}
  for (const a of doc.apps ?? []) {
    const per: Record<string, number> = {}
    for (const w of a.weights ?? []) {
      const n = w.name ?? w.node
      per[n] = (per[n] ?? 0) + 1
    }
    out[a.name] = per
  }
  return out
}

/**
 * Starts the cluster, adds both models, deploys the plain apps and the pipeline and waits for
 * all of them. The plain apps must come up (they are the reference); the pipeline may fail to
 * deploy or come up: that is reported in `pipelineError` and the bench measures (b) alone.
 */
export async function startPipelineCluster (o: ClusterOptions): Promise<PipelineCluster> {
  const cores = String(4 * o.threads)
  const scheduler = await startDaemon({ bin: o.bin, root: o.root, name: 'sched', roles: 'resource,scheduler' })
  const boot = await loopbackAddr(scheduler)
  const nodes: AstradDaemon[] = []
  // One by one: daemons starting at once on two cores slow each other's start-up only.
  for (let i = 0; i < o.nodes; i++) {
    // Cores for one replica of each of the four (two apps, two stages); the machine's own cores are fewer, as on any bench here.
    nodes.push(await startDaemon({ bin: o.bin, root: o.root, name: `n${i + 1}`, roles: 'node', bootstrap: boot, extraArgs: ['--cores', cores] }))
  }
  o.log(`cluster up: sched (resource,scheduler, RPC :${scheduler.rpcPort}) + ${nodes.map(n => n.name).join(', ')} (node, --cores ${cores})`)
  const first = nodes[0] as AstradDaemon
  await waitFor(`${first.name} to reach the cluster log (GET /v1/models)`, async () => {
    await getJson(first.rpcPort, '/v1/models', 5_000)
    return true
  }, LOG_TIMEOUT_MS, 100)
  const gateFile = path.join(o.root, 'gate.onnx')
  fs.writeFileSync(gateFile, gateModel(GATE_THRESHOLD))
  const models = { vad: await addModel(o, first, VAD_MODEL), gate: await addModel(o, first, gateFile) }
  o.log(`models added on ${first.name}: vad ${models.vad.slice(0, 12)}…, gate ${models.gate.slice(0, 12)}…`)

  const replica = { replicas: o.replicas, resources: { cpu: o.threads, gpu: 0 }, threads: o.threads }
  const specs = {
    vad: { name: APPS.vad, model: models.vad, ...replica },
    gate: { name: APPS.gate, model: models.gate, ...replica },
    pipeline: {
      name: PIPELINE,
      stages: {
        vad: { model: models.vad, ...replica },
        gate: { model: models.gate, ...replica }
      },
      steps: [
        { name: 'vad', stage: 'vad', inputs: { input: '$request.input', state: '$request.state', sr: '$request.sr' } },
        { name: 'gate', stage: 'gate', inputs: { x: 'vad.output' } }
      ],
      outputs: { speech: 'gate.y', prob: 'vad.output' }
    }
  }
  const t0 = now()
  await deploy(o, scheduler, APPS.vad, specs.vad)
  await deploy(o, scheduler, APPS.gate, specs.gate)
  let pipelineError: string | null = null
  let tPipe: number | null = null
  try {
    tPipe = now()
    await deploy(o, scheduler, PIPELINE, specs.pipeline)
  } catch (err) {
    pipelineError = `deploy: ${err instanceof Error ? err.message : String(err)}`
    o.log(`pipeline '${PIPELINE}' not deployed: ${pipelineError}`)
  }
  await waitReady(scheduler, [APPS.vad, APPS.gate], [APPS.vad, APPS.gate], `apps ${APPS.vad} and ${APPS.gate} ready (${o.replicas} replicas each)`)
  const appsReadyMs = now() - t0
  o.log(`apps ${APPS.vad}, ${APPS.gate} ready ${(appsReadyMs / 1000).toFixed(1)} s after deploy`)
  let pipelineReadyMs: number | null = null
  if (pipelineError == null && tPipe != null) {
    try {
      await waitReady(scheduler, [`${PIPELINE}.vad`, `${PIPELINE}.gate`], [PIPELINE], `pipeline ${PIPELINE} ready (stages ${PIPELINE}.vad, ${PIPELINE}.gate with ${o.replicas} replicas each)`)
      pipelineReadyMs = now() - tPipe
      o.log(`pipeline ${PIPELINE} ready ${(pipelineReadyMs / 1000).toFixed(1)} s after deploy`)
    } catch (err) {
      pipelineError = `not ready: ${err instanceof Error ? err.message : String(err)}`
      o.log(`pipeline ${PIPELINE} ${pipelineError}`)
    }
  }
  let placement: Record<string, Record<string, number>> = {}
  try { placement = await placementOf(scheduler) } catch {}
  return { scheduler, nodes, models, specs, appsReadyMs, pipelineReadyMs, pipelineError, placement }
}
