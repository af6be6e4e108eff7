// Autoscaling benchmark (npm run bench:autoscale; docs/bench-autoscale.md; issue 15).
//
// A cluster of real daemons (schedulers + nodes, `dist/astrad start`, loopback) serves Silero VAD
// as two apps in turn, under the same closed-loop load that steps ×F and back (c → F·c → c):
//
//   on   the app has an `autoscaling` block (min..max replicas, target ongoing requests per
//        replica, up/down delays); its owning scheduler decides the replica count.
//   off  the same app with a fixed `replicas` count sized for the base load (as before issue 15).
//
// While the load runs, the owner's GET /v1/apps is polled every ~200 ms (what `astrad app ls
// --json` prints): desired, placed, ready and the autoscaler's load, decision and reason build
// the timeline of a scale-up (step → load seen → decision → placed → ready) and of the scale-down.
// Reported beside each other: failed requests, latency per phase (p99 during the transition),
// requests/s, replica-seconds, and what a fixed deployment sized for the peak would spend.
//
// Usage: node bench/autoscale.ts --help

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureBuilt, clockTicks } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { runBench, writeResult, logGoals, installCleanupHooks, makeTempRoot, cleanup, setKeepTemp, now, sleep, waitFor, phaseRunner } from './lib/procs.ts'
import { round } from './lib/stats.ts'
import { startDaemon, loopbackAddr, status, getJson, getText, metric, astradCli, cpuTicks, type AstradDaemon } from './lib/astrad.ts'
import { machineCpu } from './lib/transfer-common.ts'
import { runLoad, summarizeLatencies, type LoadResult, type LoadTrace } from './lib/load.ts'
import { vadRequestBody, vadBinaryRequest, VAD_MODEL } from './lib/vad.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Goal: the step → enough ready replicas for the new load within 10 s. What it is made of, at the
 * defaults: the 1 s load average, the heartbeat that shares it between schedulers (~1 s), the
 * upscale delay (1 s), a placement round and a model load from local disk (the model is on every
 * node: a scale-up costs no transfer) — about 4-5 s; the bound leaves 2× for a shared 2-core
 * machine. It is "seconds", the issue's point, against the tens of seconds a Kubernetes pod needs.
 */
const GOAL_STEP_TO_READY_S = 10
/** Deploy → ready replicas, and app removal → replicas gone, at most this long. */
const READY_TIMEOUT_MS = 60_000
/** Requests the load generator gives up on (counted as failed 'timeout'). */
const REQUEST_TIMEOUT_MS = 30_000
/** Unrecorded seconds at the base load before the window (connections, JIT, the 1 s load average). */
const WARMUP_MS = 2_000
/** How long before the step the base load is averaged ("load before the step"). */
const PRE_STEP_MS = 3_000
/** The other status documents (/metrics, /v1/status for the spread over nodes): once a second. */
const SLOW_POLL_MS = 1_000

/** on: autoscaling; off: fixed at the base load's size (today's deployment); peak: fixed at the peak's size. */
type Variant = 'on' | 'off' | 'peak'
const VARIANTS: Variant[] = ['on', 'off', 'peak']
type Encoding = 'json' | 'binary'

interface Options {
  variants: Variant[]
  quick: boolean
  concurrency: number
  factor: number
  baseSec: number
  peakSec: number
  tailSec: number
  nodes: number
  cores: number
  schedulers: number
  target: number
  minReplicas: number
  maxReplicas: number
  upscaleDelayMs: number
  downscaleDelayMs: number
  replicasPerSecond: number
  rows: number
  encoding: Encoding
  pollMs: number
  model: string
  out: string
  keepTemp: boolean
  build: boolean
  bin: string
}

const USAGE = `usage: node bench/autoscale.ts [options]
  --quick                short run (< 3 min): phases 8 s / 20 s / 20 s, downscale delay 5 s
  --only LIST            variants in the order to run them, comma-separated: on (autoscaling),
                         off (fixed, sized for the base load), peak (fixed, sized for the peak);
                         default on,off,peak (quick: on,off; the peak deployment's
                         replica-seconds are computed anyway)
  --concurrency C        base closed-loop concurrency (default 2); the step goes to C × factor
  --factor F             load step (default 4)
  --base SEC             seconds at C before the step (default 15; quick 8)
  --peak SEC             seconds at C × F (default 30; quick 20)
  --tail SEC             seconds back at C (default: 2 × downscale delay + 15 s, as a step down
                         can take two delays; quick 20)
  --nodes N              node daemons (default 3)
  --cores K              --cores each node declares (default 3: 3 nodes hold 9 one-core replicas)
  --schedulers S         scheduler daemons; the load is spread over them (default 2)
  --target N             autoscaling.targetOngoingRequests (default 2)
  --min-replicas N       autoscaling.minReplicas (default 1)
  --max-replicas N       autoscaling.maxReplicas (default 8)
  --upscale-delay MS     autoscaling.upscaleDelayMs (default 1000)
  --downscale-delay MS   autoscaling.downscaleDelayMs (default 30000; quick 5000)
  --replicas-per-second N  autoscaling.maxReplicasPerSecond (default 4)
  --rows N               Silero VAD rows per request (default 1: ~0.3 ms of model CPU; 16: ~1.3 ms)
  --encoding E           json (default) or binary (KServe binary tensor extension)
  --poll-ms MS           status poll interval (default 200)
  --model FILE           Silero VAD v5 ONNX file (default ${path.relative(ROOT, VAD_MODEL)})
  --out FILE             JSON results (default bench/results/autoscale.json); --json-out FILE is the same
  --keep-temp            keep the temp dir (daemon data) for inspection
  --no-build             do not rebuild dist/astrad when src/ is newer
  --astrad FILE          executable to test (default dist/astrad)
`

function parseOptions (argv: string[]): Options {
  const v = parseFlags(argv, {
    quick: { type: 'boolean' },
    only: { type: 'string' },
    concurrency: { type: 'string' },
    factor: { type: 'string' },
    base: { type: 'string' },
    peak: { type: 'string' },
    tail: { type: 'string' },
    nodes: { type: 'string' },
    cores: { type: 'string' },
    schedulers: { type: 'string' },
    target: { type: 'string' },
    'min-replicas': { type: 'string' },
    'max-replicas': { type: 'string' },
    'upscale-delay': { type: 'string' },
    'downscale-delay': { type: 'string' },
    'replicas-per-second': { type: 'string' },
    rows: { type: 'string' },
    encoding: { type: 'string' },
    'poll-ms': { type: 'string' },
    model: { type: 'string' },
    out: { type: 'string' },
    'json-out': { type: 'string' },
    'keep-temp': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    astrad: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const quick = v.quick === true
  const o: Options = {
    variants: quick ? ['on', 'off'] : VARIANTS,
    quick,
    concurrency: v.concurrency !== undefined ? intFlag('--concurrency', v.concurrency, 1, 256) : 2,
    factor: v.factor !== undefined ? intFlag('--factor', v.factor, 2, 32) : 4,
    baseSec: v.base !== undefined ? intFlag('--base', v.base, 4, 600) : quick ? 8 : 15,
    peakSec: v.peak !== undefined ? intFlag('--peak', v.peak, 5, 600) : quick ? 20 : 30,
    tailSec: 0,
    nodes: v.nodes !== undefined ? intFlag('--nodes', v.nodes, 1, 16) : 3,
    cores: v.cores !== undefined ? intFlag('--cores', v.cores, 1, 64) : 3,
    schedulers: v.schedulers !== undefined ? intFlag('--schedulers', v.schedulers, 1, 4) : 2,
    target: v.target !== undefined ? intFlag('--target', v.target, 1, 1000) : 2,
    minReplicas: v['min-replicas'] !== undefined ? intFlag('--min-replicas', v['min-replicas'], 1, 1000) : 1,
    maxReplicas: v['max-replicas'] !== undefined ? intFlag('--max-replicas', v['max-replicas'], 1, 1000) : 8,
    upscaleDelayMs: v['upscale-delay'] !== undefined ? intFlag('--upscale-delay', v['upscale-delay'], 0, 600_000) : 1_000,
    downscaleDelayMs: v['downscale-delay'] !== undefined ? intFlag('--downscale-delay', v['downscale-delay'], 0, 600_000) : quick ? 5_000 : 30_000,
    replicasPerSecond: v['replicas-per-second'] !== undefined ? intFlag('--replicas-per-second', v['replicas-per-second'], 1, 1000) : 4,
    rows: v.rows !== undefined ? intFlag('--rows', v.rows, 1, 256) : 1,
    encoding: 'json',
    pollMs: v['poll-ms'] !== undefined ? intFlag('--poll-ms', v['poll-ms'], 50, 5_000) : 200,
    model: v.model !== undefined ? path.resolve(v.model) : VAD_MODEL,
    out: path.join(ROOT, 'bench/results/autoscale.json'),
    keepTemp: v['keep-temp'] === true,
    build: v['no-build'] !== true,
    bin: path.join(ROOT, 'dist/astrad')
  }
  // A step down can take two delays: the first window still holds the second or two in which the
  // 1 s load average was falling, so it ends at an intermediate count (docs/bench-autoscale.md).
  o.tailSec = v.tail !== undefined ? intFlag('--tail', v.tail, 5, 600) : quick ? 20 : Math.ceil(2 * o.downscaleDelayMs / 1000) + 15
  if (v.only !== undefined) {
    const only = v.only.split(',').map(x => x.trim()).filter(x => x !== '')
    for (const x of only) if (!VARIANTS.includes(x as Variant)) throw new UsageError(`--only: unknown variant '${x}' (variants: ${VARIANTS.join(', ')})`)
    if (only.length === 0) throw new UsageError(`--only: give one or more of ${VARIANTS.join(', ')}`)
    // In the order given (the machine drifts: swapping the order shows by how much).
    o.variants = [...new Set(only)] as Variant[]
  }
  if (v.encoding !== undefined) {
    if (v.encoding !== 'json' && v.encoding !== 'binary') throw new UsageError(`--encoding: json or binary, got '${v.encoding}'`)
    o.encoding = v.encoding
  }
  if (o.maxReplicas < o.minReplicas) throw new UsageError(`--max-replicas (${o.maxReplicas}) is below --min-replicas (${o.minReplicas})`)
  if (o.nodes * o.cores < o.maxReplicas) throw new UsageError(`--nodes × --cores (${o.nodes * o.cores}) cannot hold --max-replicas (${o.maxReplicas}) one-core replicas`)
  if (v.out !== undefined && v['json-out'] !== undefined && path.resolve(v.out) !== path.resolve(v['json-out'])) throw new UsageError('--out and --json-out name the same thing: give one')
  const out = v.out ?? v['json-out']
  if (out !== undefined) o.out = path.resolve(out)
  if (v.astrad !== undefined) { o.bin = path.resolve(v.astrad); o.build = false }
  if (!fs.existsSync(o.model)) throw new UsageError(`--model: ${o.model} does not exist`)
  return o
}

/** Replicas the load needs at the target: ceil(load / target), within the bounds. */
function replicasFor (o: Options, load: number): number {
  return Math.min(o.maxReplicas, Math.max(o.minReplicas, Math.ceil(load / o.target)))
}

// ---- the cluster ---------------------------------------------------------------------------

interface Cluster {
  schedulers: AstradDaemon[]
  nodes: AstradDaemon[]
  modelId: string
}

/**
 * s1 (resource, scheduler), s2… (scheduler), n1… (node, --cores K), all bootstrapped to s1 only,
 * with the cluster key. The model is added on every node (same bytes, same id): a scale-up then
 * costs a placement and a model load, not a transfer (what a preload notice achieves).
 */
async function startCluster (o: Options, root: string, log: (m: string) => void): Promise<Cluster> {
  // One at a time, with time to spare: a 2-core machine starting several 150 MB executables at
  // once (and busy with other work) can take more than the usual 20 s per daemon.
  const start = async (name: string, roles: string, bootstrap?: string, args: string[] = []): Promise<AstradDaemon> =>
    await startDaemon({ bin: o.bin, root, name, roles, ...(bootstrap != null ? { bootstrap } : {}), extraArgs: args, startTimeoutMs: 60_000 })
  const s1 = await start('s1', 'resource,scheduler')
  const boot = await loopbackAddr(s1)
  const rest: AstradDaemon[] = []
  for (let i = 2; i <= o.schedulers; i++) rest.push(await start(`s${i}`, 'scheduler', boot))
  // Nodes bootstrap to the resource only, as deployed: a scheduler finds the addresses of nodes it
  // never met through the resource (peer lookup, /astra/peer/1.0.0).
  const nodes: AstradDaemon[] = []
  for (let i = 1; i <= o.nodes; i++) nodes.push(await start(`n${i}`, 'node', boot, ['--cores', String(o.cores)]))
  const schedulers = [s1, ...rest]
  const members = schedulers.length + nodes.length
  await waitFor(`${members} daemons alive in every scheduler's view`, async () => {
    for (const s of schedulers) {
      const doc = await status(s.rpcPort)
      if (doc.nodes.filter(n => n.state === 'alive').length < members) return undefined
    }
    return true
  }, 60_000, 200)
  log(`cluster up: ${schedulers.map(s => s.name).join(', ')} (schedulers), ${nodes.map(n => n.name).join(', ')} (nodes, --cores ${o.cores}); adding the model on every node`)
  const ids = await Promise.all(nodes.map(async n => {
    const added = (await astradCli(o.bin, n, ['model', 'add', o.model, '--json'], 120_000)).stdout
    const id = (JSON.parse(added.trim()) as { id?: unknown }).id
    if (typeof id !== 'string') throw new Error(`astrad model add --json on ${n.name} printed no id: ${added.slice(0, 300)}`)
    return id
  }))
  if (new Set(ids).size !== 1) throw new Error(`nodes disagree on the model id: ${ids.join(', ')}`)
  return { schedulers, nodes, modelId: ids[0] as string }
}

// ---- the app's status, polled --------------------------------------------------------------

interface AutoscalingStatus {
  desired: number
  load: number
  target: number
  min: number
  max: number
  reason: string
  decidedAt: number
}

interface AppStatusDoc {
  name: string
  desired: number
  placed: number
  ready: number
  old: number
  owner?: string
  lastError?: string
  autoscaling?: AutoscalingStatus
}

interface AppEntry {
  spec: Record<string, unknown> & { name: string }
  generation: number
  status?: AppStatusDoc
}

/** One poll of GET /v1/apps (epoch ms when the answer came). */
interface Poll {
  t: number
  desired: number | null
  placed: number | null
  ready: number | null
  old: number | null
  owner: string | null
  load: number | null
  asDesired: number | null
  reason: string | null
  decidedAt: number | null
  error?: string
}

/** One poll of /metrics and /v1/status on the owner (once a second). */
interface SlowPoll {
  t: number
  metricLoad: number | null
  metricDesired: number | null
  /** Nodes serving the app, as the owner's router weighs them. */
  nodes: number | null
  /** Requests in flight per node at the owner's router. */
  inflight: number | null
}

async function appEntry (port: number, app: string): Promise<AppEntry | undefined> {
  const doc = await getJson<{ apps: AppEntry[] }>(port, '/v1/apps', 2_000)
  return doc.apps.find(a => a.spec.name === app)
}

/** Polls the app's status on `port` every pollMs until stopped. */
class Poller {
  readonly polls: Poll[] = []
  readonly slow: SlowPoll[] = []
  private running = true
  private readonly port: number
  private readonly app: string
  private readonly loops: Array<Promise<void>>

  constructor (port: number, app: string, pollMs: number) {
    this.port = port
    this.app = app
    this.loops = [this.fast(pollMs), this.slowLoop()]
  }

  private async fast (pollMs: number): Promise<void> {
    while (this.running) {
      const sent = Date.now()
      try {
        const s = (await appEntry(this.port, this.app))?.status
        const a = s?.autoscaling
        this.polls.push({
          t: Date.now(),
          desired: s?.desired ?? null,
          placed: s?.placed ?? null,
          ready: s?.ready ?? null,
          old: s?.old ?? null,
          owner: s?.owner ?? null,
          load: a?.load ?? null,
          asDesired: a?.desired ?? null,
          reason: a?.reason ?? null,
          decidedAt: a?.decidedAt ?? null
        })
      } catch (err) {
        this.polls.push({ t: Date.now(), desired: null, placed: null, ready: null, old: null, owner: null, load: null, asDesired: null, reason: null, decidedAt: null, error: err instanceof Error ? err.message : String(err) })
      }
      await sleep(Math.max(0, pollMs - (Date.now() - sent)))
    }
  }

  private async slowLoop (): Promise<void> {
    while (this.running) {
      const sent = Date.now()
      const p: SlowPoll = { t: sent, metricLoad: null, metricDesired: null, nodes: null, inflight: null }
      try {
        const text = await getText(this.port, '/metrics', 2_000)
        const label = `app="${this.app}"`
        if (text.includes(`astrad_autoscale_load{${label}`)) p.metricLoad = metric(text, 'astrad_autoscale_load', label)
        if (text.includes(`astrad_autoscale_desired_replicas{${label}`)) p.metricDesired = metric(text, 'astrad_autoscale_desired_replicas', label)
      } catch {}
      try {
        const doc = await getJson<{ apps: Array<{ name: string, weights: Array<{ node: string, inflight: number }> }> }>(this.port, '/v1/status', 2_000)
        const w = doc.apps.find(a => a.name === this.app)?.weights ?? []
        p.nodes = new Set(w.map(x => x.node)).size
        p.inflight = w.reduce((s, x) => s + x.inflight, 0)
      } catch {}
      this.slow.push(p)
      await sleep(Math.max(0, SLOW_POLL_MS - (Date.now() - sent)))
    }
  }

  async stop (): Promise<void> {
    this.running = false
    await Promise.all(this.loops)
  }
}

// ---- one variant ---------------------------------------------------------------------------

interface PhaseStats {
  name: string
  /** Seconds from the step up (negative: before it). */
  fromS: number
  toS: number
  ok: number
  failed: number
  rps: number
  p50: number | null
  p99: number | null
  max: number | null
}

/** One answer of the load, on the epoch clock. */
interface Answer { end: number, latency: number, ok: boolean, status: string }

/** Epoch ms of a variant's window: its start, the step up, the step back, its end. */
interface Marks { windowStart: number, stepUp: number, stepDown: number, windowEnd: number }

function phaseOf (answers: Answer[], marks: Marks, name: string, from: number, to: number): PhaseStats {
  const inside = answers.filter(a => a.end >= from && a.end < to)
  const okLat = Float64Array.from(inside.filter(a => a.ok).map(a => a.latency))
  const s = summarizeLatencies(okLat)
  return {
    name,
    fromS: round((from - marks.stepUp) / 1000, 2),
    toS: round((to - marks.stepUp) / 1000, 2),
    ok: okLat.length,
    failed: inside.length - okLat.length,
    rps: okLat.length / Math.max(0.001, (to - from) / 1000),
    p50: s?.p50 ?? null,
    p99: s?.p99 ?? null,
    max: s?.max ?? null
  }
}

/**
 * The answers cut into phases: base, transition (the step up + transitionS: for autoscaling its
 * step → enough ready; for a fixed variant the same length as autoscaling's, so the p99s compare
 * the same seconds after the step), the rest of the peak, the tail, and the whole run.
 */
function phasesOf (answers: Answer[], marks: Marks, transitionS: number): PhaseStats[] {
  const transitionEnd = Math.min(marks.stepDown, marks.stepUp + 1000 * transitionS)
  return [
    phaseOf(answers, marks, 'base', marks.windowStart, marks.stepUp),
    phaseOf(answers, marks, 'transition', marks.stepUp, transitionEnd),
    phaseOf(answers, marks, 'peak after', transitionEnd, marks.stepDown),
    phaseOf(answers, marks, 'tail', marks.stepDown, marks.windowEnd),
    phaseOf(answers, marks, 'whole run', marks.windowStart, marks.windowEnd)
  ]
}

/** One phase of a scale-up or scale-down: when (s after the step) it was first seen. */
interface Milestone {
  what: string
  atS: number | null
  /** Seconds after the milestone before it (null when either is missing). */
  tookS: number | null
}

interface VariantResult {
  variant: Variant
  app: string
  spec: Record<string, unknown>
  owner: string | null
  deployToReadyMs: number
  windowStartEpochMs: number
  stepUpEpochMs: number
  stepDownEpochMs: number
  loads: Array<Omit<LoadResult, 'trace'> & { scheduler: string }>
  ok: number
  failed: number
  errors: Record<string, number>
  phases: PhaseStats[]
  /** Seconds from the step up to ready ≥ the replicas the peak load needs; null: never. */
  stepToReadyS: number | null
  /** Seconds each added replica took from placed to ready (the k-th placed to the k-th ready): the model load. */
  replicaLoadS: number[]
  scaleUp: Milestone[]
  scaleDown: Milestone[]
  replicas: { before: number | null, peak: number | null, end: number | null, maxPlaced: number | null, maxNodes: number | null }
  /** ∫ (placed + old) dt over the recorded window (s), from the polls. */
  replicaSeconds: number | null
  /** Load the autoscaler reported, mean over PRE_STEP_MS before the step and over the peak after ready. */
  loadBefore: number | null
  loadPeak: number | null
  lastReason: string | null
  reasons: Array<{ atS: number, reason: string }>
  metricsSeen: boolean
  /** Whole machine busy during the window (0..1). */
  machineBusy: number
  /**
   * CPU per answered request (µs) of the schedulers (HTTP, decoding, routing, the libp2p hop) and
   * of the nodes (the hop, the worker pool, the model): where a request's cost lies. Replicas
   * can only spread the nodes' part.
   */
  cpuUsPerRequest: { schedulers: number | null, nodes: number | null }
  /** ok answers per second of the window (all schedulers). */
  perSecond: number[]
  /** Polls (s from the step up): t, desired, placed, ready, old, load. */
  timeline: Array<[number, number | null, number | null, number | null, number | null, number | null]>
  slow: SlowPoll[]
  /** `astrad app ls --json`'s entry for the app at the end of the peak (the CLI's view). */
  cliEntry: AppEntry | null
}

function loadPlan (o: Options, i: number, n: number): { base: number, peak: number } {
  const split = (c: number): number => Math.floor(c / n) + (i < c % n ? 1 : 0)
  return { base: split(o.concurrency), peak: split(o.concurrency * o.factor) }
}

function specFor (o: Options, variant: Variant, app: string, modelId: string): Record<string, unknown> {
  const common = { name: app, model: modelId, threads: 1, resources: { cpu: 1, gpu: 0 } }
  if (variant === 'off') return { ...common, replicas: replicasFor(o, o.concurrency) }
  if (variant === 'peak') return { ...common, replicas: replicasFor(o, o.concurrency * o.factor) }
  return {
    ...common,
    autoscaling: {
      minReplicas: o.minReplicas,
      maxReplicas: o.maxReplicas,
      targetOngoingRequests: o.target,
      upscaleDelayMs: o.upscaleDelayMs,
      downscaleDelayMs: o.downscaleDelayMs,
      maxReplicasPerSecond: o.replicasPerSecond
    }
  }
}

/**
 * Deploys the variant's app, runs the stepped load while polling its status, and cuts the answers
 * into phases (a fixed variant's transition is recut once autoscaling's is known: phasesOf).
 */
async function runVariant (o: Options, root: string, cluster: Cluster, variant: Variant, log: (m: string) => void): Promise<{ result: VariantResult, answers: Answer[], marks: Marks }> {
  const app = `vad-${variant}`
  const spec = specFor(o, variant, app, cluster.modelId)
  const specFile = path.join(root, `${app}.json`)
  fs.writeFileSync(specFile, JSON.stringify(spec, null, 2) + '\n')
  const s1 = cluster.schedulers[0] as AstradDaemon
  const initial = replicasFor(o, o.concurrency)
  const initialReplicas = variant === 'on' ? o.minReplicas : variant === 'off' ? initial : replicasFor(o, o.concurrency * o.factor)
  const t0 = now()
  await astradCli(o.bin, s1, ['app', 'deploy', specFile], 60_000)
  // Ready: the replicas it starts with, and every scheduler that takes load answers ready.
  const entry = await waitFor(`${app}: ${initialReplicas} ready replica(s)`, async () => {
    const e = await appEntry(s1.rpcPort, app)
    if (e?.status == null) throw new Error(`${app}: no status yet`)
    if (e.status.ready < initialReplicas) throw new Error(`${app}: ready ${e.status.ready}/${initialReplicas}${e.status.lastError != null ? ` (${e.status.lastError})` : ''}`)
    return e
  }, READY_TIMEOUT_MS, 100)
  for (const s of cluster.schedulers) {
    await waitFor(`GET /v2/models/${app}/ready on ${s.name}`, async () => {
      const res = await fetch(`http://127.0.0.1:${s.rpcPort}/v2/models/${app}/ready`, { signal: AbortSignal.timeout(2_000) })
      const text = await res.text()
      if (res.status !== 200) throw new Error(`HTTP ${res.status} ${text.slice(0, 300)}`)
      return true
    }, READY_TIMEOUT_MS, 100)
  }
  const deployToReadyMs = now() - t0
  const ownerId = entry.status?.owner ?? null
  const owner = cluster.schedulers.find(s => s.peerId === ownerId) ?? s1
  log(`${app}: ${initialReplicas} replica(s) ready ${(deployToReadyMs / 1000).toFixed(1)} s after deploy; owner ${owner.name}${ownerId == null ? ' (no owner in status: polling s1)' : ''}`)

  const request = o.encoding === 'binary'
    ? (() => { const r = vadBinaryRequest(o.rows); return { bodyBase64: r.body.toString('base64'), headers: r.headers } })()
    : { body: vadRequestBody(o.rows), headers: { 'content-type': 'application/json' } }
  const targets = cluster.schedulers.slice(0, Math.min(cluster.schedulers.length, o.concurrency))
  const poller = new Poller(owner.rpcPort, app, o.pollMs)
  const durationMs = (o.baseSec + o.peakSec + o.tailSec) * 1000
  const cpu0 = machineCpu()
  const ticksOf = (ds: AstradDaemon[]): number => ds.reduce((sum, d) => { try { return sum + cpuTicks(d.proc.child.pid ?? 0) } catch { return sum } }, 0)
  const sched0 = ticksOf(cluster.schedulers)
  const nodes0 = ticksOf(cluster.nodes)
  let cliEntry: AppEntry | null = null
  // The CLI's view once the peak has settled (end of the peak phase, minus 2 s).
  const cliTimer = setTimeout(() => {
    astradCli(o.bin, owner, ['app', 'ls', '--json'], 10_000).then(r => {
      cliEntry = (JSON.parse(r.stdout) as { apps: AppEntry[] }).apps.find(a => a.spec.name === app) ?? null
    }, (err: unknown) => { log(`${app}: astrad app ls --json failed: ${err instanceof Error ? err.message : String(err)}`) })
  }, WARMUP_MS + (o.baseSec + o.peakSec - 2) * 1000)
  log(`${app}: load c=${o.concurrency} for ${o.baseSec} s, ×${o.factor} = ${o.concurrency * o.factor} for ${o.peakSec} s, c=${o.concurrency} for ${o.tailSec} s, through ${targets.map(s => s.name).join(' + ')} (after ${WARMUP_MS / 1000} s warm-up)`)
  let loads: Array<LoadResult & { scheduler: string }>
  try {
    loads = await Promise.all(targets.map(async (s, i) => {
      const plan = loadPlan(o, i, targets.length)
      const r = await runLoad({
        url: `http://127.0.0.1:${s.rpcPort}/v2/models/${app}/infer`,
        ...request,
        concurrency: plan.base,
        warmupMs: WARMUP_MS,
        durationMs,
        timeoutMs: REQUEST_TIMEOUT_MS,
        steps: [{ atMs: o.baseSec * 1000, concurrency: plan.peak }, { atMs: (o.baseSec + o.peakSec) * 1000, concurrency: plan.base }],
        trace: true
      })
      return { ...r, scheduler: s.name }
    }))
  } finally {
    clearTimeout(cliTimer)
    await poller.stop()
  }
  const cpu1 = machineCpu()
  const schedTicks = ticksOf(cluster.schedulers) - sched0
  const nodeTicks = ticksOf(cluster.nodes) - nodes0
  const traces = loads.map(l => l.trace).filter((t): t is LoadTrace => t != null)
  const first = traces[0]
  if (first == null) throw new Error(`${app}: the load generator returned no trace`)
  const windowStart = Math.min(...traces.map(t => t.windowStartEpochMs))
  const stepUp = Math.min(...traces.map(t => t.stepEpochMs[0] ?? windowStart + o.baseSec * 1000))
  const stepDown = Math.min(...traces.map(t => t.stepEpochMs[1] ?? windowStart + (o.baseSec + o.peakSec) * 1000))
  const windowEnd = windowStart + durationMs

  // Every answer, on the epoch clock.
  const answers: Answer[] = []
  for (const t of traces) {
    for (let i = 0; i < t.endMs.length; i++) {
      const st = t.status[i] as number | string
      answers.push({ end: t.windowStartEpochMs + (t.endMs[i] as number), latency: t.latencyMs[i] as number, ok: typeof st === 'number' && st >= 200 && st < 300, status: String(st) })
    }
  }
  answers.sort((a, b) => a.end - b.end)
  const errors: Record<string, number> = {}
  for (const a of answers) if (!a.ok) errors[a.status] = (errors[a.status] ?? 0) + 1

  const polls = poller.polls.filter(p => p.error == null)
  const peakNeed = replicasFor(o, o.concurrency * o.factor)
  const baseNeed = replicasFor(o, o.concurrency)
  const rel = (t: number | null): number | null => t == null ? null : round((t - stepUp) / 1000, 2)
  const firstPoll = (from: number, pred: (p: Poll) => boolean): Poll | undefined => polls.find(p => p.t >= from && pred(p))
  const readyAt = firstPoll(stepUp, p => (p.ready ?? 0) >= peakNeed)
  const stepToReadyS = readyAt != null && readyAt.t < stepDown ? rel(readyAt.t) : null

  // A milestone chain: each found at or after the previous one (or the step when it is missing).
  const chain = (from: number, steps: Array<{ what: string, find: (after: number) => number | null }>): Milestone[] => {
    let prev: number | null = from
    return steps.map(s => {
      const at = s.find(prev ?? from)
      const m: Milestone = { what: s.what, atS: rel(at), tookS: at != null && prev != null ? round((at - prev) / 1000, 2) : null }
      if (at != null) prev = at
      return m
    })
  }
  const pollTime = (from: number, pred: (p: Poll) => boolean, before = Infinity): number | null => {
    const p = firstPoll(from, pred)
    return p != null && p.t < before ? p.t : null
  }
  /** When the desired count changed: decidedAt when the status gives it (exact), else the poll. */
  const decisionTime = (from: number, pred: (p: Poll) => boolean, before: number): number | null => {
    const p = firstPoll(from, pred)
    if (p == null || p.t >= before) return null
    return p.decidedAt != null && p.decidedAt >= stepUp - 1_000 && p.decidedAt <= p.t ? Math.max(from, p.decidedAt) : p.t
  }
  const upBound = stepDown
  const scaleUp = variant !== 'on'
    ? []
    : chain(stepUp, [
      { what: `load seen above ${o.target * baseNeed} (base capacity at the target)`, find: a => pollTime(a, p => (p.load ?? 0) > o.target * baseNeed, upBound) },
      { what: 'first decision (desired rises)', find: a => decisionTime(a, p => (p.desired ?? 0) > baseNeed, upBound) },
      { what: `desired reaches ${peakNeed}`, find: a => decisionTime(a, p => (p.desired ?? 0) >= peakNeed, upBound) },
      { what: `placed ≥ ${peakNeed}`, find: a => pollTime(a, p => (p.placed ?? 0) >= peakNeed, upBound) },
      { what: `ready ≥ ${peakNeed} (enough for the load)`, find: a => pollTime(a, p => (p.ready ?? 0) >= peakNeed, upBound) }
    ])
  const scaleDown = variant !== 'on'
    ? []
    : chain(stepDown, [
      { what: `load seen at or below ${o.target * baseNeed}`, find: a => pollTime(a, p => p.load != null && p.load <= o.target * baseNeed, windowEnd) },
      { what: 'first decision (desired falls)', find: a => decisionTime(a, p => p.desired != null && p.desired < peakNeed, windowEnd) },
      { what: `desired back to ${baseNeed}`, find: a => decisionTime(a, p => p.desired != null && p.desired <= baseNeed, windowEnd) },
      { what: `placed back to ${baseNeed} (replicas released)`, find: a => pollTime(a, p => p.placed != null && p.placed + (p.old ?? 0) <= baseNeed, windowEnd) }
    ])

  // Replica-seconds over the window: each poll's placed + old holds until the next poll (the
  // first one from the window's start: polling starts before the warm-up).
  const counted = polls.filter(p => p.placed != null)
  let replicaMs = 0
  for (let i = 0; i < counted.length; i++) {
    const p = counted[i] as Poll
    const from = i === 0 ? windowStart : Math.max(windowStart, p.t)
    const to = Math.min(windowEnd, counted[i + 1]?.t ?? windowEnd)
    if (to > from) replicaMs += ((p.placed ?? 0) + (p.old ?? 0)) * (to - from)
  }
  // Polls that failed for more than a tenth of the window leave the integral unknown.
  const failedPolls = poller.polls.filter(p => p.error != null && p.t >= windowStart && p.t <= windowEnd).length
  const replicaSeconds = counted.length > 0 && failedPolls * o.pollMs < 0.1 * durationMs ? replicaMs / 1000 : null

  const meanLoad = (from: number, to: number): number | null => {
    const xs = polls.filter(p => p.t >= from && p.t < to && p.load != null).map(p => p.load as number)
    return xs.length > 0 ? round(xs.reduce((a, b) => a + b, 0) / xs.length, 2) : null
  }
  const lastBefore = (t: number): Poll | undefined => polls.filter(p => p.t <= t).at(-1)
  const maxOf = (xs: Array<number | null>): number | null => { const v = xs.filter((x): x is number => x != null); return v.length > 0 ? Math.max(...v) : null }
  const reasons: Array<{ atS: number, reason: string }> = []
  for (const p of polls) if (p.reason != null && p.reason !== reasons.at(-1)?.reason) reasons.push({ atS: rel(p.t) as number, reason: p.reason })

  const marks: Marks = { windowStart, stepUp, stepDown, windowEnd }
  // The k-th replica beyond the base: from the first poll with placed ≥ k to the first with ready ≥ k.
  const replicaLoadS: number[] = []
  for (let k = baseNeed + 1; k <= peakNeed && variant === 'on'; k++) {
    const placedK = pollTime(stepUp, p => (p.placed ?? 0) >= k, stepDown)
    const readyK = placedK != null ? pollTime(placedK, p => (p.ready ?? 0) >= k, stepDown) : null
    if (placedK != null && readyK != null) replicaLoadS.push(round((readyK - placedK) / 1000, 2))
  }
  const perSecond = Array.from({ length: Math.floor(durationMs / 1000) }, (_, i) => answers.filter(a => a.ok && a.end >= windowStart + i * 1000 && a.end < windowStart + (i + 1) * 1000).length)
  const result: VariantResult = {
    variant,
    app,
    spec,
    owner: owner.name,
    deployToReadyMs: round(deployToReadyMs, 0),
    windowStartEpochMs: windowStart,
    stepUpEpochMs: stepUp,
    stepDownEpochMs: stepDown,
    loads: loads.map(({ trace: _t, ...rest }) => rest),
    ok: answers.filter(a => a.ok).length,
    failed: answers.filter(a => !a.ok).length,
    errors,
    phases: phasesOf(answers, marks, variant === 'on' ? stepToReadyS ?? o.peakSec : GOAL_STEP_TO_READY_S),
    stepToReadyS,
    replicaLoadS,
    scaleUp,
    scaleDown,
    replicas: {
      before: lastBefore(stepUp)?.ready ?? null,
      peak: maxOf(polls.filter(p => p.t >= stepUp && p.t < stepDown).map(p => p.ready)),
      end: polls.at(-1)?.ready ?? null,
      maxPlaced: maxOf(polls.map(p => p.placed)),
      maxNodes: maxOf(poller.slow.map(s => s.nodes))
    },
    replicaSeconds: replicaSeconds != null ? round(replicaSeconds, 1) : null,
    loadBefore: meanLoad(stepUp - PRE_STEP_MS, stepUp),
    loadPeak: meanLoad(readyAt?.t ?? stepUp + 3_000, stepDown),
    lastReason: polls.at(-1)?.reason ?? null,
    reasons,
    metricsSeen: poller.slow.some(s => s.metricLoad != null),
    machineBusy: (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total),
    cpuUsPerRequest: (() => {
      // The ticks include the warm-up and the poller's requests: a small overcount, the same for every variant.
      const n = loads.reduce((sum, l) => sum + l.ok + l.warmupRequests, 0)
      const us = (t: number): number | null => n > 0 ? round(t / clockTicks() * 1e6 / n, 0) : null
      return { schedulers: us(schedTicks), nodes: us(nodeTicks) }
    })(),
    perSecond,
    timeline: poller.polls.map(p => [rel(p.t) as number, p.desired, p.placed, p.ready, p.old, p.load]),
    slow: poller.slow.map(s => ({ ...s, t: rel(s.t) as number })),
    cliEntry
  }
  return { result, answers, marks }
}

/** Removes the app and waits until no replica of it is placed, so the next variant starts clean. */
async function removeApp (o: Options, cluster: Cluster, app: string): Promise<void> {
  const s1 = cluster.schedulers[0] as AstradDaemon
  await astradCli(o.bin, s1, ['app', 'rm', app], 30_000)
  await waitFor(`${app}: replicas released after app rm`, async () => {
    const doc = await status(s1.rpcPort)
    const nodes = doc.nodes as unknown as Array<{ roles?: string[], replicas?: number }>
    const held = nodes.filter(n => n.roles?.includes('node') === true).reduce((s, n) => s + (n.replicas ?? 0), 0)
    return held === 0 ? true : undefined
  }, READY_TIMEOUT_MS, 200)
}

// ---- output --------------------------------------------------------------------------------

function fx (x: number | null | undefined, d = 1): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

function notes (o: Options): string[] {
  const cores = os.availableParallelism()
  return [
    `All ${o.schedulers + o.nodes} daemons, the load generators and this harness share one ${cores}-core machine over loopback: ${o.maxReplicas} one-core replicas are declared (--cores ${o.cores} per node) but ${cores} cores run them. More replicas raise throughput only up to the cores there are; what the bench measures is the scaling machinery (signal, decision, placement, model load, drain) and its cost, not capacity.`,
    `Closed loop (each connection sends its next request when the answer comes): the offered load follows the service, so load = requests in flight ≈ c at every moment, whatever the replicas; a slow fixed deployment shows up as latency, not as failures.`,
    `Enough ready replicas = ceil(${o.concurrency * o.factor} / ${o.target}) = ${replicasFor(o, o.concurrency * o.factor)} (the peak's concurrency at the target, within ${o.minReplicas}..${o.maxReplicas}). The step-by-step times come from polls of the owner's GET /v1/apps every ${o.pollMs} ms (each phase is seen up to one poll late), except the decision, timed by the status's decidedAt.`,
    `Replica-seconds integrate placed + old replicas (from the polls) over the ${o.baseSec + o.peakSec + o.tailSec} s window; a replica draining after its release is no longer counted.`,
    'The model is added on every node before the run (as a preload notice would): a scale-up here costs a placement and a model load, not a download.',
    `The variants run one after the other on the same cluster (${o.variants.join(', ')}), each with the app removed and its replicas released before the next. The machine drifts between them (other users): the base phase is the same deployment for on and off (one replica, c at the base), so the difference of their base rows is the drift, not the variants.`
  ]
}

function printResults (o: Options, results: VariantResult[], peakFixedRs: number, out: (l: string) => void): void {
  const on = results.find(r => r.variant === 'on')
  const cols = VARIANTS.map(v => results.find(r => r.variant === v)).filter((r): r is VariantResult => r != null)
  const title: Record<Variant, string> = { on: 'autoscaling on', off: `fixed ${replicasFor(o, o.concurrency)} (base)`, peak: `fixed ${replicasFor(o, o.concurrency * o.factor)} (peak)` }
  const w0 = 44
  const row = (label: string, f: (r: VariantResult) => string): string => label.padEnd(w0) + cols.map(r => f(r).padStart(20)).join('')
  const peakNeed = replicasFor(o, o.concurrency * o.factor)
  if (cols.length === 0) { out(''); out('No variant ran (see Problems).'); return }
  const ph = (r: VariantResult, name: string): PhaseStats | undefined => r.phases.find(p => p.name === name)
  out('')
  out(`Autoscaling: Silero VAD (${o.rows} row(s)/request, ${o.encoding}), ${o.nodes} nodes × --cores ${o.cores}, ${o.schedulers} scheduler(s), load c=${o.concurrency} → ${o.concurrency * o.factor} → ${o.concurrency} (${o.baseSec} s / ${o.peakSec} s / ${o.tailSec} s), ${os.availableParallelism()} cores`)
  out(`  on:  autoscaling ${o.minReplicas}..${o.maxReplicas}, target ${o.target} in flight/replica, up delay ${o.upscaleDelayMs} ms, down delay ${o.downscaleDelayMs} ms, ≤ ${o.replicasPerSecond} placed/s`)
  out(`  off: fixed ${replicasFor(o, o.concurrency)} replica(s), sized for the base load (an app without autoscaling)`)
  out(`  peak: fixed ${replicasFor(o, o.concurrency * o.factor)} replica(s), sized for the peak${results.some(r => r.variant === 'peak') ? '' : ' (not run: its replica-seconds are computed)'}`)
  out('')
  out(''.padEnd(w0) + cols.map(r => title[r.variant].padStart(20)).join(''))
  out(row('requests answered ok', r => String(r.ok)))
  out(row('failed requests', r => r.failed === 0 ? '0' : `${r.failed} (${Object.entries(r.errors).map(([k, v]) => `${k}:${v}`).join(',')})`))
  out(row('req/s base / peak / tail', r => `${fx(ph(r, 'base')?.rps, 0)} / ${fx((ph(r, 'transition')?.ok ?? 0) + (ph(r, 'peak after')?.ok ?? 0) > 0 ? ((ph(r, 'transition')?.ok ?? 0) + (ph(r, 'peak after')?.ok ?? 0)) / o.peakSec : null, 0)} / ${fx(ph(r, 'tail')?.rps, 0)}`))
  out(row('p50 / p99 ms, base', r => `${fx(ph(r, 'base')?.p50, 1)} / ${fx(ph(r, 'base')?.p99, 1)}`))
  out(row('p50 / p99 ms, transition (step → ready)', r => `${fx(ph(r, 'transition')?.p50, 1)} / ${fx(ph(r, 'transition')?.p99, 1)}`))
  out(row('p50 / p99 ms, rest of the peak', r => `${fx(ph(r, 'peak after')?.p50, 1)} / ${fx(ph(r, 'peak after')?.p99, 1)}`))
  out(row('p50 / p99 ms, tail (back at base)', r => `${fx(ph(r, 'tail')?.p50, 1)} / ${fx(ph(r, 'tail')?.p99, 1)}`))
  out(row('ready replicas before / peak / end', r => `${r.replicas.before ?? '-'} / ${r.replicas.peak ?? '-'} / ${r.replicas.end ?? '-'}`))
  out(row('nodes serving the app (most)', r => String(r.replicas.maxNodes ?? '-')))
  out(row(`step → ${peakNeed} ready replicas`, r => r.variant !== 'on' ? (r.replicas.before ?? 0) >= peakNeed ? 'before the step' : 'never (fixed)' : r.stepToReadyS != null ? `${fx(r.stepToReadyS, 2)} s` : 'not reached'))
  out(row('load before / at peak (autoscaler)', r => r.variant === 'on' ? `${fx(r.loadBefore, 2)} / ${fx(r.loadPeak, 2)}` : '-'))
  out(row('replica-seconds used', r => fx(r.replicaSeconds, 1)))
  out(row(`fixed for the peak (${peakNeed} × ${o.baseSec + o.peakSec + o.tailSec} s)`, () => fx(peakFixedRs, 1)))
  out(row('machine busy', r => `${(r.machineBusy * 100).toFixed(0)} %`))
  out(row('CPU µs/request: schedulers / nodes', r => `${fx(r.cpuUsPerRequest.schedulers, 0)} / ${fx(r.cpuUsPerRequest.nodes, 0)}`))
  out(row('deploy → ready', r => `${fx(r.deployToReadyMs / 1000, 1)} s`))
  out(row('app owner (polled)', r => r.owner ?? '-'))
  if (on != null) {
    out('')
    out(`Scale-up, step by step (s after the step c=${o.concurrency} → ${o.concurrency * o.factor}; polls every ${o.pollMs} ms on the owner)`)
    for (const m of on.scaleUp) out(`  ${m.what.padEnd(56)} ${m.atS != null ? `at ${fx(m.atS, 2).padStart(6)} s` : 'not seen   '}${m.tookS != null ? `   took ${fx(m.tookS, 2).padStart(6)} s` : ''}`)
    if (on.replicaLoadS.length > 0) out(`  model load per added replica (k-th placed → k-th ready): ${on.replicaLoadS.map(x => fx(x, 2)).join(', ')} s`)
    out(`Scale-down, step by step (s after the step back to c=${o.concurrency}; down delay ${o.downscaleDelayMs} ms)`)
    for (const m of on.scaleDown) out(`  ${m.what.padEnd(56)} ${m.atS != null ? `at ${fx(m.atS, 2).padStart(6)} s` : 'not seen   '}${m.tookS != null ? `   took ${fx(m.tookS, 2).padStart(6)} s` : ''}`)
    const stepDownS = round((on.stepDownEpochMs - on.stepUpEpochMs) / 1000, 2)
    out(`  (the step back came at ${fx(stepDownS, 2)} s after the step up; the scale-down times above are from the step back)`)
    if (on.reasons.length > 0) {
      out('Autoscaler reasons (s after the step up):')
      for (const r of on.reasons.slice(0, 12)) out(`  ${fx(r.atS, 2).padStart(7)} s  ${r.reason}`)
      if (on.reasons.length > 12) out(`  … ${on.reasons.length - 12} more in the JSON`)
    } else {
      out('Autoscaler reasons: none (status.autoscaling absent from GET /v1/apps)')
    }
    out('Replica changes on the owner (s after the step up: desired / placed / ready, autoscaler load):')
    let last = ''
    for (const [t, desired, placed, ready, , load] of on.timeline) {
      const key = `${desired ?? '-'} / ${placed ?? '-'} / ${ready ?? '-'}`
      if (key !== last) out(`  ${fx(t, 2).padStart(7)} s  ${key.padEnd(12)} load ${fx(load, 2)}`)
      last = key
    }
    out(`/metrics astrad_autoscale_load{app="${on.app}"}: ${on.metricsSeen ? `seen (max ${fx(Math.max(...on.slow.map(s => s.metricLoad ?? 0)), 2)})` : 'absent'}`)
  }
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  installCleanupHooks()
  setKeepTemp(o.keepTemp)
  const started = now()
  const log = (m: string): void => { process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`) }
  const errors: string[] = []
  const phase = phaseRunner(errors, log)
  const root = makeTempRoot('astrad-bench-autoscale-')
  const loadAtStart = os.loadavg().map(x => round(x, 2))
  ensureBuilt(o, log)
  // Other work on the machine skews every number: one second of /proc/stat before the run.
  const before = machineCpu()
  await sleep(1_000)
  const after = machineCpu()
  const busyBefore = (after.busy - before.busy) / Math.max(1, after.total - before.total)
  if (busyBefore > 0.25) log(`WARNING: the machine is ${(busyBefore * 100).toFixed(0)} % busy with other work before the run (load average ${loadAtStart.join(', ')}); the numbers will be skewed`)

  const cluster = await phase('cluster', async () => await startCluster(o, root, log))
  const results: VariantResult[] = []
  const cuts = new Map<VariantResult, { answers: Answer[], marks: Marks }>()
  if (cluster != null) {
    for (const variant of o.variants) {
      const r = await phase(`variant ${variant}`, async () => {
        const res = await runVariant(o, root, cluster, variant, log)
        await removeApp(o, cluster, res.result.app)
        return res
      })
      if (r == null) break // phaseRunner killed the cluster
      results.push(r.result)
      cuts.set(r.result, { answers: r.answers, marks: r.marks })
    }
  }
  // Fixed variants: the transition is as long as autoscaling's step → ready (whichever ran first).
  const onRun = results.find(r => r.variant === 'on')
  for (const r of results) {
    const cut = cuts.get(r)
    if (r.variant !== 'on' && cut != null && onRun?.stepToReadyS != null) r.phases = phasesOf(cut.answers, cut.marks, onRun.stepToReadyS)
  }

  const windowSec = o.baseSec + o.peakSec + o.tailSec
  const peakNeed = replicasFor(o, o.concurrency * o.factor)
  const peakFixedRs = peakNeed * windowSec
  const lines: string[] = []
  const out = (l: string): void => { lines.push(l) }
  printResults(o, results, peakFixedRs, out)
  out(`Machine before the run: ${(busyBefore * 100).toFixed(0)} % busy, load average ${loadAtStart.join(' ')} (${os.availableParallelism()} cores)`)
  const on = results.find(r => r.variant === 'on')
  const goals = {
    failedRequests: on != null ? on.failed === 0 : null,
    stepToReady: on != null ? on.stepToReadyS != null && on.stepToReadyS <= GOAL_STEP_TO_READY_S : null,
    replicaSeconds: on?.replicaSeconds != null ? on.replicaSeconds < peakFixedRs : null
  }
  const met = (b: boolean | null): string => b == null ? 'not measured' : b ? 'met' : 'MISSED'
  out('')
  out(`goal: failed requests with autoscaling = 0: ${on != null ? on.failed : '-'} → ${met(goals.failedRequests)}`)
  out(`goal: step → ${peakNeed} ready replicas ≤ ${GOAL_STEP_TO_READY_S} s (1 s load average + heartbeat + ${o.upscaleDelayMs} ms delay + placement + model load, ×2 for a shared machine): ${on?.stepToReadyS != null ? `${fx(on.stepToReadyS, 2)} s` : 'not reached'} → ${met(goals.stepToReady)}`)
  out(`goal: replica-seconds < a fixed deployment sized for the peak: ${fx(on?.replicaSeconds)} < ${fx(peakFixedRs)} → ${met(goals.replicaSeconds)}`)
  out('')
  out('How this differs from a real deployment:')
  for (const n of notes(o)) out(`  - ${n}`)
  if (errors.length > 0) {
    out('')
    out('Problems:')
    for (const e of errors) out(`  - ${e.split('\n').slice(0, 6).join('\n    ')}`)
  }
  process.stdout.write(lines.join('\n') + '\n')

  const version = (() => { try { return execFileSync(o.bin, ['--version'], { encoding: 'utf8' }).trim() } catch { return null } })()
  const doc = {
    benchmark: 'autoscale',
    date: new Date().toISOString(),
    options: { ...o, variants: o.variants, model: path.relative(ROOT, o.model) || o.model, out: undefined, bin: undefined },
    machine: {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      loadAvgAtStart: loadAtStart,
      busyBeforeRun: round(busyBefore, 3),
      node: process.version,
      astrad: version
    },
    units: 'ms for latency, s for times and replica-seconds, requests/s',
    cluster: cluster != null ? { schedulers: cluster.schedulers.map(s => s.name), nodes: cluster.nodes.map(n => n.name), coresPerNode: o.cores, modelId: cluster.modelId } : null,
    goals: { failedRequests: 0, stepToReadyAtMostS: GOAL_STEP_TO_READY_S, replicaSecondsBelowPeakFixed: peakFixedRs },
    goalsMet: goals,
    enoughReplicas: peakNeed,
    peakFixedReplicaSeconds: peakFixedRs,
    variants: results,
    notes: notes(o),
    errors,
    durationSec: round((now() - started) / 1000, 1)
  }
  writeResult(o.out, doc, log)
  log(`total ${doc.durationSec} s`)
  await cleanup()
  if (errors.length > 0) process.exitCode = 1
  logGoals(l => { process.stdout.write(l + '\n') }, goals)
}

runBench('bench:autoscale', main, err => err instanceof UsageError)
