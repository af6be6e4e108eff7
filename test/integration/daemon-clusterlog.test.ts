import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { buildStatus } from '../../src/daemon/status.ts'
import { defineKind } from '../../src/clusterlog/index.ts'
import { TestCluster, waitFor } from '../helpers/cluster.ts'
import { TEST_OPERATOR, operatorAuth } from '../helpers/operator.ts'

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })

// Writes need an operator request whose scope names the kind: a publish may write `notice`.
const Note = defineKind('notice', z.object({ text: z.string() }))

test('daemons wire the cluster log: a node writes through a resource, every resource converges, a restarted resource recovers', async () => {
  const a = await cluster.start({ roles: ['resource', 'scheduler'] })
  const bDir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-'))
  cluster.dirs.push(bDir)
  let b = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(a)], dataDir: bDir })
  const node = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(a)] })
  await waitFor('node connected', () => node.ready)

  const viaNode = await operatorAuth(cluster, node, 'POST', '/v1/notices')
  await waitFor('node can write', async () => await node.clusterLog.put(Note, 'hello', { text: 'from a node' }, { auth: viaNode }))
  await waitFor('replicated to b', async () => (await b.clusterLog.get(Note, 'hello'))?.value?.text === 'from a node')
  assert.equal((await b.clusterLog.get(Note, 'hello'))?.author, TEST_OPERATOR, 'the author is replicated with the entry')

  await b.stop()
  await a.clusterLog.put(Note, 'while-b-was-down', { text: 'missed' }, { auth: await operatorAuth(cluster, a, 'POST', '/v1/notices') })
  b = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(a)], dataDir: bDir })
  assert.equal((await b.clusterLog.get(Note, 'hello'))?.value?.text, 'from a node', 'recovered from disk')
  await waitFor('caught up', async () => (await b.clusterLog.get(Note, 'while-b-was-down')) != null)
  const status = await buildStatus(a)
  assert.ok((status.self.clusterLog?.revision ?? 0) >= 2)
})
