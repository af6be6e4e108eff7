/**
 * IEEE 754 binary16 conversions, exact and without Float16Array (not in the es2024 lib the
 * project type-checks against). JSON carries FP16 tensors as ordinary numbers; the edge rounds
 * them here, once, straight from float64 (going through float32 first would round twice).
 */

/** Largest finite half: 65504. Values from 65520 up round to infinity. */
export const FP16_MAX = 65504
/** Smallest magnitude that rounds to infinity (half-way between 65504 and 65536). */
const FP16_OVERFLOW = 65520
const TWO_POW_24 = 2 ** 24
const MIN_NORMAL = 2 ** -14

/** Rounds to the nearest integer, ties to even (IEEE default rounding). */
function roundHalfEven (x: number): number {
  const f = Math.floor(x)
  const d = x - f
  if (d > 0.5) return f + 1
  if (d < 0.5) return f
  return f % 2 === 0 ? f : f + 1
}

/** float64 → binary16 bits, round to nearest even; NaN → quiet NaN, overflow → ±Infinity. */
export function toHalfBits (v: number): number {
  if (Number.isNaN(v)) return 0x7e00
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0
  const a = Math.abs(v)
  if (a >= FP16_OVERFLOW) return sign | 0x7c00
  if (a < MIN_NORMAL) {
    // Subnormal (or zero): a = m × 2^-24. Scaling by a power of two is exact; m = 1024 is
    // the smallest normal, whose bit pattern is exactly 0x0400.
    return sign | roundHalfEven(a * TWO_POW_24)
  }
  let e = Math.floor(Math.log2(a))
  // log2 may be off by one next to powers of two; fix it exactly.
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  // a / 2^e is in [1, 2) and exact; minus 1, times 1024 is exact too.
  let m = roundHalfEven((a / 2 ** e - 1) * 1024)
  if (m === 1024) {
    m = 0
    e++
  }
  if (e > 15) return sign | 0x7c00
  return sign | ((e + 15) << 10) | m
}

/** binary16 bits → the float64 with exactly that value. */
export function fromHalfBits (h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1
  const e = (h >> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0) return sign * m * 2 ** -24
  if (e === 31) return m !== 0 ? NaN : sign * Infinity
  return sign * (1 + m / 1024) * 2 ** (e - 15)
}
