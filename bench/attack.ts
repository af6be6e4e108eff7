// Attack benchmark (npm run bench:attack; docs/security.md): issue 16's chaos run as a
// measurement, an insecure cluster and a secure one side by side in the same run.
//
// Each cluster: a resource+scheduler daemon routing the built-in demo app and two node daemons
// (real dist/astrad processes on 127.0.0.1), under a closed-loop KServe infer load on the
// scheduler's RPC port. A rogue libp2p peer in this process then makes the four attacks of the
// issue at once:
//   1. a forged online digest: both nodes `left`, incarnation far ahead of theirs;
//   2. a cluster-log write deleting the app (/astra/log/1.0.0, no operator credential);
//   3. a cluster-log write publishing a drain notice for every node;
//   4. a fake heartbeat adding a 64-core, 8-GPU node of its own.
// In the insecure cluster the rogue needs nothing; in the secure one it holds the cluster's
// private-network key (a leaked join token's, say) but no certificate — the strongest outsider.
// Measured in the attack window: failed requests, seconds the victims were out of the scheduler's
// view, whether the app survived, nodes that exited, whether the rogue node entered the view,
// and the refusals counted in astrad_trust_refusals_total.
//
// Usage: node bench/attack.ts [--quick] [--seconds N] [--no-build] [--out FILE]

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { ensureBuilt } from './lib/build.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import {
  runBench, writeResult, logGoals, installCleanupHooks, makeTempRoot, start, stop, freePort, waitFor, sleep, now, type Managed
} from './lib/procs.ts'
import { getJson, getText, metric } from './lib/astrad.ts'
import { runLoad, type LoadResult } from './lib/load.ts'
import { createHost, request, type Host } from '../src/p2p/index.ts'
import { encodeHeartbeat, type Heartbeat } from '../src/membership/heartbeat.ts'
import { encodeRecords } from '../src/membership/records.ts'
import type { NodeRecord } from '../src/membership/online-list.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { ONLINE_TOPIC, HEARTBEAT_TOPIC_PREFIX } from '../src/membership/constants.ts'
import { ACCESS_PROTOCOL } from '../src/clusterlog/constants.ts'
import { newClusterSecret, encodeClusterSecret, writeSecretFile, pskBytes, readClusterSecret } from '../src/trust/index.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const USAGE = 'usage: node bench/attack.ts [--quick] [--seconds N (attack window, 5..600)] [--no-build] [--out FILE]'
const INFER_BODY = JSON.stringify({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [0.5, -1.25, 2, 0.75] }] })

interface Daemon {
  name: string
  rpc: number
  peerId: string
  addr: string
  proc: Managed
}

interface ModeResult {
  mode: 'insecure' | 'secure'
  requests: number
  failed: number
  failedFraction: number
  errors: Record<string, number>
  /** Seconds, summed over the two victims, that the scheduler did not list them alive/suspect/draining. */
  victimOutSeconds: number
  appSurvived: boolean
  nodesExited: number
  rogueInView: boolean
  refusals: number
  handshakeFailures: number
  attacksSent: Record<string, string>
}

async function startDaemon (root: string, name: string, args: string[]): Promise<Daemon> {
  const dataDir = path.join(root, name)
  fs.mkdirSync(dataDir, { recursive: true })
  const rpc = await freePort()
  const proc = start(name, path.join(ROOT, 'dist/astrad'), [
    'start', '--name', name, '--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--rpc', `127.0.0.1:${rpc}`, '--log-level', 'warn', ...args
  ])
  const doc = await Promise.race([
    waitFor(`${name} RPC on :${rpc}`, async () => await getJson<{ self: { peerId: string, addrs: string[] } }>(rpc, '/v1/status', 2_000), 60_000, 100),
    proc.exited.then(({ code, signal }) => { throw new Error(`${name} exited ${code ?? signal} at start: ${proc.tail.join('\n')}`) })
  ])
  const addr = doc.self.addrs.find(a => a.includes('/tcp/') && a.includes('/p2p/'))
  if (addr == null) throw new Error(`${name} shows no TCP address`)
  return { name, rpc, peerId: doc.self.peerId, addr, proc }
}

interface StatusNode { peerId: string, name: string, state: string }

async function nodesOf (d: Daemon): Promise<StatusNode[]> {
  return (await getJson<{ nodes: StatusNode[] }>(d.rpc, '/v1/status', 3_000)).nodes
}

function fakeHeartbeat (peerId: string, over: Partial<Heartbeat>): Heartbeat {
  return {
    peerId, incarnation: Date.now() + 1e9, seq: 1_000_000, state: 'alive', cordoned: false, roles: ['node'], name: 'rogue-node', cell: 'default',
    cores: 64, gpus: 8, gpuPerf: 1, cpuUtil: 0, gpuUtil: 0, inflight: 0, ledgerVersion: 0, readyReplicas: 0, modelsDigest: 0, mailboxCursor: 0,
    uploadLimit: 0, downloadLimit: 0, uploadRate: 0, downloadRate: 0, transfers: 0, ...over
  }
}

/** The four attacks, all at once; what each got back (sent / refused …). */
async function attack (rogue: Host, target: PeerId, victims: Daemon[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  // Gossip is fire-and-forget ('published': the receivers' validators decide, seen in the view
  // and the refusal counter); a request gets an answer ('accepted' or 'refused: …').
  const note = async (what: string, fn: () => Promise<unknown>, sent = 'accepted'): Promise<void> => {
    try { await fn(); out[what] = sent } catch (err) { out[what] = `refused: ${err instanceof Error ? err.message.slice(0, 120) : String(err)}` }
  }
  const t = Date.now()
  const records: NodeRecord[] = victims.map(v => ({ hb: fakeHeartbeat(v.peerId, { name: v.name, state: 'left', cores: 2, gpus: 0 }), state: 'left', lastSeen: t, changedAt: t }))
  await note('forged digest (victims left)', async () => await rogue.services.pubsub.publish(ONLINE_TOPIC, encodeRecords(records, t)), 'published')
  await note('log write: delete app demo', async () => await request(rogue, target, ACCESS_PROTOCOL, new TextEncoder().encode(JSON.stringify({ op: 'delete', kind: 'app', key: 'demo' }))))
  const notice = {
    id: 'n-rogue-drain', kind: 'drain', data: { all: true, reason: 'rogue' }, audience: { cells: null, canary: null, node: null },
    state: 'published', revision: 1_000_000, createdAt: t, updatedAt: t, expiresAt: null, by: 'rogue'
  }
  await note('log write: drain notice for all', async () => await request(rogue, target, ACCESS_PROTOCOL, new TextEncoder().encode(JSON.stringify({ op: 'put', kind: 'notice', key: notice.id, value: notice }))))
  await note('fake 64-core 8-GPU heartbeat', async () => await rogue.services.pubsub.publish(`${HEARTBEAT_TOPIC_PREFIX}0`, encodeHeartbeat(fakeHeartbeat(rogue.peerId.toString(), {}))), 'published')
  return out
}

async function runMode (mode: 'insecure' | 'secure', seconds: number, log: (m: string) => void): Promise<ModeResult> {
  const root = makeTempRoot(`astrad-attack-${mode}-`)
  const daemons: Daemon[] = []
  let rogue: Host | undefined
  try {
    let secret: string[] = ['--insecure']
    let psk: Uint8Array | undefined
    if (mode === 'secure') {
      const keyFile = path.join(root, 'cluster.key')
      writeSecretFile(keyFile, encodeClusterSecret(await newClusterSecret()))
      secret = ['--cluster-key', keyFile]
      psk = pskBytes((await readClusterSecret(keyFile)).psk)
    }
    const head = await startDaemon(root, 'res', ['--role', 'resource,scheduler', ...secret])
    daemons.push(head)
    // The demo model is added on a node (nodes hold models) and deployed through the cluster log.
    for (const name of ['n1', 'n2']) daemons.push(await startDaemon(root, name, ['--role', 'node', '--cores', '2', '--bootstrap', head.addr, ...(name === 'n1' ? ['--demo'] : []), ...secret]))
    const victims = daemons.slice(1)
    log(`${mode}: 3 daemons up; waiting for the demo app on both nodes`)
    await waitFor(`${mode}: both nodes alive`, async () => {
      const nodes = await nodesOf(head)
      return victims.every(v => nodes.some(n => n.peerId === v.peerId && n.state === 'alive')) ? true : undefined
    }, 60_000, 250)
    await waitFor(`${mode}: demo app serving`, async () => {
      const res = await fetch(`http://127.0.0.1:${head.rpc}/v2/models/demo/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: INFER_BODY, signal: AbortSignal.timeout(5_000) })
      return res.ok ? true : undefined
    }, 120_000, 500)

    const host = rogue = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], ...(psk != null ? { swarmKey: psk } : {}) })
    await host.start()
    host.services.pubsub.subscribe(ONLINE_TOPIC)
    let connected = true
    try {
      await host.dial(multiaddr(head.addr), { signal: AbortSignal.timeout(10_000) })
      await waitFor(`${mode}: rogue in the gossip mesh`, () => host.services.pubsub.getSubscribers(ONLINE_TOPIC).length > 0 ? true : undefined, 10_000, 100)
    } catch {
      connected = false
    }

    const loadPromise: Promise<LoadResult> = runLoad({
      url: `http://127.0.0.1:${head.rpc}/v2/models/demo/infer`, method: 'POST', body: INFER_BODY, headers: { 'content-type': 'application/json' },
      concurrency: 8, warmupMs: 2_000, durationMs: seconds * 1000, timeoutMs: 10_000
    })
    await sleep(2_500)
    const attacksSent = connected ? await attack(host, peerIdFromString(head.peerId), victims) : { all: 'could not connect' }
    log(`${mode}: attacks: ${JSON.stringify(attacksSent)}`)
    // Watch the scheduler's view while the load runs.
    let outMs = 0
    let rogueInView = false
    let last = now()
    const until = now() + seconds * 1000 - 2_500
    while (now() < until) {
      await sleep(250)
      const t = now()
      try {
        const nodes = await nodesOf(head)
        const out = victims.filter(v => !nodes.some(n => n.peerId === v.peerId && ['alive', 'suspect', 'draining'].includes(n.state))).length
        outMs += out * (t - last)
        if (nodes.some(n => n.peerId === host.peerId.toString() || n.name === 'rogue-node')) rogueInView = true
      } catch {
        outMs += victims.length * (t - last)
      }
      last = t
    }
    const load = await loadPromise
    const apps = await getJson<{ apps: Array<{ spec: { name: string } }> }>(head.rpc, '/v1/apps', 5_000).catch(() => ({ apps: [] }))
    const metrics = await getText(head.rpc, '/metrics', 5_000).catch(() => '')
    const requests = load.ok + load.errorCount
    return {
      mode,
      requests,
      failed: load.errorCount,
      failedFraction: requests > 0 ? load.errorCount / requests : 1,
      errors: load.errors,
      victimOutSeconds: Math.round(outMs / 100) / 10,
      appSurvived: apps.apps.some(a => a.spec.name === 'demo'),
      nodesExited: victims.filter(v => v.proc.child.exitCode != null || v.proc.child.signalCode != null).length,
      rogueInView,
      refusals: metric(metrics, 'astrad_trust_refusals_total'),
      handshakeFailures: metric(metrics, 'astrad_trust_handshake_failures_total'),
      attacksSent
    }
  } finally {
    try { await rogue?.stop() } catch {}
    await Promise.allSettled(daemons.map(async d => { await stop(d.proc, 'SIGKILL') }))
  }
}

async function main (): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    quick: { type: 'boolean' }, seconds: { type: 'string' }, 'no-build': { type: 'boolean' }, out: { type: 'string' }, help: { type: 'boolean' }
  }, USAGE)
  const log = (m: string): void => { process.stdout.write(`${m}\n`) }
  if (flags.help === true) { log(USAGE); return }
  const seconds = flags.seconds != null ? intFlag('--seconds', flags.seconds, 5, 600) : flags.quick === true ? 12 : 30
  installCleanupHooks()
  ensureBuilt({ bin: path.join(ROOT, 'dist/astrad'), build: flags['no-build'] !== true }, log)
  const results: ModeResult[] = []
  for (const mode of ['insecure', 'secure'] as const) results.push(await runMode(mode, seconds, log))
  const [ins, sec] = results as [ModeResult, ModeResult]
  const rows: Array<[string, (r: ModeResult) => string]> = [
    ['requests in the window', r => String(r.requests)],
    ['failed requests', r => `${r.failed} (${(r.failedFraction * 100).toFixed(1)} %)`],
    ['victim-seconds out of the view', r => r.victimOutSeconds.toFixed(1)],
    ['app "demo" survived', r => r.appSurvived ? 'yes' : 'NO'],
    ['nodes that exited', r => String(r.nodesExited)],
    ['rogue node in the view', r => r.rogueInView ? 'YES' : 'no'],
    ['refusals counted', r => String(r.refusals)]
  ]
  log('')
  log(`| attack window ${seconds} s | insecure | secure |`)
  log('|---|---|---|')
  for (const [name, f] of rows) log(`| ${name} | ${f(ins)} | ${f(sec)} |`)
  const ratio = ins.failedFraction > 0 ? sec.failedFraction / ins.failedFraction : null
  log(`failed-request ratio secure ÷ insecure: ${ratio == null ? 'n/a (the insecure cluster lost nothing)' : ratio.toFixed(3)}`)
  writeResult(flags.out ?? path.join(ROOT, 'bench/results/attack.json'), { seconds, results, ratio }, log)
  logGoals(log, {
    'secure: under 1 % of requests failed': sec.requests > 0 && sec.failedFraction < 0.01,
    'secure: victims never out of the view': sec.victimOutSeconds === 0,
    'secure: app survived': sec.appSurvived,
    'secure: no node exited': sec.nodesExited === 0,
    'secure: rogue node never in the view': !sec.rogueInView,
    'secure: every attack refused and counted': sec.refusals >= 3
  })
}

runBench('bench:attack', main, err => err instanceof UsageError)
