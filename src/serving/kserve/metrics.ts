import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS_S, METRICS_PREFIX } from './constants.ts'

/**
 * Per-model inference metrics: Triton's `nv_inference_*` set (docs/user_guide/metrics.md of
 * triton-inference-server/server) under the `astrad_inference_` prefix, with Triton's names,
 * labels (`model`, `version`), failure reasons and meanings, so a Triton dashboard works after a
 * rename of the prefix (docs/kserve.md gives the relabelling rule). Like Triton's, the counters
 * carry no `_total` suffix, and a model's series exist, at 0, from the moment the daemon knows
 * the model: a dashboard sees 0 failures, not no data. Only models the backend knows are
 * labelled, so a client cannot blow up the label set with made-up names.
 */

/** Triton's `reason` label values of nv_inference_request_failure. */
export const FAILURE_REASONS = ['REJECTED', 'CANCELED', 'BACKEND', 'OTHER'] as const
export type FailureReason = typeof FAILURE_REASONS[number]

export interface ModelVersion {
  model: string
  version: string
}

/** One successful request, as the edge saw it (milliseconds). */
export interface InferenceSample {
  /** Inferences in the request (Triton's inference_count). */
  batch: number
  requestMs: number
  queueMs: number
  computeInputMs: number
  computeInferMs: number
  computeOutputMs: number
}

export interface InferenceMetricsSources {
  /** The models (at their current version) the edge serves: their series exist from the first scrape. */
  known: () => ModelVersion[]
  /** Requests waiting for a worker in this daemon's replicas (read at scrape). */
  pending?: () => Array<ModelVersion & { count: number }>
}

export interface InferenceMetrics {
  success: (model: string, version: string, s: InferenceSample) => void
  failure: (model: string, version: string, reason: FailureReason) => void
}

interface Inc { inc: (v?: number) => void }

/**
 * A model version's label children, looked up once: a labelled inc() validates its label object on
 * every call. A success adds to `pending` (plain numbers, no prom-client call) and the sums reach
 * the counters at the next scrape (flush): nine counter updates per request cost ~4 µs on the
 * event loop, the additions nothing. The latency histogram is observed at once (its buckets need
 * every sample).
 */
interface Series {
  pending: Pending
  success: Inc
  failure: Record<FailureReason, Inc>
  count: Inc
  exec: Inc
  request: Inc
  queue: Inc
  computeInput: Inc
  computeInfer: Inc
  computeOutput: Inc
  latency: { observe: (v: number) => void }
}

/** One per registry: a second RPC server on the same registry (tests, restarts) shares the metrics and adds its sources. */
/** Successes not yet added to the counters (flushed at scrape). */
interface Pending {
  success: number
  count: number
  request: number
  queue: number
  computeInput: number
  computeInfer: number
  computeOutput: number
}

const noPending = (): Pending => ({ success: 0, count: 0, request: 0, queue: 0, computeInput: 0, computeInfer: 0, computeOutput: 0 })

function flushSeries (s: Series): void {
  const p = s.pending
  if (p.success === 0) return
  s.success.inc(p.success)
  s.exec.inc(p.success)
  s.count.inc(p.count)
  s.request.inc(p.request)
  s.queue.inc(p.queue)
  s.computeInput.inc(p.computeInput)
  s.computeInfer.inc(p.computeInfer)
  s.computeOutput.inc(p.computeOutput)
  s.pending = noPending()
}

interface State {
  series: (model: string, version: string) => Series
  sources: Set<InferenceMetricsSources>
}

const states = new WeakMap<Registry, State>()

function createState (registry: Registry): State {
  const sources = new Set<InferenceMetricsSources>()
  const byModel = new Map<string, Map<string, Series>>()
  const registers = [registry]
  // Every metric makes the known models' series before it is read, whichever is read first.
  // The successes counted since the last scrape reach the counters first.
  const collect = (): void => {
    for (const versions of byModel.values()) for (const s of versions.values()) flushSeries(s)
    for (const s of sources) for (const k of s.known()) series(k.model, k.version)
  }
  const counter = (what: string, help: string, labelNames = ['model', 'version']): Counter =>
    new Counter({ name: METRICS_PREFIX + what, help, labelNames, registers, collect })
  const success = counter('request_success', 'Successful inference requests (a batch counts once), by model and version')
  const failure = counter('request_failure', 'Failed inference requests, by model, version and reason (REJECTED: queue full; CANCELED: the client left; BACKEND: the model failed; OTHER: the rest)', ['model', 'version', 'reason'])
  const count = counter('count', 'Inferences performed, counting each element of a batch (the leading dimension when the model declares it variable)')
  const exec = counter('exec_count', 'Model executions (one per successful request: astrad does not merge requests into batches)')
  const request = counter('request_duration_us', 'Cumulative end-to-end inference request handling time at the edge, microseconds')
  const queue = counter('queue_duration_us', 'Cumulative time requests waited in replica queues, microseconds')
  const computeInput = counter('compute_input_duration_us', 'Cumulative time from the hand-off to a worker until the model starts (inputs to the worker thread, onnxruntime tensors), microseconds')
  const computeInfer = counter('compute_infer_duration_us', 'Cumulative time spent running the model (onnxruntime run), microseconds')
  const computeOutput = counter('compute_output_duration_us', 'Cumulative time from the end of the run until the pool has the outputs (raw bytes, back from the worker thread), microseconds')
  const latency = new Histogram({ name: METRICS_PREFIX + 'request_duration_seconds', help: 'Latency of successful inference requests at the edge, by model and version', labelNames: ['model', 'version'], buckets: LATENCY_BUCKETS_S, registers, collect })
  new Gauge({ // eslint-disable-line no-new
    name: METRICS_PREFIX + 'pending_request_count',
    help: 'Inference requests waiting for a worker in this daemon\'s replicas, by model and version (0 for the models the edge serves; sum over daemons for the cluster)',
    labelNames: ['model', 'version'],
    registers,
    collect () {
      this.reset()
      for (const s of sources) {
        for (const k of s.known()) this.set({ model: k.model, version: k.version }, 0)
      }
      for (const s of sources) {
        for (const p of s.pending?.() ?? []) this.inc({ model: p.model, version: p.version }, p.count)
      }
    }
  })

  function series (model: string, version: string): Series {
    let versions = byModel.get(model)
    if (versions == null) byModel.set(model, versions = new Map())
    let s = versions.get(version)
    if (s != null) return s
    const labels = { model, version }
    const child = (c: Counter): Inc => {
      const ch = c.labels(labels)
      ch.inc(0) // the series exists from now on, at 0
      return ch
    }
    const failures = {} as Record<FailureReason, Inc>
    for (const reason of FAILURE_REASONS) {
      const ch = failure.labels({ ...labels, reason })
      ch.inc(0)
      failures[reason] = ch
    }
    latency.zero(labels)
    s = {
      pending: noPending(),
      success: child(success),
      failure: failures,
      count: child(count),
      exec: child(exec),
      request: child(request),
      queue: child(queue),
      computeInput: child(computeInput),
      computeInfer: child(computeInfer),
      computeOutput: child(computeOutput),
      latency: latency.labels(labels)
    }
    versions.set(version, s)
    return s
  }
  return { series, sources }
}

const us = (ms: number): number => Math.round(Math.max(0, ms) * 1000)

export function createInferenceMetrics (registry: Registry, sources: InferenceMetricsSources): InferenceMetrics {
  let state = states.get(registry)
  if (state == null) states.set(registry, state = createState(registry))
  state.sources.add(sources)
  const { series } = state
  return {
    success (model, version, s) {
      const c = series(model, version)
      const p = c.pending
      p.success++
      p.count += s.batch
      p.request += us(s.requestMs)
      p.queue += us(s.queueMs)
      p.computeInput += us(s.computeInputMs)
      p.computeInfer += us(s.computeInferMs)
      p.computeOutput += us(s.computeOutputMs)
      c.latency.observe(s.requestMs / 1000)
    },
    failure (model, version, reason) {
      series(model, version).failure[reason].inc()
    }
  }
}
