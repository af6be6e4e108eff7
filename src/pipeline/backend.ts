import { Counter, Histogram, type Registry } from 'prom-client'
import type { Logger } from '../util/logger.ts'
import type { Placer } from '../placement/placer.ts'
import type { Router } from '../serving/router.ts'
import {
  InferenceFailedError, ModelNotFoundError, ServingError,
  type InferRequest, type InferResult, type ModelSignature, type ModelStatus, type ServingBackend, type Tensor
} from '../serving/types.ts'
import { PIPELINE_PLATFORM, REQUEST_SOURCE } from './constants.ts'
import { checkWiring, compilePipeline, pipelineSignature, type Plan } from './graph.ts'
import { assembleOutputs, runPipeline, stepError, SplitPicker, type StageCaller } from './executor.ts'
import { fusePlan } from './fusion.ts'
import { ChainStepError, RemoteInferError, type Chain } from '../serving/infer-protocol.ts'
import { stageAppName, type PipelineRecord } from './spec.ts'

export interface PipelineBackendComponents {
  router: Router
  placer: Placer
  logger: Logger
  registry?: Registry
}

/** A stage of a pipeline as `app ls` and `status` show it. */
export interface StageStatus {
  app: string
  generation: number
  desired: number
  placed: number
  ready: number
  lastError?: string
}

/** A pipeline as `app ls` and `status` show it (on a scheduler). */
export interface PipelineStatus {
  name: string
  generation: number
  /** Every stage it needs has a ready replica and the wiring fits the models. */
  ready: boolean
  stages: Record<string, StageStatus>
  /** Why it is not ready: the wiring against the models, or a stage's last error. */
  lastError?: string
}

interface Compiled {
  key: string
  plan: Plan
  /** What depends on the stages' signatures, redone only when the signatures known change. */
  derived?: Derived
}

interface Derived {
  sigKey: string
  /** The wiring check: its problems, and whether every stage's signature was known. */
  problems: string[]
  complete: boolean
  /** The pipeline's own signature (KServe metadata), once every stage's is known and fits. */
  signature?: ModelSignature
  /** The chain a fused call runs (fusion.ts), when the plan can be fused. */
  chain?: Chain
}

/** Signatures' JSON, once per signature object (a ledger pull brings new objects; most requests none). */
const keys = new WeakMap<ModelSignature, string>()
function signatureKey (sig: ModelSignature | undefined): string {
  if (sig == null) return '-'
  let k = keys.get(sig)
  if (k == null) keys.set(sig, k = JSON.stringify(sig))
  return k
}

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * What the KServe layer serves on a scheduler: the router's apps, and pipelines on top of them.
 * A pipeline request is run here, in the scheduler that received it: each stage call is routed
 * by SWRR to a replica (retried on another node as for any app), and the intermediate tensors
 * go from a stage's node back to this scheduler and on to the next stage's node, never to the
 * client. A stage app is hidden from the endpoint unless its stage says `expose`.
 */
export class PipelineBackend implements ServingBackend {
  private readonly components: PipelineBackendComponents
  private readonly compiled = new Map<string, Compiled>()
  private readonly splits = new SplitPicker()
  private readonly stepDuration?: Histogram<'pipeline' | 'step'>
  private readonly stepFailures?: Counter<'pipeline' | 'step' | 'code'>
  private readonly fusedCalls?: Counter<'pipeline' | 'result'>

  constructor (components: PipelineBackendComponents) {
    this.components = components
    if (components.registry != null) {
      const registers = [components.registry]
      this.stepDuration = new Histogram({ name: 'astrad_pipeline_step_duration_seconds', help: 'Time of each pipeline step\'s stage call as the scheduler running the pipeline saw it (routing, retries, transfer, queue, compute)', labelNames: ['pipeline', 'step'], buckets: DURATION_BUCKETS, registers })
      this.stepFailures = new Counter({ name: 'astrad_pipeline_step_failures_total', help: 'Pipeline steps that failed the request, by error code', labelNames: ['pipeline', 'step', 'code'], registers })
      this.fusedCalls = new Counter({ name: 'astrad_pipeline_fused_calls_total', help: 'Pipeline requests run as one chained call on a node hosting every stage, by result (ok; fallback: refused before an answer, run stage by stage; failed: a stage answered an error)', labelNames: ['pipeline', 'result'], registers })
    }
  }

  serverReady (): boolean {
    return this.components.router.serverReady()
  }

  models (): string[] {
    const { placer, router } = this.components
    const apps = router.models().filter(name => this.visible(name))
    return [...apps, ...placer.pipelineRecords().map(r => r.spec.name)].sort()
  }

  model (name: string): ModelStatus | undefined {
    const record = this.components.placer.pipeline(name)
    if (record == null) return this.visible(name) ? this.components.router.model(name) : undefined
    const c = this.compile(record)
    const d = this.derived(c, record)
    const status: ModelStatus = {
      name,
      versions: [String(record.generation)],
      platform: PIPELINE_PLATFORM,
      ready: d.complete && d.problems.length === 0 && this.stagesReady(c.plan, record)
    }
    if (d.signature != null) status.signature = d.signature
    return status
  }

  async infer (name: string, req: InferRequest, signal?: AbortSignal): Promise<InferResult> {
    const { placer, router } = this.components
    const record = placer.pipeline(name)
    if (record == null) {
      if (!this.visible(name)) throw new ModelNotFoundError(name)
      return await router.infer(name, req, signal)
    }
    const c = this.compile(record)
    const d = this.derived(c, record)
    if (d.problems.length > 0) {
      throw new InferenceFailedError(`pipeline '${name}' does not fit its stages' models: ${d.problems.join('; ')}`, 'ERR_PIPELINE_WIRING')
    }
    const fused = d.chain != null ? await this.tryFused(name, record, c, d.chain, req, signal) : undefined
    if (fused != null) return fused
    const caller: StageCaller = {
      call: async (stage, stageReq, s) => await router.infer(stageAppName(name, stage), stageReq, s),
      ready: stage => router.model(stageAppName(name, stage))?.ready === true,
      signature: stage => router.model(stageAppName(name, stage))?.signature
    }
    const out = await runPipeline(c.plan, req, caller, this.splits, `${name}/${c.key}`, signal, o => {
      this.stepDuration?.observe({ pipeline: name, step: o.step }, o.ms / 1000)
      if (o.code != null) this.stepFailures?.inc({ pipeline: name, step: o.step, code: o.code })
    })
    const result: InferResult = { model: name, version: String(record.generation), outputs: out.outputs, queueMs: out.queueMs, computeMs: out.computeMs }
    if (req.id != null) result.id = req.id
    return result
  }

  /**
   * A plain sequence whose stages all have a ready replica on one node runs there in one chained
   * call (fusion.ts). Undefined when it cannot be fused or the call was refused before any answer
   * (then the stages are called one at a time: nothing was received, so nothing runs twice here).
   */
  private async tryFused (name: string, record: PipelineRecord, c: Compiled, chain: Chain, req: InferRequest, signal?: AbortSignal): Promise<InferResult | undefined> {
    const { router } = this.components
    const node = router.pickCommon(chain.steps.map(s => s.app))
    if (node == null) return undefined
    const t0 = performance.now()
    const chainReq: InferRequest = { inputs: req.inputs, deadline: req.deadline }
    if (req.id != null) chainReq.id = req.id
    let out: InferResult
    try {
      out = await router.callChain(node, chain, chainReq, signal)
    } catch (err) {
      const step = err instanceof ChainStepError || err instanceof RemoteInferError ? err.step : undefined
      const refused = err instanceof RemoteInferError
        ? err.phase !== 'answered'
        : err instanceof ChainStepError && (err.status === 503 || err.status === 429)
      if (refused && !(signal?.aborted ?? false) && Date.now() < req.deadline) {
        this.fusedCalls?.inc({ pipeline: name, result: 'fallback' })
        return undefined
      }
      this.fusedCalls?.inc({ pipeline: name, result: 'failed' })
      const planStep = step != null ? c.plan.steps[step] : undefined
      if (planStep == null || !(err instanceof ServingError)) throw err
      const stage = 'stage' in planStep.spec ? planStep.spec.stage : planStep.name
      const wrapped = stepError(name, planStep.name, stage, err)
      this.stepFailures?.inc({ pipeline: name, step: planStep.name, code: wrapped.code })
      throw wrapped
    }
    this.fusedCalls?.inc({ pipeline: name, result: 'ok' })
    this.stepDuration?.observe({ pipeline: name, step: 'fused' }, (performance.now() - t0) / 1000)
    const values = new Map<string, Map<string, Tensor>>([[REQUEST_SOURCE, new Map(req.inputs.map(t => [t.name, t]))]])
    for (const t of out.outputs) {
      const slash = t.name.indexOf('/')
      const step = c.plan.steps[Number(t.name.slice(0, slash))]
      if (step == null) continue
      let m = values.get(step.name)
      if (m == null) values.set(step.name, m = new Map())
      m.set(t.name.slice(slash + 1), { ...t, name: t.name.slice(slash + 1) })
    }
    const result: InferResult = { model: name, version: String(record.generation), outputs: assembleOutputs(c.plan, values, req), queueMs: out.queueMs, computeMs: out.computeMs }
    if (req.id != null) result.id = req.id
    return result
  }

  /** Every pipeline's stages and readiness, for `app ls` and `status`. */
  status (): PipelineStatus[] {
    const { placer } = this.components
    const apps = new Map(placer.status().map(s => [s.name, s]))
    return placer.pipelineRecords().sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map(record => {
      const name = record.spec.name
      const c = this.compile(record)
      const wiring = this.derived(c, record)
      const stages: Record<string, StageStatus> = {}
      let stageError: string | undefined
      for (const [stage, spec] of Object.entries(record.spec.stages)) {
        const app = stageAppName(name, stage)
        const s = apps.get(app)
        const entry: StageStatus = { app, generation: record.stages[stage]?.generation ?? 1, desired: spec.replicas, placed: s?.placed ?? 0, ready: s?.ready ?? 0 }
        if (s?.lastError != null) {
          entry.lastError = s.lastError
          stageError ??= `stage '${stage}': ${s.lastError}`
        }
        stages[stage] = entry
      }
      const ready = wiring.complete && wiring.problems.length === 0 && this.stagesReady(c.plan, record)
      const status: PipelineStatus = { name, generation: record.generation, ready, stages }
      const lastError = wiring.problems.length > 0 ? `the wiring does not fit the models: ${wiring.problems.join('; ')}` : stageError
      if (lastError != null) status.lastError = lastError
      return status
    })
  }

  /** Whether an app is served under its own name: any app but a stage that is not exposed. */
  private visible (app: string): boolean {
    const rec = this.components.placer.app(app)
    return rec?.pipeline == null || rec.pipeline.expose
  }

  /**
   * Every stage a request may need is ready: the stages of plain steps and of every switch case
   * (a request may go to any), and at least one case of each split (the others sit out).
   */
  private stagesReady (plan: Plan, record: PipelineRecord): boolean {
    const ready = (stage: string): boolean => this.components.router.model(stageAppName(record.spec.name, stage))?.ready === true
    return plan.steps.every(step => {
      const s = step.spec
      if ('split' in s) return s.split.some(c => c.weight > 0 && ready(c.stage))
      return step.stages.every(ready)
    })
  }

  private signatures (record: PipelineRecord): (stage: string) => ModelSignature | undefined {
    return stage => this.components.router.model(stageAppName(record.spec.name, stage))?.signature
  }

  private compile (record: PipelineRecord): Compiled {
    const key = `${record.generation}/${record.deployedAt}`
    let c = this.compiled.get(record.spec.name)
    if (c?.key !== key) {
      c = { key, plan: compilePipeline(record.spec) }
      this.compiled.set(record.spec.name, c)
      // Pipelines removed since: their plans go too.
      for (const n of this.compiled.keys()) if (this.components.placer.pipeline(n) == null) this.compiled.delete(n)
    }
    return c
  }

  /** The wiring check, the pipeline's signature and its fused chain, for the signatures known now. */
  private derived (c: Compiled, record: PipelineRecord): Derived {
    const sig = this.signatures(record)
    const sigKey = Object.keys(record.spec.stages).map(s => signatureKey(sig(s))).join('|')
    if (c.derived?.sigKey !== sigKey) {
      const d: Derived = { sigKey, ...checkWiring(c.plan, sig) }
      if (d.problems.length > 0) {
        this.components.logger.warn({ pipeline: record.spec.name, problems: d.problems }, 'pipeline wiring does not fit its models')
      } else {
        const signature = pipelineSignature(c.plan, sig)
        if (signature != null) d.signature = signature
        const chain = fusePlan(c.plan, sig)
        if (chain != null) d.chain = chain
      }
      c.derived = d
    }
    return c.derived
  }
}
