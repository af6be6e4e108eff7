// Summary statistics for benchmark samples.

export interface Summary {
  n: number
  min: number
  /** Median: mean of the two middle values for an even count. */
  median: number
  /** 90th percentile, nearest rank (ceil(0.9 n)-th smallest). */
  p90: number
  max: number
  mean: number
}

export function summarize (values: number[]): Summary | null {
  const v = values.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  const n = v.length
  if (n === 0) return null
  const at = (i: number): number => v[Math.min(n - 1, Math.max(0, i))] as number
  const median = n % 2 === 1 ? at((n - 1) / 2) : (at(n / 2 - 1) + at(n / 2)) / 2
  return {
    n,
    min: at(0),
    median,
    p90: at(Math.ceil(0.9 * n) - 1),
    max: at(n - 1),
    mean: v.reduce((a, b) => a + b, 0) / n
  }
}

export function round (x: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

export function ratio (a: number | undefined, b: number | undefined): number | null {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null
  return a / b
}
