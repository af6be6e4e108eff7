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
