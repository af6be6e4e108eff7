import type { RateSetting } from './defaults.ts'

/**
 * Byte sizes and rates as operators write them: `64MiB`, `1.5GB`, `25MB/s`, `200Mbit/s`.
 * Decimal prefixes are powers of 1000, binary (KiB, MiB …) powers of 1024; `bit` units are
 * divided by 8. No dependency on libp2p code, so client commands can use them cheaply.
 */

const PREFIX: Record<string, number> = {
  '': 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
  ti: 1024 ** 4
}

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?(b|bytes?|bit|bits)?$/i

function parseQuantity (s: string, what: string): number {
  const m = SIZE_RE.exec(s)
  if (m == null) throw new Error(`expected ${what}, got '${s}'`)
  const value = Number(m[1])
  const prefix = PREFIX[(m[2] ?? '').toLowerCase()]
  if (prefix == null) throw new Error(`expected ${what}, got '${s}'`)
  const unit = (m[3] ?? 'b').toLowerCase()
  // A lone 'b' after a prefix means bytes (MB); 'bit(s)' means bits. Case of 'b' is ignored:
  // operators write Mb meaning either, and bytes is the safer reading for a limit.
  const bits = unit.startsWith('bit')
  const n = value * prefix / (bits ? 8 : 1)
  if (!Number.isFinite(n)) throw new Error(`expected ${what}, got '${s}'`)
  return Math.round(n)
}

/** A byte size: `1048576`, `64MiB`, `1.5GB`. */
export function parseBytes (v: unknown): number {
  const s = String(v).trim()
  const n = parseQuantity(s, 'a size such as 512MiB or 20GB')
  if (n < 1) throw new Error(`expected a positive size, got '${s}'`)
  if (n > Number.MAX_SAFE_INTEGER) throw new Error(`size '${s}' is too large`)
  return n
}

/** A rate in bytes per second: `25MB/s`, `200Mbit/s`, `1.5GiB`, `10485760`. */
export function parseRate (v: unknown): number {
  const s = String(v).trim().replace(/\s*\/\s*s(ec)?$/i, '').replace(/ps$/i, '')
  const n = parseQuantity(s, 'a rate such as 25MB/s or 200Mbit/s')
  if (n < 1) throw new Error(`expected a positive rate, got '${String(v)}'`)
  if (n > 2 ** 40) throw new Error(`rate '${String(v)}' is too large (max 1 TiB/s)`)
  return n
}

/** A limit setting: a rate, `auto` (measured at join) or `unlimited`. */
export function parseRateSetting (v: unknown): RateSetting {
  const s = String(v).trim().toLowerCase()
  if (s === 'auto' || s === 'unlimited') return s
  try {
    return parseRate(v)
  } catch {
    throw new Error(`expected auto, unlimited or a rate such as 25MB/s or 200Mbit/s, got '${String(v)}'`)
  }
}

const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }

/** A duration in ms: `500ms`, `90s`, `30m`, `12h`, `7d`, or `0`; at most 10 years. */
export function parseDuration (v: unknown): number {
  const s = String(v).trim().toLowerCase()
  if (s === '0') return 0
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s)
  if (m == null) throw new Error(`expected a duration such as 90s, 30m, 12h or 7d, got '${String(v)}'`)
  const ms = Math.round(Number(m[1]) * (DURATION_UNIT_MS[m[2] ?? ""] ?? NaN))
  if (ms > 3650 * 86_400_000) throw new Error(`duration '${String(v)}' is too long (max 3650d)`)
  return ms
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB']

/** 1234567 → "1.23 MB" (decimal units, as disks and links are sold). */
export function formatBytes (n: number): string {
  if (!Number.isFinite(n)) return String(n)
  let i = 0
  let v = n
  while (Math.abs(v) >= 1000 && i < UNITS.length - 1) { v /= 1000; i++ }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[i]}`
}

export function formatRate (bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`
}
