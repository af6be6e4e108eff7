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
  // Per-model children, looked up once: labelled inc() hashes its label object on every call
  // (seven times per request here).
  const children = new Map<string, { success: { inc: (v?: number) => void }, count: { inc: (v?: number) => void }, exec: { inc: (v?: number) => void }, request: { inc: (v?: number) => void }, queue: { inc: (v?: number) => void }, compute: { inc: (v?: number) => void }, latency: { observe: (v: number) => void } }>()
  const of = (model: string): NonNullable<ReturnType<typeof children.get>> => {
    let c = children.get(model)
    if (c == null) {
      c = {
        success: success.labels({ model }),
        count: count.labels({ model }),
        exec: execCount.labels({ model }),
        request: requestUs.labels({ model }),
        queue: queueUs.labels({ model }),
        compute: computeUs.labels({ model }),
        latency: latency.labels({ model })
      }
      children.set(model, c)
    }
    return c
  }
  return {
    success (model, s) {
      const c = of(model)
      c.success.inc()
      c.count.inc(s.batch)
      c.exec.inc()
      c.request.inc(Math.round(s.requestMs * 1000))
      c.queue.inc(Math.round(Math.max(0, s.queueMs) * 1000))
      c.compute.inc(Math.round(Math.max(0, s.computeMs) * 1000))
      c.latency.observe(s.requestMs / 1000)
    },
    failure (model, reason) {
      failure.inc({ model, reason })
    }
  }
}
