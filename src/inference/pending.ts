import { DeadlineError } from '../serving/types.ts'
import { MAX_TIMER_MS } from './constants.ts'

/**
 * What a queue of inference requests holds per request to end it early (the pool's jobs, the
 * batcher's members): settled at most once, its deadline timer and its caller's abort listener.
 */
export interface Pending {
  readonly enqueuedAt: number
  settled: boolean
  timer?: NodeJS.Timeout
  signal?: AbortSignal
  onAbort?: () => void
}

/** Why a signal aborted: its reason, or a DOMException AbortError when it gave none. */
export function abortReason (signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError')
}

/**
 * Arms `p`'s deadline (epoch ms) and its caller's `signal`: whichever comes first calls `end`
 * with a DeadlineError (saying how long it waited and `where()` it was) or the abort reason.
 * A deadline beyond setTimeout's range arms no timer. `settle(p)` disarms both.
 */
export function armPending (p: Pending, deadline: number, signal: AbortSignal | undefined, where: () => string, end: (err: unknown) => void): void {
  const delay = deadline - Date.now()
  if (delay <= MAX_TIMER_MS) {
    p.timer = setTimeout(() => {
      end(new DeadlineError(`deadline passed after ${Math.round(performance.now() - p.enqueuedAt)} ms ${where()}`))
    }, Math.max(0, delay))
  }
  if (signal !== undefined) {
    p.signal = signal
    p.onAbort = () => { end(abortReason(signal)) }
    signal.addEventListener('abort', p.onAbort, { once: true })
  }
}

/** Marks `p` settled (false if it already was) and drops its timer and abort listener. */
export function settlePending (p: Pending): boolean {
  if (p.settled) return false
  p.settled = true
  clearTimeout(p.timer)
  if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort)
  return true
}
