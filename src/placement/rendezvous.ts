import { createHash } from 'node:crypto'

/**
 * Rendezvous (highest random weight) hashing: the owner of `key` is the candidate with the
 * highest hash(key, candidate). Every scheduler with the same candidate list computes the same
 * owner; when the owner dies only its keys move, each to the next-highest candidate.
 */
export function rendezvousOwner (key: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestScore = -1n
  for (const c of candidates) {
    const score = createHash('sha256').update(key).update('\0').update(c).digest().readBigUInt64BE(0)
    if (score > bestScore || (score === bestScore && best != null && c < best)) {
      best = c
      bestScore = score
    }
  }
  return best
}
