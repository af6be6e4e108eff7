import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Daemon, type DaemonOptions } from '../../src/daemon/index.ts'
import { defaultConfig, type DaemonConfig } from '../../src/config/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { encodeClusterSecret, newClusterSecret, writeSecretFile } from '../../src/trust/index.ts'

export { waitFor, WAIT_MS } from './wait.ts'

/**
 * Creates daemons in this process on 127.0.0.1 with temp data dirs; `cleanup()` stops all.
 * They form one secure cluster: each gets the cluster key of this TestCluster (created at the
 * first start) unless the config names its own --cluster-key, --join-token or --insecure.
 */
export class TestCluster {
  readonly daemons: Daemon[] = []
  readonly dirs: string[] = []
  private keyFile?: string

  /** This cluster's key file (created on first use). */
  async clusterKey (): Promise<string> {
    if (this.keyFile == null) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-key-'))
      this.dirs.push(dir)
      const file = path.join(dir, 'cluster.key')
      writeSecretFile(file, encodeClusterSecret(await newClusterSecret()))
      this.keyFile = file
    }
    return this.keyFile
  }

  async start (config: Partial<DaemonConfig> & { roles: DaemonConfig['roles'] }, options: Partial<DaemonOptions> = {}): Promise<Daemon> {
    const dataDir = config.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-'))
    if (config.dataDir == null) this.dirs.push(dataDir)
    const secret = config.insecure === true || config.clusterKey != null || config.joinToken != null ? {} : { clusterKey: await this.clusterKey() }
    const daemon = new Daemon({
      config: {
        ...defaultConfig(),
        name: `d${this.daemons.length}`,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        rpc: { host: '127.0.0.1', port: 0 },
        cores: 2,
        ...secret,
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

/** State of `peerId` in a daemon's view (undefined if not listed). */
export function stateIn (d: Daemon, peerId: string): string | undefined {
  return d.view?.list.get(peerId)?.state
}
