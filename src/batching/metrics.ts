import { Histogram, type Registry } from 'prom-client'
import { BATCH_SIZE_BUCKETS, QUEUE_DELAY_BUCKETS_S } from './constants.ts'

/**
 * Per-app batching metrics, beside the astrad_inference_* set (src/serving/kserve/metrics.ts):
 * rows per run (Triton reports the same as nv_inference_exec_count vs inference_count; a
 * histogram shows the distribution) and each request's wait in the batcher. Labelled by app
 * name only: apps are operator-deployed, so the label set stays bounded.
 */
export interface BatchingMetrics {
  /** One run of `rows` rows (1 = a request that ran alone). */
  batch: (app: string, rows: number) => void
  /** One request's wait from arrival to its run's dispatch. */
  queueDelay: (app: string, seconds: number) => void
}

/** One per registry: every replica of a daemon shares it. */
const byRegistry = new WeakMap<Registry, BatchingMetrics>()

export function batchingMetrics (registry: Registry): BatchingMetrics {
  let m = byRegistry.get(registry)
  if (m !== undefined) return m
  const size = new Histogram({
    name: 'astrad_inference_batch_size',
    help: 'Rows per onnxruntime run of apps with batching on (requests combined along axis 0), by app',
    labelNames: ['model'],
    buckets: BATCH_SIZE_BUCKETS,
    registers: [registry]
  })
  const delay = new Histogram({
    name: 'astrad_inference_batch_queue_delay_seconds',
    help: 'Time a request of an app with batching on waited in the batcher before its run was dispatched, by app',
    labelNames: ['model'],
    buckets: QUEUE_DELAY_BUCKETS_S,
    registers: [registry]
  })
  m = {
    batch: (app, rows) => { size.observe({ model: app }, rows) },
    queueDelay: (app, seconds) => { delay.observe({ model: app }, seconds) }
  }
  byRegistry.set(registry, m)
  return m
}
