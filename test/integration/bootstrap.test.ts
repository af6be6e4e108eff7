import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { TestCluster, waitFor, stateIn } from '../helpers/cluster.ts'
import { freePort } from '../helpers/process.ts'

const cluster = new TestCluster()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-boot-'))
after(async () => {
  await cluster.cleanup()
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a node re-dials its bootstrap peer until it appears, and again after it restarts', async () => {
  const port = await freePort()
  const listen = [`/ip4/127.0.0.1/tcp/${port}`]
  // The node starts first: its resource is not there yet (host:port form, no peer id).
  const node = await cluster.start({ roles: ['node'], bootstrap: [`/ip4/127.0.0.1/tcp/${port}`] })
  assert.equal(node.ready, false, 'not ready without a bootstrap peer')
  await new Promise(resolve => setTimeout(resolve, 1500))

  const resDir = path.join(dir, 'res')
  let res = await cluster.start({ roles: ['resource', 'scheduler'], listen, dataDir: resDir })
  const nodeId = node.host.peerId.toString()
  await waitFor('node joined the late resource', () => stateIn(res, nodeId) === 'alive')
  assert.equal(node.ready, true)

  // The resource restarts on the same address and identity; the node finds it again.
  await res.stop()
  await new Promise(resolve => setTimeout(resolve, 500))
  res = await cluster.start({ roles: ['resource', 'scheduler'], listen, dataDir: resDir })
  await waitFor('node rejoined the restarted resource', () => stateIn(res, nodeId) === 'alive')
})

test('a daemon whose bootstrap list names itself skips that entry, is ready, and joins the others', async () => {
  const other = await cluster.start({ roles: ['resource'] })
  // As in the resource StatefulSet: every resource lists every resource, itself included.
  const port = await freePort()
  const res = await cluster.start({
    roles: ['resource'],
    listen: [`/ip4/127.0.0.1/tcp/${port}`],
    bootstrap: [`/ip4/127.0.0.1/tcp/${port}`, cluster.addr(other)]
  })
  await waitFor('joined the other resource', () => stateIn(res, other.host.peerId.toString()) === 'alive')
  assert.equal(res.ready, true)

  // Alone, with only its own address (host:port form) to bootstrap to: ready, not retrying.
  const lonePort = await freePort()
  const lone = await cluster.start({ roles: ['resource'], listen: [`/ip4/127.0.0.1/tcp/${lonePort}`], bootstrap: [`/ip4/127.0.0.1/tcp/${lonePort}`] })
  await waitFor('self-only resource ready', () => lone.ready)
  // And with its full /p2p/ address.
  const full = await cluster.start({ roles: ['resource'] })
  const fullAgain = cluster.addr(full)
  await full.stop()
  const byId = await cluster.start({ roles: ['resource'], listen: [fullAgain.replace(/\/p2p\/.*$/, '')], bootstrap: [fullAgain], dataDir: full.config.dataDir })
  await waitFor('resource bootstrapping to its own peer id is ready', () => byId.ready)
})
