import { MAX_TOTAL_SCALED_WEIGHT, REBASE_PICKS } from './constants.ts'
import { scaleWeight, type Skip } from './quantize.ts'

/** Slot states. A frozen slot (down or skipped) keeps its current weight in `b` as is. */
const FREE = 0
const ACTIVE = 1
const DOWN = 2
const SKIPPED = 3

const INITIAL_CAPACITY = 16

/**
 * Smooth weighted round-robin giving exactly nginx's sequence ({a:5, b:1, c:1} → a a b a c a a;
 * ties go to the node added first), with picks in O(log n) amortized instead of nginx's O(n).
 *
 * Construction. nginx adds every live node's weight to its current weight on every pick, so
 * between two changes a node's current weight is a line in the pick count T:
 * `current = w × T + b`. A pick only moves the winner's intercept (b -= total); a set, delete,
 * down or skip touches one node. The largest current weight is kept by a *kinetic tournament*:
 * a complete binary tree over node slots where every inner node stores the winner of its
 * subtree at the present T and the first T at which that could change (when the loser's line,
 * if steeper, catches up: T ≥ (b_winner − b_loser) / (w_loser − w_winner)). A pick advances T
 * by one, replays only the inner nodes whose certificate expired, reads the root and updates
 * the winner's path. Comparisons are exact (integers below 2^53); certificate times are
 * rounded down, so a certificate can expire early (a wasted check), never late.
 *
 * Skipped and down nodes are frozen: their current weight is stored as is and their leaf is
 * empty, so they neither gain weight nor count in the total, as nginx's down/tried peers.
 * test/unit/routing-swrr.test.ts checks equality with NaiveSwrr (nginx's loop) over random
 * weights, sets, deletes, downs and skips.
 */
export class Swrr {
  private readonly slots = new Map<string, number>()
  private ids: Array<string | undefined> = []
  /** Per slot: scaled integer weight, intercept (or frozen current weight), insertion order. */
  private w: Float64Array
  private b: Float64Array
  private seq: Float64Array
  private state: Uint8Array
  /** Per inner node (1 … cap−1): winning slot (−1 = none) and certificate expiry (a T). */
  private win: Int32Array
  private exp: Float64Array
  private cap: number
  /** Slots ever used (the high-water mark) and freed ones for reuse. */
  private used = 0
  private readonly free: number[] = []
  /** Picks since the last rebase. */
  private t = 0
  private nextSeq = 0
  /** Sum of scaled weights of active nodes (what the winner loses) and of all nodes. */
  private activeTotal = 0
  private allTotal = 0
  /** Inner nodes recomputed because a certificate expired (a cost counter for benchmarks). */
  events = 0

  constructor () {
    this.cap = INITIAL_CAPACITY
    this.w = new Float64Array(this.cap)
    this.b = new Float64Array(this.cap)
    this.seq = new Float64Array(this.cap)
    this.state = new Uint8Array(this.cap)
    this.win = new Int32Array(this.cap).fill(-1)
    this.exp = new Float64Array(this.cap).fill(Infinity)
  }

  /** Nodes in the set, down ones included. */
  get size (): number { return this.slots.size }

  has (id: string): boolean { return this.slots.has(id) }

  /**
   * Adds a node (current weight 0, last in tie order) or changes its weight (current weight
   * kept, as a weight change between picks does in nginx). The weight is scaled to an integer
   * (scaleWeight): integers are exact, reals are rounded to 0.001.
   */
  set (id: string, weight: number): void {
    const scaled = scaleWeight(weight)
    const slot = this.slots.get(id)
    const next = this.allTotal - (slot == null ? 0 : this.w[slot] as number) + scaled
    if (next > MAX_TOTAL_SCALED_WEIGHT) throw new RangeError('total weight too large')
    this.allTotal = next
    if (slot == null) {
      const s = this.alloc()
      this.slots.set(id, s)
      this.ids[s] = id
      this.w[s] = scaled
      this.b[s] = -scaled * this.t
      this.seq[s] = this.nextSeq++
      this.state[s] = ACTIVE
      this.activeTotal += scaled
      this.updateLeaf(s)
      return
    }
    const old = this.w[slot] as number
    if (this.state[slot] === ACTIVE) {
      const current = old * this.t + (this.b[slot] as number)
      this.w[slot] = scaled
      this.b[slot] = current - scaled * this.t
      this.activeTotal += scaled - old
      this.updateLeaf(slot)
    } else {
      this.w[slot] = scaled
    }
  }

  delete (id: string): void {
    const slot = this.slots.get(id)
    if (slot == null) return
    this.slots.delete(id)
    this.allTotal -= this.w[slot] as number
    const wasActive = this.state[slot] === ACTIVE
    if (wasActive) this.activeTotal -= this.w[slot] as number
    this.state[slot] = FREE
    this.ids[slot] = undefined
    this.free.push(slot)
    if (wasActive) this.updateLeaf(slot)
  }

  /**
   * Marks a node down (nginx `down`, or ejected): left out of every pick, its current weight
   * frozen, until marked up again. O(log n).
   */
  setDown (id: string, down: boolean): void {
    const slot = this.slots.get(id)
    if (slot == null) return
    const st = this.state[slot]
    if (down && st === ACTIVE) {
      this.freeze(slot, DOWN)
    } else if (!down && st === DOWN) {
      this.thaw(slot)
    }
  }

  isDown (id: string): boolean {
    const slot = this.slots.get(id)
    return slot != null && this.state[slot] === DOWN
  }

  /**
   * The next node in nginx's order, or undefined when every node is down, skipped or refused.
   * Skipped nodes sit this pick out exactly like nginx's down peers. O(log n) amortized, plus
   * O(k log n) for k skipped ids given as a set or array (a predicate is asked about every node).
   *
   * `accept` is asked about the winner only; a refused winner sits the pick out like a skipped
   * node and the next one is asked (nginx's max_conns, checked lazily: a node over its limit
   * that would not have won still gains weight). O(log n) per refusal.
   */
  pick (skip?: Skip, accept?: (id: string) => boolean): string | undefined {
    if (this.slots.size === 0) return undefined
    if (this.t >= REBASE_PICKS) this.rebase()
    const frozen: number[] = []
    if (typeof skip === 'function') {
      for (let s = 0; s < this.used; s++) {
        if (this.state[s] === ACTIVE && skip(this.ids[s] as string)) {
          this.freeze(s, SKIPPED)
          frozen.push(s)
        }
      }
    } else if (skip != null) {
      for (const id of skip) {
        const s = this.slots.get(id)
        if (s != null && this.state[s] === ACTIVE) {
          this.freeze(s, SKIPPED)
          frozen.push(s)
        }
      }
    }
    this.t++
    this.refresh(1)
    let best = this.win[1] as number
    while (best >= 0 && accept != null && !accept(this.ids[best] as string)) {
      // Refused: back to its current weight before this pick, out of the tree for this pick.
      this.b[best] = (this.b[best] as number) - (this.w[best] as number)
      this.freeze(best, SKIPPED)
      frozen.push(best)
      best = this.win[1] as number
    }
    if (best >= 0) {
      this.b[best] = (this.b[best] as number) - this.activeTotal
      this.updateLeaf(best)
    }
    for (const s of frozen) this.thaw(s)
    return best >= 0 ? this.ids[best] : undefined
  }

  /** Current weights in insertion order, scaled (for tests: equal to NaiveSwrr's). */
  currents (): Array<[string, number]> {
    const out: Array<[number, string, number]> = []
    for (const [id, s] of this.slots) out.push([this.seq[s] as number, id, this.currentOf(s)])
    return out.sort((x, y) => x[0] - y[0]).map(([, id, c]) => [id, c])
  }

  private currentOf (s: number): number {
    const b = this.b[s] as number
    return this.state[s] === ACTIVE ? (this.w[s] as number) * this.t + b : b
  }

  /** Stores the current weight as is and empties the leaf. */
  private freeze (s: number, as: typeof DOWN | typeof SKIPPED): void {
    this.b[s] = (this.w[s] as number) * this.t + (this.b[s] as number)
    this.state[s] = as
    this.activeTotal -= this.w[s] as number
    this.updateLeaf(s)
  }

  /** Back to a line through the frozen current weight at the present T. */
  private thaw (s: number): void {
    this.b[s] = (this.b[s] as number) - (this.w[s] as number) * this.t
    this.state[s] = ACTIVE
    this.activeTotal += this.w[s] as number
    this.updateLeaf(s)
  }

  private alloc (): number {
    const reused = this.free.pop()
    if (reused != null) return reused
    if (this.used === this.cap) this.grow()
    return this.used++
  }

  /** Doubles the slot capacity and rebuilds the tree (amortized O(1) per added node). */
  private grow (): void {
    const cap = this.cap * 2
    const copy = <T extends Float64Array | Uint8Array>(from: T, to: T): T => { to.set(from); return to }
    this.w = copy(this.w, new Float64Array(cap))
    this.b = copy(this.b, new Float64Array(cap))
    this.seq = copy(this.seq, new Float64Array(cap))
    this.state = copy(this.state, new Uint8Array(cap))
    this.win = new Int32Array(cap).fill(-1)
    this.exp = new Float64Array(cap).fill(Infinity)
    this.cap = cap
    for (let node = cap - 1; node >= 1; node--) this.recompute(node)
  }

  /** Folds T into the intercepts so that w × T stays far below 2^53. O(n), every 2^21 picks. */
  private rebase (): void {
    const t = this.t
    for (let s = 0; s < this.used; s++) {
      if (this.state[s] === ACTIVE) this.b[s] = (this.b[s] as number) + (this.w[s] as number) * t
    }
    for (let node = 1; node < this.cap; node++) this.exp[node] = (this.exp[node] as number) - t
    this.t = 0
  }

  /** Recomputes the inner nodes above a changed leaf (the rest of the tree is fresh at T). */
  private updateLeaf (s: number): void {
    for (let node = (this.cap + s) >> 1; node >= 1; node >>= 1) this.recompute(node)
  }

  /** Replays the inner nodes whose certificate expired at the present T. */
  private refresh (node: number): void {
    if ((this.exp[node] as number) > this.t) return
    const left = node << 1
    if (left < this.cap) {
      this.refresh(left)
      this.refresh(left | 1)
    }
    this.events++
    this.recompute(node)
  }

  /** Winner of an inner node from its two children at the present T, and its certificate. */
  private recompute (node: number): void {
    const cap = this.cap
    const left = node << 1
    let a: number
    let z: number
    let expiry: number
    if (left >= cap) {
      a = this.state[left - cap] === ACTIVE ? left - cap : -1
      z = this.state[left + 1 - cap] === ACTIVE ? left + 1 - cap : -1
      expiry = Infinity
    } else {
      a = this.win[left] as number
      z = this.win[left | 1] as number
      const el = this.exp[left] as number
      const er = this.exp[left | 1] as number
      expiry = el < er ? el : er
    }
    if (a < 0 || z < 0) {
      this.win[node] = a < 0 ? z : a
      this.exp[node] = expiry
      return
    }
    const t = this.t
    const w = this.w
    const b = this.b
    const ca = (w[a] as number) * t + (b[a] as number)
    const cz = (w[z] as number) * t + (b[z] as number)
    if (cz > ca || (cz === ca && (this.seq[z] as number) < (this.seq[a] as number))) {
      const x = a
      a = z
      z = x
    }
    this.win[node] = a
    const wa = w[a] as number
    const wz = w[z] as number
    if (wz > wa) {
      // The loser's line is steeper: it catches up at T = (b_a − b_z) / (w_z − w_a). Rounded
      // down (|error| < 0.5 at these magnitudes), and never before the next pick.
      const at = Math.floor(((b[a] as number) - (b[z] as number)) / (wz - wa))
      const when = at > t ? at : t + 1
      if (when < expiry) expiry = when
    }
    this.exp[node] = expiry
  }
}
