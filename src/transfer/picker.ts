import { Bitfield } from './bitfield.ts'
import { SHUFFLED_PIECES, ENDGAME_MAX_COPIES } from './constants.ts'

/** What a peer can serve: a bitfield, or every piece. */
export type PeerHave = Bitfield | 'complete'

function peerHas (have: PeerHave, i: number): boolean {
  return have === 'complete' || have.has(i)
}

/**
 * Chooses the next piece to ask a peer for.
 *
 * - **Shuffled first**: the first SHUFFLED_PIECES pieces are picked uniformly at random among
 *   those the peer has. When a model is new or hot, every downloader starts at once with the
 *   same (empty) knowledge; sequential or rarest-first picks would all hit the same pieces on
 *   the same seeds (the article's cold-start / hot-file trick).
 * - **Rarest first** afterwards: the piece with the fewest known holders, ties broken at
 *   random, so rare pieces spread before their holders leave.
 * - **Duplicates / endgame**: once every missing piece is requested, a peer may duplicate an
 *   in-flight request (fewest copies first, at most ENDGAME_MAX_COPIES, never one it is
 *   already serving); the first copy to verify wins and the others are cancelled. (Per peer,
 *   as before, cost 13–80 % duplicate bytes: docs/bench-transfer.md.)
 */
export class PiecePicker {
  readonly pieces: number
  /** Known holders per piece (from the tracker's answers). */
  readonly availability: Uint32Array
  private readonly have: Bitfield
  /** piece → number of requests in flight for it. */
  private readonly inFlight = new Map<number, number>()
  private readonly random: () => number
  private picked = 0

  constructor (have: Bitfield, options: { random?: () => number } = {}) {
    this.have = have
    this.pieces = have.length
    this.availability = new Uint32Array(have.length)
    this.random = options.random ?? Math.random
  }

  /** One more peer holds `piece` (a direct have message, ahead of the tracker's counts). */
  gained (piece: number): void {
    if (piece >= 0 && piece < this.pieces) this.availability[piece]!++
  }

  /** Replaces the availability counts (the tracker's view of who holds what). */
  setAvailability (counts: ArrayLike<number>): void {
    for (let i = 0; i < this.pieces; i++) this.availability[i] = counts[i] ?? 0
  }

  get phase (): 'shuffled' | 'rarest' | 'endgame' {
    if (this.unrequested() === 0) return 'endgame'
    return this.picked < SHUFFLED_PIECES ? 'shuffled' : 'rarest'
  }

  /** Missing pieces with no request in flight. */
  unrequested (): number {
    let n = 0
    for (let i = 0; i < this.pieces; i++) if (!this.have.has(i) && !this.inFlight.has(i)) n++
    return n
  }

  /**
   * The next piece to request from a peer, or undefined if it has nothing we need. `serving`
   * lists the pieces already requested from this peer (never duplicated onto the same peer).
   * The caller must call `started(piece)` … `finished(piece)` around the request.
   */
  next (peer: PeerHave, serving: ReadonlySet<number> = new Set()): number | undefined {
    const shuffled = this.picked < SHUFFLED_PIECES
    let best: number | undefined
    let bestKey = Infinity
    let ties = 0
    for (let i = 0; i < this.pieces; i++) {
      if (this.have.has(i) || this.inFlight.has(i) || !peerHas(peer, i)) continue
      const key = shuffled ? 0 : this.availability[i]!
      if (key < bestKey) {
        bestKey = key
        best = i
        ties = 1
      } else if (key === bestKey) {
        // Reservoir sampling over equal keys: each tie is chosen with equal probability.
        ties++
        if (this.random() * ties < 1) best = i
      }
    }
    if (best !== undefined) {
      this.picked++
      return best
    }
    // Duplicates only once every missing piece is requested (BitTorrent's endgame): before
    // that, a peer with nothing new for us waits for news (a direct have message wakes it).
    if (this.unrequested() > 0) return undefined
    return this.endgame(peer, serving)
  }

  private endgame (peer: PeerHave, serving: ReadonlySet<number>): number | undefined {
    let best: number | undefined
    let bestDup = Infinity
    let ties = 0
    for (const [i, n] of this.inFlight) {
      if (this.have.has(i) || serving.has(i) || n >= ENDGAME_MAX_COPIES || !peerHas(peer, i)) continue
      if (n < bestDup) {
        bestDup = n
        best = i
        ties = 1
      } else if (n === bestDup) {
        ties++
        if (this.random() * ties < 1) best = i
      }
    }
    return best
  }

  started (piece: number): void {
    this.inFlight.set(piece, (this.inFlight.get(piece) ?? 0) + 1)
  }

  finished (piece: number): void {
    const n = (this.inFlight.get(piece) ?? 0) - 1
    if (n <= 0) this.inFlight.delete(piece)
    else this.inFlight.set(piece, n)
  }

  requests (piece: number): number {
    return this.inFlight.get(piece) ?? 0
  }
}
