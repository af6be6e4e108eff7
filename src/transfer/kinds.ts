import { z } from 'zod'
import { defineKind } from '../clusterlog/index.ts'
import { manifestSchema, type Manifest } from './manifest.ts'

/** A model known to the cluster: its manifest (key = its id) and who added it when. */
export interface ModelRecord {
  manifest: Manifest
  name: string
  addedAt: number
  addedBy: string
}

export const modelKind = defineKind<ModelRecord>('model', z.object({
  manifest: manifestSchema,
  name: z.string().min(1).max(200),
  addedAt: z.number().int().min(0),
  addedBy: z.string().min(1).max(128)
}).strict() as z.ZodType<ModelRecord>)

/**
 * The cluster-wide P2P cap (bytes/s; null = none), key `cluster`. Every node polls it; the
 * public mailbox issue will deliver it as a `bandwidth` notice instead.
 */
export interface ClusterLimits {
  upload: number | null
  download: number | null
}

export const CLUSTER_LIMITS_KEY = 'cluster'

export const clusterLimitsKind = defineKind<ClusterLimits>('transfer-limits', z.object({
  upload: z.number().int().min(1).max(2 ** 40).nullable(),
  download: z.number().int().min(1).max(2 ** 40).nullable()
}).strict())
