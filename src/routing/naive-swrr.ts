import { MAX_TOTAL_SCALED_WEIGHT } from './constants.ts'
import { scaleWeight, type Skip } from './quantize.ts'

interface Peer {
  /** Scaled integer weight. */
  weight: number
  current: number
  down: boolean
}

/**
 * nginx's smooth weighted round-robin as nginx writes it (ngx_http_upstream_get_peer): O(n) per
 * pick. Every peer that is not down or skipped adds its weight to its current weight and to the
 * total; the first peer with the largest current weight wins and loses the total. Peers are kept
 * in insertion order (a Map): a deleted and re-added id goes last.
 *
 * The reference that Swrr is proven equal to, and the baseline of the pick-cost benchmark. Runs
 * on the same scaled integer weights as Swrr (scaleWeight), so both are exact.
 */
export class NaiveSwrr {
  private readonly peers = new Map<string, Peer>()
  private totalScaled = 0

  get size (): number { return this.peers.size }

  /** Adds a node (current weight 0, last in order) or changes its weight (current kept). */
  set (id: string, weight: number): void {
    const scaled = scaleWeight(weight)
    const peer = this.peers.get(id)
    const next = this.totalScaled - (peer?.weight ?? 0) + scaled
    if (next > MAX_TOTAL_SCALED_WEIGHT) throw new RangeError('total weight too large')
    this.totalScaled = next
    if (peer == null) this.peers.set(id, { weight: scaled, current: 0, down: false })
    else peer.weight = scaled
  }

  delete (id: string): void {
    const peer = this.peers.get(id)
    if (peer == null) return
    this.totalScaled -= peer.weight
    this.peers.delete(id)
  }

  has (id: string): boolean { return this.peers.has(id) }

  /** Marks a node down (nginx `down`): skipped by every pick until marked up again. */
  setDown (id: string, down: boolean): void {
    const peer = this.peers.get(id)
    if (peer != null) peer.down = down
  }

  pick (skip?: Skip, accept?: (id: string) => boolean): string | undefined {
    const skipped = typeof skip === 'function' ? skip : skip == null ? undefined : new Set(skip)
    if (accept != null) return this.pickAccepting(skipped, accept)
    let best: Peer | undefined
    let bestId: string | undefined
    let total = 0
    for (const [id, peer] of this.peers) {
      if (peer.down) continue
      if (skipped != null && (typeof skipped === 'function' ? skipped(id) : skipped.has(id))) continue
      peer.current += peer.weight
      total += peer.weight
      if (best == null || peer.current > best.current) {
        best = peer
        bestId = id
      }
    }
    if (best == null) return undefined
    best.current -= total
    return bestId
  }

  /** The same loop; a refused winner sits the pick out as if skipped and the next is asked. */
  private pickAccepting (skipped: ReadonlySet<string> | ((id: string) => boolean) | undefined, accept: (id: string) => boolean): string | undefined {
    const live: Array<[string, Peer]> = []
    let total = 0
    for (const [id, peer] of this.peers) {
      if (peer.down) continue
      if (skipped != null && (typeof skipped === 'function' ? skipped(id) : skipped.has(id))) continue
      peer.current += peer.weight
      total += peer.weight
      live.push([id, peer])
    }
    for (;;) {
      let best: [string, Peer] | undefined
      for (const entry of live) if (best == null || entry[1].current > best[1].current) best = entry
      if (best == null) return undefined
      if (accept(best[0])) {
        best[1].current -= total
        return best[0]
      }
      best[1].current -= best[1].weight
      total -= best[1].weight
      live.splice(live.indexOf(best), 1)
    }
  }

  /** Current weights in insertion order, scaled (for tests). */
  currents (): Array<[string, number]> {
    return [...this.peers].map(([id, p]) => [id, p.current])
  }
}
