// Pick cost (issue 4, benchmark 3): picks per second of astrad's O(log n) SWRR (src/routing
// Swrr) against nginx's O(n) loop (NaiveSwrr, ngx_http_upstream_get_peer as nginx writes it), at
// 10, 1,000 and 10,000 nodes, same weights, same sequence.
//
//   node bench/lib/pick-cost.ts [--sizes 10,1000,10000] [--json]
//
// bench/serve.ts imports `runPickCost(options?): PickCostResult` and `formatPickCost`. Both are
// stable: options only get new optional fields, results only new fields.

import { NaiveSwrr, Swrr } from '../../src/routing/index.ts'
import { seededRandom as rng } from '../../src/util/random.ts'

export interface PickCostOptions {
  /** Node counts. @default [10, 1000, 10000] */
  sizes?: number[]
  /** Seed of the weights. @default 1 */
  seed?: number
  /** Timed rounds per implementation and size; the median counts. @default 3 */
  rounds?: number
  /** Length of one timed round (ms of wall time). @default 300 */
  roundMs?: number
  /** Picks before timing (JIT warm-up), per implementation and size, at most. @default 20000 */
  warmupPicks?: number
}

export interface PickCostRow {
  nodes: number
  /** Median over rounds of picks per second. */
  swrrPicksPerS: number
  naivePicksPerS: number
  /** swrr ÷ naive. */
  speedup: number
  /** Certificates replayed per pick by the kinetic tournament (its amortized work, ~2 log2 n). */
  replaysPerPick: number
  /** The two produced the same first `checkedPicks` picks. */
  identical: boolean
  checkedPicks: number
}

export interface PickCostResult {
  options: Required<PickCostOptions>
  /** Weights: real numbers 0.5 … 100 (as the Balancer's normalized dynamic weights). */
  weights: string
  rows: PickCostRow[]
  cpuMs: number
}

/** Picks compared one by one between the two implementations before timing. */
const CHECKED_PICKS = 5000
/** Picks over which the certificate replays are counted. */
const REPLAY_PICKS = 50_000

interface Picker { pick: () => string | undefined }

function build<T extends Swrr | NaiveSwrr> (make: () => T, weights: number[]): T {
  const s = make()
  weights.forEach((w, i) => { s.set(`node-${i}`, w) })
  return s
}

/** Picks per second over one round of about `ms` (checks the clock every batch). */
function timeRound (p: Picker, ms: number): number {
  let picks = 0
  let batch = 64
  const t0 = performance.now()
  let elapsed = 0
  let sink = 0
  while (elapsed < ms) {
    for (let i = 0; i < batch; i++) if (p.pick() !== undefined) sink++
    picks += batch
    elapsed = performance.now() - t0
    if (elapsed < ms / 20) batch *= 2
  }
  if (sink !== picks) throw new Error('a pick returned nothing')
  return picks / (elapsed / 1000)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

export function runPickCost (options: PickCostOptions = {}): PickCostResult {
  const cpu0 = process.cpuUsage()
  const opts: Required<PickCostOptions> = {
    sizes: options.sizes ?? [10, 1000, 10_000],
    seed: options.seed ?? 1,
    rounds: options.rounds ?? 3,
    roundMs: options.roundMs ?? 300,
    warmupPicks: options.warmupPicks ?? 20_000
  }
  for (const n of opts.sizes) if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new RangeError(`sizes: invalid node count ${n}`)
  if (!Number.isInteger(opts.rounds) || opts.rounds < 1) throw new RangeError(`rounds: invalid value ${opts.rounds}`)
  if (!(opts.roundMs > 0)) throw new RangeError(`roundMs: invalid value ${opts.roundMs}`)
  const rows: PickCostRow[] = []
  for (const n of opts.sizes) {
    const random = rng(opts.seed + n)
    const weights = Array.from({ length: n }, () => 0.5 + 99.5 * random())
    // Same sequence first (the unit tests prove it at length; this guards the benchmark).
    const a = build(() => new Swrr(), weights)
    const b = build(() => new NaiveSwrr(), weights)
    let identical = true
    for (let i = 0; i < CHECKED_PICKS && identical; i++) identical = a.pick() === b.pick()
    const fast = build(() => new Swrr(), weights)
    const naive = build(() => new NaiveSwrr(), weights)
    // Warm up with a bounded number of picks (nginx's loop at 10,000 nodes is ~15 k picks/s).
    for (let i = 0; i < opts.warmupPicks; i++) fast.pick()
    for (let i = 0; i < Math.min(opts.warmupPicks, Math.ceil(2e7 / n)); i++) naive.pick()
    const fastRates: number[] = []
    const naiveRates: number[] = []
    for (let r = 0; r < opts.rounds; r++) {
      fastRates.push(timeRound(fast, opts.roundMs))
      naiveRates.push(timeRound(naive, opts.roundMs))
    }
    // Certificate replays per pick, over a fixed number of picks.
    fast.events = 0
    for (let i = 0; i < REPLAY_PICKS; i++) fast.pick()
    const swrrPicksPerS = median(fastRates)
    const naivePicksPerS = median(naiveRates)
    rows.push({
      nodes: n,
      swrrPicksPerS: Math.round(swrrPicksPerS),
      naivePicksPerS: Math.round(naivePicksPerS),
      speedup: Math.round(swrrPicksPerS / naivePicksPerS * 10) / 10,
      replaysPerPick: Math.round(fast.events / REPLAY_PICKS * 10) / 10,
      identical,
      checkedPicks: CHECKED_PICKS
    })
  }
  const cpu = process.cpuUsage(cpu0)
  return { options: opts, weights: 'real, uniform 0.5 … 100', rows, cpuMs: Math.round((cpu.user + cpu.system) / 1000) }
}

export function formatPickCost (r: PickCostResult): string {
  const head = ['nodes', 'Swrr picks/s', 'nginx O(n) picks/s', 'speedup', 'replays/pick', 'same sequence']
  const rows = r.rows.map(x => [String(x.nodes), x.swrrPicksPerS.toLocaleString('en-US'), x.naivePicksPerS.toLocaleString('en-US'), `${x.speedup} ×`, String(x.replaysPerPick), x.identical ? `yes (${x.checkedPicks})` : 'NO'])
  const w = head.map((h, i) => Math.max(h.length, ...rows.map(row => (row[i] as string).length)))
  const line = (cols: string[]): string => cols.map((c, i) => c.padStart(w[i] as number)).join('  ')
  return [`pick cost: weights ${r.weights}, median of ${r.options.rounds} × ${r.options.roundMs} ms, cpu ${r.cpuMs} ms`, line(head), ...rows.map(line)].join('\n')
}

if (import.meta.main) {
  const { parseArgs } = await import('node:util')
  const usage = 'usage: node bench/lib/pick-cost.ts [--sizes 10,1000,10000] [--json]'
  let values
  try {
    values = parseArgs({ options: { sizes: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } }, strict: true }).values
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${usage}\n`)
    process.exit(2)
  }
  if (values.help === true) {
    process.stdout.write(usage + '\n')
    process.exit(0)
  }
  try {
    const result = runPickCost({ sizes: values.sizes?.split(',').map(Number) })
    process.stdout.write((values.json === true ? JSON.stringify(result, null, 2) : formatPickCost(result)) + '\n')
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    process.stderr.write(`${err.message}\n${usage}\n`)
    process.exit(2)
  }
}
