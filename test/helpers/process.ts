import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from './cluster.ts'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
/** The single executable under test (built by `npm run build`, which `npm test` runs first). */
export const BINARY = path.join(ROOT, 'dist', 'astrad')

/** A status call's allowance: generous, a daemon at load 8 can take seconds to answer. */
const STATUS_TIMEOUT_MS = 20_000

export function requireBinary (): void {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run 'npm run build' (npm test does it first)`)
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => { resolve(port) })
    })
  })
}

/** Runs the binary to completion (for client commands). */
export async function runBinary (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(BINARY, args, { env: { PATH: '/usr/bin:/bin', HOME: os.tmpdir(), ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('close', code => { resolve({ code, stdout, stderr }) })
  })
}

export interface DaemonProcess {
  name: string
  child: ChildProcess
  rpc: string
  dataDir: string
  log: () => string
  exited: Promise<number | null>
  status: () => Promise<any>
}

/**
 * Every daemon a test spawned that has not exited yet. Killed when this test process exits for any
 * reason (a test runner's forced exit or timeout included), so no daemon outlives its test file.
 */
const live = new Set<ChildProcess>()
const killLive = (): void => { for (const c of live) c.kill('SIGKILL') }
process.once('exit', killLive)
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(sig, () => { killLive(); process.exit(128 + os.constants.signals[sig]) })
}

/** Runs `astrad ARGS` (a client command) and fails with its output unless it exits 0. */
async function mustRun (args: string[], what: string): Promise<string> {
  const r = await runBinary(args)
  if (r.code !== 0) throw new Error(`${what}: astrad ${args.join(' ')} exited ${String(r.code)}: ${r.stderr}`)
  return r.stdout.trim()
}

/** What a test cluster's operator holds: the cluster key and an operator credential. */
export interface ClusterSecrets {
  /** `astrad cluster init` output (mode 0600). */
  clusterKey: string
  /** `astrad cluster operator e2e-admin` output, for CLI commands (ASTRAD_CREDENTIAL). */
  credential: string
}

/** Makes a cluster's secrets the way an operator does, with the binary's `astrad cluster` commands. */
export async function createClusterSecrets (dir: string): Promise<ClusterSecrets> {
  fs.mkdirSync(dir, { recursive: true })
  const clusterKey = path.join(dir, 'cluster.key')
  const credential = path.join(dir, 'e2e-admin.cred')
  await mustRun(['cluster', 'init', clusterKey], 'creating the cluster key')
  await mustRun(['cluster', 'operator', 'e2e-admin', '--cluster-key', clusterKey, '--out', credential], 'creating an operator credential')
  return { clusterKey, credential }
}

/** A join token for `roles` (`astrad cluster token`). */
export async function createJoinToken (clusterKey: string, roles: string): Promise<string> {
  return await mustRun(['cluster', 'token', '--cluster-key', clusterKey, '--roles', roles, '--ttl', '1d'], `creating a join token for ${roles}`)
}

/** How a spawned daemon gets its cluster secret. */
export type SecretMode =
  /** --cluster-key: it signs its own certificate. */
  | 'cluster-key'
  /** ASTRAD_JOIN_TOKEN: a token for exactly the roles it runs. */
  | 'join-token'
  /** Nothing added: the test's args or env carry --cluster-key, --join-token or --insecure. */
  | 'none'

const SECRET_FLAGS = ['--insecure', '--cluster-key', '--join-token']
const SECRET_ENV = ['ASTRAD_INSECURE', 'ASTRAD_CLUSTER_KEY', 'ASTRAD_JOIN_TOKEN']

/**
 * Spawned `astrad start` processes with temp data dirs; `cleanup()` kills what is left.
 * They form one secure cluster, set up as an operator would (docs/security.md): a cluster key
 * made by `astrad cluster init`; node-only daemons join with a node token in ASTRAD_JOIN_TOKEN,
 * the others start with --cluster-key (unless the test passes its own secret, or `secret`);
 * `cli()` runs client commands with an operator credential in ASTRAD_CREDENTIAL.
 */
export class ProcessCluster {
  readonly procs: DaemonProcess[] = []
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-e2e-'))
  private secretsP?: Promise<ClusterSecrets>
  private readonly tokens = new Map<string, Promise<string>>()

  /** This cluster's key and operator credential (made at first use). */
  async secrets (): Promise<ClusterSecrets> {
    this.secretsP ??= createClusterSecrets(path.join(this.root, 'admin'))
    return await this.secretsP
  }

  /** A join token of this cluster for `roles` (one per role list). */
  async joinToken (roles: string): Promise<string> {
    let t = this.tokens.get(roles)
    if (t == null) {
      t = this.secrets().then(async s => await createJoinToken(s.clusterKey, roles))
      this.tokens.set(roles, t)
    }
    return await t
  }

  /** Runs a client command (status, app, model, notice …) as this cluster's operator. */
  async cli (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs?: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
    return await runBinary(args, { ASTRAD_CREDENTIAL: (await this.secrets()).credential, ...env }, timeoutMs)
  }

  /** The flags and env that give a daemon of `args` this cluster's secret. */
  private async secretFor (args: string[], env: NodeJS.ProcessEnv, mode?: SecretMode): Promise<{ args: string[], env: NodeJS.ProcessEnv }> {
    const own = args.some(a => SECRET_FLAGS.includes(a)) || SECRET_ENV.some(k => env[k] != null)
    const roles = args[args.indexOf('--role') + 1]
    const chosen = mode ?? (own ? 'none' : args.includes('--role') && roles === 'node' ? 'join-token' : 'cluster-key')
    if (chosen === 'none') return { args: [], env: {} }
    if (chosen === 'join-token') return { args: [], env: { ASTRAD_JOIN_TOKEN: await this.joinToken(args.includes('--role') ? roles ?? 'node' : 'node,resource,scheduler') } }
    return { args: ['--cluster-key', (await this.secrets()).clusterKey], env: {} }
  }

  async start (name: string, args: string[], options: { dataDir?: string, env?: NodeJS.ProcessEnv, secret?: SecretMode } = {}): Promise<DaemonProcess> {
    const rpcPort = await freePort()
    const rpc = `127.0.0.1:${rpcPort}`
    const dataDir = options.dataDir ?? path.join(this.root, name)
    const secret = await this.secretFor(args, options.env ?? {}, options.secret)
    let out = ''
    const child = spawn(BINARY, ['start', '--name', name, '--data-dir', dataDir, '--rpc', rpc, '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'info', ...secret.args, ...args], {
      env: { PATH: '/usr/bin:/bin', HOME: this.root, ...secret.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    live.add(child)
    const exited = new Promise<number | null>(resolve => { child.on('exit', code => { live.delete(child); resolve(code) }) })
    const status = async (): Promise<any> => {
      try {
        const res = await fetch(`http://${rpc}/v1/status`, { signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) })
        if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`)
        return await res.json()
      } catch (err) {
        const state = child.exitCode != null || child.signalCode != null ? ` (exited: ${child.exitCode ?? child.signalCode})` : ''
        throw new Error(`GET /v1/status of ${name} at ${rpc}${state} failed: ${String(err)}`)
      }
    }
    const proc: DaemonProcess = { name, child, rpc, dataDir, log: () => out, exited, status }
    this.procs.push(proc)
    let gone = false
    void exited.then(() => { gone = true })
    await waitFor(`${name} to answer on ${rpc}`, async () => {
      if (gone) throw new Error(`${name} exited early:\n${out}`)
      return (await fetch(`http://${rpc}/v2/health/live`)).ok
    }).catch((err: Error) => { throw new Error(`${err.message}\n--- log of ${name} ---\n${out}`) })
    return proc
  }

  async addr (p: DaemonProcess): Promise<string> {
    const s = await p.status()
    return s.self.addrs.find((a: string) => a.includes('/tcp/'))
  }

  async cleanup (): Promise<void> {
    for (const p of this.procs) if (p.child.exitCode == null && p.child.signalCode == null) p.child.kill('SIGKILL')
    await Promise.all(this.procs.map(async p => await p.exited))
    fs.rmSync(this.root, { recursive: true, force: true })
  }
}
