import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Closed-loop load for tests: `concurrency` workers each send one request at a time and count the
 * answers by status (-1: no HTTP answer). Bounded three ways so a failing test can never leave it
 * running: each request has its own deadline, the whole load stops by itself after `maxMs`, and
 * every load a `LoadSet` started is stopped by its `stopAll()` (call it in `after`). A worker whose
 * request got no answer (daemon gone, port closed) waits before the next one instead of spinning.
 */
export interface Load {
  /** Requests answered so far (any status). */
  done: () => number
  /** Stops sending, waits for the requests in flight, and returns the count per status. */
  stop: () => Promise<Map<number, number>>
}

export interface LoadOptions {
  concurrency: number
  /** The load stops by itself after this long. @default 120_000 */
  maxMs?: number
  /** Each request's deadline. @default 30_000 */
  requestTimeoutMs?: number
}

/** Sends request number `i` of worker `w`; resolves to the HTTP status. */
export type SendRequest = (i: number, w: number, signal: AbortSignal) => Promise<number>

const NO_ANSWER = -1
const BACKOFF_MS = 100

export class LoadSet {
  private readonly loads = new Set<Load>()

  start (send: SendRequest, options: LoadOptions): Load {
    let running = true
    let done = 0
    const statuses = new Map<number, number>()
    const timer = setTimeout(() => { running = false }, options.maxMs ?? 120_000)
    const workers = Array.from({ length: options.concurrency }, async (_, w) => {
      for (let i = 0; running; i++) {
        const status = await send(i, w, AbortSignal.timeout(options.requestTimeoutMs ?? 30_000)).catch(() => NO_ANSWER)
        statuses.set(status, (statuses.get(status) ?? 0) + 1)
        done++
        if (status === NO_ANSWER && running) await sleep(BACKOFF_MS)
      }
    })
    const load: Load = {
      done: () => done,
      stop: async () => {
        running = false
        clearTimeout(timer)
        await Promise.all(workers)
        this.loads.delete(load)
        return statuses
      }
    }
    this.loads.add(load)
    return load
  }

  /** Stops every load still running (for `after`/`finally`, whatever failed). */
  async stopAll (): Promise<void> {
    await Promise.all([...this.loads].map(async l => await l.stop()))
  }
}
