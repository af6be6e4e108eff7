// Model distribution benchmark (npm run bench:transfer; docs/bench-transfer.md).
//
//   1. raw libp2p: one connection between two processes (the daemon's TCP + Noise + Yamux
//      stack) pushing the model's size in bytes over 1 and 2 streams: the ceiling.
//   2. astrad pair: one unthrottled transfer between two daemons on loopback (MB/s vs 1.).
//   3. astrad limiter: seeder --upload-limit U → one downloader, then a downloader with
//      --download-limit U: rate in 10 s windows ÷ U (goal ±5 %).
//   4. astrad swarm: the seeder (which ran `astrad model add`) and N downloaders, all
//      --upload-limit U --download-limit unlimited, N pulls at once: time until the last is
//      complete ÷ (size / U), the physical floor (goal ≤ 1.3); seeder upload ÷ size (≤ 1.5).
//   5. central origin: nginx (Debian) serving the same file to N clients with total egress U
//      (limit_rate U/N per connection): time until the last is complete ÷ floor (≈ N).
//
// Usage: node bench/transfer.ts --help

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureBuilt, clockTicks } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, phaseRunner, installCleanupHooks, makeTempRoot, cleanup, setKeepTemp, now, sleep } from './lib/procs.ts'
import { round, ratio, summarize } from './lib/stats.ts'
import { parseBytes, parseRate } from '../src/config/units.ts'
import { writeRandomFile, machineCpu } from './lib/transfer-common.ts'
import { SCRUB_RATE_BPS } from '../src/transfer/constants.ts'
import { runRaw, type RawResult } from './lib/transfer-raw.ts'
import { runNginx, nginxVersion, type NginxResult } from './lib/transfer-nginx.ts'
import {
  runPair, runLimiter, runSwarm, hasModelCommands,
  type AstradContext, type PairResult, type LimiterResult, type SwarmResult
} from './lib/transfer-astrad.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

type Phase = 'raw' | 'pair' | 'limiter' | 'swarm' | 'nginx'
const PHASES: Phase[] = ['raw', 'pair', 'limiter', 'swarm', 'nginx']

interface Options {
  /** Swarm and origin model size. */
  size: number
  /** Raw, pair and limiter model size. */
  pairSize: number
  /** Upload limit U, bytes/s. */
  limit: number
  limitDefaulted: boolean
  nodes: number
  windowSec: number
  limiterWindows: number
  rawStreams: number[]
  /** Goal 1: raw (1 stream) and pair runs, alternated, this many times each. */
  pairTrials: number
  quick: boolean
  verify: boolean
  skip: Set<Phase>
  out: string
  keepTemp: boolean
  build: boolean
  bin: string
}

/**
 * The issue asks for U = 25 MB/s. With --upload-limit U on N + 1 daemons the swarm moves up to
 * ~N × U of Noise-encrypted, hashed, fsynced bytes through one machine; on a small machine
 * that is CPU-bound and would measure the CPU, not the protocol. Default: 25 MB/s from 7
 * cores, 4 MB/s per core below (2 cores: 8 MB/s). Whether a run was CPU-bound is printed.
 */
function defaultLimit (): number {
  return Math.min(25, 4 * os.availableParallelism()) * 1e6
}

const USAGE = `usage: node bench/transfer.ts [options]
  --size BYTES          swarm and origin model size (default 1GiB; --quick: 32MiB), e.g. 512MiB
  --pair-size BYTES     raw, pair and limiter model size (default: --size; --quick: 128MiB)
  --upload-limit RATE   U, every node's upload limit and the origin's total egress
                        (default: 25MB/s on >= 7 cores, else 4 MB/s per core: ${(defaultLimit() / 1e6).toFixed(0)}MB/s here)
  --nodes N             downloaders / origin clients (default 8)
  --window SEC          limiter window (default 10; --quick: 5)
  --limiter-windows N   windows measured per limiter direction (default 6; --quick: 2)
  --raw-streams LIST    raw libp2p runs, streams per run (default 1,2; --quick: 1)
  --pair-trials N       goal 1: raw (1 stream) and pair alternated N times each; the ratio is
                        the median of each pair ÷ the raw run just before it (default 3; --quick: 2)
  --quick               32 MiB swarm, 128 MiB pair, 2 limiter windows of 5 s (< 3 min)
  --skip PHASE[,PHASE]  leave out phases: ${PHASES.join(', ')}
  --no-verify           do not read back and hash every downloaded copy
  --out FILE            JSON results (default bench/results/transfer.json)
  --keep-temp           keep the temp dir (daemon data) for inspection
  --no-build            do not rebuild dist/astrad when src/ is newer
  --astrad FILE         executable to test (default dist/astrad)
`

function parseOptions (argv: string[]): Options {
  const o: Options = {
    size: 0,
    pairSize: 0,
    limit: defaultLimit(),
    limitDefaulted: true,
    nodes: 8,
    windowSec: 10,
    limiterWindows: 0,
    rawStreams: [1, 2],
    pairTrials: 3,
    quick: false,
    verify: true,
    skip: new Set(),
    out: path.join(ROOT, 'bench/results/transfer.json'),
    keepTemp: false,
    build: true,
    bin: path.join(ROOT, 'dist/astrad')
  }
  const v = parseFlags(argv, {
    size: { type: 'string' },
    'pair-size': { type: 'string' },
    'upload-limit': { type: 'string' },
    nodes: { type: 'string' },
    window: { type: 'string' },
    'limiter-windows': { type: 'string' },
    'raw-streams': { type: 'string' },
    'pair-trials': { type: 'string' },
    quick: { type: 'boolean' },
    skip: { type: 'string' },
    'no-verify': { type: 'boolean' },
    out: { type: 'string' },
    'keep-temp': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    astrad: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  let size: number | undefined
  let windows: number | undefined
  if (v.size !== undefined) {
    try { size = parseBytes(v.size) } catch (err) { throw new UsageError(`--size: ${err instanceof Error ? err.message : String(err)}`) }
    if (size < 16 * 2 ** 20 || size > 64 * 2 ** 30) throw new UsageError(`--size must be between 16MiB and 64GiB, got ${v.size}`)
  }
  let pairSize: number | undefined
  if (v['pair-size'] !== undefined) {
    try { pairSize = parseBytes(v['pair-size']) } catch (err) { throw new UsageError(`--pair-size: ${err instanceof Error ? err.message : String(err)}`) }
    if (pairSize < 16 * 2 ** 20 || pairSize > 64 * 2 ** 30) throw new UsageError(`--pair-size must be between 16MiB and 64GiB, got ${v['pair-size']}`)
  }
  if (v['upload-limit'] !== undefined) {
    try { o.limit = parseRate(v['upload-limit']) } catch (err) { throw new UsageError(`--upload-limit: ${err instanceof Error ? err.message : String(err)}`) }
    if (o.limit < 100_000) throw new UsageError(`--upload-limit must be at least 100kB/s, got ${v['upload-limit']}`)
    o.limitDefaulted = false
  }
  if (v.nodes !== undefined) o.nodes = intFlag('--nodes', v.nodes, 1, 32)
  if (v.window !== undefined) o.windowSec = intFlag('--window', v.window, 1, 120)
  else if (v.quick === true) o.windowSec = 5
  if (v['limiter-windows'] !== undefined) windows = intFlag('--limiter-windows', v['limiter-windows'], 1, 100)
  if (v['raw-streams'] !== undefined) o.rawStreams = v['raw-streams'].split(',').map(x => intFlag('--raw-streams', x.trim(), 1, 64))
  else if (v.quick === true) o.rawStreams = [1]
  if (v['pair-trials'] !== undefined) o.pairTrials = intFlag('--pair-trials', v['pair-trials'], 1, 20)
  else if (v.quick === true) o.pairTrials = 2
  o.quick = v.quick === true
  for (const p of (v.skip ?? '').split(',').map(x => x.trim()).filter(x => x !== '')) {
    if (!PHASES.includes(p as Phase)) throw new UsageError(`--skip: unknown phase '${p}' (phases: ${PHASES.join(', ')})`)
    o.skip.add(p as Phase)
  }
  if (v['no-verify'] === true) o.verify = false
  if (v.out !== undefined) o.out = path.resolve(v.out)
  if (v['keep-temp'] === true) o.keepTemp = true
  if (v['no-build'] === true) o.build = false
  if (v.astrad !== undefined) { o.bin = path.resolve(v.astrad); o.build = false }
  o.size = size ?? (o.quick ? 32 * 2 ** 20 : 2 ** 30)
  o.pairSize = pairSize ?? (o.quick && size === undefined ? 128 * 2 ** 20 : o.size)
  o.limiterWindows = windows ?? (o.quick ? 2 : 6)
  return o
}

function diskOf (dir: string): string | null {
  try {
    const lines = execFileSync('df', ['-P', '-T', dir], { encoding: 'utf8' }).trim().split('\n')
    const f = (lines[1] ?? '').split(/\s+/)
    return `${f[1] ?? '?'} on ${f[0] ?? '?'}, ${((Number(f[4]) * 1024) / 1e9).toFixed(0)} GB free`
  } catch { return null }
}

function simulationNotes (o: Options): string[] {
  const U = `${(o.limit / 1e6).toFixed(1)} MB/s`
  return [
    `All daemons, nginx and its clients run on one machine (${os.availableParallelism()} cores) and talk over loopback: no latency, loss or link capacity. The only bandwidth limit is the one under test: astrad's own token buckets (--upload-limit ${U} on every node) and nginx's limit_rate. A real node's uplink is its NIC or ISP, and real downlinks are finite too (here downloads are unlimited).`,
    `U = ${U}${o.limitDefaulted ? ' (default for this machine)' : ''} and a ${(o.size / 2 ** 20).toFixed(0)} MiB model${o.size === 2 ** 30 && o.limit === 25e6 ? ', as the issue asks' : `; the issue asks for 1 GiB at 25 MB/s. With N + 1 daemons uploading at U the swarm moves up to ~${o.nodes} × U of encrypted, hashed and fsynced bytes through this one machine, so U is scaled to what its cores can carry`}. The ratios (time ÷ size/U, bytes ÷ size) are what carry over; whether the swarm was CPU-bound is printed (machine busy ≥ 90 %).`,
    'All 10 astrad processes share the machine\'s cores (real nodes each have their own); private-network and Noise encryption, SHA-256 of every piece and fsync of every piece run for every byte on both ends. nginx sends plaintext with sendfile (no TLS), its clients hash and write with one fsync at the end: the baseline gets the cheaper byte path.',
    `The central origin is modelled by nginx's limit_rate U/${o.nodes} per connection (each client gets an exactly equal share of U). A real origin link shaped to U (tc) shares it through TCP congestion control, less evenly; the time until the LAST client completes is the same ~${o.nodes} × size/U either way.`,
    'The model file, every stored piece and every downloaded copy stay in the page cache (the machine has far more RAM than the run writes): piece reads never wait for a disk; writes and fsyncs go to the one virtual disk all daemons share.',
    `${o.nodes} downloaders and one seeder: the tracker returns up to 20 holders, so every downloader knows every holder from the start; in a fleet of thousands each sees a random subset. All daemons connect from 127.0.0.1 (as behind one NAT), and membership heartbeats are the only other traffic.`,
    'Completion times of astrad downloads are read by polling GET /v1/transfers/:id every 200 ms (pair: 50 ms) on each downloader, so they are late by up to one poll; nginx client times are exact (end of the response + fsync).',
    'Raw libp2p pushes bytes from memory to a receiver that only counts them: no disk, no hashing, no piece protocol, no backpressure beyond yamux\'s window. It is the same stack as the daemon (src/p2p/host.ts createHost: TCP, the private network (pnet) every cluster runs, Noise, Yamux) in two processes.',
    'Limiter accuracy is read from the daemons\' own counters (astrad_transfer_uploaded/downloaded_bytes_total, sampled every ~100 ms, interpolated): bytes that passed the token bucket on the limited side, cross-checked by the counter at the other end; kernel socket buffers between the two (a few MB on loopback) blur a 10 s window by at most that much.'
  ]
}

function mb (bps: number | null | undefined): string {
  return bps == null || !Number.isFinite(bps) ? '-' : (bps / 1e6).toFixed(1)
}

function sec (ms: number | null | undefined): string {
  return ms == null || !Number.isFinite(ms) ? '-' : (ms / 1000).toFixed(1)
}

function fx (x: number | null | undefined, d = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

/** One goal-1 trial: a raw 1-stream run, then a pair run right after it. */
interface PairTrial {
  rawBytesPerSec: number
  pairBytesPerSec: number
  ratio: number
  rawCpuSec: { sender: number, receiver: number }
  pairCpuSec: { seeder: number, downloader: number }
}

interface Results {
  raw: RawResult[]
  /** The last trial's pair run (details: RSS, CPU, verify). */
  pair?: PairResult
  trials: PairTrial[]
  limiter: LimiterResult[]
  swarm?: SwarmResult
  nginx?: NginxResult
}

function summaryOf (o: Options, r: Results) {
  const floorSec = o.size / o.limit
  const raw1 = r.raw.find(x => x.streams === 1)
  // Goal 1 from the alternated trials: the machine's load swings raw libp2p 2–3× between runs
  // minutes apart, so each pair run is compared with the raw run just before it.
  const trialRatio = summarize(r.trials.map(t => t.ratio))?.median
  const trialRaw = summarize(r.trials.map(t => t.rawBytesPerSec))?.median
  const trialPair = summarize(r.trials.map(t => t.pairBytesPerSec))?.median
  const rawBest = r.raw.length > 0 ? Math.max(...r.raw.map(x => x.bytesPerSec)) : undefined
  const swarmRatio = r.swarm != null ? r.swarm.lastMs / 1000 / floorSec : null
  const nginxRatio = r.nginx != null ? r.nginx.lastMs / 1000 / floorSec : null
  const duplicates = r.swarm != null ? r.swarm.uploadOverhead - 1 : null
  const pairOverRaw1 = trialRatio ?? ratio(r.pair?.bytesPerSec, raw1?.bytesPerSec)
  // The seeder's scrub re-hashes at most --scrub-rate (the default here): measured ÷ bound.
  const scrubOverRate = r.swarm?.seederScrubBytes != null && r.swarm.scrubSpanMs > 0 ? r.swarm.seederScrubBytes / (r.swarm.scrubSpanMs / 1000) / SCRUB_RATE_BPS : null
  return {
    floorSec,
    astradLastOverFloor: swarmRatio,
    centralLastOverFloor: nginxRatio,
    centralOverAstrad: ratio(r.nginx?.lastMs, r.swarm?.lastMs),
    duplicateFraction: duplicates,
    scrubOverRate,
    seederUploadOverSize: r.swarm != null ? r.swarm.seederUploadedBytes / o.size : null,
    swarmCpuBound: r.swarm != null ? r.swarm.machineBusyFraction >= 0.9 : null,
    pairBytesPerSec: trialPair ?? r.pair?.bytesPerSec ?? null,
    pairSpanBytesPerSec: r.pair?.spanBytesPerSec ?? null,
    raw1BytesPerSec: trialRaw ?? raw1?.bytesPerSec ?? null,
    pairTrialRatios: r.trials.map(t => round(t.ratio, 3)),
    rawBestBytesPerSec: rawBest ?? null,
    pairOverRaw1,
    pairOverRawBest: ratio(r.pair?.bytesPerSec, rawBest),
    limiter: r.limiter.map(l => ({
      direction: l.direction,
      windows: l.stats.windows.length,
      minRatio: l.stats.windows.length > 0 ? Math.min(...l.stats.windows.map(w => w.ratio)) : null,
      maxRatio: l.stats.windows.length > 0 ? Math.max(...l.stats.windows.map(w => w.ratio)) : null,
      withinFivePct: l.stats.withinFivePct,
      slidingMinRatio: l.stats.slidingMinRatio,
      slidingMaxRatio: l.stats.slidingMaxRatio,
      peerMinRatio: l.peerStats.windows.length > 0 ? Math.min(...l.peerStats.windows.map(w => w.ratio)) : null,
      peerMaxRatio: l.peerStats.windows.length > 0 ? Math.max(...l.peerStats.windows.map(w => w.ratio)) : null
    })),
    goals: {
      pairOverRawAtLeast0_8: pairOverRaw1 != null ? pairOverRaw1 >= 0.8 : null,
      astradLastOverFloorAtMost1_3: swarmRatio != null ? swarmRatio <= 1.3 : null,
      duplicatesAtMost5Pct: duplicates != null ? duplicates <= 0.05 : null,
      // The token bucket's burst (≥ 64 KiB) is the only excess allowed: 2 % over a run of seconds.
      scrubWithinItsRate: scrubOverRate != null ? scrubOverRate <= 1.02 : null,
      seederUploadAtMost1_5: r.swarm != null ? r.swarm.seederUploadedBytes / o.size <= 1.5 : null,
      // Not measured when no direction had a whole window (a transfer shorter than --window).
      limiterWithin5Pct: r.limiter.some(l => l.stats.windows.length > 0) ? r.limiter.every(l => l.stats.windows.every(w => Math.abs(w.ratio - 1) <= 0.05)) : null
    }
  }
}

function printTable (o: Options, r: Results, s: ReturnType<typeof summaryOf>, errors: string[], out: (l: string) => void): void {
  const U = o.limit
  const w = [46, 10, 10, 12]
  const row = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] ?? 10)).join('  ')
  const met = (b: boolean | null): string => b == null ? 'not measured' : b ? 'met' : 'MISSED'
  out('')
  out(`Model distribution: ${(o.size / 2 ** 20).toFixed(0)} MiB model to ${o.nodes} nodes, upload limit U = ${mb(U)} MB/s; physical floor size/U = ${s.floorSec.toFixed(1)} s`)
  out(row(['', 'last (s)', 'first (s)', '÷ floor']))
  if (r.swarm != null) out(row([`astrad swarm (seeder + ${o.nodes} nodes, each ≤ U up)`, sec(r.swarm.lastMs), sec(r.swarm.firstMs), fx(s.astradLastOverFloor)]))
  if (r.nginx != null) out(row([`central nginx (total egress U, ${o.nodes} clients)`, sec(r.nginx.lastMs), sec(r.nginx.firstMs), fx(s.centralLastOverFloor)]))
  if (s.centralOverAstrad != null) out(row(['central ÷ astrad (last complete)', '', '', fx(s.centralOverAstrad)]))
  if (r.swarm != null) {
    const sw = r.swarm
    out(`  seeder uploaded ${(sw.seederUploadedBytes / 1e6).toFixed(0)} MB = ${fx(s.seederUploadOverSize)} × size; all nodes uploaded ${fx(sw.uploadOverhead)} × what the ${o.nodes} copies needed; piece failures ${sw.nodes.reduce((a, n) => a + n.pieceFailures, 0)}`)
    const upl = sw.nodes.map(n => (n.uploadedBytes / o.size).toFixed(2)).join(' ')
    out(`  downloaders uploaded (× size): ${upl}`)
    out(`  slowest RPC answer of each downloader while pulling (ms): ${sw.nodes.map(n => n.rpcMaxMs.toFixed(0)).join(' ')}`)
    const cpuAll = sw.seederCpuSec + sw.resourceCpuSec + sw.nodes.reduce((a, n) => a + n.cpuSec, 0)
    out(`  CPU: machine ${(sw.machineBusyFraction * 100).toFixed(0)} % busy over ${sw.seconds} s (${sw.saturatedSeconds} s at ≥ 95 %) → ${s.swarmCpuBound === true ? 'CPU-BOUND: the ratio measures this machine, lower U (--upload-limit)' : 'not CPU-bound'}; daemons ${cpuAll.toFixed(0)} CPU s (${(cpuAll / (o.nodes * o.size / 1e9)).toFixed(1)} CPU s per GB delivered), seeder ${sw.seederCpuSec.toFixed(1)} s, resource ${sw.resourceCpuSec.toFixed(1)} s, bench polling ${sw.benchCpuSec.toFixed(1)} s, other processes ${sw.otherCpuSec.toFixed(1)} s`)
    out(`  copies verified (size + SHA-256 of GET /v1/models/:id/data): ${sw.verify == null ? 'skipped' : `${sw.verify.filter(v => v.ok).length}/${sw.verify.length}`}`)
  }
  if (r.nginx != null) out(`  nginx ${r.nginx.version}: limit_rate ${r.nginx.limitRatePerConnection} B/s per connection, ${r.nginx.nginxCpuSec.toFixed(1)} CPU s; copies verified (SHA-256): ${r.nginx.results.filter(x => x.ok).length}/${r.nginx.results.length}`)
  out(`  goals: astrad ≤ 1.3 × floor: ${met(s.goals.astradLastOverFloorAtMost1_3)}; seeder upload ≤ 1.5 × size: ${met(s.goals.seederUploadAtMost1_5)}`)

  if (r.pair != null || r.raw.length > 0) {
    out('')
    out(`Throughput on loopback, ${(o.pairSize / 2 ** 20).toFixed(0)} MiB, no limits`)
    out(row(['', 'MB/s', '÷ raw(1)', 'CPU s (s/r)']))
    out(`  (${(o.pairSize / 2 ** 20).toFixed(0)} MiB model)`)
    r.trials.forEach((t, i) => {
      out(row([`trial ${i + 1}: raw libp2p 1 stream, then pair`, `${mb(t.rawBytesPerSec)} / ${mb(t.pairBytesPerSec)}`, fx(t.ratio), `${t.rawCpuSec.receiver.toFixed(1)} / ${t.pairCpuSec.downloader.toFixed(1)} recv`]))
    })
    if (r.trials.length > 0) out(row([`median of ${r.trials.length} trials (goal 1 row)`, `${mb(s.raw1BytesPerSec)} / ${mb(s.pairBytesPerSec)}`, fx(s.pairOverRaw1), '']))
    for (const x of r.raw.filter(x => x.streams !== 1 || r.trials.length === 0)) out(row([`raw libp2p, ${x.streams} stream${x.streams > 1 ? 's' : ''} (memory → counter)`, mb(x.bytesPerSec), fx(ratio(x.bytesPerSec, s.raw1BytesPerSec ?? undefined)), `${x.senderCpuSec.toFixed(1)}/${x.receiverCpuSec.toFixed(1)}`]))
    if (r.pair != null) {
      const p = r.pair
      const lastRaw = r.trials.at(-1)?.rawBytesPerSec ?? s.raw1BytesPerSec ?? undefined
      out(row([`astrad daemon → daemon${r.trials.length > 0 ? ', last trial' : ''} (pull → complete)`, mb(p.bytesPerSec), fx(ratio(p.bytesPerSec, lastRaw)), `${p.seederCpuSec.toFixed(1)}/${p.downloaderCpuSec.toFixed(1)}`]))
      // Below ~2 s the 50 ms poll that detects the first byte is too coarse for a rate.
      if (p.ms >= 2_000) out(row(['  first byte → complete', mb(p.spanBytesPerSec), fx(ratio(p.spanBytesPerSec, lastRaw)), '']))
      out(`  machine ${(p.machineBusyFraction * 100).toFixed(0)} % busy (other processes ${p.otherCpuSec.toFixed(1)} CPU s); slowest RPC answer ${p.rpcMaxMs.toFixed(0)} ms; peak RSS seeder ${p.seederPeakRssMiB.toFixed(0)} MiB, downloader ${p.downloaderPeakRssMiB.toFixed(0)} MiB; copy verified: ${p.verify == null ? 'skipped' : p.verify.every(v => v.ok) ? 'yes' : 'NO'}`)
    }
  }

  if (r.limiter.length > 0) {
    out('')
    out(`Limiter accuracy: limit U = ${mb(U)} MB/s, ${o.windowSec} s windows from the first byte (rate ÷ U; goal 0.95–1.05)`)
    out(row(['', 'windows', 'min', 'max', 'sliding min–max']))
    for (const l of r.limiter) {
      const lw = l.stats.windows
      const pw = l.peerStats.windows
      const label = l.direction === 'upload' ? 'upload (seeder counter)' : 'download (downloader counter)'
      const peer = l.direction === 'upload' ? '  same, bytes received by the downloader' : '  same, bytes sent by the seeder'
      out(row([label, String(lw.length), fx(lw.length > 0 ? Math.min(...lw.map(x => x.ratio)) : null, 3), fx(lw.length > 0 ? Math.max(...lw.map(x => x.ratio)) : null, 3), `${fx(l.stats.slidingMinRatio, 3)}–${fx(l.stats.slidingMaxRatio, 3)}`]))
      out(row([peer, String(pw.length), fx(pw.length > 0 ? Math.min(...pw.map(x => x.ratio)) : null, 3), fx(pw.length > 0 ? Math.max(...pw.map(x => x.ratio)) : null, 3), `${fx(l.peerStats.slidingMinRatio, 3)}–${fx(l.peerStats.slidingMaxRatio, 3)}`]))
      out(`  windows: ${lw.map(x => x.ratio.toFixed(3)).join(' ')}; reported limit ${l.reported?.limit ?? '-'} B/s (${l.reported?.source ?? '?'})`)
    }
    const short = r.limiter.some(l => l.stats.windows.length === 0) ? ` (a transfer ended before one whole ${o.windowSec} s window: use a larger --size)` : ''
    out(`  goal ±5 % over ${o.windowSec} s windows: ${met(s.goals.limiterWithin5Pct)}${short}`)
  }

  out('')
  out('Goals of issue 17 (one run, side by side)')
  const g = [44, 12, 10, 30, 12]
  const grow = (cols: string[]): string => cols.map((c, i) => i === 0 ? c.padEnd(g[i] as number) : c.padStart(g[i] ?? 10)).join('  ')
  out(grow(['goal', 'figure', 'target', 'baseline', '']))
  out(grow(['1 pair ÷ raw libp2p (1 stream), loopback', fx(s.pairOverRaw1), '≥ 0.80', `raw ${mb(s.raw1BytesPerSec)} MB/s, pair ${mb(s.pairBytesPerSec)}`, met(s.goals.pairOverRawAtLeast0_8)]))
  out(grow([`2 swarm last done ÷ size/U (${(o.size / 2 ** 20).toFixed(0)} MiB)`, fx(s.astradLastOverFloor), '≤ 1.30', `nginx ${fx(s.centralLastOverFloor)} × floor`, met(s.goals.astradLastOverFloorAtMost1_3)]))
  out(grow(['2/3 duplicate bytes (uploads ÷ needed − 1)', s.duplicateFraction != null ? `${(s.duplicateFraction * 100).toFixed(1)} %` : '-', '≤ 5 %', 'nginx 0 %', met(s.goals.duplicatesAtMost5Pct)]))
  out(grow(['3 seeder uploaded ÷ size', fx(s.seederUploadOverSize), '≤ 1.50', `nginx origin ${o.nodes}.00 × size`, met(s.goals.seederUploadAtMost1_5)]))
  out(grow([`limiter, ${o.windowSec} s windows ÷ U`, r.limiter.length > 0 ? `${fx(Math.min(...s.limiter.map(l => l.minRatio ?? NaN)), 3)}–${fx(Math.max(...s.limiter.map(l => l.maxRatio ?? NaN)), 3)}` : '-', '0.95–1.05', '', met(s.goals.limiterWithin5Pct)]))
  out(grow(['5 seeder scrub re-hash rate ÷ --scrub-rate', fx(s.scrubOverRate), '≤ 1.02', `${(SCRUB_RATE_BPS / 1e6).toFixed(0)} MB/s default`, met(s.goals.scrubWithinItsRate)]))

  if (errors.length > 0) {
    out('')
    out('Phases that failed:')
    for (const e of errors) out(`  - ${e.split('\n')[0] ?? e}`)
  }
  out('')
  out('How this differs from a real deployment:')
  for (const n of simulationNotes(o)) out(`  - ${n}`)
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  // Other work on the machine skews every number here: recorded, and per phase as "other processes" CPU.
  const loadAtStart = os.loadavg().map(x => round(x, 2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  const want = (p: Phase): boolean => !o.skip.has(p)

  let nginxVer: string | null = null
  if (want('nginx')) {
    nginxVer = await nginxVersion()
    if (nginxVer == null) {
      process.stderr.write('bench:transfer: nginx not found. Install it (Debian): apt-get update && apt-get install -y nginx\n(or leave the baseline out: --skip nginx)\n')
      process.exit(1)
    }
  }
  const astradPhases = (['pair', 'limiter', 'swarm'] as Phase[]).filter(want)
  const errors: string[] = []
  if (astradPhases.length > 0) {
    ensureBuilt(o, log)
    if (!await hasModelCommands(o.bin)) {
      errors.push(`${path.relative(ROOT, o.bin) || o.bin} has no 'model' commands (astrad model --help fails): phases ${astradPhases.join(', ')} not run`)
      log(errors[errors.length - 1] as string)
      for (const p of astradPhases) o.skip.add(p)
    }
  }

  const root = makeTempRoot('astrad-bench-transfer-')
  const file = path.join(root, 'model.bin')
  log(`writing a ${(o.size / 2 ** 20).toFixed(0)} MiB random model file`)
  const sha256 = writeRandomFile(file, o.size)
  const ticks = clockTicks()
  const floorSec = o.size / o.limit
  log(`U = ${mb(o.limit)} MB/s, floor size/U = ${floorSec.toFixed(1)} s, ${o.nodes} nodes; load average ${loadAtStart.join(' ')}`)
  // Load averages decay over minutes (and include a previous run): one second of /proc/stat is the test.
  const before = machineCpu()
  await sleep(1_000)
  const after = machineCpu()
  const idleBusy = (after.busy - before.busy) / Math.max(1, after.total - before.total)
  if (idleBusy > 0.25) log(`WARNING: the machine is ${(idleBusy * 100).toFixed(0)} % busy with other work before the run; the numbers will be skewed`)

  const results: Results = { raw: [], trials: [], limiter: [] }
  const phase = phaseRunner(errors, log)

  const ctx: AstradContext = { bin: o.bin, root, file, size: o.size, sha256, clockTicks: ticks, verify: o.verify, log }
  // Raw, pair and limiter move their own model (--pair-size) through their own cluster dirs.
  let pairCtx = ctx
  if (o.pairSize !== o.size && (want('raw') || want('pair') || want('limiter'))) {
    const pairRoot = path.join(root, 'pair')
    fs.mkdirSync(pairRoot)
    const pairFile = path.join(pairRoot, 'model.bin')
    log(`writing a ${(o.pairSize / 2 ** 20).toFixed(0)} MiB random model file for raw, pair and limiter`)
    pairCtx = { ...ctx, root: pairRoot, file: pairFile, size: o.pairSize, sha256: writeRandomFile(pairFile, o.pairSize) }
  }
  if (want('raw') && want('pair')) {
    // Goal 1: raw and pair alternated, each pair compared with the raw run just before it.
    for (let i = 1; i <= o.pairTrials; i++) {
      const raw = await phase(`goal 1 trial ${i}/${o.pairTrials}: raw libp2p, 1 stream`, async () => await runRaw(o.pairSize, 1, 600_000))
      if (raw == null) continue
      results.raw.push(raw)
      const pair = await phase(`goal 1 trial ${i}/${o.pairTrials}: astrad pair (unthrottled)`, async () => await runPair(pairCtx))
      if (pair == null) continue
      results.pair = pair
      const t: PairTrial = {
        rawBytesPerSec: raw.bytesPerSec,
        pairBytesPerSec: pair.bytesPerSec,
        ratio: pair.bytesPerSec / raw.bytesPerSec,
        rawCpuSec: { sender: raw.senderCpuSec, receiver: raw.receiverCpuSec },
        pairCpuSec: { seeder: pair.seederCpuSec, downloader: pair.downloaderCpuSec }
      }
      results.trials.push(t)
      log(`goal 1 trial ${i}: raw ${mb(t.rawBytesPerSec)} MB/s, pair ${mb(t.pairBytesPerSec)} MB/s, pair ÷ raw ${t.ratio.toFixed(2)}`)
    }
  }
  if (want('raw')) {
    for (const streams of o.rawStreams) {
      // The 1-stream baseline already ran in the goal-1 trials.
      if (streams === 1 && results.trials.length > 0) continue
      const r = await phase(`raw libp2p, ${streams} stream(s)`, async () => await runRaw(o.pairSize, streams, 600_000))
      if (r != null) {
        results.raw.push(r)
        log(`raw libp2p, ${streams} stream(s): ${mb(r.bytesPerSec)} MB/s`)
      }
    }
  }
  if (want('pair') && !want('raw')) {
    results.pair = await phase('astrad pair (unthrottled)', async () => await runPair(pairCtx))
    if (results.pair != null) log(`astrad pair: ${mb(results.pair.bytesPerSec)} MB/s (first byte → complete ${mb(results.pair.spanBytesPerSec)} MB/s)`)
  }
  if (want('limiter')) {
    for (const dir of ['upload', 'download'] as const) {
      const r = await phase(`astrad limiter (${dir})`, async () => await runLimiter(pairCtx, dir, o.limit, o.windowSec, o.limiterWindows))
      if (r != null) {
        results.limiter.push(r)
        log(`limiter ${dir}: windows ÷ U = ${r.stats.windows.map(w => w.ratio.toFixed(3)).join(' ')}`)
      }
    }
  }
  if (want('swarm')) {
    const timeoutMs = Math.max(180_000, floorSec * 1000 * 12)
    results.swarm = await phase('astrad swarm', async () => await runSwarm(ctx, o.nodes, o.limit, timeoutMs))
    if (results.swarm != null) log(`astrad swarm: last complete ${sec(results.swarm.lastMs)} s = ${(results.swarm.lastMs / 1000 / floorSec).toFixed(2)} × floor`)
  }
  if (want('nginx')) {
    log(`central nginx: expect ~${(floorSec * o.nodes).toFixed(0)} s (${o.nodes} × floor)`)
    results.nginx = await phase('central nginx', async () => await runNginx({
      root, file, size: o.size, sha256, clients: o.nodes, totalRate: o.limit, clockTicks: ticks, timeoutMs: Math.max(120_000, floorSec * o.nodes * 3 * 1000), log
    }))
  }

  const summary = summaryOf(o, results)
  const lines: string[] = []
  printTable(o, results, summary, errors, l => { lines.push(l) })
  process.stdout.write(lines.join('\n') + '\n')

  const version = (() => { try { return execFileSync(o.bin, ['--version'], { encoding: 'utf8' }).trim() } catch { return null } })()
  const doc = {
    benchmark: 'transfer',
    date: new Date().toISOString(),
    options: {
      sizeBytes: o.size,
      pairSizeBytes: o.pairSize,
      uploadLimitBytesPerSec: o.limit,
      uploadLimitDefaulted: o.limitDefaulted,
      nodes: o.nodes,
      windowSec: o.windowSec,
      limiterWindows: o.limiterWindows,
      rawStreams: o.rawStreams,
      pairTrials: o.pairTrials,
      quick: o.quick,
      verify: o.verify,
      skipped: [...o.skip]
    },
    machine: {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      disk: diskOf(root),
      loadAvgAtStart: loadAtStart,
      busyBeforeRun: round(idleBusy, 3),
      node: process.version,
      astrad: version,
      nginx: nginxVer
    },
    units: 'bytes, bytes/s, ms unless named otherwise; MB = 10^6 bytes, MiB = 2^20',
    model: { sha256, ...(ctx.model != null ? { id: ctx.model.id, pieceSize: ctx.model.pieceSize, pieces: ctx.model.pieces, addMs: round(ctx.model.addMs, 0) } : {}) },
    summary,
    raw: results.raw,
    pair: results.pair ?? null,
    pairTrials: results.trials,
    limiter: results.limiter,
    swarm: results.swarm ?? null,
    nginx: results.nginx ?? null,
    simulationNotes: simulationNotes(o),
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  log(`total ${doc.durationSec} s`)
  logGoals(log, summary.goals)
  await cleanup()
  if (errors.length > 0) process.exitCode = 1
}

runBench('bench:transfer', main, err => err instanceof UsageError)
