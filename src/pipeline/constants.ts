/** Pipeline limits, each with its reason (docs/pipelines.md "Bounds"). */

/** Stages per pipeline: each stage is an app with its own replicas on the fleet. */
export const MAX_STAGES = 16
/** Steps per pipeline. */
export const MAX_STEPS = 32
/** Cases of one switch or split step. */
export const MAX_CASES = 16
/** Tensor references in one step's inputs (a model's inputs; KServe caps a request at 64 tensors). */
export const MAX_STEP_INPUTS = 64
/** Outputs a pipeline names. */
export const MAX_OUTPUTS = 64
/** Stage calls one request has in flight at once: the fan-out of an ensemble. */
export const MAX_PARALLEL_CALLS = 8
/**
 * Bytes of tensors one request holds between stages (its inputs and every answer kept for later
 * steps): 4 × the largest binary request body (64 MiB), so a pipeline cannot make a request grow
 * without bound inside the scheduler.
 */
export const MAX_HELD_BYTES = 256 * 1024 * 1024
/**
 * Stage names: short, without '.', so `{pipeline}.{stage}` is an app name (≤ 63 characters).
 */
export const STAGE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,23}$/
/** Step names: as stage names (they appear in references `STEP.TENSOR`). */
export const STEP_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,23}$/
/** A reference to the client's request tensors. */
export const REQUEST_SOURCE = '$request'
/** The KServe platform string of a pipeline. */
export const PIPELINE_PLATFORM = 'astrad_pipeline'
/** Comparison operators of a switch condition. */
export const CONDITION_OPS = ['==', '!=', '<', '<=', '>', '>='] as const
/** How a tensor condition reduces the tensor's elements. */
export const CONDITION_REDUCERS = ['any', 'all', 'max', 'min', 'mean'] as const
