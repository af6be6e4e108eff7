import assert from 'node:assert/strict'
import { runCli } from '../../src/cli/index.ts'

/** Runs the CLI in-process with its output captured. */
export async function run (...args: string[]): Promise<{ code: number, out: string, err: string }> {
  let out = ''
  let err = ''
  const code = await runCli(['node', 'astrad', ...args], { stdout: s => { out += s }, stderr: s => { err += s } })
  return { code, out, err }
}

/** A failure is one line on stderr, never a stack trace. */
export function assertOneLine (r: { err: string }, what: string): void {
  assert.doesNotMatch(r.err, /\n\s+at /, `stack trace for ${what}`)
  assert.equal(r.err.trim().split('\n').length, 1, `one line for ${what}: ${r.err}`)
}
