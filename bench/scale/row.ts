/** One row of `npm run bench:scale`: one goal of issue 14, as a part under bench/scale/ measured it. */
export interface ScaleRow {
  goal: string
  figure: string
  target: string
  /** The same measurement for today's design (where it can still run), in the same run. */
  today: string
  /** null: not measured (the part failed or was skipped). */
  met: boolean | null
  detail?: Record<string, unknown>
}

export interface ScalePartOptions {
  quick: boolean
  log: (line: string) => void
}

export type ScalePart = (opts: ScalePartOptions) => Promise<ScaleRow[]>
