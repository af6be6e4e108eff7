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

/** Spawned `astrad start` processes with temp data dirs; `cleanup()` kills what is left. */
export class ProcessCluster {
  readonly procs: DaemonProcess[] = []
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-e2e-'))

  async start (name: string, args: string[], options: { dataDir?: string, env?: NodeJS.ProcessEnv } = {}): Promise<DaemonProcess> {
    const rpcPort = await freePort()
    const rpc = `127.0.0.1:${rpcPort}`
    const dataDir = options.dataDir ?? path.join(this.root, name)
    let out = ''
    const child = spawn(BINARY, ['start', '--name', name, '--data-dir', dataDir, '--rpc', rpc, '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'info', ...args], {
      env: { PATH: '/usr/bin:/bin', HOME: this.root, ...options.env },
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
