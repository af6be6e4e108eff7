import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { ProcessCluster, requireBinary, runBinary, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'

const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

function stateOf (status: any, peerId: string): string | undefined {
  return status.nodes.find((n: any) => n.peerId === peerId)?.state
}

test('dist/astrad runs with no Node.js on PATH', async () => {
  const r = await runBinary(['--version'])
  assert.equal(r.code, 0)
  assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+/)
})

test('a cluster of real processes: status, drain by SIGTERM and by `astrad drain`, kill -9, restart keeps the identity', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  const nodes: DaemonProcess[] = []
  for (const name of ['n1', 'n2', 'n3', 'n4']) {
    // Mixed bootstrap spellings: full multiaddr, without /p2p, host:port.
    const spelled = name === 'n2' ? boot.replace(/\/p2p\/.*$/, '') : name === 'n3' ? boot.replace(/^\/ip4\/([^/]+)\/tcp\/(\d+).*$/, '$1:$2') : boot
    nodes.push(await cluster.start(name, ['--role', 'node', '--bootstrap', spelled, '--cell', name === 'n4' ? 'b' : 'a', '--cores', '3']))
  }
  const ids = await Promise.all(nodes.map(async n => (await n.status()).self.peerId as string))
  await waitFor('all four nodes alive at the scheduler', async () => {
    const s = await res.status()
    return ids.every(id => stateOf(s, id) === 'alive')
  })

  // The admin view through the CLI, JSON and table.
  const json = await cluster.cli(['status', '--json', '--rpc', res.rpc])
  assert.equal(json.code, 0, json.stderr)
  const doc = JSON.parse(json.stdout)
  for (const key of ['peerId', 'name', 'roles', 'version', 'addrs']) assert.ok(key in doc.self, key)
  assert.deepEqual(doc.self.roles, ['resource', 'scheduler'])
  assert.deepEqual(doc.self.security, { mode: 'secure', source: 'cluster-key', roles: ['resource', 'scheduler'] })
  assert.equal(typeof doc.self.clusterLog.revision, 'number', 'a resource reports its cluster log revision')
  const n4 = doc.nodes.find((n: any) => n.name === 'n4')
  assert.equal(n4.cell, 'b')
  assert.equal(n4.cores, 3)
  for (const key of ['peerId', 'name', 'cell', 'state', 'cores', 'gpus', 'cpuUtil', 'inflight', 'lastSeenMs']) assert.ok(key in n4, key)
  const tableOut = await cluster.cli(['status', '--rpc', res.rpc])
  assert.match(tableOut.stdout, /NAME\s+CELL\s+STATE/)
  assert.match(tableOut.stdout, /^security: secure \(certificate for resource,scheduler, from cluster-key\)$/m)
  assert.match(tableOut.stdout, /n4\s+b\s+alive/)
  // A node-only daemon answers status too (pulled from the resource).
  // On a starved host one pull may time out (the answer then says source 'none'): an admin
  // runs status again, and so does this step, until the view was pulled.
  let fromNode: any
  await waitFor('status on a node-only daemon shows the view pulled from the resource', async () => {
    const out = await cluster.cli(['status', '--json', '--rpc', nodes[0]!.rpc])
    fromNode = JSON.parse(out.stdout)
    return fromNode.view?.source === 'pulled'
  }).catch((err: Error) => { throw new Error(`${err.message}; last view ${JSON.stringify(fromNode?.view)}`) })
  assert.ok(fromNode.nodes.length >= 5)

  // SIGTERM: out of the scheduler's view as announced (draining/left, never suspect/dead), exits 0.
  // How fast is measured by `npm run bench:membership`, not here.
  const seen = new Set<string>()
  const watch = async (id: string): Promise<string | undefined> => {
    const s = stateOf(await res.status(), id)
    if (s != null) seen.add(s)
    return s
  }
  nodes[0]!.child.kill('SIGTERM')
  await waitFor('SIGTERM\'d n1 not alive at the scheduler', async () => await watch(ids[0]!) !== 'alive')
  assert.equal(await nodes[0]!.exited, 0, `n1 exit code after SIGTERM; log:\n${nodes[0]!.log()}`)
  await waitFor('SIGTERM\'d n1 left', async () => await watch(ids[0]!) === 'left')
  assert.ok(!seen.has('dead'), `n1 was concluded dead, not left: ${[...seen].join(' → ')}`)

  // `astrad drain` (the preStop hook) returns once the daemon is gone.
  const d = await cluster.cli(['drain', '--rpc', nodes[1]!.rpc])
  assert.equal(d.code, 0, `astrad drain n2: ${d.stderr}`)
  assert.equal(await nodes[1]!.exited, 0, `n2 exit code after astrad drain; log:\n${nodes[1]!.log()}`)
  await waitFor('n2 drained via CLI is left', async () => {
    const state = stateOf(await res.status(), ids[1]!)
    if (state !== 'left') throw new Error(`n2 is ${String(state)} at res; res log:\n${res.log().split('\n').filter(l => l.includes('"n2"')).slice(-10).join('\n')}`)
    return true
  })

  // kill -9: concluded dead; the healthy node stays alive.
  nodes[2]!.child.kill('SIGKILL')
  await waitFor('killed n3 dead', async () => stateOf(await res.status(), ids[2]!) === 'dead')
  assert.equal(stateOf(await res.status(), ids[3]!), 'alive', 'the healthy node n4 stayed alive')

  // Restarting on the same data dir keeps the peer id and comes back alive.
  const again = await cluster.start('n3', ['--role', 'node', '--bootstrap', boot], { dataDir: nodes[2]!.dataDir })
  assert.equal((await again.status()).self.peerId, ids[2])
  await waitFor('restarted node alive', async () => stateOf(await res.status(), ids[2]!) === 'alive')
})

test('a daemon of another cluster is never listed; a node token grants only the node role', async () => {
  const { clusterKey } = await cluster.secrets()
  assert.equal(fs.statSync(clusterKey).mode & 0o777, 0o600, 'astrad cluster init writes the key 0600')
  const otherKey = path.join(cluster.root, 'other.key')
  const init = await runBinary(['cluster', 'init', otherKey])
  assert.equal(init.code, 0, init.stderr)
  const res = await cluster.start('pres', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  // The member joins with a node token (ASTRAD_JOIN_TOKEN); the outsider holds another cluster's key.
  const member = await cluster.start('pmember', ['--role', 'node', '--bootstrap', boot])
  const outsider = await cluster.start('poutsider', ['--role', 'node', '--cluster-key', otherKey, '--bootstrap', boot])
  const memberStatus = await member.status()
  assert.equal(memberStatus.self.security?.source, 'join-token', 'the member joined with its token')
  const outsiderId = (await outsider.status()).self.peerId
  await waitFor('member listed', async () => stateOf(await res.status(), memberStatus.self.peerId) === 'alive')
  // The outsider's dials fail the private-network handshake at the resource.
  await waitFor('a refused handshake counted at the resource', async () => {
    const text = await (await fetch(`http://${res.rpc}/metrics`)).text()
    const line = text.split('\n').find(l => l.startsWith('astrad_trust_handshake_failures_total{direction="inbound"}'))
    return line != null && Number(line.split(' ').at(-1)) > 0
  })
  assert.equal(stateOf(await res.status(), outsiderId), undefined)

  // A node token cannot start a resource; joining without any secret is refused up front.
  const nodeToken = await cluster.joinToken('node')
  const grab = await runBinary(['start', '--role', 'resource', '--bootstrap', boot, '--data-dir', path.join(cluster.root, 'grab'), '--rpc', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'], { ASTRAD_JOIN_TOKEN: nodeToken })
  assert.equal(grab.code, 2, `a node token used for --role resource: ${grab.stderr}`)
  assert.match(grab.stderr, /--join-token/)
  const bare = await runBinary(['start', '--role', 'node', '--bootstrap', boot, '--data-dir', path.join(cluster.root, 'bare'), '--rpc', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'])
  assert.equal(bare.code, 2, `--bootstrap without a secret: ${bare.stderr}`)
  assert.match(bare.stderr, /--join-token/)
})

test('bad flags, env and config files exit 2 with a message naming the key', async () => {
  const cfg = path.join(cluster.root, 'bad.json')
  fs.writeFileSync(cfg, '{"cores": "lots"}')
  for (const [args, env, key] of [
    [['start', '--cores', '0'], {}, '--cores'],
    [['start', '--role', 'worker'], {}, '--role'],
    [['start', '--rpc', '0.0.0.0:7070'], {}, '--rpc'],
    [['start', '--config', cfg], {}, 'cores'],
    [['start'], { ASTRAD_LISTEN: '/nonsense' }, 'ASTRAD_LISTEN'],
    [['start', '--cluster-key', '/nonexistent/key'], {}, '--cluster-key'],
    [['start', '--join-token', 'astrad-join-v1.garbage'], {}, '--join-token'],
    [['start', '--join-token', '@/nonexistent/token'], {}, '--join-token'],
    [['start', '--insecure', '--cluster-key', '/nonexistent/key'], {}, '--insecure']
  ] as Array<[string[], NodeJS.ProcessEnv, string]>) {
    const r = await runBinary([...args, '--data-dir', path.join(cluster.root, 'bad')], env)
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.ok(r.stderr.includes(key), `${args.join(' ')} should name ${key}: ${r.stderr}`)
    assert.doesNotMatch(r.stderr, /\n\s+at /)
  }
})

test('a second daemon on the same data dir is refused; a taken RPC port is a clear error', async () => {
  const first = await cluster.start('lock1', ['--role', 'node'])
  const dup = await runBinary(['start', '--data-dir', first.dataDir, '--rpc', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'])
  assert.equal(dup.code, 1)
  assert.match(dup.stderr, /in use by astrad process/)
  const port = await runBinary(['start', '--data-dir', path.join(cluster.root, 'lock2'), '--rpc', first.rpc, '--listen', '/ip4/127.0.0.1/tcp/0'])
  assert.equal(port.code, 1)
  assert.match(port.stderr, /cannot listen on 127\.0\.0\.1/)
})
