import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  articleWeight, capacityOf, headroomOf, measuredWeight, routingConstants, staticWeight,
  type NodeLoad, type WeightFunction
} from '../../src/routing/index.ts'

const cpuNode: NodeLoad = { cores: 8, gpus: 0, gpuPerf: 1, cpuUtil: 0.5, gpuUtil: 0, inflight: 4 }
const functions: Record<string, WeightFunction> = { articleWeight, staticWeight, measuredWeight }

function positiveFinite (w: number): boolean {
  return Number.isFinite(w) && w > 0
}

test('every weight function answers a positive finite number for edge cases and garbage', () => {
  const odd = [0, -1, NaN, Infinity, -Infinity, 1e300, -1e-300, 0.5, 1, 65_535]
  const cases: NodeLoad[] = [
    { cores: 8, gpus: 0, gpuPerf: 1, cpuUtil: 0, gpuUtil: 0, inflight: 0 }, // idle
    { cores: 8, gpus: 0, gpuPerf: 1, cpuUtil: 0.6, gpuUtil: 0, inflight: 0 }, // busy, zero concurrency
    { cores: 8, gpus: 0, gpuPerf: 1, cpuUtil: 1, gpuUtil: 0, inflight: 500 }, // saturated and queued
    { cores: 0, gpus: 0, gpuPerf: 0, cpuUtil: 0.5, gpuUtil: 0, inflight: 2 }, // 0 cores
    { cores: 4, gpus: 2, gpuPerf: 0, cpuUtil: 0.1, gpuUtil: 1, inflight: 9 } // GPU perf 0, saturated
  ]
  for (const field of ['cores', 'gpus', 'gpuPerf', 'cpuUtil', 'gpuUtil', 'inflight', 'measuredCapacity', 'measuredComputeMs'] as const) {
    for (const v of odd) cases.push({ ...cpuNode, [field]: v }, { ...cpuNode, gpus: 2, [field]: v })
  }
  for (const [name, fn] of Object.entries(functions)) {
    for (const load of cases) {
      const w = fn(load)
      assert.ok(positiveFinite(w), `${name}(${JSON.stringify(load)}) = ${w}`)
    }
  }
})

test('article: an idle node weighs at least as much as the same node busy, and saturation is not zero', () => {
  const idle = articleWeight({ ...cpuNode, cpuUtil: 0, inflight: 0 })
  const busy = articleWeight({ ...cpuNode, cpuUtil: 0.75, inflight: 6 })
  const saturated = articleWeight({ ...cpuNode, cpuUtil: 1, inflight: 8 })
  assert.ok(idle >= busy, `idle ${idle} vs busy ${busy}`)
  assert.ok(busy > saturated, `busy ${busy} vs saturated ${saturated}`)
  assert.ok(saturated > 0)
  // Zero concurrency at some utilization (another app, or a stale sample) is finite.
  assert.ok(positiveFinite(articleWeight({ ...cpuNode, cpuUtil: 0.9, inflight: 0 })))
})

test('article: the less loaded of two equal nodes weighs more', () => {
  const light = articleWeight({ ...cpuNode, cpuUtil: 0.2, inflight: 1 })
  const heavy = articleWeight({ ...cpuNode, cpuUtil: 0.9, inflight: 20 })
  assert.ok(light > heavy, `${light} vs ${heavy}`)
  // Same utilization, deeper queue: lighter weight (utilization / concurrency).
  assert.ok(articleWeight({ ...cpuNode, cpuUtil: 1, inflight: 8 }) > articleWeight({ ...cpuNode, cpuUtil: 1, inflight: 40 }))
})

test('article: at the same load, the faster GPU (performance factor) weighs more', () => {
  const gpu = { cores: 16, gpus: 2, cpuUtil: 0.1, gpuUtil: 0.5, inflight: 1 }
  assert.ok(articleWeight({ ...gpu, gpuPerf: 2 }) > articleWeight({ ...gpu, gpuPerf: 1 }))
  // Unqueued, the capacity cancels out to per-slot speed × headroom (docs/routing.md).
  const w = articleWeight({ ...gpu, gpuPerf: 2, gpuUtil: 0.5, inflight: 1 })
  assert.ok(Math.abs(w - 2 * headroomOf(0.5)) < 1e-9, String(w))
})

test('capacity: GPUs × performance factor on GPU nodes, else cores, at least 1', () => {
  assert.equal(capacityOf({ ...cpuNode, gpus: 4, gpuPerf: 2.5 }), 10)
  assert.equal(capacityOf(cpuNode), 8)
  assert.equal(capacityOf({ ...cpuNode, cores: 0 }), 1)
  assert.equal(capacityOf({ ...cpuNode, cores: NaN }), 1)
  assert.equal(staticWeight({ ...cpuNode, gpus: 4, gpuPerf: 2.5 }), 10)
  assert.equal(staticWeight({ ...cpuNode, cpuUtil: 1, inflight: 100 }), 8, 'static ignores load')
})

test('headroom: ln(1 + 100 × (1 − u)), floored at 1 % of idle', () => {
  assert.ok(Math.abs(headroomOf(0) - Math.log(101)) < 1e-12)
  assert.ok(Math.abs(headroomOf(0.75) - Math.log(26)) < 1e-12)
  assert.equal(headroomOf(1), routingConstants.MIN_HEADROOM)
  assert.ok(headroomOf(0.2) > headroomOf(0.8))
})

test('measured: the measured capacity replaces the reported one; a faster node weighs more', () => {
  const base = { ...cpuNode, inflight: 0 }
  assert.equal(measuredWeight(base), 8, 'no measurement: the reported capacity')
  assert.equal(measuredWeight({ ...base, measuredCapacity: 3, measuredComputeMs: 50 }), 3)
  assert.ok(measuredWeight({ ...base, measuredCapacity: 12, measuredComputeMs: 20 }) > measuredWeight({ ...base, measuredCapacity: 6, measuredComputeMs: 40 }))
})

test('measured: a backlog of BACKLOG_HALF_WEIGHT_S seconds halves the weight; a node keeping up loses nothing', () => {
  const computeMs = 40
  const slots = 8
  // Queued requests that take BACKLOG_HALF_WEIGHT_S to clear: queued × 40 ms / 8 slots.
  const queued = routingConstants.BACKLOG_HALF_WEIGHT_S * 1000 * slots / computeMs
  const load = { ...cpuNode, measuredCapacity: 8, measuredComputeMs: computeMs }
  assert.equal(measuredWeight({ ...load, inflight: slots }), 8, 'every slot busy, nothing queued')
  assert.ok(Math.abs(measuredWeight({ ...load, inflight: slots + queued }) - 4) < 1e-9)
  assert.ok(measuredWeight({ ...load, inflight: slots + 10 * queued }) < 1)
})
