import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { lpStream } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { newClusterSecret, type ClusterSecret, type Role, type Trust } from '../../src/trust/index.ts'
import { testHost } from '../helpers/member-host.ts'
import { serveInference, inferRemote, RemoteInferError, DeadlineError, type InferRequest, type InferResult } from '../../src/serving/index.ts'
import { inferStreamPool } from '../../src/serving/infer-protocol.ts'
import { INFER_KEEPALIVE_PROTOCOL, INFER_PROTOCOL } from '../../src/serving/constants.ts'
import { retryable } from '../../src/serving/router.ts'

/**
 * `/astra/infer/1.1.0` (kept-alive streams) between real libp2p hosts: concurrent requests reuse
 * streams and each gets its own answer, a node dying mid-call is a retryable failure, deadlines
 * and cancellation leave the next request unharmed, a stream the node closed while idle is
 * replaced, and a node with only 1.0.0 is still served.
 */

const hosts: Host[] = []
const trusts: Trust[] = []
after(async () => {
  await Promise.allSettled(hosts.map(async h => { await h.stop() }))
  await Promise.allSettled(trusts.map(async t => { await t.detach() }))
})

/** A started host; in a secure cluster with `secret`, holding a certificate for `roles`. */
async function host (secret?: ClusterSecret, roles?: Role[]): Promise<Host> {
  const { host: h, trust } = await testHost(secret, roles)
  hosts.push(h)
  if (trust != null) trusts.push(trust)
  await h.start()
  return h
}

function fp32 (values: number[]): InferRequest['inputs'][number] {
  return { name: 'x', datatype: 'FP32', shape: [values.length], data: new Uint8Array(Float32Array.from(values).buffer) }
}

const valuesOf = (r: InferResult): number[] => [...new Float32Array(new Uint8Array(r.outputs[0]!.data).buffer)]

/** y = 2x; app 'hang' waits for its signal; app 'slow' answers after a few ms (so requests overlap). */
async function doubler (app: string, req: InferRequest, signal: AbortSignal): Promise<InferResult> {
  if (app === 'hang') await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
  if (app === 'slow') await new Promise(resolve => setTimeout(resolve, 5))
  const x = new Float32Array(new Uint8Array(req.inputs[0]!.data).buffer)
  return { model: app, outputs: [{ name: 'y', datatype: 'FP32', shape: req.inputs[0]!.shape, data: new Uint8Array(Float32Array.from(x, v => v * 2).buffer) }], queueMs: 0, computeMs: 0 }
}

const keepAliveStreams = (router: Host, node: Host): number =>
  router.getConnections(node.peerId).flatMap(c => c.streams).filter(s => s.protocol === INFER_KEEPALIVE_PROTOCOL && s.status === 'open').length

test('keep-alive: concurrent requests reuse streams, each gets its own answer', async () => {
  const node = await host()
  const router = await host()
  let calls = 0
  await serveInference(node, async (app, req, signal) => { calls++; return await doubler(app, req, signal) })
  await router.dial(node.getMultiaddrs()[0]!)

  const concurrency = 8
  for (let round = 0; round < 4; round++) {
    const results = await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
      const v = round * 100 + i
      return { v, r: await inferRemote(router, node.peerId, 'slow', { inputs: [fp32([v, -v])], deadline: Date.now() + 20_000 }) }
    }))
    for (const { v, r } of results) assert.deepEqual(valuesOf(r), [2 * v, -2 * v], `round ${round}: request ${v} got another request's answer`)
  }
  assert.equal(calls, 4 * concurrency, 'the node ran every request once')
  const open = keepAliveStreams(router, node)
  assert.ok(open >= 1 && open <= concurrency, `at most one stream per request in flight stays open (open: ${open})`)
  assert.equal(inferStreamPool(router).size(node.peerId.toString()), open, 'every open stream is idle in the pool between rounds')
})

test('keep-alive: a deadline, a cancellation and an error answer leave the next request unharmed', async () => {
  const node = await host()
  const router = await host()
  await serveInference(node, async (app, req, signal) => {
    if (app === 'broken') throw new Error('the model failed')
    return await doubler(app, req, signal)
  })
  await router.dial(node.getMultiaddrs()[0]!)
  // A first call leaves one stream in the pool; the next ones take it.
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([1])], deadline: Date.now() + 10_000 })), [2])

  await assert.rejects(inferRemote(router, node.peerId, 'hang', { inputs: [fp32([1])], deadline: Date.now() + 300 }), DeadlineError, 'deadline: a DeadlineError')
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([3])], deadline: Date.now() + 10_000 })), [6], 'after a deadline')

  const ac = new AbortController()
  const cancelled = inferRemote(router, node.peerId, 'hang', { inputs: [fp32([1])], deadline: Date.now() + 30_000 }, ac.signal)
  setTimeout(() => { ac.abort(new Error('client left')) }, 100)
  await assert.rejects(cancelled, (err: unknown) => err instanceof RemoteInferError || err instanceof Error, 'cancellation rejects')
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([4])], deadline: Date.now() + 10_000 })), [8], 'after a cancellation')

  await assert.rejects(inferRemote(router, node.peerId, 'broken', { inputs: [fp32([1])], deadline: Date.now() + 10_000 }),
    (err: unknown) => err instanceof RemoteInferError && err.phase === 'answered' && err.status === 500, 'a model error is answered, not retried')
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([5])], deadline: Date.now() + 10_000 })), [10], 'after an error answer')
})

test('keep-alive: a stream the node closed while idle is replaced without an error', async () => {
  const node = await host()
  const router = await host()
  await serveInference(node, doubler, { idleTimeoutMs: 100 })
  await router.dial(node.getMultiaddrs()[0]!)
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([1])], deadline: Date.now() + 10_000 })), [2])
  // The node closes the idle stream after 100 ms; the router still holds it.
  await new Promise(resolve => setTimeout(resolve, 600))
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([i])], deadline: Date.now() + 10_000 })), [2 * i], `call ${i} after the node closed the idle stream`)
  }
})

test('keep-alive: a node dying mid-call is a retryable failure; then it is unreachable', async () => {
  const node = await host()
  const router = await host()
  let started!: () => void
  const running = new Promise<void>(resolve => { started = resolve })
  await serveInference(node, async (app, req, signal) => {
    if (app === 'hang') started()
    return await doubler(app, req, signal)
  })
  await router.dial(node.getMultiaddrs()[0]!)
  assert.deepEqual(valuesOf(await inferRemote(router, node.peerId, 'app', { inputs: [fp32([1])], deadline: Date.now() + 10_000 })), [2])
  const call = inferRemote(router, node.peerId, 'hang', { inputs: [fp32([1])], deadline: Date.now() + 30_000 })
  await running
  await node.stop()
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof RemoteInferError, `mid-call: got ${String(err)}`)
    assert.ok(retryable(err), `mid-call: retried on another node (phase ${err.phase}, code ${err.code})`)
    return true
  })
  await assert.rejects(inferRemote(router, node.peerId, 'app', { inputs: [fp32([1])], deadline: Date.now() + 5_000 }),
    (err: unknown) => err instanceof RemoteInferError && err.phase === 'unsent' && retryable(err), 'after: unreachable, unsent')
})

test('keep-alive: a node with only /astra/infer/1.0.0 (older) is served, one stream per call', async () => {
  const old = await host()
  const router = await host()
  let streams = 0
  // An older node's handler: one request, one answer, then the stream closes.
  await old.handle(INFER_PROTOCOL, async (s) => {
    streams++
    const lp = lpStream(s)
    const header = JSON.parse(new TextDecoder().decode((await lp.read()).subarray())) as { inputs: Array<{ size: number }> }
    const x = new Float32Array(new Uint8Array((await lp.read()).subarray()).buffer)
    const y = new Uint8Array(Float32Array.from(x, v => v + 1).buffer)
    const head = new TextEncoder().encode(JSON.stringify({ outputs: [{ name: 'y', datatype: 'FP32', shape: [x.length], size: header.inputs[0]!.size }], queueMs: 0, computeMs: 0 }))
    await lp.write(Uint8Array.from([0, ...head]))
    await lp.write(y)
    await s.close()
  })
  await router.dial(old.getMultiaddrs()[0]!)
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(valuesOf(await inferRemote(router, old.peerId, 'app', { inputs: [fp32([i])], deadline: Date.now() + 10_000 })), [i + 1], `call ${i} to the older node`)
  }
  assert.equal(streams, 3, 'one stream per call')
  assert.ok(inferStreamPool(router).legacy(router, old.peerId), 'the router remembers the node has only 1.0.0')
})

test('keep-alive: a node upgraded after the router saw it without 1.1.0 is asked again on its new connection', async () => {
  const router = await host()
  // The older node: 1.0.0 only.
  const key = await generateKeyPair('Ed25519')
  const first = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] })
  await first.start()
  hosts.push(first)
  await first.handle(INFER_PROTOCOL, async (s) => {
    const lp = lpStream(s)
    await lp.read()
    const x = (await lp.read()).subarray()
    const head = new TextEncoder().encode(JSON.stringify({ outputs: [{ name: 'y', datatype: 'FP32', shape: [1], size: 4 }], queueMs: 0, computeMs: 0 }))
    await lp.write(Uint8Array.from([0, ...head]))
    await lp.write(x)
    await s.close()
  })
  await router.dial(first.getMultiaddrs()[0]!)
  assert.deepEqual(valuesOf(await inferRemote(router, first.peerId, 'app', { inputs: [fp32([7])], deadline: Date.now() + 10_000 })), [7], 'the older node echoes')
  assert.ok(inferStreamPool(router).legacy(router, first.peerId), 'marked as lacking 1.1.0')
  await first.stop()
  // The router notices the old connection closed (as it does when a node restarts).
  for (let i = 0; router.getConnections(first.peerId).length > 0; i++) {
    assert.ok(i < 200, `the router still holds a connection to the stopped node after 10 s: ${router.getConnections(first.peerId).map(c => c.status).join(', ')}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  // The same node (same key) upgraded: restarted with 1.1.0, reached on a new connection.
  const upgraded = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] })
  await upgraded.start()
  hosts.push(upgraded)
  await serveInference(upgraded, doubler)
  await router.dial(upgraded.getMultiaddrs()[0]!)
  assert.ok(!inferStreamPool(router).legacy(router, upgraded.peerId), 'a new connection is not marked')
  assert.deepEqual(valuesOf(await inferRemote(router, upgraded.peerId, 'app', { inputs: [fp32([7])], deadline: Date.now() + 10_000 })), [14], 'the upgraded node answers')
  assert.equal(keepAliveStreams(router, upgraded), 1, 'over a kept-alive stream')
})

test('keep-alive: only schedulers are served, checked before every request (docs/security.md)', async () => {
  const secret = await newClusterSecret()
  const node = await host(secret, ['node'])
  const scheduler = await host(secret, ['scheduler'])
  const member = await host(secret, ['node'])
  let calls = 0
  await serveInference(node, async (app, req, signal) => { calls++; return await doubler(app, req, signal) })
  await scheduler.dial(node.getMultiaddrs()[0]!)
  await member.dial(node.getMultiaddrs()[0]!)
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(valuesOf(await inferRemote(scheduler, node.peerId, 'app', { inputs: [fp32([i])], deadline: Date.now() + 10_000 })), [2 * i], `scheduler call ${i}`)
  }
  assert.equal(keepAliveStreams(scheduler, node), 1, 'the scheduler\'s calls share one kept-alive stream')
  await assert.rejects(inferRemote(member, node.peerId, 'app', { inputs: [fp32([1])], deadline: Date.now() + 10_000 }),
    (err: unknown) => err instanceof RemoteInferError && err.code === 'ERR_FORBIDDEN', 'a member without the scheduler role is refused')
  assert.equal(calls, 2, 'the refused request never ran')
})
