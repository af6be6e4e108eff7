import { setTimeout as wait } from 'node:timers/promises'

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

/**
 * Sleep that rejects when the signal aborts. (A static import: the single executable has no
 * loader for a dynamic import(), which failed there with "A dynamic import callback was not
 * specified" and stopped the scrub and the probe retries.)
 */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  await wait(ms, undefined, { signal })
}
