import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Registry as RegistryType } from 'prom-client'
import { Registry } from 'prom-client'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { silentLogger, type Logger } from '../../src/util/logger.ts'
import { clusterLog, type ClusterLog, type ClusterLogInit } from '../../src/clusterlog/index.ts'

/** A cluster-log resource in this process: its own libp2p host on 127.0.0.1, data dir and metrics. */
export interface Resource {
  name: string
  host: Host
  log: ClusterLog
  registry: RegistryType
  dataDir: string
  key: PrivateKey
}

export interface ResourceOptions extends Partial<Omit<ClusterLogInit, 'dataDir'>> {
  dataDir?: string
  key?: PrivateKey
  logger?: Logger
}

/**
 * Real libp2p hosts and cluster-log resources for integration tests, under one temp dir;
 * `stopAll()` stops every host still running, `cleanup()` also removes the dir.
 */
export function clusterLogTestbed (defaults: { syncIntervalMs: number }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-clusterlog-it-'))
  const running = new Set<Host>()

  async function newHost (key?: PrivateKey): Promise<Host> {
    const host = await createHost({ privateKey: key ?? await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await host.start()
    running.add(host)
    return host
  }

  async function resource (name: string, opts: ResourceOptions = {}): Promise<Resource> {
    const { key: given, dataDir: dir, logger, ...init } = opts
    const key = given ?? await generateKeyPair('Ed25519')
    const dataDir = dir ?? path.join(root, `${name}-${Math.random().toString(36).slice(2, 8)}`)
    const host = await newHost(key)
    const registry = new Registry()
    const log = clusterLog({ syncIntervalMs: defaults.syncIntervalMs, ...init, dataDir })({ libp2p: host, logger: logger ?? silentLogger(), registry })
    await log.start()
    return { name, host, log, registry, dataDir, key }
  }

  async function stopResource (r: Resource): Promise<void> {
    await r.log.stop()
    await r.host.stop()
    running.delete(r.host)
  }

  async function stopAll (): Promise<void> {
    await Promise.allSettled([...running].map(async h => { await h.stop() }))
    running.clear()
  }

  async function cleanup (): Promise<void> {
    await stopAll()
    fs.rmSync(root, { recursive: true, force: true })
  }

  return { root, newHost, resource, stopResource, stopAll, cleanup }
}

export async function connect (a: Host, b: Host): Promise<void> {
  const addr = b.getMultiaddrs()[0]
  assert.ok(addr != null)
  await a.dial(addr)
}

/** A counter's value (with `reason` label when given; 0 when the metric or label is absent). */
export async function counter (registry: RegistryType, name: string, reason?: string): Promise<number> {
  const metric = registry.getSingleMetric(name)
  if (metric == null) return 0
  return (await metric.get()).values.find(v => reason == null || v.labels.reason === reason)?.value ?? 0
}
