import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { ProcessCluster, requireBinary } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'

/**
 * The model CLI against real `dist/astrad` processes: add on one node, pull on three (at
 * once), bytes identical; ls counts the copies; rm frees one; status shows limits.
 */

const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

test('model add on one node, pull on three, bytes identical', async () => {
  const res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  const seed = await cluster.start('seed', ['--role', 'node', '--bootstrap', boot, '--upload-limit', '40MB/s'])
  const pullers = await Promise.all(['p1', 'p2', 'p3'].map(async name => await cluster.start(name, ['--role', 'node', '--bootstrap', boot, '--upload-limit', '40MB/s'])))

  const file = path.join(cluster.root, 'model.bin')
  const data = randomBytes(21 * 1024 * 1024 + 7)
  fs.writeFileSync(file, data)
  const added = await cluster.cli(['model', 'add', file, '--name', 'e2e-model', '--json', '--rpc', seed.rpc])
  assert.equal(added.code, 0, added.stderr)
  const info = JSON.parse(added.stdout)
  assert.match(info.id, /^[0-9a-f]{64}$/)
  assert.equal(info.size, data.length)
  assert.equal(info.pieces, 6)

  await waitFor('the tracker knows the seed', async () => {
    const ls = JSON.parse((await cluster.cli(['model', 'ls', '--json', '--rpc', pullers[0]!.rpc])).stdout)
    return ls.models?.find((m: any) => m.id === info.id)?.nodesComplete === 1
  })

  const outs = pullers.map(p => path.join(cluster.root, `${p.name}.bin`))
  const results = await Promise.all(pullers.map(async (p, i) => await cluster.cli(['model', 'pull', info.id, '--output', outs[i]!, '--rpc', p.rpc], {}, 60_000)))
  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 0, `${pullers[i]!.name}: ${r.stderr}`)
    assert.ok(fs.readFileSync(outs[i]!).equals(data), `${pullers[i]!.name} wrote identical bytes`)
  }

  await waitFor('ls counts four complete copies', async () => {
    const ls = JSON.parse((await cluster.cli(['model', 'ls', '--json', '--rpc', res.rpc])).stdout)
    return ls.models?.find((m: any) => m.id === info.id)?.nodesComplete === 4
  })

  // Status shows this node's limits, and every node's limit from its heartbeat.
  const st = JSON.parse((await cluster.cli(['status', '--json', '--rpc', seed.rpc])).stdout)
  assert.equal(st.limits.upload.limit, 40_000_000)
  assert.equal(st.limits.upload.source, 'flag')
  await waitFor('limits in heartbeats', async () => {
    const s = JSON.parse((await cluster.cli(['status', '--json', '--rpc', res.rpc])).stdout)
    return s.nodes.filter((n: any) => n.uploadLimit === 40_000_000).length === 4
  })

  // rm frees one node's copy; the others keep theirs.
  const rm = await cluster.cli(['model', 'rm', info.id, '--rpc', pullers[0]!.rpc])
  assert.equal(rm.code, 0, rm.stderr)
  const local = JSON.parse((await cluster.cli(['model', 'ls', '--json', '--rpc', pullers[0]!.rpc])).stdout).models.find((m: any) => m.id === info.id)
  assert.equal(local.local, null)

  // Bad input: an unknown id and a missing file are clear errors (exit 1), the daemon lives on.
  const unknown = await cluster.cli(['model', 'pull', 'ab'.repeat(32), '--rpc', pullers[1]!.rpc])
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /no model/)
  const missing = await cluster.cli(['model', 'add', path.join(cluster.root, 'nope.bin'), '--rpc', seed.rpc])
  assert.notEqual(missing.code, 0)
  assert.equal((await pullers[1]!.status()).self.state, 'running')
})
