/** A clock that tests can replace (the membership state machine runs on a fake one). */
export interface Clock {
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** A manually advanced clock for unit tests. */
export class FakeClock implements Clock {
  private t: number
  constructor (t = 1_700_000_000_000) { this.t = t }
  now (): number { return this.t }
  advance (ms: number): void { this.t += ms }
}

/** Exponential backoff with full jitter: attempt 0 → base, doubling up to max. */
export function backoffDelay (attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30))
  return Math.round(ceiling / 2 + random() * ceiling / 2)
}

/** Sleep that rejects when the signal aborts. */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  const { setTimeout: wait } = await import('node:timers/promises')
  await wait(ms, undefined, { signal })
}
