// Process and temp-dir bookkeeping for benchmarks: everything spawned or created is registered
// here and torn down on normal exit, on failure and on Ctrl-C (SIGINT/SIGTERM/SIGHUP).

import { spawn, fork, type ChildProcess, type SpawnOptions } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Monotonic milliseconds (all bench timings use this one clock). */
export const now = (): number => performance.now()

export interface Managed {
  name: string
  child: ChildProcess
  /** Last lines of stdout+stderr, for error messages. */
  tail: string[]
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Called with every complete output line and its arrival time (performance.now()). */
  onLine?: (line: string, at: number) => void
}

const live = new Set<Managed>()
const tempDirs = new Set<string>()
let keepTemp = false
let cleanedUp = false

function track (name: string, child: ChildProcess, keepLines: number): Managed {
  let resolveExit!: (v: { code: number | null, signal: NodeJS.Signals | null }) => void
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => { resolveExit = resolve })
  const m: Managed = { name, child, tail: [], exited }
  const feed = (stream: NodeJS.ReadableStream | null): void => {
    if (stream == null) return
    let buf = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      const at = now()
      buf += chunk
      let i: number
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        m.tail.push(line)
        if (m.tail.length > keepLines) m.tail.shift()
        m.onLine?.(line, at)
      }
    })
  }
  feed(child.stdout)
  feed(child.stderr)
  live.add(m)
  child.on('exit', (code, signal) => {
    live.delete(m)
    resolveExit({ code, signal })
  })
  child.on('error', err => {
    m.tail.push(`spawn error: ${err.message}`)
    live.delete(m)
    resolveExit({ code: -1, signal: null })
  })
  return m
}

/** Spawns a long-running process whose output is captured (never inherited). */
export function start (name: string, cmd: string, args: string[], opts: SpawnOptions = {}, keepLines = 40): Managed {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
  return track(name, child, keepLines)
}

/** Forks a Node (TypeScript) module with an IPC channel. */
export function forkTs (name: string, module: string, args: string[], execArgv: string[] = []): Managed {
  const child = fork(module, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv })
  return track(name, child, 40)
}

/** Runs a short command to completion; rejects on non-zero exit or timeout. */
export async function run (cmd: string, args: string[], timeoutMs = 10_000): Promise<string> {
  const m = start(`${path.basename(cmd)} ${args[0] ?? ''}`, cmd, args, {}, 10_000)
  const timer = setTimeout(() => { m.child.kill('SIGKILL') }, timeoutMs)
  const { code, signal } = await m.exited
  clearTimeout(timer)
  const out = m.tail.join('\n')
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}: ${out.slice(-500)}`)
  return out
}

/** Sends a signal to one process we started (no-op when it is gone). */
export function signal (m: Managed, sig: NodeJS.Signals): void {
  if (m.child.exitCode == null && m.child.signalCode == null) {
    try { m.child.kill(sig) } catch {}
  }
}

/** Waits for exit up to timeoutMs, then SIGKILLs. */
export async function stop (m: Managed, sig: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<void> {
  signal(m, sig)
  let timer: NodeJS.Timeout | undefined
  const killed = await Promise.race([m.exited.then(() => false), new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(true) }, timeoutMs) })])
  // A timer left running would hold the bench open for timeoutMs after the process is gone.
  clearTimeout(timer)
  if (killed) {
    signal(m, 'SIGKILL')
    await m.exited
  }
}

export function makeTempRoot (prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tempDirs.add(dir)
  return dir
}

export function setKeepTemp (keep: boolean): void { keepTemp = keep }

export function liveCount (): number { return live.size }

/** Kills every process still running (by the pid we started) and removes temp dirs. Synchronous. */
export function cleanupSync (): void {
  if (cleanedUp) return
  cleanedUp = true
  for (const m of live) {
    try { m.child.kill('SIGKILL') } catch {}
  }
  for (const dir of tempDirs) {
    if (keepTemp) {
      process.stderr.write(`kept temp dir ${dir}\n`)
      continue
    }
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
  }
  tempDirs.clear()
}

/** Kills every process still running (temp dirs stay). */
export async function killAll (): Promise<void> {
  await Promise.all([...live].map(async m => { await stop(m, 'SIGKILL', 2_000) }))
}

/** Normal end: kill what is left, remove temp dirs. */
export async function cleanup (): Promise<void> {
  await killAll()
  cleanupSync()
}

/** Installs exit/signal hooks once. */
export function installCleanupHooks (): void {
  process.on('exit', cleanupSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: stopping ${live.size} processes, removing temp dirs\n`)
      cleanupSync()
      process.exit(130)
    })
  }
}

/**
 * I/O counters of a process (/proc/PID/io, the whole thread group; 'self' = this process), or
 * null where the file cannot be read. wchar counts every byte passed to write(2) and friends:
 * sockets, pipes (log lines) and files alike, whether or not it reaches a disk; syscw counts
 * those write calls.
 */
export function ioCounters (pid: number | 'self'): { rchar: number, wchar: number, syscw: number } | null {
  let text: string
  try { text = fs.readFileSync(`/proc/${pid}/io`, 'utf8') } catch { return null }
  const field = (key: string): number => Number(new RegExp(`^${key}: (\\d+)$`, 'm').exec(text)?.[1] ?? NaN)
  const r = { rchar: field('rchar'), wchar: field('wchar'), syscw: field('syscw') }
  return Number.isFinite(r.wchar) ? r : null
}

/** A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr != null ? addr.port : 0
      srv.close(() => { resolve(port) })
    })
  })
}

/** A UDP+TCP port pair free on 127.0.0.1 (Serf binds both on the same number). */
export async function freeTcpUdpPort (): Promise<number> {
  const dgram = await import('node:dgram')
  for (let i = 0; i < 50; i++) {
    const port = await freePort()
    const ok = await new Promise<boolean>(resolve => {
      const s = dgram.createSocket('udp4')
      s.on('error', () => { s.close(); resolve(false) })
      s.bind(port, '127.0.0.1', () => { s.close(() => { resolve(true) }) })
    })
    if (ok) return port
  }
  throw new Error('no free TCP+UDP port found')
}

/** Polls fn until it returns a value (not undefined) or the deadline passes. */
export async function waitFor<T> (what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = now() + timeoutMs
  let lastErr: unknown
  while (now() < deadline) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) {
      lastErr = err
    }
    await sleep(intervalMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr != null ? ` (last error: ${String(lastErr)})` : ''}`)
}

/** Writes a benchmark's JSON document (directories made as needed) and says where. */
export function writeResult (file: string, doc: unknown, log: (line: string) => void): void {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, JSON.stringify(doc, null, 2) + '\n')
  log(`wrote ${path.relative(process.cwd(), file) || file}`)
}

/**
 * A benchmark's last line, as every bench ends (DEVELOPERS.md): `goals: N met, M missed`. A goal
 * this run did not measure (null: its part was skipped or failed) counts as missed, named before.
 */
export function logGoals (log: (line: string) => void, goals: Record<string, boolean | null | undefined>): void {
  const entries = Object.entries(goals)
  const missed = entries.filter(([, ok]) => ok !== true)
  if (missed.length > 0) log(`goals missed or not measured: ${missed.map(([name, ok]) => ok == null ? `${name} (not measured)` : name).join(', ')}`)
  log(`goals: ${entries.length - missed.length} met, ${missed.length} missed`)
}

/**
 * Runs a benchmark's main: exit 2 on a usage error, 1 (after cleaning up) on any other failure.
 * `isUsage` tells usage errors apart (bench/lib/args.ts UsageError).
 */
export function runBench (name: string, main: () => Promise<void>, isUsage: (err: unknown) => boolean): void {
  main().catch(async (err: unknown) => {
    if (isUsage(err)) {
      process.stderr.write(`${name}: ${(err as Error).message}\n`)
      process.exit(2)
    }
    process.stderr.write(`${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    await cleanup()
    process.exit(1)
  })
}

/**
 * A benchmark phase: logs its duration; a failure is recorded in `errors` (the run goes on with
 * the next phase) after every process it started is killed, and yields undefined.
 */
export function phaseRunner (errors: string[], log: (line: string) => void): <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined> {
  return async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
    const t0 = now()
    log(`${name}: start`)
    try {
      const r = await fn()
      log(`${name}: done in ${((now() - t0) / 1000).toFixed(1)} s`)
      return r
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err)
      errors.push(`${name}: ${msg}`)
      log(`${name} FAILED: ${msg}`)
      // Nothing of a failed phase may keep running into the next one.
      await killAll()
      return undefined
    }
  }
}
