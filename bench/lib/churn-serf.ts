// The same churn events on HashiCorp Serf (Debian package `serf`, default LAN profile):
// 10 agents on 127.0.0.1, joined to the first, which is the observer. Events: `serf leave` on a
// target (graceful) → observer shows `left`; kill -9 (crash) or SIGSTOP (freeze) of a target
// agent → observer shows `failed`.
//
// Two clocks on the observer: (1) the arrival of its log line "serf: EventMemberLeave|Failed:
// <name>" on the agent's stdout (Serf logs it right after changing the member's status, so
// resolution ≈ pipe latency); (2) polling `serf members -format json`, whose resolution is the
// command's round trip (a process spawn). The log clock is the reported one; the poll clock
// cross-checks it.

import path from 'node:path'
import { start, run, sleep, now, signal, stop, freePort, freeTcpUdpPort, waitFor, type Managed } from './procs.ts'
import type { ChurnEvent } from './churn-astrad.ts'

export interface SerfTrial {
  event: ChurnEvent
  trial: number
  target: string
  /** ms from `serf leave` start / SIGKILL until the observer logged the leave / failure. */
  ms: number | null
  /** ms until a `serf members` poll first showed left / failed (upper bound, see pollMeanMs). */
  pollMs: number | null
  /** First status other than alive a poll showed (`leaving` during a graceful leave), and when. */
  firstStatus: string | null
  firstPollMs: number | null
  /** Round trip of one `serf members` poll during this trial (mean, max). */
  pollMeanMs: number
  pollMaxMs: number
  /** ms until `serf leave` returned (drain) and until the target agent exited. */
  leaveCmdMs: number | null
  exitMs: number | null
}

export interface SerfChurnResult {
  version: string
  members: number
  observer: string
  trials: SerfTrial[]
  rejoinMeanMs: number | null
}

export interface SerfChurnOptions {
  root: string
  trials: number
  members: number
  events: ChurnEvent[]
  log: (msg: string) => void
}

interface Agent {
  name: string
  bindPort: number
  rpcPort: number
  proc: Managed
}

interface Member { name: string, status: string }

const STATUS: Record<ChurnEvent, string> = { drain: 'left', crash: 'failed', freeze: 'failed' }
const LOG_EVENT: Record<ChurnEvent, string> = { drain: 'EventMemberLeave', crash: 'EventMemberFailed', freeze: 'EventMemberFailed' }
const TRIAL_TIMEOUT_MS: Record<ChurnEvent, number> = { drain: 15_000, crash: 40_000, freeze: 40_000 }

export async function serfVersion (): Promise<string> {
  const out = await run('serf', ['version'], 5_000)
  return out.split('\n')[0]?.trim() ?? out.trim()
}

async function members (rpcPort: number): Promise<Member[]> {
  const out = await run('serf', ['members', `-rpc-addr=127.0.0.1:${rpcPort}`, '-format=json'], 5_000)
  return (JSON.parse(out) as { members: Member[] }).members
}

async function startAgent (root: string, name: string, join?: number): Promise<Agent> {
  const bindPort = await freeTcpUdpPort()
  const rpcPort = await freePort()
  // Default LAN profile: no -profile flag. No snapshot, no event handlers.
  const proc = start(`serf ${name}`, 'serf', [
    'agent', `-node=${name}`, `-bind=127.0.0.1:${bindPort}`, `-rpc-addr=127.0.0.1:${rpcPort}`, '-log-level=info',
    ...(join != null ? [`-join=127.0.0.1:${join}`] : [])
  ], { cwd: root })
  await Promise.race([
    waitFor(`serf agent ${name} RPC`, async () => { await members(rpcPort); return true }, 15_000, 50),
    proc.exited.then(({ code, signal }) => { throw new Error(`serf agent ${name} exited ${code ?? signal}: ${proc.tail.join('\n')}`) })
  ])
  return { name, bindPort, rpcPort, proc }
}

export async function runSerfChurn (o: SerfChurnOptions): Promise<SerfChurnResult> {
  const root = path.join(o.root, 'serf')
  const { mkdirSync } = await import('node:fs')
  mkdirSync(root, { recursive: true })
  const version = await serfVersion()
  const observer = await startAgent(root, 's1')
  // The observer's member events, timestamped on arrival.
  const events: Array<{ kind: string, name: string, at: number }> = []
  observer.proc.onLine = (line, at) => {
    const m = /serf: (EventMember\w+): (\S+)/.exec(line)
    if (m != null) events.push({ kind: m[1] as string, name: m[2] as string, at })
  }
  const slots: Agent[] = []
  for (let i = 2; i <= o.members; i++) slots.push(await startAgent(root, `s${i}`, observer.bindPort))
  const waitAll = async (): Promise<void> => {
    await waitFor(`${o.members} alive serf members`, async () => {
      const list = await members(observer.rpcPort)
      return list.filter(m => m.status === 'alive').length === o.members ? true : undefined
    }, 60_000, 100)
  }
  await waitAll()
  o.log(`serf ${version}: ${o.members} agents alive`)

  const trials: SerfTrial[] = []
  const rejoins: number[] = []
  let replaced = 0
  for (const [e, event] of o.events.entries()) {
    for (let t = 0; t < o.trials; t++) {
      const slot = (t + e * 3) % slots.length
      const target = slots[slot] as Agent
      // Same settle time as astrad, plus one probe period for memberlist's probe rotation.
      await sleep(1_000)
      const trial = await oneTrial(event, t, target, observer, events)
      trials.push(trial)
      o.log(`serf ${event} #${t + 1} ${target.name}: ${trial.ms?.toFixed(1) ?? 'timeout'} ms (poll ${trial.pollMs?.toFixed(1) ?? '-'} ms, first ${trial.firstStatus ?? '-'} at ${trial.firstPollMs?.toFixed(1) ?? '-'} ms, poll rtt ${trial.pollMeanMs.toFixed(1)} ms)`)
      await stop(target.proc, 'SIGKILL', 5_000)
      const t0 = now()
      const name = `s${slot + 2}-r${++replaced}`
      const fresh = await startAgent(root, name, observer.bindPort)
      slots[slot] = fresh
      await waitFor(`${name} alive at the observer`, async () => {
        const list = await members(observer.rpcPort)
        return list.some(m => m.name === name && m.status === 'alive') ? true : undefined
      }, 30_000, 20)
      rejoins.push(now() - t0)
      await waitAll()
    }
  }
  await Promise.all([...slots, observer].map(async a => { await stop(a.proc, 'SIGKILL', 3_000) }))
  return {
    version,
    members: o.members,
    observer: 'agent s1 (one of the members; never a target)',
    trials,
    rejoinMeanMs: rejoins.length > 0 ? rejoins.reduce((a, b) => a + b, 0) / rejoins.length : null
  }
}

async function oneTrial (event: ChurnEvent, trial: number, target: Agent, observer: Agent, events: Array<{ kind: string, name: string, at: number }>): Promise<SerfTrial> {
  const result: SerfTrial = { event, trial, target: target.name, ms: null, pollMs: null, firstStatus: null, firstPollMs: null, pollMeanMs: 0, pollMaxMs: 0, leaveCmdMs: null, exitMs: null }
  const before = await members(observer.rpcPort)
  if (before.find(m => m.name === target.name)?.status !== 'alive') throw new Error(`${target.name} is not alive before the trial`)
  const from = events.length

  const t0 = now()
  let leaveCmd: Promise<void> = Promise.resolve()
  if (event === 'drain') {
    leaveCmd = run('serf', ['leave', `-rpc-addr=127.0.0.1:${target.rpcPort}`], 15_000)
      .then(() => { result.leaveCmdMs = now() - t0 }, () => {})
  } else {
    signal(target.proc, event === 'crash' ? 'SIGKILL' : 'SIGSTOP')
  }
  void target.proc.exited.then(() => { result.exitMs = now() - t0 })
  const deadline = t0 + TRIAL_TIMEOUT_MS[event]

  let rtts = 0
  let rttSum = 0
  while (now() < deadline) {
    const logged = events.slice(from).find(e => e.kind === LOG_EVENT[event] && e.name === target.name)
    if (logged != null && result.ms == null) result.ms = logged.at - t0
    const q = now()
    let list: Member[] = []
    try { list = await members(observer.rpcPort) } catch {}
    const t = now()
    rtts++
    rttSum += t - q
    result.pollMaxMs = Math.max(result.pollMaxMs, t - q)
    const st = list.find(m => m.name === target.name)?.status
    if (st != null && st !== 'alive' && result.firstStatus == null) { result.firstStatus = st; result.firstPollMs = t - t0 }
    if (st === STATUS[event]) {
      result.pollMs = t - t0
      break
    }
  }
  // The log line may arrive a moment after the poll that saw the status.
  await sleep(50)
  const logged = events.slice(from).find(e => e.kind === LOG_EVENT[event] && e.name === target.name)
  if (logged != null) result.ms = logged.at - t0
  result.pollMeanMs = rtts > 0 ? rttSum / rtts : 0
  await Promise.race([leaveCmd, sleep(Math.max(0, deadline - now()))])
  return result
}
