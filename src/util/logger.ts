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
  }, pino.destination({ fd: init.fd ?? 1, sync: true }))
  families.set(root, family)
  return root
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
