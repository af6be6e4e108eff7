import { pino, type Logger as PinoLogger } from 'pino'

/** Structured, namespaced logger (`astrad:membership` …), passed to components. */
export type Logger = PinoLogger

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface LoggerInit {
  level?: LogLevel
  /** Destination file descriptor; 1 = stdout (default), 2 = stderr. */
  fd?: 1 | 2
  /** Bound to every line, e.g. the daemon's name, so logs of many daemons can be told apart. */
  base?: Record<string, unknown>
}

export function createLogger (init: LoggerInit = {}): Logger {
  return pino({
    level: init.level ?? 'info',
    base: init.base ?? {},
    timestamp: pino.stdTimeFunctions.isoTime
  }, pino.destination({ fd: init.fd ?? 1, sync: true }))
}

/** A child logger for one concern. */
export function componentLogger (root: Logger, name: string): Logger {
  return root.child({ component: `astrad:${name}` })
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
