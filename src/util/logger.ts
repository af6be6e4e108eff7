import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino'
import { build as prettyStream } from 'pino-pretty'

/** Structured, namespaced logger (`astrad:membership` …), passed to components. */
export type Logger = PinoLogger

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

/** `json`: one JSON object a line (for collectors); `pretty`: a human-readable line. */
export type LogFormat = 'json' | 'pretty'

/**
 * The format in force: the one asked for (flag, ASTRAD_LOG_FORMAT, config file), else pretty
 * when the logs go to a terminal and JSON when they go to a pipe or file (a collector).
 */
export function chooseLogFormat (asked: LogFormat | undefined, isTTY: boolean | undefined): LogFormat {
  return asked ?? (isTTY === true ? 'pretty' : 'json')
}

export interface LoggerInit {
  level?: LogLevel
  /** Destination file descriptor; 1 = stdout (default), 2 = stderr. */
  fd?: 1 | 2
  /** Bound to every line, e.g. the daemon's name, so logs of many daemons can be told apart. */
  base?: Record<string, unknown>
  /** @default 'json' */
  format?: LogFormat
}

/** Every child of a root logger (weakly held), so a level change reaches them all. */
const families = new WeakMap<Logger, Set<WeakRef<Logger>>>()

export function createLogger (init: LoggerInit = {}): Logger {
  const family = new Set<WeakRef<Logger>>()
  const root = pino({
    level: init.level ?? 'info',
    base: init.base ?? {},
    timestamp: pino.stdTimeFunctions.isoTime,
    // pino copies the level into each child at creation; remember children (and theirs).
    onChild: (child) => { family.add(new WeakRef(child)) }
  }, destination(init.format ?? 'json', init.fd ?? 1))
  families.set(root, family)
  return root
}

/** Where the lines go, written synchronously (a crash loses none). */
function destination (format: LogFormat, fd: 1 | 2): DestinationStream {
  if (format === 'json') return pino.destination({ fd, sync: true })
  // [10:42:07.123] INFO (alpha): astrad:transfer: pull started {"peers":3}
  return prettyStream({
    destination: fd,
    sync: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,component',
    messageFormat: '{if component}{component}: {end}{msg}',
    singleLine: true
  })
}

/** Sets the level of a root logger and every child made from it (a `config` notice). */
export function setLogLevel (root: Logger, level: LogLevel): void {
  root.level = level
  const family = families.get(root)
  if (family == null) return
  for (const ref of family) {
    const child = ref.deref()
    if (child == null) family.delete(ref)
    else child.level = level
  }
}

/** A child logger for one concern. */
export function componentLogger (root: Logger, name: string): Logger {
  return root.child({ component: `astrad:${name}` })
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
