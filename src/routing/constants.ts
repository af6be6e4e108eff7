/**
 * Limits and defaults of request routing, in one place. Each says why.
 */

/**
 * Weights are kept as integers (fixed point) so that the O(log n) SWRR is exactly nginx's
 * sequence: a real weight w becomes round(w × WEIGHT_SCALE). SWRR is scale invariant (every
 * current weight scales by the same factor, so every comparison and tie is unchanged), hence
 * integer weights give nginx's sequence exactly; reals are quantized to steps of 0.001.
 */
export const WEIGHT_SCALE = 1000
/**
 * Largest internal (scaled) weight, 2^30 (a user weight of ~1.07 million). With T ≤ REBASE_PICKS
 * the product weight × T stays below 2^51, so every current weight is an exact double.
 */
export const MAX_SCALED_WEIGHT = 2 ** 30
/**
 * Largest sum of scaled weights over all nodes: current weights stay within a few multiples of
 * the total, and 2^48 leaves room below 2^53 for the sums and differences the pick computes.
 */
export const MAX_TOTAL_SCALED_WEIGHT = 2 ** 48
/**
 * Picks between two rebases of the linear representation (current weight = w × T + b): every
 * MAX_SCALED_WEIGHT × REBASE_PICKS ≤ 2^51. A rebase is O(n); once per 2 million picks it is free.
 */
export const REBASE_PICKS = 2 ** 21

/** nginx `max_fails` default: one failure ejects the node. */
export const DEFAULT_MAX_FAILS = 1
/** nginx `fail_timeout` default: 10 s to count failures in, and the length of an ejection. */
export const DEFAULT_FAIL_TIMEOUT_MS = 10_000
/** Slow start length when none is given: off, as in nginx (src/serving's router sets its own). */
export const DEFAULT_SLOW_START_MS = 0
/**
 * Fraction of its weight a node starts with when slow start begins (nginx ramps "from zero"; a
 * zero weight would never be picked, 1 % is the smallest step that still probes the node).
 */
export const SLOW_START_INITIAL_FRACTION = 0.01
/** How often ramping weights are raised while picks happen (a 5 s ramp takes ~50 steps). */
export const SLOW_START_STEP_MS = 100

/**
 * In-flight limit per slot when the caller gives the Balancer its in-flight counts (nginx
 * `max_conns`, scaled by the node's GPUs or cores). 2 lets a node hold one request per slot and
 * one waiting, so healthy nodes are rarely passed over, while a node that stalled since the last
 * heartbeat stops taking requests after a few; 1 and 4 measured in docs/routing.md.
 */
export const DEFAULT_MAX_INFLIGHT_PER_SLOT = 2

/**
 * The Balancer scales every weight so that the largest is this (scaled weight 10^6 of 2^30):
 * weight functions may answer in any unit, from 1e-9 to 1e12, and keep 6 digits of ratio.
 */
export const NORMALIZED_MAX_WEIGHT = 1000
/** Smallest normalized weight (one quantization step): a node is never starved entirely. */
export const NORMALIZED_MIN_WEIGHT = 1 / WEIGHT_SCALE

/**
 * Capacity measurement (Balancer → NodeLoad.measuredCapacity): compute times of answers count
 * with a weight that halves every second, so a node slowed 5 × shows most of it one second later
 * (a window mean over the 3 s between updates showed a third), yet a few hundred answers a
 * second at 8 routers still average out.
 */
export const MEASURE_HALF_LIFE_MS = 1000
/**
 * Effective answers needed for a measurement. A mean of 5 compute times is ±25 % noise at a
 * coefficient of variation of 0.5: plenty to see a node 5 × slower.
 */
export const MEASURE_MIN_ANSWERS = 5
/** A measurement not renewed for this long (the node got almost no traffic) is dropped. */
export const MEASURE_MAX_AGE_MS = 30_000

/**
 * measuredWeight: a backlog that takes this long to clear at the node's measured pace halves
 * its weight. Weights are recomputed every 3 s from heartbeats up to 1 s old: a node that took
 * 2 s of excess work during that blind spot gets a fifth of its share until it has caught up,
 * while the ordinary queue of a busy node (tens of ms) costs it a few percent.
 */
export const BACKLOG_HALF_WEIGHT_S = 0.5

/**
 * articleWeight's "remaining utilization" in percentage points, shifted by one:
 * ln(1 + 100 × (1 − u)) is ln 101 ≈ 4.6 idle, ln 26 ≈ 3.3 at 75 %, ln 2 ≈ 0.7 at 99 %, 0 at 100 %.
 * The log of the 0..1 fraction itself is ≤ 0 everywhere (−∞ at saturation): no weight.
 */
export const HEADROOM_POINTS = 100
/** A saturated node keeps 1 % of an idle node's headroom term, so it is still probed. */
export const MIN_HEADROOM = 0.01 * Math.log1p(HEADROOM_POINTS)
/** Smallest weight a weight function here returns (positive, however bad the input). */
export const MIN_FUNCTION_WEIGHT = 1e-9
/** Largest weight a weight function here returns (u16 cores × gpuPerf ≤ 655 stay far below). */
export const MAX_FUNCTION_WEIGHT = 1e12
