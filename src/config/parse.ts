import net from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { ROLES, LOG_LEVELS, LOG_FORMATS, type Role } from './defaults.ts'
import { parseHostPort } from './host-port.ts'
import { MAX_GPU_PERF } from '../devices/constants.ts'

export { parseHostPort, isLoopbackHost } from './host-port.ts'
export { parseBytes, parseRate, parseRateSetting, parseDuration, formatBytes, formatRate } from './units.ts'

/**
 * Value parsers shared by flags, env vars and the config file. Each throws a plain Error whose
 * message says what is expected; the caller wraps it in a ConfigError naming the key.
 */

export function parseRoles (v: unknown): Role[] {
  const parts = Array.isArray(v) ? v : String(v).split(',')
  const roles = parts.map(p => String(p).trim()).filter(p => p !== '')
  if (roles.length === 0) throw new Error(`expected a comma-separated subset of ${ROLES.join(',')}`)
  for (const r of roles) {
    if (!(ROLES as readonly string[]).includes(r)) throw new Error(`unknown role '${r}' (expected ${ROLES.join(', ')})`)
  }
  return [...new Set(roles)] as Role[]
}

export function parseName (v: unknown): string {
  const s = String(v)
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(s)) throw new Error(`expected 1-63 characters of letters, digits, '.', '_' or '-', got '${s}'`)
  return s
}

export function parsePositiveInt (v: unknown, max: number): number {
  const s = String(v).trim()
  if (!/^\d+$/.test(s)) throw new Error(`expected a whole number, got '${s}'`)
  const n = Number(s)
  if (n < 1 || n > max) throw new Error(`expected 1 to ${max}, got ${n}`)
  return n
}

/**
 * A card's performance factor: a number > 0 and ≤ 100 (the heartbeat carries it ×100 in a
 * u16, so two decimals; a card 100× the reference is a typo).
 */
export function parseGpuPerf (v: unknown): number {
  const s = String(v).trim()
  const n = Number(s)
  if (s === '' || !Number.isFinite(n) || n < 0.01 || n > MAX_GPU_PERF) throw new Error(`expected a number from 0.01 to ${MAX_GPU_PERF}, got '${String(v)}'`)
  return Math.round(n * 100) / 100
}

export function parseNonNegativeInt (v: unknown, max: number): number {
  const s = String(v).trim()
  if (!/^\d+$/.test(s)) throw new Error(`expected a whole number, got '${s}'`)
  const n = Number(s)
  if (n > max) throw new Error(`expected 0 to ${max}, got ${n}`)
  return n
}

export function parseMultiaddr (v: unknown): string {
  const s = String(v).trim()
  try {
    return multiaddr(s).toString()
  } catch {
    throw new Error(`not a multiaddr: '${s}' (example: /ip4/0.0.0.0/tcp/7071)`)
  }
}

export function parseList (v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String)
  return String(v).split(',').map(s => s.trim()).filter(s => s !== '')
}

/**
 * A bootstrap peer as a dialable multiaddr: a full multiaddr (with or without /p2p/…), or
 * host:port (IP literal or DNS name).
 */
export function parseBootstrap (v: unknown): string {
  const s = String(v).trim()
  if (s.startsWith('/')) return parseMultiaddr(s)
  let hp: { host: string, port: number }
  try {
    hp = parseHostPort(s)
  } catch {
    throw new Error(`expected a multiaddr or HOST:PORT, got '${s}'`)
  }
  if (hp.port === 0) throw new Error('port 0 cannot be dialled')
  const kind = net.isIPv4(hp.host) ? 'ip4' : net.isIPv6(hp.host) ? 'ip6' : 'dns'
  return `/${kind}/${hp.host}/tcp/${hp.port}`
}

export function parseLogLevel (v: unknown): typeof LOG_LEVELS[number] {
  const s = String(v)
  if (!(LOG_LEVELS as readonly string[]).includes(s)) throw new Error(`expected one of ${LOG_LEVELS.join(', ')}, got '${s}'`)
  return s as typeof LOG_LEVELS[number]
}

export function parseLogFormat (v: unknown): typeof LOG_FORMATS[number] {
  const s = String(v)
  if (!(LOG_FORMATS as readonly string[]).includes(s)) throw new Error(`expected one of ${LOG_FORMATS.join(', ')}, got '${s}'`)
  return s as typeof LOG_FORMATS[number]
}

export function parseToken (v: unknown): string {
  const s = String(v)
  if (s.length < 16 || /\s/.test(s)) throw new Error('expected at least 16 characters without spaces')
  return s
}
