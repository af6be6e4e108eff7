import { Counter, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS_S } from './constants.ts'

/**
 * Per-model inference metrics: Triton's `nv_inference_*` set under the `astrad_inference_`
 * prefix, same names and meanings, so Triton dashboards port by a rename (Triton's names carry
 * no `_total` suffix; neither do these). Labelled by model (= app) name; only models the
 * backend knows are counted, so a client cannot blow up the label set with made-up names.
 */

/** Why a request failed (the `reason` label of astrad_inference_request_failure). */
export type FailureReason = 'invalid' | 'rejected' | 'unavailable' | 'deadline' | 'canceled' | 'backend'

export interface InferenceMetrics {
  success: (model: string, s: { batch: number, requestMs: number, queueMs: number, computeMs: number }) => void
  failure: (model: string, reason: FailureReason) => void
}

/** Reuses a metric when a second RPC server registers on the same registry (tests, restarts). */
function counter (registry: Registry, name: string, help: string, labelNames: string[]): Counter {
  const existing = registry.getSingleMetric(name)
  if (existing instanceof Counter) return existing
  return new Counter({ name, help, labelNames, registers: [registry] })
}

export function createInferenceMetrics (registry: Registry): InferenceMetrics {
  const success = counter(registry, 'astrad_inference_request_success', 'Successful inference requests, by model', ['model'])
  const failure = counter(registry, 'astrad_inference_request_failure', 'Failed inference requests, by model and reason (invalid, rejected, unavailable, deadline, canceled, backend)', ['model', 'reason'])
  const count = counter(registry, 'astrad_inference_count', 'Inferences performed, counting each element of a batch (the leading dimension when the model declares it variable)', ['model'])
  const execCount = counter(registry, 'astrad_inference_exec_count', 'Model executions (one per successful request: astrad does not merge requests into batches)', ['model'])
  const requestUs = counter(registry, 'astrad_inference_request_duration_us', 'Cumulative end-to-end inference request handling time at the edge, microseconds', ['model'])
  const queueUs = counter(registry, 'astrad_inference_queue_duration_us', 'Cumulative time requests waited in replica queues, microseconds', ['model'])
  const computeUs = counter(registry, 'astrad_inference_compute_infer_duration_us', 'Cumulative time spent running the model, microseconds', ['model'])
  const name = 'astrad_inference_request_duration_seconds'
  const existing = registry.getSingleMetric(name)
  const latency = existing instanceof Histogram
    ? existing
    : new Histogram({ name, help: 'Latency of successful inference requests at the edge, by model', labelNames: ['model'], buckets: LATENCY_BUCKETS_S, registers: [registry] })
  return {
    success (model, s) {
      success.inc({ model })
      count.inc({ model }, s.batch)
      execCount.inc({ model })
      requestUs.inc({ model }, Math.round(s.requestMs * 1000))
      queueUs.inc({ model }, Math.round(Math.max(0, s.queueMs) * 1000))
      computeUs.inc({ model }, Math.round(Math.max(0, s.computeMs) * 1000))
      latency.observe({ model }, s.requestMs / 1000)
    },
    failure (model, reason) {
      failure.inc({ model, reason })
    }
  }
}
