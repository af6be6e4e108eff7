// Drain-to-removal and crash-to-dead times of astrad, as a separate scheduler (the observer,
// what routers see) sees them. Cluster: 1 resource+scheduler daemon and 9 node daemons
// (10 members), plus the observer (`--role scheduler`), all bootstrapped to the resource.

import path from 'node:path'
import { sleep, now, signal, stop, waitFor } from './procs.ts'
import { startDaemon, status, loopbackAddr, type AstradDaemon, type StatusDoc } from './astrad.ts'

/**
 * drain: SIGTERM (graceful leave). crash: SIGKILL (process dies, the kernel closes its sockets).
 * freeze: SIGSTOP (the process stops but its connections stay open — what a host that loses
 * power or network looks like: silence only), SIGKILLed after the measurement.
 */
export type ChurnEvent = 'drain' | 'crash' | 'freeze'
export const EVENTS: ChurnEvent[] = ['drain', 'crash', 'freeze']
const SIGNAL: Record<ChurnEvent, NodeJS.Signals> = { drain: 'SIGTERM', crash: 'SIGKILL', freeze: 'SIGSTOP' }

export interface AstradTrial {
  event: ChurnEvent
  trial: number
  target: string
  /** ms from the signal until the observer no longer shows the node alive (draining/left for a drain, dead for a crash). */
  ms: number | null
  /** First non-alive state the observer showed, and when. */
  firstState: string | null
  firstMs: number | null
  /** ms until the observer shows the final state (left for a drain, dead for a crash). */
  finalMs: number | null
  /** Same, in the resource's own view (where the state machine runs). */
  resourceFirstMs: number | null
  resourceFinalMs: number | null
  /** ms until the signalled process exited (drain: the whole graceful leave). */
  exitMs: number | null
  /** Mean and max gap between two observer polls during the trial (resolution). */
  pollMeanMs: number
  pollMaxMs: number
}

export interface AstradChurnResult {
  members: number
  observer: string
  replacement: string
  trials: AstradTrial[]
  /** ms from starting a replacement daemon until the observer showed it alive (mean). */
  rejoinMeanMs: number | null
}

export interface AstradChurnOptions {
  bin: string
  root: string
  trials: number
  /** Node daemons besides the resource (9 → 10 members). */
  nodes: number
  pollMs: number
  /**
   * false (default): a replacement restarts on the killed daemon's data dir, so it comes back
   * with the same identity (a restarted daemon). true: a fresh data dir and identity per
   * replacement (a new pod without a volume) — on one machine every daemon connects from
   * 127.0.0.1, and gossipsub's default IP-colocation score then graylists all of them after
   * 4 such replacements (see docs/bench-membership.md).
   */
  freshIdentity: boolean
  events: ChurnEvent[]
  log: (msg: string) => void
}

const REMOVED: Record<ChurnEvent, string[]> = { drain: ['draining', 'left'], crash: ['dead'], freeze: ['dead'] }
const FINAL: Record<ChurnEvent, string> = { drain: 'left', crash: 'dead', freeze: 'dead' }
const TRIAL_TIMEOUT_MS: Record<ChurnEvent, number> = { drain: 10_000, crash: 15_000, freeze: 15_000 }

function aliveCount (doc: StatusDoc): number {
  return doc.nodes.filter(n => n.state === 'alive').length
}

export async function runAstradChurn (o: AstradChurnOptions): Promise<AstradChurnResult> {
  const root = path.join(o.root, 'astrad-churn')
  const resource = await startDaemon({ bin: o.bin, root, name: 'r0', roles: 'resource,scheduler' })
  const rAddr = await loopbackAddr(resource)
  const observer = await startDaemon({ bin: o.bin, root, name: 'observer', roles: 'scheduler', bootstrap: rAddr })
  const slots: AstradDaemon[] = await Promise.all(Array.from({ length: o.nodes }, async (_, i) =>
    await startDaemon({ bin: o.bin, root, name: `n${i + 1}`, roles: 'node', bootstrap: rAddr })))
  // Members: resource + nodes; the observer heartbeats too, so it is in every view as well.
  const expectAlive = 1 + o.nodes + 1
  const waitAll = async (): Promise<void> => {
    await waitFor(`${expectAlive} alive in the observer's view`, async () => {
      const doc = await status(observer.rpcPort)
      return aliveCount(doc) === expectAlive ? true : undefined
    }, 60_000, 50)
  }
  await waitAll()
  o.log(`astrad: ${o.nodes + 1} members + observer alive`)

  const trials: AstradTrial[] = []
  const rejoins: number[] = []
  let replaced = 0
  const startedAt = now()
  try {
    await churn()
  } catch (err) {
    const at = ((now() - startedAt) / 1000).toFixed(1)
    throw new Error(`${err instanceof Error ? err.message : String(err)} (${trials.length} events, ${at} s into the trials)\n${await describe([resource, observer, ...slots])}`)
  }
  await Promise.all([...slots, observer, resource].map(async d => { await stop(d.proc, 'SIGKILL', 3_000) }))
  return {
    members: o.nodes + 1,
    observer: 'separate --role scheduler daemon',
    replacement: o.freshIdentity ? 'fresh data dir and identity' : 'same data dir and identity (restarted daemon)',
    trials,
    rejoinMeanMs: rejoins.length > 0 ? rejoins.reduce((a, b) => a + b, 0) / rejoins.length : null
  }

  async function churn (): Promise<void> {
  for (const [e, event] of o.events.entries()) {
    for (let t = 0; t < o.trials; t++) {
      const slot = (t + e * 3) % o.nodes
      const target = slots[slot] as AstradDaemon
      // Settle (as for Serf): the fresh member is known everywhere before the next event.
      await sleep(1_000)
      const trial = await oneTrial(event, t, target, observer, resource, o.pollMs)
      trials.push(trial)
      o.log(`astrad ${event} #${t + 1} ${target.name}: ${trial.ms?.toFixed(1) ?? 'timeout'} ms (first ${trial.firstState ?? '-'} at ${trial.firstMs?.toFixed(1) ?? '-'} ms, final at ${trial.finalMs?.toFixed(1) ?? '-'} ms; resource ${trial.resourceFirstMs?.toFixed(1) ?? '-'} ms)`)
      // The signalled process must be gone before its slot is refilled.
      await stop(target.proc, 'SIGKILL', 5_000)
      const t0 = now()
      const name = o.freshIdentity ? `n${slot + 1}-r${++replaced}` : target.name
      const fresh = await startDaemon({ bin: o.bin, root, name, roles: 'node', bootstrap: rAddr })
      slots[slot] = fresh
      await waitFor(`${fresh.name} alive in the observer's view`, async () => {
        const doc = await status(observer.rpcPort)
        return doc.nodes.some(n => n.peerId === fresh.peerId && n.state === 'alive') ? true : undefined
      }, 30_000, 20)
      rejoins.push(now() - t0)
      await waitAll()
    }
  }
  }
}

/** Views and output tails of the daemons, for a failure message. */
async function describe (daemons: AstradDaemon[]): Promise<string> {
  const out: string[] = []
  for (const d of daemons) {
    let view = ''
    try {
      const doc = await status(d.rpcPort, 2_000)
      if (d.roles !== 'node') view = doc.nodes.map(n => `${n.name}:${n.state}:${n.lastSeenMs}`).join(' ') + ` (source ${doc.view.source}, staleness ${doc.view.stalenessMs} ms)`
    } catch (err) {
      view = `status failed: ${String(err)}`
    }
    out.push(`${d.name} [pid ${d.proc.child.pid ?? '-'}, exit ${d.proc.child.exitCode ?? d.proc.child.signalCode ?? 'running'}] ${view}`)
    for (const l of d.proc.tail.slice(-8)) out.push(`    ${l.slice(0, 400)}`)
  }
  return out.join('\n')
}

async function oneTrial (event: ChurnEvent, trial: number, target: AstradDaemon, observer: AstradDaemon, resource: AstradDaemon, pollMs: number): Promise<AstradTrial> {
  const result: AstradTrial = {
    event, trial, target: target.name, ms: null, firstState: null, firstMs: null, finalMs: null,
    resourceFirstMs: null, resourceFinalMs: null, exitMs: null, pollMeanMs: 0, pollMaxMs: 0
  }
  const before = await status(observer.rpcPort)
  if (before.nodes.find(n => n.peerId === target.peerId)?.state !== 'alive') throw new Error(`${target.name} is not alive before the trial`)

  const t0 = now()
  signal(target.proc, SIGNAL[event])
  void target.proc.exited.then(() => { result.exitMs = now() - t0 })
  const deadline = t0 + TRIAL_TIMEOUT_MS[event]

  // The resource's view is polled on its own loop (diagnostic: detection vs propagation).
  let stopResource = false
  const resourceLoop = (async () => {
    while (!stopResource && now() < deadline && result.resourceFinalMs == null) {
      const next = now() + pollMs
      try {
        const doc = await status(resource.rpcPort, 1_000)
        const at = now() - t0
        const st = doc.nodes.find(n => n.peerId === target.peerId)?.state
        if (st != null && st !== 'alive' && result.resourceFirstMs == null) result.resourceFirstMs = at
        if (st === FINAL[event]) result.resourceFinalMs = at
      } catch {}
      await sleep(Math.max(0, next - now()))
    }
  })()

  let last = t0
  let gaps = 0
  let gapSum = 0
  while (now() < deadline) {
    const next = now() + pollMs
    let doc: StatusDoc | undefined
    try { doc = await status(observer.rpcPort, 1_000) } catch {}
    const t = now()
    gapSum += t - last
    gaps++
    result.pollMaxMs = Math.max(result.pollMaxMs, t - last)
    last = t
    const st = doc?.nodes.find(n => n.peerId === target.peerId)?.state
    if (st != null && st !== 'alive') {
      if (result.firstMs == null) { result.firstMs = t - t0; result.firstState = st }
      if (result.ms == null && REMOVED[event].includes(st)) result.ms = t - t0
      if (st === FINAL[event]) { result.finalMs = t - t0; break }
    }
    await sleep(Math.max(0, next - now()))
  }
  result.pollMeanMs = gaps > 0 ? gapSum / gaps : 0
  // Let the resource loop see the final state too (bounded by the deadline).
  await Promise.race([resourceLoop, sleep(Math.max(0, Math.min(2_000, deadline - now())))])
  stopResource = true
  await resourceLoop
  if (event === 'drain') await Promise.race([target.proc.exited, sleep(Math.max(0, deadline - now()))])
  return result
}
