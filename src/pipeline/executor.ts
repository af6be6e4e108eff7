import { errorMessage } from '../util/errors.ts'
import { decodeElements } from '../serving/kserve/codec.ts'
import {
  InferenceFailedError, InvalidInferRequestError, ServingError,
  type InferRequest, type InferResult, type ModelSignature, type Tensor
} from '../serving/types.ts'
import { MAX_HELD_BYTES, MAX_PARALLEL_CALLS, REQUEST_SOURCE } from './constants.ts'
import type { Plan, PlanStep } from './graph.ts'
import { parseRef, type Condition, type ConditionOp, type SplitCase } from './spec.ts'

/** What the executor needs of the cluster: call a stage (routed, retried), and what is ready. */
export interface StageCaller {
  /** Runs a request on a replica of the stage (the router retries other nodes; never re-runs an answered call). */
  call: (stage: string, req: InferRequest, signal: AbortSignal) => Promise<InferResult>
  /** Whether the stage has a ready replica (a split skips cases without one). */
  ready: (stage: string) => boolean
  signature: (stage: string) => ModelSignature | undefined
}

/** One step's call as it went, for metrics. */
export interface StepOutcome {
  step: string
  stage: string
  ms: number
  /** The error code when it failed. */
  code?: string
}

export interface PipelineResult {
  outputs: Tensor[]
  queueMs: number
  computeMs: number
}

/** A stage failed: the answer says which step and stage, with the stage's own status and code. */
export class PipelineStepError extends ServingError {
  readonly step: string
  readonly stage?: string
  constructor (message: string, code: string, status: number, step: string, stage?: string, retryAfter?: number) {
    super(message, code, status, retryAfter)
    this.name = 'PipelineStepError'
    this.step = step
    this.stage = stage
  }
}

/** The request's tensors between stages went past MAX_HELD_BYTES. */
class HeldBytesError extends ServingError {
  constructor (pipeline: string, step: string, held: number) {
    super(`pipeline '${pipeline}' step '${step}': the request's tensors between stages reached ${held} bytes, over the limit of ${MAX_HELD_BYTES}`, 'ERR_TOO_LARGE', 413)
    this.name = 'HeldBytesError'
  }
}

/**
 * Smooth weighted round-robin over a split's cases (nginx's algorithm): over any window of the
 * weights' sum the cases get exactly their shares; a case whose stage has no ready replica sits
 * out while another has one.
 */
export class SplitPicker {
  private readonly current = new Map<string, number[]>()

  pick (key: string, cases: readonly SplitCase[], ready: (stage: string) => boolean): SplitCase {
    let cur = this.current.get(key)
    if (cur?.length !== cases.length) this.current.set(key, cur = cases.map(() => 0))
    const live = cases.map(c => c.weight > 0 && ready(c.stage))
    const any = live.some(Boolean)
    let total = 0
    let best = -1
    cases.forEach((c, i) => {
      if (c.weight <= 0 || (any && !live[i])) return
      cur[i]! += c.weight
      total += c.weight
      if (best < 0 || cur[i]! > cur[best]!) best = i
    })
    cur[best]! -= total
    return cases[best]!
  }
}

function compare (a: number, op: ConditionOp, b: number): boolean {
  switch (op) {
    case '==': return a === b
    case '!=': return a !== b
    case '<': return a < b
    case '<=': return a <= b
    case '>': return a > b
    case '>=': return a >= b
  }
}

function toNumber (x: unknown): number {
  if (typeof x === 'number') return x
  if (typeof x === 'bigint') return Number(x)
  if (typeof x === 'boolean') return x ? 1 : 0
  return Number.NaN
}

/** Whether a switch case's condition holds for this request. */
export function conditionHolds (cond: Condition, req: InferRequest, tensor: (ref: string) => Tensor | undefined): boolean {
  if ('parameter' in cond) {
    const v = req.parameters?.[cond.parameter]
    if (v === undefined) return false
    if (cond.op === '==' || cond.op === '!=') {
      const equal = typeof v === typeof cond.value ? v === cond.value : (typeof v === 'number' && typeof cond.value === 'number' && v === cond.value)
      return cond.op === '==' ? equal : !equal
    }
    return typeof v === 'number' && typeof cond.value === 'number' && compare(v, cond.op, cond.value)
  }
  const t = tensor(cond.tensor)
  if (t == null || t.datatype === 'BYTES') return false
  const xs = decodeElements(t).map(toNumber)
  if (xs.length === 0) return false
  switch (cond.reduce) {
    case 'any': return xs.some(x => compare(x, cond.op, cond.value))
    case 'all': return xs.every(x => compare(x, cond.op, cond.value))
    case 'max': return compare(Math.max(...xs), cond.op, cond.value)
    case 'min': return compare(Math.min(...xs), cond.op, cond.value)
    case 'mean': return compare(xs.reduce((a, b) => a + b, 0) / xs.length, cond.op, cond.value)
  }
}

/**
 * Runs one request through a pipeline: each step once its sources have answered, independent
 * steps at once (at most MAX_PARALLEL_CALLS calls in flight), every stage call under the
 * request's one deadline (each gets what is left of it). Answers are kept until the pipeline's
 * outputs are assembled; a failed step fails the request with its step and stage named, and
 * the calls still in flight are cancelled. No step ever runs twice.
 */
export async function runPipeline (
  plan: Plan, req: InferRequest, caller: StageCaller, splits: SplitPicker, splitKey: string,
  signal: AbortSignal | undefined, observe?: (o: StepOutcome) => void
): Promise<PipelineResult> {
  const name = plan.spec.name
  const values = new Map<string, Map<string, Tensor>>()
  values.set(REQUEST_SOURCE, new Map(req.inputs.map(t => [t.name, t])))
  let held = req.inputs.reduce((n, t) => n + t.data.byteLength, 0)
  let queueMs = 0
  let computeMs = 0
  const ac = new AbortController()
  const onAbort = (): void => { ac.abort(signal?.reason) }
  signal?.addEventListener('abort', onAbort, { once: true })

  const lookup = (ref: string): Tensor | undefined => {
    const r = parseRef(ref)
    return r.tensor != null ? values.get(r.source)?.get(r.tensor) : undefined
  }

  const inputsOf = (step: PlanStep, stage: string): Tensor[] => {
    if ('whole' in step.inputs) {
      const all = [...(values.get(step.inputs.whole)?.values() ?? [])]
      // Only what the stage takes: the source may give more (another model's outputs, extra request tensors).
      const sig = caller.signature(stage)
      return sig != null ? all.filter(t => sig.inputs.some(i => i.name === t.name)) : all
    }
    return step.inputs.map.map(m => {
      const t = values.get(m.ref.source)?.get(m.ref.tensor!)
      if (t == null) {
        if (m.ref.source === REQUEST_SOURCE) {
          throw new InvalidInferRequestError(`pipeline '${name}' step '${step.name}' reads input '${m.ref.tensor}', which the request does not have (it has: ${[...values.get(REQUEST_SOURCE)!.keys()].join(', ') || 'none'})`)
        }
        throw new PipelineStepError(`pipeline '${name}' step '${step.name}' inputs.${m.input}: step '${m.ref.source}' answered without '${m.ref.tensor}' (it gave: ${[...(values.get(m.ref.source)?.keys() ?? [])].join(', ')})`, 'ERR_PIPELINE_WIRING', 500, step.name)
      }
      return t.name === m.input ? t : { ...t, name: m.input }
    })
  }

  const chooseStage = (step: PlanStep): string => {
    const s = step.spec
    if ('stage' in s) return s.stage
    if ('split' in s) return splits.pick(`${splitKey}/${step.name}`, s.split, caller.ready).stage
    for (const c of s.switch) {
      if (c.when == null || conditionHolds(c.when, req, lookup)) return c.stage
    }
    throw new PipelineStepError(`pipeline '${name}' step '${step.name}': no switch case matched the request and the switch has no default`, 'ERR_INVALID_INPUT', 400, step.name)
  }

  const runStep = async (step: PlanStep): Promise<void> => {
    const stage = chooseStage(step)
    const t0 = performance.now()
    let result: InferResult
    try {
      const stageReq: InferRequest = { inputs: inputsOf(step, stage), deadline: req.deadline }
      if (req.id != null) stageReq.id = req.id
      if (step.wanted != null) stageReq.outputs = [...step.wanted]
      result = await caller.call(stage, stageReq, ac.signal)
    } catch (err) {
      const wrapped = stepError(name, step.name, stage, err)
      observe?.({ step: step.name, stage, ms: performance.now() - t0, code: wrapped.code })
      throw wrapped
    }
    observe?.({ step: step.name, stage, ms: performance.now() - t0 })
    queueMs += result.queueMs
    computeMs += result.computeMs
    const out = new Map<string, Tensor>()
    for (const t of result.outputs) {
      out.set(t.name, t)
      held += t.data.byteLength
    }
    if (held > MAX_HELD_BYTES) throw new HeldBytesError(name, step.name, held)
    values.set(step.name, out)
  }

  try {
    const done = new Set<string>()
    const pending = [...plan.steps]
    const running = new Map<string, Promise<string>>()
    while (done.size < plan.steps.length) {
      for (let i = 0; i < pending.length && running.size < MAX_PARALLEL_CALLS;) {
        const step = pending[i]!
        if (!step.deps.every(d => done.has(d))) { i++; continue }
        pending.splice(i, 1)
        const p = runStep(step).then(() => step.name)
        p.catch(() => {}) // seen by the race below; the others' failures after the first are moot
        running.set(step.name, p)
      }
      if (running.size === 0) throw new InferenceFailedError(`pipeline '${name}': no step can run (steps left: ${pending.map(s => s.name).join(', ')})`)
      const finished = await Promise.race(running.values())
      running.delete(finished)
      done.add(finished)
    }
  } catch (err) {
    ac.abort(err)
    throw err
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }

  return { outputs: assembleOutputs(plan, values, req), queueMs, computeMs }
}

/**
 * The pipeline's answer from the tensors its steps gave (by step name; `$request` the request's):
 * the explicit outputs, or the sinks' (named `STEP.TENSOR` when there are several), then the
 * client's `outputs` list picks among them.
 */
export function assembleOutputs (plan: Plan, values: ReadonlyMap<string, ReadonlyMap<string, Tensor>>, req: InferRequest): Tensor[] {
  const name = plan.spec.name
  let outputs: Tensor[]
  if (plan.outputs != null) {
    outputs = plan.outputs.map(o => {
      const t = values.get(o.ref.source)?.get(o.ref.tensor!)
      if (t == null) throw new PipelineStepError(`pipeline '${name}' output '${o.name}': step '${o.ref.source}' answered without '${o.ref.tensor}'`, 'ERR_PIPELINE_WIRING', 500, o.ref.source)
      return t.name === o.name ? t : { ...t, name: o.name }
    })
  } else {
    const several = plan.sinks.length > 1
    outputs = plan.sinks.flatMap(s => [...(values.get(s)?.values() ?? [])].map(t => several ? { ...t, name: `${s}.${t.name}` } : t))
  }
  if (req.outputs != null) {
    const byName = new Map(outputs.map(t => [t.name, t]))
    outputs = req.outputs.map(n => {
      const t = byName.get(n)
      if (t == null) throw new InvalidInferRequestError(`pipeline '${name}' has no output '${n}' (outputs: ${[...byName.keys()].join(', ')})`)
      return t
    })
  }
  return outputs
}

/** A stage's failure as the pipeline answers it: the stage's status and code, its step and stage named. */
export function stepError (pipeline: string, step: string, stage: string, err: unknown): ServingError {
  if (err instanceof PipelineStepError) return err
  const prefix = `pipeline '${pipeline}' step '${step}' (stage '${stage}')`
  if (err instanceof ServingError) return new PipelineStepError(`${prefix}: ${err.message}`, err.code, err.status, step, stage, err.retryAfter)
  return new PipelineStepError(`${prefix}: ${errorMessage(err)}`, 'ERR_INFERENCE', 500, step, stage)
}
