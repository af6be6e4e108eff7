import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestCluster, waitFor, stateIn } from '../helpers/cluster.ts'

const cluster = new TestCluster()
after(async () => { await cluster.cleanup() })

test('nodes join through a resource; a scheduler-only daemon sees them all alive', async () => {
  const res = await cluster.start({ roles: ['resource'] })
  const sched = await cluster.start({ roles: ['scheduler'], bootstrap: [cluster.addr(res)] })
  const nodes = await Promise.all([1, 2, 3].map(async () => await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(res)] })))
  const ids = [res, sched, ...nodes].map(d => d.host.peerId.toString())
  await waitFor('all alive at the resource', () => ids.every(id => stateIn(res, id) === 'alive'))
  await waitFor('all alive at the scheduler', () => ids.every(id => stateIn(sched, id) === 'alive'))
  const rec = res.view?.list.get(nodes[0]!.host.peerId.toString())
  assert.deepEqual(rec?.hb.roles, ['node'])
  assert.equal(rec?.hb.cores, 2)
  assert.ok(rec != null && rec.hb.cpuUtil >= 0 && rec.hb.cpuUtil <= 1)

  // A drained node leaves the scheduler's view as announced (draining, then left), never through
  // the failure detector (suspect/dead). How fast is measured by `npm run bench:membership`.
  const target = nodes[0]!
  const id = target.host.peerId.toString()
  const seen = new Set<string>()
  const draining = target.drain()
  await waitFor('drained node not alive at the scheduler', () => {
    const s = stateIn(sched, id)
    if (s != null) seen.add(s)
    return s !== 'alive'
  }, undefined, 5)
  await draining
  await waitFor('drained node left', () => {
    const s = stateIn(sched, id)
    if (s != null) seen.add(s)
    if (s !== 'left') throw new Error(`at the scheduler: ${[...seen].join(' → ')}; at the resource: ${String(stateIn(res, id))}`)
    return true
  }, undefined, 5)
  // Never concluded dead. (A transient `suspect` is possible: the resource may see the connection
  // close before it has validated the `draining`/`left` heartbeats sent just before.)
  assert.ok(!seen.has('dead'), `a drained node was concluded dead: ${[...seen].join(' → ')}`)

  // A node whose process stops without announcing (its connections close) is concluded dead.
  const victim = nodes[1]!
  const vid = victim.host.peerId.toString()
  await victim.host.stop() // no `left`: what the cluster sees of a crash is silence and closed sockets
  await waitFor('crashed node dead at the scheduler', () => stateIn(sched, vid) === 'dead')
  assert.equal(stateIn(sched, nodes[2]!.host.peerId.toString()), 'alive', 'the healthy node stays alive')
})

test('two resources converge to the same view; a late resource catches up', async () => {
  const a = await cluster.start({ roles: ['resource'] })
  const b = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(a)] })
  // Each node knows only one resource.
  const n1 = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(a)] })
  const n2 = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(b)] })
  const ids = [a, b, n1, n2].map(d => d.host.peerId.toString())
  const view = (d: typeof a): string => ids.map(id => `${id}=${stateIn(d, id) ?? '-'}`).join(',')
  await waitFor('both resources see everyone alive', () => ids.every(id => stateIn(a, id) === 'alive' && stateIn(b, id) === 'alive'))
  await n2.drain()
  await waitFor('the drain reached both resources', () => stateIn(a, n2.host.peerId.toString()) === 'left' && stateIn(b, n2.host.peerId.toString()) === 'left')
  // Converged, not at one instant: on a loaded machine one resource may see a beat late (suspect).
  await waitFor('both resources hold the same view', () => {
    if (view(a) !== view(b)) throw new Error(`a: ${view(a)}; b: ${view(b)}`)
    return true
  })

  const late = await cluster.start({ roles: ['resource'], bootstrap: [cluster.addr(b)] })
  await waitFor('late resource caught up', () => view(late) === view(a))
})

test('a node-only daemon answers status by pulling the list from a resource', async () => {
  const res = await cluster.start({ roles: ['resource', 'scheduler'] })
  const node = await cluster.start({ roles: ['node'], bootstrap: [cluster.addr(res)] })
  const list = await waitFor('pulled list has both', async () => {
    const l = await node.onlineList()
    return l.records.length >= 2 ? l : undefined
  })
  assert.equal(list?.source, 'pulled')
})
