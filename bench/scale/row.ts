// One row of `npm run bench:scale` (issue 14): one goal, its figure, its target and the same row
// for today's design where it can still run. Each part of the benchmark (bench/scale/*.ts)
// exports `run(opts): Promise<ScaleRow[]>`; bench/scale.ts prints them and counts the goals.

export interface ScaleRow {
  goal: string
  figure: string
  target: string
  /** The same measure for today's design, where it can run. */
  today: string
  /** null: not measured (the part was skipped or failed). */
  met: boolean | null
  detail?: Record<string, unknown>
}

export interface ScalePartOptions {
  quick: boolean
  log: (line: string) => void
}

export type ScalePart = (opts: ScalePartOptions) => Promise<ScaleRow[]>
