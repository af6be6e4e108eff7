import { Counter, type Registry } from 'prom-client'
import type { Logger } from '../util/logger.ts'
import { sleep } from '../util/time.ts'
import { LifecycleError, errorMessage } from '../util/errors.ts'
import type { Bitfield } from './bitfield.ts'
import { TokenBucket } from './limiter.ts'
import type { VerifyResult } from './store.ts'
import { SCRUB_PASS_PAUSE_MS } from './constants.ts'

/** The part of the piece store the scrub uses. */
export interface ScrubStore {
  list: () => Array<{ id: string, have: Bitfield }>
  verifyPiece: (id: string, index: number, options: { take?: (n: number, signal?: AbortSignal) => Promise<void>, signal?: AbortSignal }) => Promise<VerifyResult>
}

export interface ScrubComponents {
  store: ScrubStore
  logger: Logger
  registry?: Registry
}

export interface ScrubStats {
  /** Full passes over every held piece since start. */
  passes: number
  /** Pieces re-hashed and found good / rotten (and dropped) since start. */
  ok: number
  rotten: number
}

/**
 * Re-hashes every held piece, over and over, at a bounded rate (a token bucket on the bytes
 * read). A piece that fails is dropped by the store, which emits `rotten`: the model turns
 * incomplete and its owner fetches the piece again from peers, like any missing piece.
 */
export class Scrubber {
  private readonly components: ScrubComponents
  private readonly bucket: TokenBucket
  private readonly bytes?: Counter
  private controller?: AbortController
  private running?: Promise<void>
  readonly stats: ScrubStats = { passes: 0, ok: 0, rotten: 0 }

  constructor (components: ScrubComponents, init: { rateBps: number }) {
    if (!(init.rateBps > 0) || !Number.isFinite(init.rateBps)) throw new RangeError(`scrub rate must be a positive finite number of bytes/s, got ${String(init.rateBps)}`)
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
      try {
        await this.pass(signal, take)
      } catch (err) {
        if (signal.aborted || err instanceof LifecycleError) throw err
        // Whatever it was, the scrub must not end for good: say so, rest, start over.
        logger.warn({ err: errorMessage(err) }, 'scrub pass failed; starting over')
      }
      await sleep(SCRUB_PASS_PAUSE_MS, signal)
    }
  }

  private async pass (signal: AbortSignal, take: (n: number, s?: AbortSignal) => Promise<void>): Promise<void> {
    const { store, logger } = this.components
    for (const model of store.list()) {
      for (const index of model.have.indices()) {
        signal.throwIfAborted()
        let result: VerifyResult
        try {
          result = await store.verifyPiece(model.id, index, { take, signal })
        } catch (err) {
          if (signal.aborted || err instanceof LifecycleError) throw err
          // An I/O error reading one piece must not end the scrub: say so, go on.
          logger.warn({ model: model.id, piece: index, err: errorMessage(err) }, 'scrub could not read a piece')
          continue
        }
        if (result === 'ok') this.stats.ok++
        else if (result === 'rotten') this.stats.rotten++
      }
    }
    this.stats.passes++
  }
}
