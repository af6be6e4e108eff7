// Starting astrad daemons (dist/astrad) for benchmarks and reading their RPC port.

import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { start, freePort, waitFor, type Managed } from './procs.ts'
import { encodeClusterSecret, newClusterSecret, writeSecretFile } from '../../src/trust/index.ts'

export interface StatusNode {
  peerId: string
  name: string
  state: 'alive' | 'suspect' | 'draining' | 'dead' | 'left'
  lastSeenMs: number
}

export interface StatusDoc {
  self: { peerId: string, name: string, state: string, addrs: string[] }
  view: { source: string, stalenessMs: number, error?: string }
  nodes: StatusNode[]
}

export interface AstradDaemon {
  name: string
  roles: string
  dataDir: string
  rpcPort: number
  p2pPort: number
  proc: Managed
  peerId: string
}

export interface StartOptions {
  bin: string
  root: string
  name: string
  roles: string
  /** Fixed libp2p port (0 = any). */
  p2pPort?: number
  bootstrap?: string
  /** Command prefix, e.g. ['taskset', '-c', '0']. */
  wrap?: string[]
  /** More `astrad start` flags, e.g. ['--cores', '2']. */
  extraArgs?: string[]
  /** How long the RPC port may take to answer (default 20 s; more on a busy machine). */
  startTimeoutMs?: number
}

export async function getJson<T> (port: number, route: string, timeoutMs = 2_000): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}${route}`, { signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) throw new Error(`GET ${route} on :${port}: HTTP ${res.status}`)
  return await res.json() as T
}

export async function getText (port: number, route: string, timeoutMs = 2_000): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${route}`, { signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) throw new Error(`GET ${route} on :${port}: HTTP ${res.status}`)
  return await res.text()
}

export async function status (port: number, timeoutMs = 2_000): Promise<StatusDoc> {
  return await getJson<StatusDoc>(port, '/v1/status', timeoutMs)
}

const clusterKeys = new Map<string, Promise<string>>()

/**
 * The cluster key shared by the daemons under `root` (<root>/cluster.key, as `astrad cluster
 * init` writes it), created at first use: every daemon of a bench cluster starts with
 * --cluster-key, so it runs secure, as deployed (private network, certificates).
 */
export async function clusterKeyFor (root: string): Promise<string> {
  let key = clusterKeys.get(root)
  if (key == null) {
    key = (async () => {
      const file = path.join(root, 'cluster.key')
      writeSecretFile(file, encodeClusterSecret(await newClusterSecret()))
      return file
    })()
    clusterKeys.set(root, key)
  }
  return await key
}

/** Starts a daemon of the cluster under `o.root` and waits until its RPC port answers /v1/status. */
export async function startDaemon (o: StartOptions): Promise<AstradDaemon> {
  const dataDir = path.join(o.root, o.name)
  fs.mkdirSync(dataDir, { recursive: true })
  const rpcPort = await freePort()
  const p2pPort = o.p2pPort ?? 0
  const args = [
    'start', '--role', o.roles, '--name', o.name, '--data-dir', dataDir, '--cluster-key', await clusterKeyFor(o.root),
    '--listen', `/ip4/127.0.0.1/tcp/${p2pPort}`, '--rpc', `127.0.0.1:${rpcPort}`, '--log-level', 'warn',
    ...(o.bootstrap != null ? ['--bootstrap', o.bootstrap] : []),
    ...(o.extraArgs ?? [])
  ]
  const wrap = o.wrap ?? []
  const proc = wrap.length > 0
    ? start(o.name, wrap[0] as string, [...wrap.slice(1), o.bin, ...args])
    : start(o.name, o.bin, args)
  const doc = await Promise.race([
    waitFor(`${o.name} RPC on :${rpcPort}`, async () => await status(rpcPort, 1_000), o.startTimeoutMs ?? 20_000, 50),
    proc.exited.then(({ code, signal }) => { throw new Error(`${o.name} exited ${code ?? signal} at start: ${proc.tail.join('\n')}`) })
  ])
  return { name: o.name, roles: o.roles, dataDir, rpcPort, p2pPort, proc, peerId: doc.self.peerId }
}

/** A daemon's loopback TCP multiaddr with /p2p/, for --bootstrap. */
export async function loopbackAddr (d: AstradDaemon): Promise<string> {
  const doc = await status(d.rpcPort)
  const addr = doc.self.addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  if (addr == null) throw new Error(`${d.name} has no loopback TCP address: ${JSON.stringify(doc.self.addrs)}`)
  return addr.includes('/p2p/') ? addr : `${addr}/p2p/${d.peerId}`
}

/**
 * Runs `astrad ARGS` (a client command) against `daemon` as the operator of its host: with the
 * credential a daemon holding the cluster key writes in its data dir (ASTRAD_CREDENTIAL), so
 * writes (model add, app deploy) are signed. Resolves with stdout; rejects with the output's tail.
 */
export async function astradCli (bin: string, daemon: AstradDaemon, args: string[], timeoutMs: number): Promise<{ stdout: string, stderr: string }> {
  const env = { ...process.env, ASTRAD_CREDENTIAL: path.join(daemon.dataDir, 'operator.cred') }
  return await new Promise((resolve, reject) => {
    execFile(bin, [...args, '--rpc', `127.0.0.1:${daemon.rpcPort}`], { env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err != null) {
        reject(new Error(`astrad ${args.join(' ')} failed (exit ${String((err as { code?: unknown }).code ?? err.message)}): ${stderr.trim().slice(-800) || stdout.trim().slice(-800)}`))
        return
      }
      resolve({ stdout, stderr })
    })
  })
}

/**
 * Reads utime+stime (clock ticks) of a pid from /proc; with `mainThread`, of its main thread only
 * (/proc/PID/task/PID: the event loop, without worker threads).
 */
export function cpuTicks (pid: number, mainThread = false): number {
  const stat = fs.readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8')
  // Fields after the command name "(…)"; utime and stime are fields 14 and 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12])
}

/** VmRSS and VmHWM of a pid (bytes). */
export function memory (pid: number): { rss: number, hwm: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

/** One value of a Prometheus text exposition (sum over label sets matching `labels`). */
export function metric (text: string, name: string, labels = ''): number {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== ' ' && rest[0] !== '{') continue
    if (labels !== '' && !rest.includes(labels)) continue
    const v = Number(rest.slice(rest.lastIndexOf(' ') + 1))
    if (Number.isFinite(v)) { sum += v; found = true }
  }
  return found ? sum : 0
}
