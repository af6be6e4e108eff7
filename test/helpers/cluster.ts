import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Daemon, type DaemonOptions } from '../../src/daemon/index.ts'
import { defaultConfig, type DaemonConfig } from '../../src/config/index.ts'
import { silentLogger } from '../../src/util/logger.ts'

/** Creates daemons in this process on 127.0.0.1 with temp data dirs; `cleanup()` stops all. */
export class TestCluster {
  readonly daemons: Daemon[] = []
  readonly dirs: string[] = []

  async start (config: Partial<DaemonConfig> & { roles: DaemonConfig['roles'] }, options: Partial<DaemonOptions> = {}): Promise<Daemon> {
    const dataDir = config.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-'))
    if (config.dataDir == null) this.dirs.push(dataDir)
    const daemon = new Daemon({
      config: {
        ...defaultConfig(),
        name: `d${this.daemons.length}`,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        rpc: { host: '127.0.0.1', port: 0 },
        cores: 2,
        ...config,
        dataDir
      },
      logger: silentLogger(),
      drainTimeoutMs: 2_000,
      ...options
    })
    this.daemons.push(daemon)
    await daemon.start()
    return daemon
  }

  /** The first TCP multiaddr (with /p2p/) of a daemon, for --bootstrap. */
  addr (d: Daemon): string {
    const a = d.host.getMultiaddrs().map(String).find(s => s.includes('/tcp/'))
    if (a == null) throw new Error('daemon has no TCP address')
    return a
  }

  async cleanup (): Promise<void> {
    await Promise.allSettled(this.daemons.map(async d => { await d.stop() }))
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * How long a test waits for something that must happen before it calls it a failure. A deadline
 * here only decides when to give up, never how fast astrad must be (speed is measured by
 * `npm run bench:*`): it is generous so the suite passes on a machine at load 8.
 */
export const WAIT_MS = 30_000

/**
 * Polls `check` until it returns a truthy value; after `timeoutMs` fails naming `what` and the
 * last thing seen (the last error thrown, or the last value returned).
 */
export async function waitFor<T> (what: string, check: () => T | Promise<T>, timeoutMs = WAIT_MS, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  let lastValue: unknown
  while (Date.now() < deadline) {
    try {
      const v = await check()
      if (v) return v
      lastValue = v
      last = undefined
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  const seen = last != null ? `last error: ${String(last)}` : `last value: ${describe(lastValue)}`
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${seen})`)
}

function describe (v: unknown): string {
  try {
    const s = JSON.stringify(v)
    return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}…` : s
  } catch {
    return String(v)
  }
}

/** State of `peerId` in a daemon's view (undefined if not listed). */
export function stateIn (d: Daemon, peerId: string): string | undefined {
  return d.view?.list.get(peerId)?.state
}
