import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { buildStatus } from '../../src/daemon/status.ts'
import { defineKind } from '../../src/clusterlog/index.ts'
import { TestCluster, waitFor } from '../helpers/cluster.ts'

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })

const Note = defineKind('test-note', z.object({ text: z.string() }))

test('daemons wire the cluster log: a node writes through a resource, every resource converges, a restarted resource recovers', async () => {
  const a = await cluster.start({ roles: ['resource', 'scheduler'] })
  const bDir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-it-'))
  cluster.dirs.push(bDir)
  let b = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(a)], dataDir: bDir })
  const node = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(a)] })
  await waitFor('node connected', () => node.ready)

  await waitFor('node can write', async () => await node.clusterLog.put(Note, 'hello', { text: 'from a node' }))
  await waitFor('replicated to b', async () => (await b.clusterLog.get(Note, 'hello'))?.value?.text === 'from a node')

  await b.stop()
  await a.clusterLog.put(Note, 'while-b-was-down', { text: 'missed' })
  b = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(a)], dataDir: bDir })
  assert.equal((await b.clusterLog.get(Note, 'hello'))?.value?.text, 'from a node', 'recovered from disk')
  await waitFor('caught up', async () => (await b.clusterLog.get(Note, 'while-b-was-down')) != null)
  const status = await buildStatus(a)
  assert.ok((status.self.clusterLog?.revision ?? 0) >= 2)
})
