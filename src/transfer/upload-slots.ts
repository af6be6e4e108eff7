import { AstradError } from '../util/errors.ts'

interface Waiter {
  peer: string
  resolve: (release: () => void) => void
  reject: (err: unknown) => void
  timer: NodeJS.Timeout
  signal?: AbortSignal
  onAbort?: () => void
}

/**
 * A few upload slots, and a fair queue for the rest. With one slot per request (32 at once)
 * a node splits its upload limit over every requester and no piece finishes early, so nobody
 * has anything to pass on (bench:transfer: a 32 MiB model took 7.3 × its floor). A handful of
 * slots finish pieces one after another at the full rate instead.
 *
 * The queue is round robin over peers (each peer's requests in order), so one peer's pipeline
 * cannot hold every slot. A request that waits longer than `maxWaitMs`, or finds `maxQueued`
 * waiting, is refused with ERR_BUSY: its peer goes elsewhere rather than stall.
 */
export class UploadSlots {
  private readonly slots: number
  private readonly maxQueued: number
  private readonly maxWaitMs: number
  private active = 0
  /** Per peer, its waiting requests in arrival order; Map order is the round-robin order. */
  private readonly queues = new Map<string, Waiter[]>()
  private queued = 0

  constructor (init: { slots: number, maxQueued: number, maxWaitMs: number }) {
    if (!Number.isInteger(init.slots) || init.slots < 1) throw new RangeError(`upload slots must be a positive integer, got ${init.slots}`)
    this.slots = init.slots
    this.maxQueued = init.maxQueued
    this.maxWaitMs = init.maxWaitMs
  }

  get inUse (): number { return this.active }
  get waiting (): number { return this.queued }

  /** Resolves with a release function once a slot is this request's; rejects ERR_BUSY or on abort. */
  async acquire (peer: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted()
    if (this.active < this.slots && this.queued === 0) {
      this.active++
      return this.releaser()
    }
    if (this.queued >= this.maxQueued) throw new AstradError(`${this.queued} uploads queued; try another peer`, 'ERR_BUSY')
    return await new Promise<() => void>((resolve, reject) => {
      const w: Waiter = {
        peer,
        resolve,
        reject,
        signal,
        timer: setTimeout(() => {
          this.remove(w)
          reject(new AstradError(`no upload slot within ${this.maxWaitMs} ms; try another peer`, 'ERR_BUSY'))
        }, this.maxWaitMs)
      }
      if (signal != null) {
        w.onAbort = () => {
          this.remove(w)
          reject(signal.reason)
        }
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      let q = this.queues.get(peer)
      if (q == null) this.queues.set(peer, q = [])
      q.push(w)
      this.queued++
    })
  }

  private releaser (): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      this.active--
      this.grant()
    }
  }

  /** Hands free slots to the next peers in round-robin order. */
  private grant (): void {
    while (this.active < this.slots && this.queued > 0) {
      const [peer, q] = this.queues.entries().next().value!
      const w = q.shift()!
      // The peer goes to the back of the rotation (if it still waits for more).
      this.queues.delete(peer)
      if (q.length > 0) this.queues.set(peer, q)
      this.queued--
      this.settle(w)
      this.active++
      w.resolve(this.releaser())
    }
  }

  private remove (w: Waiter): void {
    const q = this.queues.get(w.peer)
    const i = q?.indexOf(w) ?? -1
    if (q == null || i < 0) return
    q.splice(i, 1)
    if (q.length === 0) this.queues.delete(w.peer)
    this.queued--
    this.settle(w)
  }

  private settle (w: Waiter): void {
    clearTimeout(w.timer)
    if (w.onAbort != null) w.signal?.removeEventListener('abort', w.onAbort)
  }
}
