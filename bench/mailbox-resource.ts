// The resource of bench:mailbox (forked by bench/mailbox.ts): a real libp2p host (createHost:
// TCP, Noise, Yamux, gossipsub) on 127.0.0.1, a real cluster log (sqlite in the given data dir,
// every write fsynced) and the MailboxServer on top of it, as a resource daemon runs them.
//
// Calls (bench/mailbox-ipc.ts):
//   init {dataDir}                 → {addr, peerId, origin}
//   head                           → {source, rev, revision}
//   publish {notice}               one public notice: log.put(noticeKind, id, notice)
//   fanout {notice, peerIds}       one private copy per node, each put awaited (the baseline)
//   usage                          CPU time, pulls answered, disk counters (diffed by the parent)
//   inmem {peerIds, cells, ms}     the in-memory answer alone, in a loop: pulls/s
//   exit

import fs from 'node:fs'
import path from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { Registry } from 'prom-client'
import { createHost, type Host } from '../src/p2p/index.ts'
import { clusterLog, type ClusterLog } from '../src/clusterlog/index.ts'
import { DB_FILE } from '../src/clusterlog/constants.ts'
import { MailboxServer } from '../src/mailbox/server.ts'
import { inboxKey, inboxKind, noticeKind, type Notice } from '../src/mailbox/notice.ts'
import { decodePullRequest, encodePullRequest, encodePullResponse } from '../src/mailbox/wire.ts'
import { createLogger } from '../src/util/logger.ts'
import { serveIpc, wallNow } from './mailbox-ipc.ts'

export interface ResourceInfo {
  addr: string
  peerId: string
  origin: string
}

export interface Head {
  source: string
  rev: number
  revision: number
}

export interface WriteResult {
  /** Wall-clock ms (mailbox-ipc wallNow) when the first put started and the last one resolved. */
  startAt: number
  endAt: number
  writes: number
  /** JSON bytes of the values written (what the log stores per object, before sqlite overhead). */
  valueBytes: number
  /** Key bytes of the objects written. */
  keyBytes: number
}

export interface ResourceUsage {
  /** process.cpuUsage() user + system, µs. */
  cpuUs: number
  /** astrad_mailbox_pulls_total (all modes). */
  pulls: number
  /** Size of the sqlite database and its WAL on disk. */
  dbBytes: number
  walBytes: number
  /** /proc/self/io write_bytes: bytes this process caused to be written to storage; null if unreadable. */
  diskWriteBytes: number | null
  rssBytes: number
}

export interface InMemoryResult {
  /** index.pull + encodePullResponse (what the issue calls the in-memory answer). */
  answerPerSec: number
  /** decodePullRequest + index.pull + encodePullResponse: the whole handler minus libp2p. */
  servePerSec: number
  itemsPerAnswer: number
}

let libp2p: Host | undefined
let log: ClusterLog | undefined
let server: MailboxServer | undefined
let dataDir = ''
const registry = new Registry()

function started (): { log: ClusterLog, server: MailboxServer } {
  if (log == null || server == null) throw new Error('resource not initialised')
  return { log, server }
}

function fileSize (file: string): number {
  try { return fs.statSync(file).size } catch { return 0 }
}

function diskWriteBytes (): number | null {
  try {
    const m = /^write_bytes:\s*(\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))
    return m != null ? Number(m[1]) : null
  } catch {
    return null
  }
}

async function pullsAnswered (): Promise<number> {
  const metric = registry.getSingleMetric('astrad_mailbox_pulls_total')
  if (metric == null) return 0
  const values = (await metric.get()).values
  return values.reduce((a, v) => a + v.value, 0)
}

async function init (args: { dataDir: string }): Promise<ResourceInfo> {
  dataDir = args.dataDir
  const logger = createLogger({ level: 'warn', fd: 2, base: { bench: 'mailbox-resource' } })
  libp2p = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], relay: { reserve: 'never' } })
  await libp2p.start()
  log = clusterLog({ dataDir })({ libp2p, logger, registry })
  await log.start()
  server = new MailboxServer({ libp2p, log, logger, registry })
  await server.start()
  const addr = libp2p.getMultiaddrs().find(a => a.toString().startsWith('/ip4/127.0.0.1/tcp/'))
  if (addr == null) throw new Error('resource has no loopback address')
  return { addr: addr.toString(), peerId: libp2p.peerId.toString(), origin: log.origin }
}

function head (): Head {
  const d = started().server.digest()
  return { source: d.source, rev: d.rev, revision: d.revision }
}

async function publish (args: { notice: Notice }): Promise<WriteResult> {
  const { log } = started()
  const n = args.notice
  const startAt = wallNow()
  const entry = await log.put(noticeKind, n.id, n)
  const endAt = wallNow()
  return { startAt, endAt, writes: 1, valueBytes: Buffer.byteLength(JSON.stringify(entry.value)), keyBytes: Buffer.byteLength(n.id) }
}

async function fanout (args: { notice: Notice, peerIds: string[] }): Promise<WriteResult> {
  const { log } = started()
  const n = args.notice
  let valueBytes = 0
  let keyBytes = 0
  const startAt = wallNow()
  for (const peerId of args.peerIds) {
    const key = inboxKey(peerId, n.id)
    const entry = await log.put(inboxKind, key, { ...n, audience: { cells: null, canary: null, node: peerId } })
    valueBytes += Buffer.byteLength(JSON.stringify(entry.value))
    keyBytes += Buffer.byteLength(key)
  }
  const endAt = wallNow()
  return { startAt, endAt, writes: args.peerIds.length, valueBytes, keyBytes }
}

async function usage (): Promise<ResourceUsage> {
  const cpu = process.cpuUsage()
  return {
    cpuUs: cpu.user + cpu.system,
    pulls: await pullsAnswered(),
    dbBytes: fileSize(path.join(dataDir, DB_FILE)),
    walBytes: fileSize(path.join(dataDir, `${DB_FILE}-wal`)),
    diskWriteBytes: diskWriteBytes(),
    rssBytes: process.memoryUsage().rss
  }
}

/** Caught-up pulls answered straight from the index, round-robin over the given nodes. */
function inmem (args: { peerIds: string[], cells: string[], ms: number }): InMemoryResult {
  const { server } = started()
  const index = server.index
  const cursor = { source: index.source, rev: index.rev }
  const nodes = args.peerIds.map((peerId, i) => ({ peerId, cell: args.cells[i] ?? 'default' }))
  const requests = nodes.map(node => encodePullRequest({ node: node.peerId, cell: node.cell, cursor }))
  let items = 0
  let count = 0
  const loop = (fn: (i: number) => void): number => {
    count = 0
    const t0 = performance.now()
    const until = t0 + args.ms
    // Checked every 256 answers: performance.now() is not free at this rate.
    while (performance.now() < until) {
      for (let k = 0; k < 256; k++) fn(count++ % nodes.length)
    }
    return count / ((performance.now() - t0) / 1000)
  }
  const answerPerSec = loop(i => {
    const a = index.pull(nodes[i] as { peerId: string, cell: string }, cursor)
    items += a.items.length
    encodePullResponse(a.head, a.items)
  })
  const itemsPerAnswer = items / Math.max(1, count)
  const servePerSec = loop(i => {
    const req = decodePullRequest(requests[i] as Uint8Array)
    const a = index.pull({ peerId: req.node, cell: req.cell }, req.cursor)
    encodePullResponse(a.head, a.items)
  })
  return { answerPerSec, servePerSec, itemsPerAnswer }
}

async function exit (): Promise<void> {
  setImmediate(() => {
    void (async () => {
      try { await server?.stop() } catch {}
      try { await log?.stop() } catch {}
      try { await libp2p?.stop() } catch {}
      process.exit(0)
    })()
  })
}

serveIpc({
  init: async args => await init(args as { dataDir: string }),
  head,
  publish: async args => await publish(args as { notice: Notice }),
  fanout: async args => await fanout(args as { notice: Notice, peerIds: string[] }),
  usage,
  inmem: args => inmem(args as { peerIds: string[], cells: string[], ms: number }),
  exit
})
