import { MAX_SCALED_WEIGHT, WEIGHT_SCALE } from './constants.ts'

/**
 * Nodes to leave out of one pick, as nginx leaves out down and already-tried peers: they neither
 * gain current weight nor count in the total. A set (or array) costs O(k log n) for k ids; a
 * predicate must be asked about every node, O(n).
 */
export type Skip = ReadonlySet<string> | readonly string[] | ((id: string) => boolean)

/**
 * The integer weight both SWRR implementations run on: round(weight × WEIGHT_SCALE), at least 1,
 * at most MAX_SCALED_WEIGHT. Throws RangeError on a weight that is not a positive finite number
 * (a weight function that returns one is a bug to find, not to route around).
 */
export function scaleWeight (weight: number): number {
  if (!(weight > 0) || !Number.isFinite(weight)) throw new RangeError(`weight must be a positive finite number, got ${weight}`)
  return Math.min(MAX_SCALED_WEIGHT, Math.max(1, Math.round(weight * WEIGHT_SCALE)))
}
