import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BINARY, ROOT, createClusterSecrets, createJoinToken, requireBinary, type ClusterSecrets } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { NatLab, namespaceSupport, removeStaleLabs } from '../helpers/netns.ts'

/*
 * NAT traversal for real (docs/nat.md): a resource on a "public" net, nodes a and b behind two
 * MASQUERADE routers, node c on the public net. The public net is 7.77.0.0/24, a range libp2p
 * treats as public (every reserved or documentation range is "private" to it, and AutoNAT and
 * DCUtR ignore private addresses); it exists only inside the lab's namespaces.
 */

const NET = '7.77.0'
const P2P_PORT = 7071
const RPC = '127.0.0.1:7070' // every namespace has its own loopback
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')

let lab: NatLab | undefined
let skipReason: string | undefined
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-nat-'))
const logs = new Map<string, () => string>()
/** The lab cluster's key and operator credential; nodes join with a node token read from a file. */
let secrets: ClusterSecrets | undefined
const nodeTokenFile = path.join(dir, 'node.token')

before(async () => {
  skipReason = await namespaceSupport()
  if (skipReason != null) return
  requireBinary()
  await removeStaleLabs()
  lab = await NatLab.create({ publicNet: NET })
  secrets = await createClusterSecrets(path.join(dir, 'admin'))
  fs.writeFileSync(nodeTokenFile, `${await createJoinToken(secrets.clusterKey, 'node')}\n`, { mode: 0o600 })
})

after(async () => {
  await lab?.destroy()
  fs.rmSync(dir, { recursive: true, force: true })
})

function logsOf (...names: string[]): string {
  return names.map(n => `--- log of ${n} ---\n${logs.get(n)?.().slice(-4000) ?? ''}`).join('\n')
}

/**
 * Starts `astrad start` inside a namespace and waits until its RPC answers there. `secret`: the
 * cluster's flags (--cluster-key FILE for the resource, --join-token @FILE for nodes).
 */
async function startDaemon (l: NatLab, ns: string, name: string, secret: string[], args: string[]): Promise<void> {
  let out = ''
  const child = l.spawn(ns, [BINARY, 'start', '--name', name, '--data-dir', path.join(dir, name), '--rpc', RPC,
    '--listen', `/ip4/0.0.0.0/tcp/${P2P_PORT}`, ...secret, '--log-level', 'info', ...args], {
    // ASTRAD_NAT_DEBUG=libp2p:circuit-relay*,libp2p:dcutr* puts libp2p's own logs into failure messages.
    env: { HOME: dir, DEBUG: process.env.ASTRAD_NAT_DEBUG ?? '' }, stdio: ['ignore', 'pipe', 'pipe']
  })
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  logs.set(name, () => out)
  let exited = false
  child.on('exit', () => { exited = true })
  await waitFor(`${name} to answer`, async () => {
    if (exited) throw new Error(`${name} exited:\n${out}`)
    return await status(l, ns)
  }).catch((err: Error) => { throw new Error(`${err.message}\n${out}`) })
}

async function cli (l: NatLab, ns: string, args: string[], timeoutMs = 30_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await l.exec(ns, [BINARY, ...args, '--rpc', RPC], { env: { HOME: dir, ASTRAD_CREDENTIAL: secrets?.credential ?? '' }, timeoutMs })
}

/** One sample of a Prometheus metric from the daemon in `ns` (its RPC port is on that namespace's loopback), or NaN. */
async function metric (l: NatLab, ns: string, sample: string): Promise<number> {
  const r = await l.exec(ns, [NODE, '-e', `fetch('http://${RPC}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`], { timeoutMs: 10_000 })
  const line = r.stdout.split('\n').find(x => x.startsWith(`${sample} `))
  return line != null ? Number(line.slice(sample.length + 1)) : NaN
}

async function status (l: NatLab, ns: string): Promise<any> {
  const r = await cli(l, ns, ['status', '--json'], 10_000)
  if (r.code !== 0) throw new Error(`status: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/**
 * A minimal member (heartbeats, no pieces) run inside b's namespace: it tries every way to reach
 * node a and prints what happened as one JSON line. It holds the cluster key, so it signs its own
 * node certificate and shows it like a daemon does (Trust). Plain JS for `--eval`; run with
 * cwd = ROOT so packages resolve.
 */
const PROBE = `
const input = JSON.parse(process.env.PROBE_INPUT)
const src = (p) => import(input.root + '/src/' + p)
const { createHost } = await src('p2p/host.ts')
const { Trust, readClusterSecret, issueMemberCert, pskBytes } = await src('trust/index.ts')
const { loadOrCreateIdentity } = await src('p2p/identity.ts')
const { Heartbeater } = await src('membership/index.ts')
const { createMetrics } = await src('metrics/index.ts')
const { silentLogger } = await src('util/logger.ts')
const { systemClock } = await src('util/time.ts')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')
const out = {}
const target = peerIdFromString(input.target)
const secret = await readClusterSecret(input.clusterKey)
const privateKey = await loadOrCreateIdentity(input.dataDir)
const host = await createHost({ privateKey, listen: ['/ip4/0.0.0.0/tcp/0'], swarmKey: pskBytes(secret.psk), relay: { reserve: 'never' } })
const trust = new Trust({ clusterPublic: secret.key.publicKey, selfCert: await issueMemberCert(secret.key.privateKey, host.peerId.toString(), ['node']), logger: silentLogger() })
await trust.attach(host)
await host.start()
const attempt = async (what) => {
  const t = performance.now()
  try {
    const c = await host.dial(what, { signal: AbortSignal.timeout(20000) })
    return { ok: true, ms: Math.round(performance.now() - t), remoteAddr: c.remoteAddr.toString(), limited: c.limits != null }
  } catch (err) {
    return { ok: false, ms: Math.round(performance.now() - t), error: err.name + ': ' + err.message }
  }
}
try {
  const res = await host.dial(multiaddr(input.resource), { signal: AbortSignal.timeout(20000) })
  const circuit = multiaddr(input.resource + '/p2p/' + res.remotePeer.toString() + '/p2p-circuit/p2p/' + input.target)
  out.nonMember = await attempt(circuit)
  out.direct = await attempt(multiaddr(input.targetLan + '/p2p/' + input.target))
  const hb = new Heartbeater({ libp2p: host, logger: silentLogger(), metrics: createMetrics(), clock: systemClock }, { report: {
    roles: ['node'], name: 'probe', cell: 'default', cores: 1, gpus: 0, gpuPerf: 1,
    cpuUtil: () => 0, gpuUtil: () => 0, inflight: () => 0, ledgerVersion: () => 0, readyReplicas: () => 0, modelsDigest: () => 0,
    mailboxCursor: () => 0, uploadLimit: () => 0, downloadLimit: () => 0, uploadRate: () => 0, downloadRate: () => 0, transfers: () => 0
  } })
  hb.start()
  const t0 = performance.now()
  let relayed
  do {
    relayed = await attempt(circuit)
    if (!relayed.ok) await new Promise(resolve => setTimeout(resolve, 100))
  } while (!relayed.ok && performance.now() - t0 < 30000)
  out.relayed = { ...relayed, afterHeartbeatMs: Math.round(performance.now() - t0) }
  if (relayed.ok) {
    out.pingMs = []
    for (let i = 0; i < 5; i++) out.pingMs.push(await host.services.ping.ping(target))
    // As the transfer code will: by peer id, with the addresses a advertises.
    await host.hangUp(target)
    await host.peerStore.merge(target, { multiaddrs: input.targetAddrs.map(a => multiaddr(a)) })
    out.byPeerId = await attempt(target)
    await new Promise(resolve => setTimeout(resolve, input.dcutrWaitMs))
    out.afterWait = host.getConnections(target).map(c => c.remoteAddr.toString())
  }
  await hb.announce('left')
  hb.stop()
} finally {
  await host.stop()
}
process.stdout.write(JSON.stringify(out) + '\\n')
process.exit(0)
`

async function hasModelCommand (): Promise<boolean> {
  const { execFileSync } = await import('node:child_process')
  try {
    return /Usage: astrad model/.test(execFileSync(BINARY, ['model', '--help'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: dir } }))
  } catch {
    return false
  }
}

test('nodes behind two NATs reach each other only through the resource\'s relay; a model added behind one is pulled behind the other', async (t) => {
  if (skipReason != null || lab == null) {
    t.skip(`NAT lab unavailable: ${skipReason ?? 'not built'}`)
    return
  }
  const l = lab
  const bootstrap = ['--bootstrap', `${l.ip.resource}:${P2P_PORT}`]
  const resSecret = ['--cluster-key', secrets!.clusterKey]
  const nodeSecret = ['--join-token', `@${nodeTokenFile}`]

  await startDaemon(l, l.ns.pub, 'res', resSecret, ['--role', 'resource,scheduler'])
  const res = await status(l, l.ns.pub)
  const started = Date.now()
  await Promise.all([
    startDaemon(l, l.ns.a, 'a', nodeSecret, ['--role', 'node', ...bootstrap]),
    startDaemon(l, l.ns.b, 'b', nodeSecret, ['--role', 'node', ...bootstrap]),
    startDaemon(l, l.ns.c, 'c', nodeSecret, ['--role', 'node', ...bootstrap])
  ])

  // Both NAT'd nodes hold a slot on the resource and advertise the relayed address.
  const relayPrefix = `/ip4/${l.ip.resource}/tcp/${P2P_PORT}/p2p/${res.self.peerId as string}/p2p-circuit`
  const relayedSelf = async (ns: string): Promise<any> => {
    const s = await status(l, ns)
    return s.self.addrs.some((a: string) => a.startsWith(relayPrefix)) ? s : undefined
  }
  const [a, b] = await Promise.all([l.ns.a, l.ns.b].map(async ns => await waitFor(`${ns} advertises a relayed address`, async () => await relayedSelf(ns))
    .catch((err: Error) => { throw new Error(`${err.message}\n${logsOf('a', 'b', 'res')}`) })))
  const reservedMs = Date.now() - started

  // The resource lists both alive (they are seen through their NATs' public addresses).
  await waitFor('a, b and c alive at the resource', async () => {
    const s = await status(l, l.ns.pub)
    return ['a', 'b', 'c'].every(n => s.nodes.find((x: any) => x.name === n)?.state === 'alive')
  })

  // c, on the public net, has its address confirmed by AutoNAT and holds no slot; the
  // resource's own public address is confirmed too (by the nodes' dial-backs).
  await waitFor('c advertises its public address and no relayed one', async () => {
    const s = await status(l, l.ns.c)
    return s.self.addrs.some((x: string) => x.startsWith(`/ip4/${l.ip.c}/tcp/${P2P_PORT}`)) && !s.self.addrs.some((x: string) => x.includes('/p2p-circuit'))
  }).catch((err: Error) => { throw new Error(`${err.message}\n${logsOf('c')}`) })
  const resAddrs: string[] = (await status(l, l.ns.pub)).self.addrs
  assert.ok(resAddrs.some(x => x.startsWith(`/ip4/${l.ip.resource}/tcp/${P2P_PORT}`)), `resource advertises its public address: ${resAddrs.join(' ')}`)

  // From b's namespace: a cannot be dialled directly, only through the relay, and only by members.
  const probe = await l.exec(l.ns.b, [NODE, '--input-type=module', '--eval', PROBE], {
    timeoutMs: 120_000,
    env: {
      HOME: dir,
      DEBUG: process.env.ASTRAD_NAT_DEBUG ?? '',
      PROBE_INPUT: JSON.stringify({
        root: ROOT,
        dataDir: path.join(dir, 'probe'),
        clusterKey: secrets!.clusterKey,
        resource: `/ip4/${l.ip.resource}/tcp/${P2P_PORT}`,
        target: a.self.peerId,
        targetLan: `/ip4/${l.ip.a}/tcp/${P2P_PORT}`,
        targetAddrs: a.self.addrs,
        dcutrWaitMs: 2_000
      })
    }
  })
  assert.equal(probe.code, 0, `probe failed:\n${probe.stdout}${probe.stderr}\n${logsOf('a', 'b', 'res')}`)
  const p = JSON.parse(probe.stdout)
  assert.equal(p.nonMember.ok, false, 'the relay refuses peers it has no heartbeat from')
  assert.match(p.nonMember.error, /PERMISSION_DENIED/)
  assert.equal(p.direct.ok, false, 'a\'s LAN address is not reachable from behind the other NAT')
  assert.equal(p.relayed.ok, true, `relayed dial: ${JSON.stringify(p.relayed)}`)
  assert.equal(p.relayed.limited, false, 'the resource grants unlimited relayed connections')
  assert.equal(p.byPeerId.ok, true, `dial by peer id: ${JSON.stringify(p.byPeerId)}`)
  assert.ok(p.byPeerId.remoteAddr.includes('/p2p-circuit'), p.byPeerId.remoteAddr)
  const upgraded = (p.afterWait as string[]).some(x => !x.includes('/p2p-circuit'))
  t.diagnostic(`relayed addresses seen in status ${reservedMs} ms after the daemons were spawned (start-up and CLI polling included); relayed dial ${p.relayed.ms} ms (${p.relayed.afterHeartbeatMs} ms after the probe's first heartbeat); ` +
    `ping through the relay ${(p.pingMs as number[]).join('/')} ms; dial by peer id ${p.byPeerId.ms} ms; direct dial: ${p.direct.error as string}; ` +
    `DCUtR ${upgraded ? 'upgraded to a direct connection' : 'did not upgrade (connection still relayed)'}`)

  await t.test('a model added behind NAT 1 is pulled behind NAT 2', async (st) => {
    if (!await hasModelCommand()) {
      st.skip('`astrad model` is not in dist/astrad yet')
      return
    }
    const file = path.join(dir, 'model.bin')
    const data = randomBytes(6 * 1024 * 1024 + 12_345)
    fs.writeFileSync(file, data)
    const add = await cli(l, l.ns.a, ['model', 'add', file, '--json'])
    assert.equal(add.code, 0, `model add: ${add.stderr}\n${logsOf('a')}`)
    const { id } = JSON.parse(add.stdout)
    // a is the only holder (the resource keeps manifests, not pieces): b's bytes can only come
    // from a, and a is reachable from b only through the relay.
    const listed = await waitFor('the resource lists the model complete on one node', async () => {
      const ls = await cli(l, l.ns.pub, ['model', 'ls', '--json'])
      const m = JSON.parse(ls.stdout).models?.find((x: any) => x.id === id)
      return m?.nodesComplete === 1 ? m : undefined
    })
    assert.equal(listed.local?.complete ?? false, false, 'the resource holds no copy')
    const out = path.join(dir, 'pulled.bin')
    const t0 = Date.now()
    const pull = await cli(l, l.ns.b, ['model', 'pull', id, '--output', out], 60_000)
    assert.equal(pull.code, 0, `model pull: ${pull.stdout}${pull.stderr}\n${logsOf('b', 'a', 'res')}`)
    assert.ok(fs.readFileSync(out).equals(data), 'pulled bytes equal the added ones')
    const pullMs = Date.now() - t0

    // The resource counted what it relayed: the pieces went from a (holding the slot) back to b (who dialled).
    const rs = await status(l, l.ns.pub)
    assert.ok(rs.relay != null, 'a resource\'s status has a relay line')
    assert.ok(rs.relay.traffic.bytes.to_source >= data.length, `relayed to the dialler: ${JSON.stringify(rs.relay)}`)
    assert.ok(rs.relay.traffic.connectionsTotal >= 1 && rs.relay.reservations >= 2, JSON.stringify(rs.relay))
    // a received b's relayed connection and started a hole punch; neither NAT'd node has a
    // public address to offer, so it ends without one (docs/nat.md says why).
    const bId = (await status(l, l.ns.b)).self.peerId as string
    const aPeerB = await waitFor('a decided its hole punch with b', async () => (await status(l, l.ns.a)).peers?.find((x: any) => x.peerId === bId && x.holePunch != null))
      .catch((err: Error) => { throw new Error(`${err.message}\n${logsOf('a')}`) })
    assert.equal(aPeerB.holePunch.result, 'no_addresses', JSON.stringify(aPeerB))
    const relayedMetric = await metric(l, l.ns.pub, 'astrad_relay_bytes_total{direction="to_source"}')
    assert.ok(relayedMetric >= data.length, `astrad_relay_bytes_total{direction="to_source"} on the resource: ${relayedMetric}`)
    const punchMetric = await metric(l, l.ns.a, 'astrad_holepunch_total{result="no_addresses"}')
    assert.ok(punchMetric >= 1, `astrad_holepunch_total{result="no_addresses"} on a: ${punchMetric}`)
    st.diagnostic(`pulled ${data.length} bytes across the NATs in ${pullMs} ms; resource relayed ${JSON.stringify(rs.relay.traffic.bytes)}; a↔b: ${aPeerB.path as string}, hole punch ${aPeerB.holePunch.result as string}`)

    // c has a public address: when it dials a through the relay, a's hole punch dials c
    // directly (DCUtR's unilateral upgrade) and the relayed connection is replaced.
    const outC = path.join(dir, 'pulled-c.bin')
    const pullC = await cli(l, l.ns.c, ['model', 'pull', id, '--output', outC], 60_000)
    assert.equal(pullC.code, 0, `model pull on c: ${pullC.stdout}${pullC.stderr}\n${logsOf('c', 'a', 'res')}`)
    assert.ok(fs.readFileSync(outC).equals(data), 'c pulled the same bytes')
    const cId = (await status(l, l.ns.c)).self.peerId as string
    const aPeerC = await waitFor('a decided its hole punch with c', async () => (await status(l, l.ns.a)).peers?.find((x: any) => x.peerId === cId && x.holePunch != null))
      .catch((err: Error) => { throw new Error(`${err.message}\n${logsOf('a', 'c')}`) })
    const as = await status(l, l.ns.a)
    st.diagnostic(`a↔c: ${aPeerC.path as string}, hole punch ${aPeerC.holePunch.result as string}; a's hole punches ${JSON.stringify(as.holePunch)}`)
    assert.equal(aPeerC.holePunch.result, 'upgraded', JSON.stringify(aPeerC))
    assert.equal(aPeerC.path, 'direct', JSON.stringify(aPeerC))
    assert.ok(await metric(l, l.ns.a, 'astrad_holepunch_total{result="upgraded"}') >= 1, 'a counted the upgrade')
  })
})
