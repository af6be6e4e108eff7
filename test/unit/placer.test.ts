import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Registry } from 'prom-client'
import { OnlineList } from '../../src/membership/index.ts'
import type { Heartbeat } from '../../src/membership/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import {
  Ledger, Placer, parseAppSpec, type AppRecord, type AppSpec, type LedgerSnapshot, type LedgerView, type ReserveApi
} from '../../src/placement/index.ts'
import { ChangeListeners } from '../../src/membership/view.ts'
import { fakePeerId, heartbeat } from '../helpers/heartbeat.ts'

/**
 * The owner's reconcile loop against in-memory nodes: spread, cells and their loss, scale,
 * roll, failed loads, drains, ownership, and optimistic conflicts from a stale view.
 */

const MODEL_A = 'a'.repeat(64)
const MODEL_B = 'b'.repeat(64)

class World {
  now = 1_000_000
  readonly clock = { now: () => this.now }
  readonly list = new OnlineList(this.clock)
  readonly ledgers = new Map<string, Ledger>()
  readonly hbs = new Map<string, Heartbeat>()
  readonly listeners = new ChangeListeners()
  apps = new Map<string, AppRecord>()
  /** When set, schedulers see these (stale) snapshots instead of the live ledgers. */
  stale?: Map<string, LedgerSnapshot>
  readonly registry = new Registry()
  readonly self = fakePeerId(999)
  placer: Placer

  constructor () {
    this.beat({ peerId: this.self, roles: ['scheduler', 'resource'], name: 'sched' })
    const view = { list: this.list, onChange: (l: any) => this.listeners.add(l), stalenessMs: () => 0 }
    const ledgerView = {
      get: (id: string) => this.stale?.get(id) ?? this.ledgers.get(id)?.snapshot(),
      update: () => {},
      onChange: () => () => {}
    } as unknown as LedgerView
    const client: ReserveApi = {
      reserve: async (peer, r) => { const l = this.ledger(String(peer)); l.reserve(r); return l.snapshot() },
      release: async (peer, id) => { const l = this.ledger(String(peer)); l.release(id); return l.snapshot() },
      ledger: async (peer) => this.ledger(String(peer)).snapshot()
    }
    const clusterLog = {
      list: async () => [...this.apps.values()].map(v => ({ kind: 'app', key: v.spec.name, value: v, deleted: false, version: '', origin: '', rev: 0 }))
    } as any
    this.placer = new Placer({ view, ledgers: ledgerView, client, clusterLog: () => clusterLog, logger: silentLogger(), clock: this.clock, registry: this.registry }, { self: this.self })
  }

  ledger (peer: string): Ledger {
    const l = this.ledgers.get(peer)
    if (l == null) throw Object.assign(new Error('unreachable'), { code: 'ERR_UNREACHABLE' })
    return l
  }

  beat (o: Partial<Heartbeat>): void {
    const prev = this.hbs.get(o.peerId!)
    const hb = heartbeat({ ...prev, ...o, seq: (prev?.seq ?? 0) + 1 })
    this.hbs.set(hb.peerId, hb)
    this.list.ingest(hb)
  }

  addNode (i: number, cell = 'default', cores = 2): string {
    const id = fakePeerId(i)
    this.ledgers.set(id, new Ledger({ cpu: cores, gpu: 0 }))
    this.beat({ peerId: id, roles: ['node'], name: `n${i}`, cell, cores })
    return id
  }

  /**
   * A crashed node, as this resource concludes it: its connection closes and no heartbeat follows
   * (others' claims about a node it hears are not taken: docs/membership.md). The others beat on.
   */
  kill (id: string): void {
    this.list.disconnected(id)
    this.now += this.list.thresholds.deadAfterDisconnectMs
    for (const other of this.hbs.keys()) if (other !== id && this.list.get(other)?.state === 'alive') this.beat({ peerId: other })
    this.list.tick()
    this.ledgers.delete(id)
  }

  deploy (spec: Partial<AppSpec> & { name: string }, generation = 1): void {
    const full = parseAppSpec({ model: MODEL_A, resources: { cpu: 1, gpu: 0 }, ...spec })
    this.apps.set(full.name, { spec: full, generation, deployedAt: this.now, deployedBy: 'test' })
    this.placer.appsChanged()
  }

  async reconcile (): Promise<void> {
    this.now += 2_000
    await this.placer.tick()
  }

  replicas (app = 'vad'): Array<{ node: string, cell: string, gen: number, state: string, id: string }> {
    const out = []
    for (const [node, l] of this.ledgers) {
      for (const r of l.all()) if (r.app === app) out.push({ node: this.hbs.get(node)!.name, cell: this.hbs.get(node)!.cell, gen: r.generation, state: r.state, id: r.replica })
    }
    return out
  }

  readyAll (): void {
    for (const l of this.ledgers.values()) for (const r of l.all()) l.setState(r.replica, 'ready')
  }

  perNode (app = 'vad'): Record<string, number> {
    const out: Record<string, number> = {}
    for (const r of this.replicas(app)) out[r.node] = (out[r.node] ?? 0) + 1
    return out
  }

  /** Brings a dead node back: a new incarnation with an empty ledger. */
  revive (id: string, cores = 2): void {
    this.ledgers.set(id, new Ledger({ cpu: cores, gpu: 0 }))
    this.beat({ peerId: id, incarnation: this.hbs.get(id)!.incarnation + 1, state: 'alive' })
  }

  fail (app: string, error: string): void {
    for (const l of this.ledgers.values()) for (const r of l.all()) if (r.app === app && r.state === 'loading') l.setState(r.replica, 'failed', { error })
  }

  perCell (app = 'vad'): Record<string, number> {
    const out: Record<string, number> = {}
    for (const r of this.replicas(app)) out[r.cell] = (out[r.cell] ?? 0) + 1
    return out
  }
}

test('replicas spread over nodes; scale up and down keeps the ready count', async () => {
  const w = new World()
  for (let i = 1; i <= 4; i++) w.addNode(i)
  w.deploy({ name: 'vad', replicas: 3 })
  await w.reconcile()
  const placed = w.replicas()
  assert.equal(placed.length, 3)
  assert.equal(new Set(placed.map(r => r.node)).size, 3, 'one replica per node while nodes are free')
  w.readyAll()
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  assert.equal(w.replicas().length, 1)
  w.deploy({ name: 'vad', replicas: 6 })
  await w.reconcile()
  assert.equal(w.replicas().length, 6)
  const status = w.placer.status()[0]!
  assert.equal(status.desired, 6)
  assert.equal(status.placed, 6)
  assert.equal(status.ready, 1)
})

test('more replicas than room: what fits is placed, the status says why the rest is not', async () => {
  const w = new World()
  w.addNode(1, 'default', 1)
  w.deploy({ name: 'vad', replicas: 3 })
  await w.reconcile()
  assert.equal(w.replicas().length, 1)
  assert.match(w.placer.status()[0]!.lastError ?? '', /no node with cpu 1/)
})

test('cells: per-cell counts; a lost cell spills to the others and comes back when it returns', async () => {
  const w = new World()
  const a1 = w.addNode(1, 'A'); w.addNode(2, 'A')
  const b1 = w.addNode(3, 'B'); const b2 = w.addNode(4, 'B')
  w.addNode(5, 'C')
  w.deploy({ name: 'vad', cells: { A: 2, B: 1 } })
  await w.reconcile()
  assert.deepEqual(w.perCell(), { A: 2, B: 1 })
  w.readyAll()
  // Cell B is lost: its replica goes elsewhere.
  w.kill(b1); w.kill(b2)
  await w.reconcile()
  assert.equal(w.replicas().length, 3)
  assert.equal(w.perCell().B, undefined)
  w.readyAll()
  // B returns: a replica goes back to B; the stand-in is released once B's one is ready.
  w.ledgers.set(b1, new Ledger({ cpu: 2, gpu: 0 }))
  w.beat({ peerId: b1, incarnation: 2_000_000_000_000, state: 'alive' })
  await w.reconcile()
  assert.equal(w.perCell().B, 1)
  assert.equal(w.replicas().length, 4, 'the stand-in stays while the returning replica loads')
  w.readyAll()
  await w.reconcile()
  assert.equal(w.replicas().length, 3)
  assert.equal(w.perCell().B, 1)
  assert.equal((w.perCell().A ?? 0) + (w.perCell().C ?? 0), 2)
  void a1
})

test('roll: a new model gets new replicas; old ones go only once the new ones are ready', async () => {
  const w = new World()
  for (let i = 1; i <= 4; i++) w.addNode(i)
  w.deploy({ name: 'vad', replicas: 2 })
  await w.reconcile()
  w.readyAll()
  w.deploy({ name: 'vad', replicas: 2, model: MODEL_B }, 2)
  await w.reconcile()
  assert.deepEqual(w.replicas().map(r => r.gen).sort(), [1, 1, 2, 2])
  await w.reconcile()
  assert.equal(w.replicas().filter(r => r.gen === 1).length, 2, 'old replicas serve until new ones are ready')
  w.readyAll()
  await w.reconcile()
  assert.deepEqual(w.replicas().map(r => r.gen), [2, 2])
})

test('roll without room for both: old replicas make way one at a time; the surge\'s note goes once rolled', async () => {
  const w = new World()
  w.addNode(1, 'default', 1); w.addNode(2, 'default', 1)
  w.deploy({ name: 'vad', replicas: 2 })
  await w.reconcile()
  w.readyAll()
  w.deploy({ name: 'vad', replicas: 2, model: MODEL_B }, 2)
  await w.reconcile()
  assert.deepEqual(w.replicas().map(r => r.gen).sort(), [1])
  assert.match(w.placer.status()[0]!.lastError ?? '', /no node with cpu 1/, 'no room for the surge: said while it lasts')
  for (let i = 0; i < 4; i++) { await w.reconcile(); w.readyAll() }
  assert.deepEqual(w.replicas().map(r => r.gen), [2, 2])
  await w.reconcile()
  const status = w.placer.status()[0]!
  assert.deepEqual([status.ready, status.old], [2, 0])
  assert.equal(status.lastError, undefined, 'no stale note after a successful roll')
})

test('failed loads are released and the node is avoided; drained and dead nodes are re-placed', async () => {
  const w = new World()
  const n1 = w.addNode(1, 'default', 1)
  const n2 = w.addNode(2, 'default', 1)
  const n3 = w.addNode(3, 'default', 1)
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  const first = w.replicas()[0]!
  const firstNode = [n1, n2, n3].find(n => w.hbs.get(n)!.name === first.node)!
  w.ledgers.get(firstNode)!.setState(first.id, 'failed', { error: 'bad model' })
  await w.reconcile()
  const second = w.replicas()
  assert.equal(second.length, 1)
  assert.notEqual(second[0]!.node, first.node)
  assert.match(w.placer.status()[0]!.lastError ?? '', /bad model/)
  w.readyAll()
  // Drain the node holding it: re-placed on the one left.
  const holder = [n1, n2, n3].find(n => w.hbs.get(n)!.name === second[0]!.node)!
  w.beat({ peerId: holder, state: 'draining' })
  w.ledgers.get(holder)!.setAccepting(false)
  await w.reconcile()
  const third = w.replicas().filter(r => r.node !== second[0]!.node)
  assert.equal(third.length, 1)
  assert.notEqual(third[0]!.node, first.node, 'the failed node is still backed off')
  // And a dead node's replica is re-placed too (back on the first node after its backoff).
  w.now += 30_000
  const third2 = [n1, n2, n3].find(n => w.hbs.get(n)!.name === third[0]!.node)!
  w.kill(third2)
  await w.reconcile()
  assert.equal(w.replicas().filter(r => r.node === first.node).length, 1)
})

test('only the owning scheduler places; a removed app is released', async () => {
  const w = new World()
  w.addNode(1)
  // Another scheduler that owns 'vad': nothing is placed by us.
  const other = fakePeerId(500)
  w.beat({ peerId: other, roles: ['scheduler'], name: 'other' })
  w.deploy({ name: 'vad', replicas: 1 })
  const owner = w.placer.owner('vad')
  await w.reconcile()
  assert.equal(w.replicas().length, owner === w.self ? 1 : 0)
  // The other scheduler dies: ownership comes to us.
  w.kill(other)
  await w.reconcile()
  assert.equal(w.replicas().length, 1)
  w.apps.delete('vad')
  w.placer.appsChanged()
  await w.reconcile()
  assert.equal(w.replicas().length, 0)
})

test('a stale view makes reservations collide: rejected, counted, placed elsewhere', async () => {
  const w = new World()
  const n1 = w.addNode(1, 'default', 1)
  w.addNode(2, 'default', 4)
  w.addNode(3, 'default', 4)
  // Our view says n1 is empty and the best choice … but another scheduler has filled it.
  w.stale = new Map([...w.ledgers].map(([id, l]) => [id, l.snapshot()]))
  w.stale.set(n1, { ...w.stale.get(n1)!, capacity: { cpu: 64, gpu: 0 } })
  w.ledgers.get(n1)!.reserve({ replica: 'other/1/x', app: 'other', generation: 1, model: MODEL_A, resources: { cpu: 1, gpu: 0 }, threads: 1, maxQueue: 1, owner: 'someone' })
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  assert.equal(w.replicas().length, 1)
  assert.notEqual(w.replicas()[0]!.node, 'n1')
  const metrics = await w.registry.metrics()
  assert.match(metrics, /astrad_placement_reservations_total\{result="rejected"\} 1/)
  assert.match(metrics, /astrad_placement_reservations_total\{result="accepted"\} 1/)
})

const NOT_A_TENSOR = "output 'seq' is a sequence or map, not a tensor"

test('a load failure stays the note while its node is backed off, not "no node free"', async () => {
  const w = new World()
  w.addNode(1)
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  w.fail('vad', NOT_A_TENSOR)
  for (let round = 1; round <= 5; round++) {
    await w.reconcile()
    assert.equal(w.replicas().length, 0, `round ${round}: the failed replica is released and n1 is backed off`)
    assert.equal(w.placer.status()[0]!.lastError, `replica failed to load on n1: ${NOT_A_TENSOR}`, `round ${round}`)
  }
})

test('app rm, or a redeploy, clears the failed-node back-off: a fixed app is placed at once', async () => {
  const w = new World()
  w.addNode(1)
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  w.fail('vad', NOT_A_TENSOR)
  await w.reconcile()
  assert.equal(w.replicas().length, 0, 'released and backed off')
  // app rm, then the same spec again (generation 1 again), well inside the 30 s back-off.
  w.apps.delete('vad')
  w.placer.appsChanged()
  await w.reconcile()
  w.deploy({ name: 'vad', replicas: 1 })
  await w.reconcile()
  assert.equal(w.replicas().length, 1, 'after rm and deploy: placed on n1 at once')
  assert.equal(w.placer.status()[0]!.lastError, undefined, 'no note from the removed app')
  // Fails again; a redeploy with a fixed model (a roll, no rm) is placed at once too.
  w.fail('vad', NOT_A_TENSOR)
  await w.reconcile()
  assert.equal(w.replicas().length, 0)
  assert.match(w.placer.status()[0]!.lastError ?? '', /failed to load on n1/)
  w.deploy({ name: 'vad', replicas: 1, model: MODEL_B }, 2)
  await w.reconcile()
  assert.deepEqual(w.replicas().map(r => [r.node, r.gen]), [['n1', 2]], 'after a redeploy: placed on n1 at once')
  assert.equal(w.placer.status()[0]!.lastError, undefined)
})

test('a load failure is the note until the desired count is ready, then cleared', async () => {
  const w = new World()
  w.addNode(1, 'default', 1); w.addNode(2, 'default', 1)
  w.deploy({ name: 'vad', replicas: 2 })
  await w.reconcile()
  w.readyAll()
  // One replica goes, its replacement fails to load; then a good load clears the note.
  const r = w.replicas()[0]!
  for (const l of w.ledgers.values()) if (l.get(r.id) != null) l.release(r.id)
  await w.reconcile()
  w.fail('vad', 'bad model')
  await w.reconcile()
  assert.match(w.placer.status()[0]!.lastError ?? '', /replica failed to load on n\d: bad model/)
  w.now += 30_000
  await w.reconcile()
  w.readyAll()
  await w.reconcile()
  assert.equal(w.placer.status()[0]!.ready, 2)
  assert.equal(w.placer.status()[0]!.lastError, undefined)
})

test('two replicas on one node and none on another: one moves, ready capacity kept, then no more moves', async () => {
  const w = new World()
  w.addNode(1)
  const n2 = w.addNode(2)
  w.deploy({ name: 'vad', replicas: 2 })
  await w.reconcile()
  w.readyAll()
  assert.deepEqual(w.perNode(), { n1: 1, n2: 1 })
  // n2 dies: its replica is re-placed on n1; n2 comes back empty.
  w.kill(n2)
  await w.reconcile()
  w.readyAll()
  assert.deepEqual(w.perNode(), { n1: 2 })
  w.revive(n2)
  const readyCount = (): number => w.replicas().filter(r => r.state === 'ready').length
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 2, n2: 1 }, 'the new replica starts on n2 first')
  for (let i = 0; i < 3; i++) {
    await w.reconcile()
    assert.deepEqual(w.perNode(), { n1: 2, n2: 1 }, `round ${i}: nothing released while the new one loads`)
    assert.equal(readyCount(), 2)
  }
  w.readyAll()
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 1, n2: 1 }, 'one of n1\'s released once n2\'s is ready')
  assert.equal(readyCount(), 2)
  const metrics = await w.registry.metrics()
  assert.match(metrics, /astrad_placement_releases_total\{reason="rebalance"\} 1/)
  // n2 dies and comes back at once (~12 s after the move began): the next move waits for
  // REBALANCE_INTERVAL_MS (30 s) since the last one.
  w.kill(n2)
  await w.reconcile()
  w.readyAll()
  w.revive(n2)
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 2 }, 'no second move within the interval')
  w.now += 30_000
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 2, n2: 1 }, 'moves once the interval has passed')
  w.readyAll()
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 1, n2: 1 })
  // Spread evenly: nothing moves again, however long.
  const settled = w.replicas().map(r => r.id).sort()
  for (let i = 0; i < 40; i++) await w.reconcile()
  assert.deepEqual(w.replicas().map(r => r.id).sort(), settled, 'no further moves')
})

test('with cells, a move stays in the replica\'s cell', async () => {
  const w = new World()
  w.addNode(1, 'A')
  const a2 = w.addNode(2, 'A')
  w.addNode(3, 'B')
  w.deploy({ name: 'vad', cells: { A: 2 } })
  await w.reconcile()
  w.readyAll()
  assert.deepEqual(w.perNode(), { n1: 1, n2: 1 })
  w.kill(a2)
  await w.reconcile()
  w.readyAll()
  assert.deepEqual(w.perNode(), { n1: 2 }, 'cell A still has n1: both there, none in B')
  w.revive(a2)
  await w.reconcile()
  w.readyAll()
  await w.reconcile()
  assert.deepEqual(w.perNode(), { n1: 1, n2: 1 }, 'moved to n2 (cell A), never to n3 (cell B)')
})

/** A node offering `gpus` cards whose webgpu probe ended as `webgpu` says. */
function gpuNode (w: World, i: number, gpus: number, webgpu: 'ok' | 'failed' | 'probing'): string {
  const id = w.addNode(i, 'default', 4)
  const ledger = new Ledger({ cpu: 4, gpu: gpus })
  ledger.setDevices({
    kind: gpus > 0 ? 'gpu' : 'none',
    count: gpus,
    perf: 1,
    detected: [],
    providers: { cuda: { state: 'failed', reason: 'no lib' }, webgpu: webgpu === 'failed' ? { state: 'failed', reason: 'no adapter' } : { state: webgpu }, cpu: { state: 'ok' } }
  })
  w.ledgers.set(id, ledger)
  w.beat({ peerId: id, gpus })
  return id
}

test('GPU apps go only to nodes with a free card and a working provider; the refusal names each node\'s reason', async () => {
  const w = new World()
  gpuNode(w, 1, 1, 'ok')
  gpuNode(w, 2, 1, 'failed')
  gpuNode(w, 3, 0, 'ok')
  w.deploy({ name: 'vad', replicas: 2, resources: { cpu: 1, gpu: 1 }, executionProviders: ['webgpu'] })
  await w.reconcile()
  assert.deepEqual(w.perNode('vad'), { n1: 1 }, 'n2: webgpu fails; n3: no card')
  const [placed] = [...w.ledgers.values()].flatMap(l => l.all()).filter(r => r.app === 'vad')
  assert.deepEqual(placed?.executionProviders, ['webgpu'], 'the reservation carries the list')
  const status = w.placer.status().find(a => a.name === 'vad')!
  assert.equal(status.lastError, 'no node with a free card can run webgpu: n2: webgpu: no adapter')
  assert.deepEqual(status.executionProviders, ['webgpu'])
  assert.deepEqual(status.replicas?.map(r => r.node), ['n1'])

  // With cpu last, the node whose webgpu fails takes it (n1's card is taken).
  w.deploy({ name: 'fb', replicas: 1, resources: { cpu: 1, gpu: 1 }, executionProviders: ['webgpu', 'cpu'] })
  await w.reconcile()
  assert.deepEqual(w.perNode('fb'), { n2: 1 })
})

test('a node still probing gets no GPU-only replica; a working GPU provider is preferred over a cpu fallback; cpu apps reserve no provider list', async () => {
  const w = new World()
  gpuNode(w, 1, 1, 'probing')
  w.deploy({ name: 'vad', replicas: 1, resources: { cpu: 1, gpu: 1 }, executionProviders: ['webgpu'] })
  await w.reconcile()
  assert.deepEqual(w.perNode('vad'), {})
  assert.match(w.placer.status()[0]!.lastError ?? '', /n1: webgpu: still probing/)

  const v = new World()
  gpuNode(v, 1, 1, 'failed')
  gpuNode(v, 2, 1, 'ok')
  v.deploy({ name: 'fb', replicas: 1, resources: { cpu: 1, gpu: 1 }, executionProviders: ['cuda', 'webgpu', 'cpu'] })
  v.deploy({ name: 'plain', replicas: 1 })
  await v.reconcile()
  assert.deepEqual(v.perNode('fb'), { n2: 1 }, 'the node where webgpu works')
  const plain = [...v.ledgers.values()].flatMap(l => l.all()).find(r => r.app === 'plain')
  assert.equal(plain?.executionProviders, undefined, 'older nodes keep accepting cpu apps')
  assert.equal(v.placer.status().find(a => a.name === 'plain')?.replicas, undefined)
})

test('replicas of one app are placed several at once: spread, no node asked for more than its view shows free, all placed in one round', async () => {
  const w = new World()
  for (let i = 1; i <= 10; i++) w.addNode(i, 'default', 2)
  // Reservations that take a while to answer, as over the network; how many are in flight at once is recorded.
  let inFlight = 0
  let most = 0
  const slow: ReserveApi = {
    reserve: async (peer, r) => {
      inFlight++
      most = Math.max(most, inFlight)
      try {
        await new Promise(resolve => setTimeout(resolve, 5))
        const l = w.ledger(String(peer))
        l.reserve(r)
        return l.snapshot()
      } finally {
        inFlight--
      }
    },
    release: async (peer, id) => { const l = w.ledger(String(peer)); l.release(id); return l.snapshot() },
    ledger: async (peer) => w.ledger(String(peer)).snapshot()
  }
  ;(w.placer as unknown as { components: { client: ReserveApi } }).components.client = slow
  w.deploy({ name: 'vad', replicas: 16 })
  await w.reconcile()
  assert.equal(w.replicas().length, 16, `placed: ${JSON.stringify(w.perNode())}`)
  assert.equal(Object.keys(w.perNode()).length, 10, `spread over every node: ${JSON.stringify(w.perNode())}`)
  assert.ok(Object.values(w.perNode()).every(n => n <= 2), `per node: ${JSON.stringify(w.perNode())}`)
  assert.ok(most > 1, `reservations in flight at once: ${most}`)
  const rejected = (await w.registry.getSingleMetric('astrad_placement_reservations_total')!.get()).values.find(v => v.labels.result === 'rejected')?.value ?? 0
  assert.equal(rejected, 0, 'no node was asked for more than it had')
  assert.equal(w.placer.status()[0]!.lastError, undefined)
})
