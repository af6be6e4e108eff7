/**
 * gpuUtil for the heartbeat: how busy the node's cards were since the last sample, from the run
 * time of the replicas on GPU providers (ReplicaHost.gpuBusyMs) over wall time × cards, 0..1.
 * A busy fraction, not the driver's counter: it is what a request waiting for a card sees, it
 * works alike on every make of card (and on a software Vulkan device), and needs no library.
 */
export class BusySampler {
  private readonly busyMs: () => number
  private readonly cards: () => number
  private last?: { at: number, busy: number }

  constructor (busyMs: () => number, cards: () => number) {
    this.busyMs = busyMs
    this.cards = cards
  }

  /** The busy fraction since the previous call (0 on the first, or when a replica went away). */
  sample (now = performance.now()): number {
    const busy = this.busyMs()
    const last = this.last
    this.last = { at: now, busy }
    if (last == null || now <= last.at) return 0
    const fraction = (busy - last.busy) / ((now - last.at) * Math.max(1, this.cards()))
    return Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0
  }
}
