import type { Chain } from '../serving/infer-protocol.ts'
import type { ModelSignature } from '../serving/types.ts'
import { REQUEST_SOURCE } from './constants.ts'
import type { Plan } from './graph.ts'
import { stageAppName } from './spec.ts'

/**
 * Fusion: a pipeline that is a plain sequence of stages (each step reads only the request and the
 * step before it) runs as one chained call on a node that hosts a ready replica of every stage
 * (`/astra/infer-chain/1.0.0`): one hop from the scheduler instead of one per stage, and the
 * intermediate tensors never leave that node. Where no node hosts them all, or the chained call
 * is refused before an answer, the scheduler calls the stages one at a time as usual.
 *
 * Returns the chain (apps, inputs as `[input, source, tensor]`, the outputs each step is asked
 * for, the steps whose outputs come back), or undefined when the plan cannot be fused: a switch or
 * split (the choice is the scheduler's), parallel steps (an ensemble gains from running at once
 * on several nodes), a single stage, or a step reading a whole source whose model's signature is
 * not known yet (its inputs cannot be named).
 */
export function fusePlan (plan: Plan, signature: (stage: string) => ModelSignature | undefined): Chain | undefined {
  if (plan.steps.length < 2) return undefined
  const index = new Map(plan.steps.map((s, i) => [s.name, i]))
  const steps: Chain['steps'] = []
  for (let i = 0; i < plan.steps.length; i++) {
    const step = plan.steps[i]!
    if (!('stage' in step.spec)) return undefined
    if (step.deps.some(d => d !== plan.steps[i - 1]?.name)) return undefined
    const stage = step.spec.stage
    let inputs: Chain['steps'][number]['inputs']
    if ('map' in step.inputs) {
      inputs = step.inputs.map.map(m => [m.input, m.ref.source === REQUEST_SOURCE ? -1 : index.get(m.ref.source)!, m.ref.tensor!])
    } else {
      const sig = signature(stage)
      if (sig == null) return undefined
      const source = step.inputs.whole === REQUEST_SOURCE ? -1 : index.get(step.inputs.whole)!
      inputs = sig.inputs.map(t => [t.name, source, t.name])
    }
    const s: Chain['steps'][number] = { app: stageAppName(plan.spec.name, stage), inputs }
    if (step.wanted != null) s.outputs = [...step.wanted]
    steps.push(s)
  }
  const returning = plan.outputs != null
    ? plan.outputs.filter(o => o.ref.source !== REQUEST_SOURCE).map(o => o.ref.source)
    : plan.sinks
  const returns = [...new Set(returning)].map(n => index.get(n)!).sort((a, b) => a - b)
  return { steps, returns }
}
