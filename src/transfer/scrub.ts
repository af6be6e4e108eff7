import { Counter, type Registry } from 'prom-client'
import type { Logger } from '../util/logger.ts'
import { sleep } from '../util/time.ts'
import { LifecycleError, errorMessage } from '../util/errors.ts'
import type { Bitfield } from './bitfield.ts'
import { TokenBucket } from './limiter.ts'
import type { VerifyResult } from './store.ts'
import { SCRUB_INTERVAL_MS, SCRUB_LOOK_MAX_MS, SCRUB_PASS_PAUSE_MS } from './constants.ts'

/** The part of the piece store the scrub uses. */
export interface ScrubStore {
  list: () => Array<{ id: string, have: Bitfield }>
  verifyPiece: (id: string, index: number, options: { take?: (n: number, signal?: AbortSignal) => Promise<void>, signal?: AbortSignal }) => Promise<VerifyResult>
  /** When a held piece was last hashed (wall-clock ms). */
  hashedAt: (id: string, index: number) => number | undefined
}

export interface ScrubComponents {
  store: ScrubStore
  logger: Logger
  registry?: Registry
}

export interface ScrubStats {
  /** Passes over the held pieces that were due since start. */
  passes: number
  /** Pieces re-hashed and found good / rotten (and dropped) since start. */
  ok: number
  rotten: number
}

/**
 * Re-hashes every held piece once per interval (a piece is due when its last hash — when it was
 * written, served after a change, or scrubbed — is older than that), at a bounded rate (a token
 * bucket on the bytes read), as HDFS's block scanner does. Between passes it sleeps until the
 * next piece falls due, so a node whose pieces are fresh does no work. A piece that fails is
 * dropped by the store, which emits `rotten`: the model turns incomplete and its owner fetches
 * the piece again from peers, like any missing piece.
 */
export class Scrubber {
  private readonly components: ScrubComponents
  private readonly bucket: TokenBucket
  private readonly bytes?: Counter
  private controller?: AbortController
  private running?: Promise<void>
  readonly stats: ScrubStats = { passes: 0, ok: 0, rotten: 0 }

  private readonly intervalMs: number

  /** `intervalMs`: how old a piece's last hash may grow before it is re-hashed (0: always, a continuous scrub). */
  constructor (components: ScrubComponents, init: { rateBps: number, intervalMs?: number }) {
    if (!(init.rateBps > 0) || !Number.isFinite(init.rateBps)) throw new RangeError(`scrub rate must be a positive finite number of bytes/s, got ${String(init.rateBps)}`)
    const intervalMs = init.intervalMs ?? SCRUB_INTERVAL_MS
    if (!(intervalMs >= 0) || !Number.isFinite(intervalMs)) throw new RangeError(`scrub interval must be a finite number of ms ≥ 0, got ${String(init.intervalMs)}`)
    this.intervalMs = intervalMs
    this.components = components
    this.bucket = new TokenBucket({ rate: init.rateBps })
    if (components.registry != null) {
      this.bytes = new Counter({ name: 'astrad_transfer_scrub_bytes_total', help: 'Bytes of held pieces re-hashed by the background scrub', registers: [components.registry] })
    }
  }

  get rate (): number { return this.bucket.rate }

  start (): void {
    if (this.running != null) return
    const controller = this.controller = new AbortController()
    this.running = this.loop(controller.signal).catch((err: unknown) => {
      if (!controller.signal.aborted) this.components.logger.warn({ err: errorMessage(err) }, 'scrub stopped')
    })
  }

  async stop (): Promise<void> {
    this.controller?.abort(new LifecycleError('scrub stopping'))
    await this.running
    this.running = undefined
  }

  private async loop (signal: AbortSignal): Promise<void> {
    const { logger } = this.components
    const take = async (n: number, s?: AbortSignal): Promise<void> => {
      await this.bucket.take(n, s)
      this.bytes?.inc(n)
    }
    while (!signal.aborted) {
      let nextDue = Date.now()
      try {
        nextDue = await this.pass(signal, take)
      } catch (err) {
        if (signal.aborted || err instanceof LifecycleError) throw err
        // Whatever it was, the scrub must not end for good: say so, rest, start over.
        logger.warn({ err: errorMessage(err) }, 'scrub pass failed; starting over')
      }
      // Sleep until the next piece falls due; look again at least every SCRUB_LOOK_MAX_MS
      // (pieces added meanwhile, a clock step) and rest at least SCRUB_PASS_PAUSE_MS.
      const wait = Math.min(Math.max(nextDue - Date.now(), SCRUB_PASS_PAUSE_MS), SCRUB_LOOK_MAX_MS)
      await sleep(wait, signal)
    }
  }

  /** Re-hashes the pieces that are due; returns when the next one falls due (wall-clock ms). */
  private async pass (signal: AbortSignal, take: (n: number, s?: AbortSignal) => Promise<void>): Promise<number> {
    const { store, logger } = this.components
    // A piece that arrives from now on was hashed on arrival: it falls due an interval from now at the earliest.
    let nextDue = Date.now() + this.intervalMs
    for (const model of store.list()) {
      for (const index of model.have.indices()) {
        signal.throwIfAborted()
        const hashedAt = store.hashedAt(model.id, index)
        if (hashedAt == null) continue
        const due = hashedAt + this.intervalMs
        if (due > Date.now()) {
          nextDue = Math.min(nextDue, due)
          continue
        }
        let result: VerifyResult
        try {
          result = await store.verifyPiece(model.id, index, { take, signal })
        } catch (err) {
          if (signal.aborted || err instanceof LifecycleError) throw err
          // An I/O error reading one piece must not end the scrub: say so, go on.
          logger.warn({ model: model.id, piece: index, err: errorMessage(err) }, 'scrub could not read a piece')
          continue
        }
        if (result === 'ok') {
          this.stats.ok++
          nextDue = Math.min(nextDue, (store.hashedAt(model.id, index) ?? Date.now()) + this.intervalMs)
        } else if (result === 'rotten') this.stats.rotten++
      }
    }
    this.stats.passes++
    return nextDue
  }
}
