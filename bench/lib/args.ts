import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'

/** A bad command line: message only, exit 2. */
export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/**
 * Strict flag parsing for the benchmarks (node:util parseArgs, `--flag value` and
 * `--flag=value`): an unknown flag or a missing value is a UsageError with the usage text.
 */
export function parseFlags<O extends ParseArgsOptionsConfig> (argv: string[], options: O, usage: string): ReturnType<typeof parseArgs<{ args: string[], options: O, strict: true }>>['values'] {
  try {
    return parseArgs({ args: argv, options, strict: true }).values
  } catch (err) {
    throw new UsageError(`${err instanceof Error ? err.message : String(err)}\n${usage}`)
  }
}

/** An integer flag value in min..max. */
export function intFlag (flag: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v)
  if (v === undefined || v.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} expects an integer in ${min}..${max}, got ${v ?? 'nothing'}`)
  return n
}
