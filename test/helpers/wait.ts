/**
 * How long a test waits for something that must happen before it calls it a failure. A deadline
 * here only decides when to give up, never how fast astrad must be (speed is measured by
 * `npm run bench:*`): it is generous so the suite passes on a machine at load 8.
 */
export const WAIT_MS = 30_000

/**
 * Polls `check` until it returns a truthy value; after `timeoutMs` fails naming `what` and the
 * last thing seen (the last error thrown, or the last value returned).
 */
export async function waitFor<T> (what: string, check: () => T | Promise<T>, timeoutMs = WAIT_MS, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  let lastValue: unknown
  while (Date.now() < deadline) {
    try {
      const v = await check()
      if (v) return v
      lastValue = v
      last = undefined
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  const seen = last != null ? `last error: ${String(last)}` : `last value: ${describe(lastValue)}`
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${seen})`)
}

function describe (v: unknown): string {
  try {
    const s = JSON.stringify(v)
    return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}…` : s
  } catch {
    return String(v)
  }
}

/** What `p` rejects with; fails (naming `what`) if it resolves. */
export async function rejection (p: Promise<unknown>, what = 'the call'): Promise<Error> {
  let value: unknown
  try {
    value = await p
  } catch (err) {
    return err as Error
  }
  throw new Error(`expected ${what} to reject, it resolved with ${describe(value)}`)
}
