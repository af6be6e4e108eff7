import fs from 'node:fs'
import path from 'node:path'
import { ConfigError, errorMessage } from '../util/errors.ts'
import { defaultConfig, type DaemonConfig } from './defaults.ts'
import {
  parseRoles, parseName, parsePositiveInt, parseNonNegativeInt, parseMultiaddr, parseList,
  parseHostPort, parseBootstrap, parseGpuPerf, parseLogLevel, parseLogFormat, parseToken, isLoopbackHost, parseRateSetting, parseBytes, parseRate, parseDuration
} from './parse.ts'

export { defaultConfig, ROLES, LOG_LEVELS, LOG_FORMATS, DEFAULT_RPC_PORT, DEFAULT_P2P_PORT } from './defaults.ts'
export type { DaemonConfig, Role, RateSetting } from './defaults.ts'
export { parseHostPort, parseBootstrap, isLoopbackHost, parseRate, parseBytes, parseRateSetting, formatBytes, formatRate } from './parse.ts'

/**
 * One row per setting: how it is spelt as a flag (commander's camelCase option name), as an
 * environment variable and in the config file, and how a raw value becomes a typed one.
 */
interface Setting {
  key: keyof DaemonConfig
  flag: string
  env: string
  parse: (raw: unknown) => unknown
}

const SETTINGS: Setting[] = [
  { key: 'roles', flag: 'role', env: 'ASTRAD_ROLE', parse: parseRoles },
  { key: 'name', flag: 'name', env: 'ASTRAD_NAME', parse: parseName },
  { key: 'dataDir', flag: 'dataDir', env: 'ASTRAD_DATA_DIR', parse: v => path.resolve(String(v)) },
  { key: 'listen', flag: 'listen', env: 'ASTRAD_LISTEN', parse: v => nonEmpty(parseList(v).map(parseMultiaddr)) },
  { key: 'bootstrap', flag: 'bootstrap', env: 'ASTRAD_BOOTSTRAP', parse: v => parseList(v).map(parseBootstrap) },
  { key: 'rpc', flag: 'rpc', env: 'ASTRAD_RPC', parse: parseHostPort },
  { key: 'rpcToken', flag: 'rpcToken', env: 'ASTRAD_RPC_TOKEN', parse: parseToken },
  { key: 'cell', flag: 'cell', env: 'ASTRAD_CELL', parse: parseName },
  { key: 'cores', flag: 'cores', env: 'ASTRAD_CORES', parse: v => parsePositiveInt(v, 4096) },
  { key: 'gpus', flag: 'gpus', env: 'ASTRAD_GPUS', parse: v => parseNonNegativeInt(v, 256) },
  { key: 'gpuPerf', flag: 'gpuPerf', env: 'ASTRAD_GPU_PERF', parse: parseGpuPerf },
  { key: 'insecure', flag: 'insecure', env: 'ASTRAD_INSECURE', parse: parseBoolean },
  { key: 'clusterKey', flag: 'clusterKey', env: 'ASTRAD_CLUSTER_KEY', parse: v => path.resolve(String(v)) },
  { key: 'joinToken', flag: 'joinToken', env: 'ASTRAD_JOIN_TOKEN', parse: parseJoinTokenSetting },
  { key: 'logLevel', flag: 'logLevel', env: 'ASTRAD_LOG_LEVEL', parse: parseLogLevel },
  { key: 'logFormat', flag: 'logFormat', env: 'ASTRAD_LOG_FORMAT', parse: parseLogFormat },
  { key: 'uploadLimit', flag: 'uploadLimit', env: 'ASTRAD_UPLOAD_LIMIT', parse: parseRateSetting },
  { key: 'downloadLimit', flag: 'downloadLimit', env: 'ASTRAD_DOWNLOAD_LIMIT', parse: parseRateSetting },
  { key: 'relayLimit', flag: 'relayLimit', env: 'ASTRAD_RELAY_LIMIT', parse: parseRateSetting },
  { key: 'cacheSize', flag: 'cacheSize', env: 'ASTRAD_CACHE_SIZE', parse: parseBytes },
  { key: 'scrubRate', flag: 'scrubRate', env: 'ASTRAD_SCRUB_RATE', parse: parseScrubRate },
  { key: 'scrubInterval', flag: 'scrubInterval', env: 'ASTRAD_SCRUB_INTERVAL', parse: parseDuration },
  { key: 'announce', flag: 'announce', env: 'ASTRAD_ANNOUNCE', parse: v => parseList(v).map(parseMultiaddr) }
]

/** The background scrub's rate: a rate, or off (0). */
function parseScrubRate (v: unknown): number {
  const s = String(v).trim().toLowerCase()
  if (s === 'off' || s === '0') return 0
  try {
    return parseRate(v)
  } catch {
    throw new Error(`expected off or a rate such as 4MB/s, got '${String(v)}'`)
  }
}

function parseBoolean (v: unknown): boolean {
  if (v === true || v === 'true' || v === '1') return true
  if (v === false || v === 'false' || v === '0') return false
  throw new Error('expected true or false')
}

/** A join token as given: the token itself, or @FILE holding it (a mounted Kubernetes Secret). */
function parseJoinTokenSetting (v: unknown): string {
  const s = String(v).trim()
  if (!s.startsWith('@')) return s
  try {
    return fs.readFileSync(s.slice(1), 'utf8').trim()
  } catch (err) {
    throw new Error(`cannot read ${s.slice(1)}: ${errorMessage(err)}`)
  }
}

function nonEmpty<T> (list: T[]): T[] {
  if (list.length === 0) throw new Error('expected at least one value')
  return list
}

/** Config file keys: the DaemonConfig names, with `role` accepted for `roles`. */
const FILE_ALIASES: Record<string, keyof DaemonConfig> = { role: 'roles' }

function kebab (camel: string): string {
  return camel.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)
}

export interface ConfigSources {
  /** Parsed command-line options (commander's camelCase names); undefined = not given. */
  flags: Record<string, unknown>
  env: NodeJS.ProcessEnv
}

/** Reads a JSON config file; every problem is a ConfigError naming where the path came from. */
export function readConfigFile (file: string, where = '--config'): Record<string, unknown> {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(where, `cannot read ${file}: ${errorMessage(err)}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(where, `${file} is not valid JSON: ${errorMessage(err)}`)
  }
  if (data == null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(where, `${file} must hold a JSON object`)
  }
  return data as Record<string, unknown>
}

/**
 * The one place where settings are merged and validated: flags > ASTRAD_* env > config file >
 * defaults. A bad value throws a ConfigError that names the flag, variable or file key.
 */
export function resolveConfig (sources: ConfigSources): DaemonConfig {
  const { flags, env } = sources
  const fromFlag = flags.config as string | undefined
  const configPath = fromFlag ?? env.ASTRAD_CONFIG
  const file = configPath != null && configPath !== '' ? readConfigFile(configPath, fromFlag != null ? '--config' : 'ASTRAD_CONFIG') : {}

  const fileValues = new Map<keyof DaemonConfig, unknown>()
  const known = new Set<string>(SETTINGS.map(s => s.key))
  for (const [k, v] of Object.entries(file)) {
    const key = FILE_ALIASES[k] ?? k
    if (!known.has(key)) throw new ConfigError(`${k} (in ${configPath})`, `unknown key; known keys: ${[...known].join(', ')}`)
    fileValues.set(key as keyof DaemonConfig, v)
  }

  const config = defaultConfig() as unknown as Record<string, unknown>
  for (const s of SETTINGS) {
    let raw: unknown
    let where: string
    if (flags[s.flag] !== undefined) {
      raw = flags[s.flag]
      where = `--${kebab(s.flag)}`
    } else if (env[s.env] !== undefined && env[s.env] !== '') {
      raw = env[s.env]
      where = s.env
    } else if (fileValues.has(s.key)) {
      raw = fileValues.get(s.key)
      where = `${s.key} (in ${configPath})`
    } else {
      continue
    }
    try {
      config[s.key] = s.parse(raw)
    } catch (err) {
      throw new ConfigError(where, errorMessage(err))
    }
  }
  const result = config as unknown as DaemonConfig
  if (!isLoopbackHost(result.rpc.host) && result.rpcToken == null) {
    throw new ConfigError('--rpc', `refusing to expose the RPC port on ${result.rpc.host} without --rpc-token`)
  }
  return result
}
