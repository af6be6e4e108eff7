import { z } from 'zod'
import { DEFAULT_QUEUE_DELAY_MS, MAX_BATCH_SIZE, MAX_PREFERRED_BATCH_SIZES, MAX_QUEUE_DELAY_MS } from './constants.ts'

/** An app's `batching` block (docs/batching.md), defaults filled in. Absent: no batching. */
export interface BatchingSpec {
  /** Rows (the sum of the members' axis 0) one run may hold at most. */
  maxBatchSize: number
  /** Batch sizes to dispatch at as soon as one is reached (ascending, each ≤ maxBatchSize). */
  preferredBatchSizes?: number[]
  /** How long the oldest waiting request may wait for a batch to fill once a worker is free. */
  maxQueueDelayMs: number
}

export const batchingSchema = z.object({
  maxBatchSize: z.number().int().min(2).max(MAX_BATCH_SIZE),
  preferredBatchSizes: z.array(z.number().int().min(1).max(MAX_BATCH_SIZE)).min(1).max(MAX_PREFERRED_BATCH_SIZES).optional(),
  maxQueueDelayMs: z.number().int().min(0).max(MAX_QUEUE_DELAY_MS).default(DEFAULT_QUEUE_DELAY_MS)
}).strict().superRefine((b, ctx) => {
  const sizes = b.preferredBatchSizes ?? []
  sizes.forEach((size, i) => {
    if (size > b.maxBatchSize) ctx.addIssue({ code: 'custom', path: ['preferredBatchSizes', i], message: `must be ≤ maxBatchSize (${b.maxBatchSize})` })
    else if (i > 0 && size <= sizes[i - 1]!) ctx.addIssue({ code: 'custom', path: ['preferredBatchSizes', i], message: `must be above the size before it (${sizes[i - 1]!}): list them ascending, each once` })
  })
})

/** The block's normal form as one string: two specs batch the same way iff their keys are equal. */
export function batchingKey (b: BatchingSpec | undefined): string {
  if (b == null) return ''
  return `${b.maxBatchSize}/${(b.preferredBatchSizes ?? []).join(',')}/${b.maxQueueDelayMs}`
}
