// The astrad side of bench:transfer: real dist/astrad processes on 127.0.0.1.
//
// Every phase starts its own cluster: one resource daemon (`--role resource,scheduler`: tracker
// and cluster log, no node role, so it holds and serves no pieces), the seeder (`--role node`,
// the daemon that ran `astrad model add`; its data dir persists across phases, so the model is
// added once) and fresh downloader daemons (`--role node`). Limits are set with the start flags
// `--upload-limit` / `--download-limit` (never `auto`: no speed probe runs).
//
//   pair     one unthrottled transfer seeder → downloader (both limits unlimited)
//   limiter  seeder --upload-limit U → one unthrottled downloader; then seeder unlimited →
//            downloader --download-limit U: rate of the limited side in 10 s windows vs U
//   swarm    seeder + N downloaders, all --upload-limit U --download-limit unlimited, all
//            N pulls at once: time until the last is complete, seeder upload ÷ size

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import fs from 'node:fs'
import path from 'node:path'
import { start, stop, sleep, now, freePort, waitFor } from './procs.ts'
import { status, cpuTicks, memory, metric, getText, clusterKeyFor, astradCli, type AstradDaemon } from './astrad.ts'
import type { TransferInfo } from '../../src/transfer/index.ts'
import { rpc, hashUrl, CpuSampler, rateWindows, RpcCallError, type CounterSample, type WindowStats } from './transfer-common.ts'

/** What GET /v1/transfers/:id answers (the daemon's own type). */
export type Transfer = TransferInfo

export interface LimitState {
  limit: number | null
  source: string
  node: number | null
  cluster: number | null
  measured: number | null
}

export interface Limits {
  upload: LimitState
  download: LimitState
  uploadRateBps: number
  downloadRateBps: number
}

interface ModelInfo {
  id: string
  size: number
  pieceSize: number
  pieces: number
  nodesComplete: number
  nodesPartial: number
  local: { havePieces: number, haveBytes: number, complete: boolean, pinned: boolean } | null
}

export interface AddedModel {
  id: string
  name: string
  size: number
  pieceSize: number
  pieces: number
  /** Wall time of `astrad model add` (upload over RPC, split, hash, fsync, cluster log). */
  addMs: number
}

export interface AstradContext {
  bin: string
  root: string
  file: string
  size: number
  sha256: string
  clockTicks: number
  verify: boolean
  log: (m: string) => void
  /** Set by the first phase that adds the model (the seeder's data dir keeps it). */
  model?: AddedModel
  /** Why `model add` failed (later phases fail fast instead of retrying). */
  addError?: string
}

const METRIC_UP = 'astrad_transfer_uploaded_bytes_total'
const METRIC_DOWN = 'astrad_transfer_downloaded_bytes_total'
const METRIC_FAIL = 'astrad_transfer_piece_failures_total'

interface NodeSpec {
  name: string
  roles: string
  upload: string
  download: string
  bootstrap?: string
}

/** Like bench/lib/astrad.ts startDaemon, with the transfer flags. */
async function startNode (ctx: AstradContext, spec: NodeSpec): Promise<AstradDaemon> {
  const dataDir = path.join(ctx.root, spec.name)
  fs.mkdirSync(dataDir, { recursive: true })
  const rpcPort = await freePort()
  const args = [
    'start', '--role', spec.roles, '--name', spec.name, '--data-dir', dataDir, '--cluster-key', await clusterKeyFor(ctx.root),
    '--listen', '/ip4/127.0.0.1/tcp/0', '--rpc', `127.0.0.1:${rpcPort}`, '--log-level', 'warn',
    '--upload-limit', spec.upload, '--download-limit', spec.download,
    // The seeder scrubs continuously, so goal 5 measures the scrub's rate bound under load
    // (by default a piece is re-hashed only once its last hash is a day old: never in a bench).
    ...(spec.name === 'seeder' ? ['--scrub-interval', '0'] : []),
    ...(spec.bootstrap != null ? ['--bootstrap', spec.bootstrap] : [])
  ]
  const proc = start(spec.name, ctx.bin, args)
  const doc = await Promise.race([
    waitFor(`${spec.name} RPC on :${rpcPort}`, async () => await status(rpcPort, 1_000), 20_000, 50),
    proc.exited.then(({ code, signal }) => { throw new Error(`${spec.name} exited ${code ?? signal} at start: ${proc.tail.join('\n')}`) })
  ])
  if (spec.bootstrap != null && spec.roles.includes('node')) {
    // `model add` / `pull` need the cluster log, reached through a resource: wait for it
    // (GET /v1/models answers 503 until a resource is connected).
    await waitFor(`${spec.name} to reach the cluster log (GET /v1/models)`, async () => {
      await rpc(rpcPort, 'GET', '/v1/models', undefined, 5_000)
      return true
    }, 30_000, 100)
  }
  return { name: spec.name, roles: spec.roles, dataDir, rpcPort, p2pPort: 0, proc, peerId: doc.self.peerId }
}

async function loopbackAddr (d: AstradDaemon): Promise<string> {
  const doc = await status(d.rpcPort)
  const addr = doc.self.addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  if (addr == null) throw new Error(`${d.name} has no loopback TCP address: ${JSON.stringify(doc.self.addrs)}`)
  return addr.includes('/p2p/') ? addr : `${addr}/p2p/${d.peerId}`
}

/** One phase's daemons; `down()` stops them all and removes the downloaders' data dirs. */
class Cluster {
  private readonly ctx: AstradContext
  readonly daemons: AstradDaemon[] = []
  private readonly scratch: string[] = []
  private bootstrap = ''

  constructor (ctx: AstradContext) {
    this.ctx = ctx
  }

  async up (): Promise<AstradDaemon> {
    // The resource's data dir persists: its cluster log holds the manifest between phases.
    const r = await startNode(this.ctx, { name: 'resource', roles: 'resource,scheduler', upload: 'unlimited', download: 'unlimited' })
    this.daemons.push(r)
    this.bootstrap = await loopbackAddr(r)
    return r
  }

  async node (name: string, upload: string, download: string, scratch: boolean): Promise<AstradDaemon> {
    if (scratch) {
      fs.rmSync(path.join(this.ctx.root, name), { recursive: true, force: true })
      this.scratch.push(path.join(this.ctx.root, name))
    }
    const d = await startNode(this.ctx, { name, roles: 'node', upload, download, bootstrap: this.bootstrap })
    this.daemons.push(d)
    return d
  }

  async down (): Promise<void> {
    await Promise.all(this.daemons.map(async d => { await stop(d.proc, 'SIGTERM', 5_000) }))
    for (const dir of this.scratch) fs.rmSync(dir, { recursive: true, force: true })
  }

  describe (): string {
    return this.daemons.map(d => `--- ${d.name} (exit ${String(d.proc.child.exitCode ?? d.proc.child.signalCode ?? 'running')}):\n${d.proc.tail.slice(-15).join('\n')}`).join('\n')
  }
}

async function withCluster<T> (ctx: AstradContext, fn: (c: Cluster) => Promise<T>): Promise<T> {
  const c = new Cluster(ctx)
  try {
    return await fn(c)
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    throw new Error(`${msg}\ndaemon output (last lines):\n${c.describe()}`, { cause: err })
  } finally {
    await c.down()
  }
}

/** `astrad model add FILE --json` on the seeder (once per run). */
async function ensureModel (ctx: AstradContext, seeder: AstradDaemon): Promise<AddedModel> {
  if (ctx.model != null) return ctx.model
  if (ctx.addError != null) throw new Error(`model add failed in an earlier phase: ${ctx.addError}`)
  const t0 = now()
  let stdout: string
  try {
    stdout = (await astradCli(ctx.bin, seeder, ['model', 'add', ctx.file, '--name', path.basename(ctx.file), '--json'], 600_000)).stdout
  } catch (err) {
    ctx.addError = err instanceof Error ? err.message : String(err)
    throw err
  }
  const addMs = now() - t0
  let doc: { id?: unknown, name?: unknown, size?: unknown, pieceSize?: unknown, pieces?: unknown }
  try {
    doc = JSON.parse(stdout.trim())
  } catch {
    throw new Error(`astrad model add --json printed no JSON: ${stdout.slice(0, 500)}`)
  }
  if (typeof doc.id !== 'string' || doc.size !== ctx.size) throw new Error(`astrad model add --json: unexpected ${stdout.slice(0, 500)} (file has ${ctx.size} bytes)`)
  ctx.model = { id: doc.id, name: String(doc.name), size: ctx.size, pieceSize: Number(doc.pieceSize), pieces: Number(doc.pieces), addMs }
  ctx.log(`model added on the seeder in ${(addMs / 1000).toFixed(1)} s: ${doc.id.slice(0, 12)}…, ${String(doc.pieces)} pieces of ${String(doc.pieceSize)} B`)
  return ctx.model
}

/** Waits until `d` sees the model in the cluster log and the tracker knows a complete holder. */
async function waitReady (d: AstradDaemon, id: string, holders: number): Promise<void> {
  await waitFor(`${d.name} to see model ${id.slice(0, 12)} with ${holders} complete holder(s)`, async () => {
    const info = (await rpc<ModelInfo>(d.rpcPort, 'GET', `/v1/models/${id}`)).body
    return info.nodesComplete >= holders ? true : undefined
  }, 60_000, 200)
}

async function counter (d: AstradDaemon, name: string): Promise<number> {
  return metric(await getText(d.rpcPort, '/metrics', 5_000), name)
}

/** Bytes re-hashed by the background scrub so far; null when the build has none. */
async function scrubCounter (d: AstradDaemon): Promise<number | null> {
  const text = await getText(d.rpcPort, '/metrics', 5_000)
  return text.includes('astrad_transfer_scrub_bytes_total') ? metric(text, 'astrad_transfer_scrub_bytes_total') : null
}

async function pull (d: AstradDaemon, id: string): Promise<Transfer> {
  return (await rpc<Transfer>(d.rpcPort, 'POST', `/v1/models/${id}/pull`)).body
}

async function transfer (d: AstradDaemon, id: string): Promise<Transfer> {
  return (await rpc<Transfer>(d.rpcPort, 'GET', `/v1/transfers/${id}`, undefined, 5_000)).body
}

async function limitsOf (d: AstradDaemon): Promise<Limits> {
  return (await rpc<{ limits: Limits }>(d.rpcPort, 'GET', '/v1/transfers')).body.limits
}

function cpuSec (ctx: AstradContext, d: AstradDaemon): number {
  try { return cpuTicks(d.proc.child.pid as number) / ctx.clockTicks } catch { return NaN }
}

function rssMiB (d: AstradDaemon): number {
  try { return memory(d.proc.child.pid as number).hwm / 2 ** 20 } catch { return NaN }
}

export interface VerifyResult {
  node: string
  ok: boolean
  bytes: number
  sha256: string
  header: string | undefined
}

/** Reads GET /v1/models/:id/data of each daemon and compares size and SHA-256 with the source. */
async function verify (ctx: AstradContext, ds: AstradDaemon[], id: string): Promise<VerifyResult[]> {
  const out: VerifyResult[] = []
  for (const d of ds) {
    const r = await hashUrl(d.rpcPort, `/v1/models/${id}/data`, 'x-astrad-sha256', 60_000)
    const ok = r.status === 200 && r.bytes === ctx.size && r.sha256 === ctx.sha256 && r.header === ctx.sha256
    out.push({ node: d.name, ok, bytes: r.bytes, sha256: r.sha256, header: r.header })
    if (!ok) throw new Error(`${d.name}: GET /v1/models/${id}/data gave HTTP ${r.status}, ${r.bytes} bytes, sha256 ${r.sha256} (header ${String(r.header)}); expected ${ctx.size} bytes ${ctx.sha256}`)
  }
  return out
}

interface PollOptions {
  intervalMs: number
  timeoutMs: number
  /** Called after each round with the latest Transfer of every downloader. */
  onRound?: (t: number, latest: Array<Transfer | undefined>) => void | Promise<void>
}

/** Polls GET /v1/transfers/:id on every downloader until all are complete; ms from t0 each. */
async function untilComplete (ds: AstradDaemon[], id: string, t0: number, o: PollOptions): Promise<{ doneMs: number[], last: Transfer[], polls: number, rpcMaxMs: number[] }> {
  const doneMs: Array<number | undefined> = ds.map(() => undefined)
  const latest: Array<Transfer | undefined> = ds.map(() => undefined)
  // Slowest answer of each downloader's RPC port: a daemon whose event loop is blocked answers late.
  const rpcMaxMs = ds.map(() => 0)
  let polls = 0
  const deadline = t0 + o.timeoutMs
  while (doneMs.some(x => x == null)) {
    if (now() > deadline) {
      const left = ds.filter((_, i) => doneMs[i] == null).map((d, i) => `${d.name}: ${JSON.stringify(latest[i] ?? null)}`)
      throw new Error(`not complete after ${(o.timeoutMs / 1000).toFixed(0)} s: ${left.join('; ')}`)
    }
    await Promise.all(ds.map(async (d, i) => {
      if (doneMs[i] != null) return
      const asked = now()
      let tr: Transfer
      try {
        tr = await transfer(d, id)
      } catch (err) {
        // A daemon starved of CPU by other work on the machine answers late: note it, ask again
        // next round (the overall deadline still bounds the phase).
        rpcMaxMs[i] = Math.max(rpcMaxMs[i] as number, now() - asked)
        if (d.proc.child.exitCode != null || d.proc.child.signalCode != null) throw err
        return
      }
      const at = now()
      rpcMaxMs[i] = Math.max(rpcMaxMs[i] as number, at - asked)
      latest[i] = tr
      if (tr.state === 'failed') throw new Error(`${d.name}: transfer failed: ${tr.error ?? '(no reason given)'}`)
      if (tr.state === 'complete') doneMs[i] = at - t0
    }))
    polls++
    await o.onRound?.(now(), latest)
    if (doneMs.some(x => x == null)) await sleep(o.intervalMs)
  }
  return { doneMs: doneMs as number[], last: latest as Transfer[], polls, rpcMaxMs }
}

// ---------------------------------------------------------------- pair (unthrottled loopback)

export interface PairResult {
  /** ms from POST …/pull until GET /v1/transfers/:id said complete (50 ms polls). */
  ms: number
  /** ms from the first byte the downloader's counter showed until complete. */
  spanMs: number
  bytesPerSec: number
  spanBytesPerSec: number
  seederCpuSec: number
  downloaderCpuSec: number
  seederPeakRssMiB: number
  downloaderPeakRssMiB: number
  machineBusyFraction: number
  /** CPU seconds used on the machine by processes other than the two daemons and the bench. */
  otherCpuSec: number
  /** Slowest GET /v1/transfers/:id answer of the downloader while downloading. */
  rpcMaxMs: number
  verify: VerifyResult[] | null
}

export async function runPair (ctx: AstradContext): Promise<PairResult> {
  return await withCluster(ctx, async c => {
    await c.up()
    const seeder = await c.node('seeder', 'unlimited', 'unlimited', false)
    const { id } = await ensureModel(ctx, seeder)
    const d = await c.node('pair-downloader', 'unlimited', 'unlimited', true)
    await waitReady(d, id, 1)
    const down0 = await counter(d, METRIC_DOWN)
    const cpu0 = [cpuSec(ctx, seeder), cpuSec(ctx, d), cpuSec(ctx, c.daemons[0] as AstradDaemon)]
    const sampler = new CpuSampler(ctx.clockTicks)
    let firstByteAt: number | undefined
    const t0 = now()
    await pull(d, id)
    const r = await untilComplete([d], id, t0, {
      intervalMs: 50,
      timeoutMs: 600_000,
      onRound: async t => {
        if (firstByteAt == null && (await counter(d, METRIC_DOWN)) > down0) firstByteAt = t
      }
    })
    const cpuMachine = sampler.stop()
    const ms = r.doneMs[0] as number
    const spanMs = firstByteAt != null ? ms - (firstByteAt - t0) : ms
    const result: PairResult = {
      ms,
      spanMs,
      bytesPerSec: ctx.size / (ms / 1000),
      spanBytesPerSec: ctx.size / (spanMs / 1000),
      seederCpuSec: cpuSec(ctx, seeder) - (cpu0[0] as number),
      downloaderCpuSec: cpuSec(ctx, d) - (cpu0[1] as number),
      seederPeakRssMiB: rssMiB(seeder),
      downloaderPeakRssMiB: rssMiB(d),
      machineBusyFraction: cpuMachine.busyFraction,
      otherCpuSec: 0,
      rpcMaxMs: r.rpcMaxMs[0] as number,
      verify: null
    }
    result.otherCpuSec = Math.max(0, cpuMachine.busyCoreSec - cpuMachine.benchCpuSec - result.seederCpuSec - result.downloaderCpuSec - (cpuSec(ctx, c.daemons[0] as AstradDaemon) - (cpu0[2] as number)))
    if (ctx.verify) result.verify = await verify(ctx, [d], id)
    return result
  })
}

// ---------------------------------------------------------------- limiter accuracy

export interface LimiterResult {
  direction: 'upload' | 'download'
  limit: number
  /** The limit state the limited daemon reported (GET /v1/transfers → limits). */
  reported: LimitState | null
  /** Windows of the limited daemon's own counter (bytes through its token bucket). */
  stats: WindowStats
  /** Same windows of the other end's counter (bytes the peer saw arrive / leave). */
  peerStats: WindowStats
  /** Samples: ms from the pull, limited side's bytes, other side's bytes (every ~100 ms). */
  samples: Array<[number, number, number]>
  completed: boolean
}

/**
 * upload: seeder --upload-limit U, downloader unlimited; the seeder's upload counter is
 * sampled. download: seeder unlimited, downloader --download-limit U; the downloader's
 * download counter. Measures `maxWindows` windows (or until the transfer ends).
 */
export async function runLimiter (ctx: AstradContext, direction: 'upload' | 'download', limit: number, windowSec: number, maxWindows: number): Promise<LimiterResult> {
  return await withCluster(ctx, async c => {
    await c.up()
    const seeder = await c.node('seeder', direction === 'upload' ? String(limit) : 'unlimited', 'unlimited', false)
    const { id } = await ensureModel(ctx, seeder)
    const d = await c.node(`limiter-${direction}`, 'unlimited', direction === 'download' ? String(limit) : 'unlimited', true)
    await waitReady(d, id, 1)
    const limited = direction === 'upload' ? seeder : d
    const other = direction === 'upload' ? d : seeder
    const name = direction === 'upload' ? METRIC_UP : METRIC_DOWN
    const otherName = direction === 'upload' ? METRIC_DOWN : METRIC_UP
    const reported = (await limitsOf(limited))[direction]
    if (reported.limit !== limit) throw new Error(`${limited.name} reports ${direction} limit ${JSON.stringify(reported)}, started with ${limit}`)
    const [base, otherBase] = await Promise.all([counter(limited, name), counter(other, otherName)])
    const t0 = now()
    const samples: CounterSample[] = [{ t: t0, bytes: 0 }]
    const otherSamples: CounterSample[] = [{ t: t0, bytes: 0 }]
    await pull(d, id)
    let completed = false
    let firstMove: number | undefined
    // Until maxWindows full windows after the first byte have been seen, or the end.
    const budgetMs = (maxWindows * windowSec + 1) * 1000
    const deadline = t0 + budgetMs + 60_000
    while (now() < deadline) {
      await sleep(100)
      const [a, b] = await Promise.all([counter(limited, name), counter(other, otherName)])
      const t = now()
      samples.push({ t, bytes: a - base })
      otherSamples.push({ t, bytes: b - otherBase })
      if (firstMove == null && a - base > 0) firstMove = t
      if (firstMove != null && t - firstMove >= budgetMs) break
      const tr = await transfer(d, id)
      if (tr.state === 'failed') throw new Error(`${d.name}: transfer failed: ${tr.error ?? '(no reason)'}`)
      if (tr.state === 'complete') { completed = true; break }
    }
    if (firstMove == null) throw new Error(`no ${direction} bytes counted within ${((deadline - t0) / 1000).toFixed(0)} s`)
    const endT = (samples[samples.length - 1] as CounterSample).t
    // A completed transfer's last second is partly idle: leave it out.
    const stats = rateWindows(samples, limit, windowSec, completed ? endT - 1000 : endT)
    const peerStats = rateWindows(otherSamples, limit, windowSec, completed ? endT - 1000 : endT)
    return { direction, limit, reported, stats, peerStats, samples: samples.map((x, i) => [Math.round(x.t - t0), x.bytes, otherSamples[i]?.bytes ?? NaN]), completed }
  })
}

// ---------------------------------------------------------------- swarm

export interface SwarmNodeResult {
  name: string
  doneMs: number
  uploadedBytes: number
  downloadedBytes: number
  pieceFailures: number
  cpuSec: number
  peakRssMiB: number
  /** Slowest GET /v1/transfers/:id answer while downloading (event-loop stalls show here). */
  rpcMaxMs: number
}

export interface SwarmResult {
  downloaders: number
  limit: number
  lastMs: number
  firstMs: number
  medianMs: number
  seederUploadedBytes: number
  seederCpuSec: number
  seederPeakRssMiB: number
  /** Σ uploaded by every node ÷ Σ needed (N × size): > 1 means duplicate or wasted bytes. */
  uploadOverhead: number
  nodes: SwarmNodeResult[]
  resourceCpuSec: number
  machineBusyFraction: number
  saturatedSeconds: number
  seconds: number
  /** CPU seconds of the bench process (polling) and of everything else on the machine. */
  benchCpuSec: number
  otherCpuSec: number
  /** Per second: ms since the pulls, bytes held by all downloaders together, seeder bytes uploaded. */
  timeline: Array<[number, number, number]>
  polls: number
  verify: VerifyResult[] | null
  /** Bytes the seeder's background scrub re-hashed during the swarm (null: this build has no scrub). */
  seederScrubBytes: number | null
  /** ms from the pulls to the last complete, as the scrub counter was read. */
  scrubSpanMs: number
}

export async function runSwarm (ctx: AstradContext, downloaders: number, limit: number, timeoutMs: number): Promise<SwarmResult> {
  return await withCluster(ctx, async c => {
    const resource = await c.up()
    const rate = String(limit)
    const seeder = await c.node('seeder', rate, 'unlimited', false)
    const { id } = await ensureModel(ctx, seeder)
    const ds: AstradDaemon[] = []
    // One by one: ten daemons starting at once on two cores slow each other's start-up only.
    for (let i = 0; i < downloaders; i++) ds.push(await c.node(`swarm-${i + 1}`, rate, 'unlimited', true))
    await Promise.all(ds.map(async d => { await waitReady(d, id, 1) }))
    for (const d of ds) {
      const l = await limitsOf(d)
      if (l.upload.limit !== limit) throw new Error(`${d.name} reports upload limit ${JSON.stringify(l.upload)}, started with --upload-limit ${limit}`)
    }
    ctx.log(`swarm: resource, seeder and ${downloaders} downloaders up; pulling on all at once`)
    const all = [seeder, ...ds]
    const up0 = await Promise.all(all.map(async d => await counter(d, METRIC_UP)))
    const down0 = await Promise.all(ds.map(async d => await counter(d, METRIC_DOWN)))
    const fail0 = await Promise.all(ds.map(async d => await counter(d, METRIC_FAIL)))
    const scrub0 = await scrubCounter(seeder)
    const cpu0 = [...all, resource].map(d => cpuSec(ctx, d))
    const sampler = new CpuSampler(ctx.clockTicks)
    const timeline: Array<[number, number, number]> = []
    let nextTick = 0
    const t0 = now()
    await Promise.all(ds.map(async d => { await pull(d, id) }))
    const r = await untilComplete(ds, id, t0, {
      intervalMs: 200,
      timeoutMs,
      onRound: async (t, latest) => {
        if (t - t0 < nextTick) return
        nextTick += 1000
        const held = latest.reduce((a, x) => a + (x?.haveBytes ?? 0), 0)
        const seederUp = (await counter(seeder, METRIC_UP).catch(() => NaN)) - (up0[0] as number)
        timeline.push([Math.round(t - t0), held, seederUp])
        if (timeline.length % 15 === 0) ctx.log(`swarm: ${(t - t0) / 1000 | 0} s, ${(held / (downloaders * ctx.size) * 100).toFixed(0)} % of all bytes held, seeder uploaded ${(seederUp / ctx.size).toFixed(2)} × size`)
      }
    })
    const cpuMachine = sampler.stop()
    const scrub1 = await scrubCounter(seeder)
    const scrubSpanMs = now() - t0
    const cpu1 = [...all, resource].map(d => cpuSec(ctx, d))
    const up1 = await Promise.all(all.map(async d => await counter(d, METRIC_UP)))
    const down1 = await Promise.all(ds.map(async d => await counter(d, METRIC_DOWN)))
    const fail1 = await Promise.all(ds.map(async d => await counter(d, METRIC_FAIL)))
    const uploaded = up1.map((x, i) => x - (up0[i] as number))
    const nodes: SwarmNodeResult[] = ds.map((d, i) => ({
      name: d.name,
      doneMs: r.doneMs[i] as number,
      uploadedBytes: uploaded[i + 1] as number,
      downloadedBytes: (down1[i] as number) - (down0[i] as number),
      pieceFailures: (fail1[i] as number) - (fail0[i] as number),
      cpuSec: (cpu1[i + 1] as number) - (cpu0[i + 1] as number),
      peakRssMiB: rssMiB(d),
      rpcMaxMs: r.rpcMaxMs[i] as number
    }))
    const sorted = [...r.doneMs].sort((a, b) => a - b)
    const mid = sorted.length / 2
    const result: SwarmResult = {
      downloaders,
      limit,
      lastMs: sorted[sorted.length - 1] as number,
      firstMs: sorted[0] as number,
      medianMs: sorted.length % 2 === 1 ? sorted[Math.floor(mid)] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2,
      seederUploadedBytes: uploaded[0] as number,
      seederCpuSec: (cpu1[0] as number) - (cpu0[0] as number),
      seederPeakRssMiB: rssMiB(seeder),
      uploadOverhead: uploaded.reduce((a, b) => a + b, 0) / (downloaders * ctx.size),
      nodes,
      resourceCpuSec: (cpu1[cpu1.length - 1] as number) - (cpu0[cpu0.length - 1] as number),
      machineBusyFraction: cpuMachine.busyFraction,
      saturatedSeconds: cpuMachine.saturatedSeconds,
      seconds: cpuMachine.seconds,
      benchCpuSec: cpuMachine.benchCpuSec,
      otherCpuSec: Math.max(0, cpuMachine.busyCoreSec - cpuMachine.benchCpuSec - cpu1.reduce((a, x, i) => a + x - (cpu0[i] as number), 0)),
      timeline,
      polls: r.polls,
      verify: null,
      seederScrubBytes: scrub0 != null && scrub1 != null ? scrub1 - scrub0 : null,
      scrubSpanMs
    }
    if (ctx.verify) {
      ctx.log(`swarm: verifying ${downloaders} copies (GET /v1/models/:id/data, SHA-256)`)
      result.verify = await verify(ctx, ds, id)
    }
    return result
  })
}

/** Whether `astrad model --help` works (the model commands exist in this build). */
export async function hasModelCommands (bin: string): Promise<boolean> {
  try {
    await promisify(execFile)(bin, ['model', '--help'], { timeout: 10_000 })
    return true
  } catch {
    return false
  }
}

export { RpcCallError }
