import type { ModelSignature, TensorSpec } from '../serving/types.ts'
import { InvalidAppError } from '../placement/app.ts'
import { REQUEST_SOURCE } from './constants.ts'
import { parseRef, stepStages, type PipelineSpec, type Ref, type StepSpec } from './spec.ts'

/**
 * A pipeline spec compiled for running: each step's dependencies and the outputs of it that
 * anything reads (only those are asked of the stage, so unread tensors never travel), and the
 * checks of the wiring against the stage models' signatures once they are known.
 */

export type StepInputPlan = { whole: string } | { map: Array<{ input: string, ref: Ref }> }

export interface PlanStep {
  spec: StepSpec
  name: string
  index: number
  inputs: StepInputPlan
  /** Steps this one waits for. */
  deps: string[]
  /** Stages it may call (one, or a switch's or split's cases). */
  stages: string[]
  /** Its outputs that anything reads; null: all of them (read whole, or a sink of the default outputs). */
  wanted: Set<string> | null
}

export interface Plan {
  spec: PipelineSpec
  steps: PlanStep[]
  byName: Map<string, PlanStep>
  /** The pipeline's outputs: explicit, or null for the sinks' outputs. */
  outputs: Array<{ name: string, ref: Ref }> | null
  /** Steps nothing reads. */
  sinks: string[]
}

/** Compiles a (parsed) spec. Throws InvalidAppError for a step whose outputs nothing reads. */
export function compilePipeline (spec: PipelineSpec): Plan {
  const steps: PlanStep[] = spec.steps.map((s, index) => {
    const inputs: StepInputPlan = typeof s.inputs === 'string'
      ? { whole: s.inputs }
      : { map: Object.entries(s.inputs).map(([input, ref]) => ({ input, ref: parseRef(ref) })) }
    const deps = new Set<string>()
    if ('whole' in inputs) deps.add(inputs.whole)
    else for (const m of inputs.map) deps.add(m.ref.source)
    if ('switch' in s) for (const c of s.switch) if (c.when != null && 'tensor' in c.when) deps.add(parseRef(c.when.tensor).source)
    deps.delete(REQUEST_SOURCE)
    return { spec: s, name: s.name, index, inputs, deps: [...deps], stages: stepStages(s), wanted: new Set<string>() }
  })
  const byName = new Map(steps.map(s => [s.name, s]))
  const read = new Set<string>()
  const want = (ref: Ref): void => {
    if (ref.source === REQUEST_SOURCE) return
    const step = byName.get(ref.source)!
    read.add(step.name)
    if (ref.tensor == null) step.wanted = null
    else step.wanted?.add(ref.tensor)
  }
  for (const s of steps) {
    if ('whole' in s.inputs) want({ source: s.inputs.whole })
    else for (const m of s.inputs.map) want(m.ref)
    if ('switch' in s.spec) for (const c of s.spec.switch) if (c.when != null && 'tensor' in c.when) want(parseRef(c.when.tensor))
  }
  // Sinks: steps no other step reads (before the outputs count as readers).
  const sinks = steps.filter(s => !read.has(s.name)).map(s => s.name)
  const outputs = spec.outputs != null ? Object.entries(spec.outputs).map(([name, ref]) => ({ name, ref: parseRef(ref) })) : null
  if (outputs != null) for (const o of outputs) want(o.ref)
  if (outputs == null) {
    for (const name of sinks) byName.get(name)!.wanted = null
  } else {
    const dead = steps.find(s => !read.has(s.name))
    if (dead != null) throw new InvalidAppError(`pipeline spec: step '${dead.name}': nothing reads its outputs (no later step, no entry of "outputs")`)
  }
  return { spec, steps, byName, outputs, sinks }
}

/** Signatures by stage name, as far as they are known. */
export type StageSignatures = (stage: string) => ModelSignature | undefined

function shapeText (shape: readonly number[]): string {
  return `[${shape.join(', ')}]`
}

/** Whether a tensor of shape `a` can be given where `b` is declared: same rank, fixed dimensions equal. */
export function shapesMatch (a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false
  return a.every((d, i) => d === -1 || b[i] === -1 || d === b[i])
}

function names (specs: readonly TensorSpec[]): string {
  return specs.map(s => s.name).join(', ') || 'none'
}

/**
 * The output specs of a step, from the first of its stages whose signature is known (the cases of
 * a switch or split must agree, which checkWiring reports).
 */
function stepOutputs (step: PlanStep, sig: StageSignatures): TensorSpec[] | undefined {
  for (const stage of step.stages) {
    const s = sig(stage)
    if (s != null) return s.outputs
  }
  return undefined
}

/**
 * Checks the wiring against the signatures known so far. Each problem names the step and field.
 * `complete`: every stage's signature was known, so an empty list means the pipeline fits.
 */
export function checkWiring (plan: Plan, sig: StageSignatures): { problems: string[], complete: boolean } {
  const problems: string[] = []
  let complete = true
  for (const stage of Object.keys(plan.spec.stages)) if (sig(stage) == null) complete = false
  const model = (stage: string): string => `stage '${stage}' (model ${plan.spec.stages[stage]!.model.slice(0, 12)})`
  const requestSpecs = new Map<string, { spec: TensorSpec, by: string }>()
  const source = (ref: Ref, field: string): TensorSpec | undefined | null => {
    if (ref.source === REQUEST_SOURCE) return null
    const from = plan.byName.get(ref.source)!
    const outs = stepOutputs(from, sig)
    if (outs == null || ref.tensor == null) return undefined
    const t = outs.find(o => o.name === ref.tensor)
    if (t == null) problems.push(`${field}: step '${from.name}' has no output '${ref.tensor}' (outputs: ${names(outs)})`)
    return t
  }
  const feed = (given: TensorSpec | undefined | null, reqName: string | undefined, target: TensorSpec, field: string): void => {
    if (given === null && reqName != null) {
      const prev = requestSpecs.get(reqName)
      if (prev == null) requestSpecs.set(reqName, { spec: { name: reqName, datatype: target.datatype, shape: target.shape }, by: field })
      else if (prev.spec.datatype !== target.datatype || !shapesMatch(prev.spec.shape, target.shape)) {
        problems.push(`${field}: request input '${reqName}' must be ${target.datatype} ${shapeText(target.shape)} here but ${prev.spec.datatype} ${shapeText(prev.spec.shape)} for ${prev.by}`)
      }
      return
    }
    if (given == null) return
    if (given.datatype !== target.datatype) problems.push(`${field}: gets ${given.datatype} but the input '${target.name}' takes ${target.datatype}`)
    else if (!shapesMatch(given.shape, target.shape)) problems.push(`${field}: gets shape ${shapeText(given.shape)} but the input '${target.name}' takes ${shapeText(target.shape)}`)
  }

  for (const step of plan.steps) {
    const at = `step '${step.name}'`
    // A switch's or split's cases must give the outputs that are read alike.
    if (step.stages.length > 1) {
      const first = step.stages.find(s => sig(s) != null)
      if (first != null) {
        const base = sig(first)!.outputs
        for (const other of step.stages) {
          const o = sig(other)
          if (o == null || other === first) continue
          for (const t of base) {
            if (step.wanted != null && !step.wanted.has(t.name)) continue
            const u = o.outputs.find(x => x.name === t.name)
            if (u == null) problems.push(`${at}: ${model(other)} has no output '${t.name}' that ${model(first)} gives (the cases of a step must give the same outputs)`)
            else if (u.datatype !== t.datatype || !shapesMatch(u.shape, t.shape)) problems.push(`${at}: output '${t.name}' is ${t.datatype} ${shapeText(t.shape)} from ${model(first)} but ${u.datatype} ${shapeText(u.shape)} from ${model(other)}`)
          }
        }
      }
    }
    for (const stage of new Set(step.stages)) {
      const s = sig(stage)
      if (s == null) continue
      if ('map' in step.inputs) {
        const fed = new Set<string>()
        for (const m of step.inputs.map) {
          const field = `${at} inputs.${m.input}`
          const target = s.inputs.find(i => i.name === m.input)
          if (target == null) {
            problems.push(`${field}: ${model(stage)} has no input '${m.input}' (inputs: ${names(s.inputs)})`)
            continue
          }
          fed.add(m.input)
          feed(source(m.ref, field), m.ref.source === REQUEST_SOURCE ? m.ref.tensor : undefined, target, field)
        }
        const missing = s.inputs.filter(i => !fed.has(i.name))
        if (missing.length > 0) problems.push(`${at} inputs: ${model(stage)} input(s) ${names(missing)} are fed by nothing`)
      } else {
        const whole = step.inputs.whole
        if (whole === REQUEST_SOURCE) {
          for (const target of s.inputs) feed(null, target.name, target, `${at} inputs`)
        } else {
          const outs = stepOutputs(plan.byName.get(whole)!, sig)
          if (outs != null) {
            for (const target of s.inputs) {
              const given = outs.find(o => o.name === target.name)
              if (given == null) problems.push(`${at} inputs: ${model(stage)} input '${target.name}' is not among step '${whole}''s outputs (${names(outs)}); map it: "inputs": {"${target.name}": "${whole}.TENSOR"}`)
              else feed(given, undefined, target, `${at} inputs (${whole}.${target.name})`)
            }
          }
        }
      }
    }
    if ('switch' in step.spec) {
      step.spec.switch.forEach((c, j) => {
        if (c.when == null || !('tensor' in c.when)) return
        const field = `${at} switch[${j}].when.tensor`
        const t = source(parseRef(c.when.tensor), field)
        if (t?.datatype === 'BYTES') problems.push(`${field}: '${c.when.tensor}' is BYTES; a condition compares numbers`)
      })
    }
  }
  if (plan.outputs != null) {
    for (const o of plan.outputs) source(o.ref, `outputs.${o.name}`)
  }
  return { problems: [...new Set(problems)], complete }
}

/**
 * The pipeline's signature for `GET /v2/models/{pipeline}`: the request tensors its steps read
 * (typed by the inputs they feed) and its outputs; undefined until every stage's is known.
 */
export function pipelineSignature (plan: Plan, sig: StageSignatures): ModelSignature | undefined {
  for (const stage of Object.keys(plan.spec.stages)) if (sig(stage) == null) return undefined
  const inputs = new Map<string, TensorSpec>()
  for (const step of plan.steps) {
    const s = sig(step.stages[0]!)!
    if ('whole' in step.inputs) {
      if (step.inputs.whole === REQUEST_SOURCE) for (const t of s.inputs) if (!inputs.has(t.name)) inputs.set(t.name, t)
    } else {
      for (const m of step.inputs.map) {
        if (m.ref.source !== REQUEST_SOURCE || m.ref.tensor == null || inputs.has(m.ref.tensor)) continue
        const t = s.inputs.find(i => i.name === m.input)
        if (t != null) inputs.set(m.ref.tensor, { name: m.ref.tensor, datatype: t.datatype, shape: t.shape })
      }
    }
  }
  const outputs: TensorSpec[] = []
  if (plan.outputs != null) {
    for (const o of plan.outputs) {
      const specs = o.ref.source === REQUEST_SOURCE ? [...inputs.values()] : stepOutputs(plan.byName.get(o.ref.source)!, sig)
      const t = specs?.find(x => x.name === o.ref.tensor)
      if (t != null) outputs.push({ name: o.name, datatype: t.datatype, shape: t.shape })
    }
  } else {
    const several = plan.sinks.length > 1
    for (const name of plan.sinks) {
      for (const t of stepOutputs(plan.byName.get(name)!, sig) ?? []) outputs.push({ name: several ? `${name}.${t.name}` : t.name, datatype: t.datatype, shape: t.shape })
    }
  }
  return { inputs: [...inputs.values()], outputs }
}
