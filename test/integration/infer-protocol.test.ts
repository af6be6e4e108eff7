import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { lpStream } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { serveInference, inferRemote, RemoteInferError, QueueFullError, DeadlineError, InferTransportError, servingErrorFromCode, type InferRequest, type InferResult } from '../../src/serving/index.ts'
import { INFER_PROTOCOL } from '../../src/serving/constants.ts'
import { retryable } from '../../src/serving/router.ts'
import { InferenceFailedError } from '../../src/serving/types.ts'

/**
 * `/astra/infer/1.0.0` between real libp2p hosts: tensors round-trip byte for byte, the node's
 * errors come back with their codes and the right retry phase, and malformed or oversized
 * requests are refused and counted while the node keeps serving.
 */

const hosts: Host[] = []
after(async () => { await Promise.all(hosts.map(async h => { await h.stop() })) })

async function host (): Promise<Host> {
  const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await h.start()
  hosts.push(h)
  return h
}

function fp32 (name: string, values: number[], shape = [values.length]): InferRequest['inputs'][number] {
  return { name, datatype: 'FP32', shape, data: new Uint8Array(Float32Array.from(values).buffer) }
}

test('infer protocol: round trip, remote errors with codes, malformed requests refused and counted', async () => {
  const node = await host()
  const router = await host()
  let bad = 0
  let mode: 'double' | 'full' | 'slow' = 'double'
  await serveInference(node, async (app, req, signal): Promise<InferResult> => {
    if (mode === 'full') throw new QueueFullError('queue full', 2)
    if (mode === 'slow') await new Promise((resolve, reject) => { const t = setTimeout(resolve, 5_000); signal.addEventListener('abort', () => { clearTimeout(t); reject(new Error('aborted')) }) })
    const x = new Float32Array(new Uint8Array(req.inputs[0]!.data).buffer)
    const y = Float32Array.from(x, v => v * 2)
    return { model: app, version: '7', outputs: [{ name: 'y', datatype: 'FP32', shape: req.inputs[0]!.shape, data: new Uint8Array(y.buffer) }], queueMs: 1, computeMs: 2, compute: { inputMs: 0.25, inferMs: 1.5, outputMs: 0.25 } }
  }, { onBadRequest: () => { bad++ } })
  await router.dial(node.getMultiaddrs()[0]!)

  const res = await inferRemote(router, node.peerId, 'app', { id: 'r1', inputs: [fp32('x', [1, 2.5, -3], [1, 3])], deadline: Date.now() + 5_000 })
  assert.equal(res.id, 'r1')
  assert.deepEqual(res.outputs[0]!.shape, [1, 3])
  assert.deepEqual([...new Float32Array(new Uint8Array(res.outputs[0]!.data).buffer)], [2, 5, -6])
  assert.equal(res.computeMs, 2)
  assert.equal(res.version, '7', 'the replica\'s version comes back (the KServe answer\'s model_version)')
  assert.deepEqual(res.compute, { inputMs: 0.25, inferMs: 1.5, outputMs: 0.25 }, 'the compute split comes back (Triton\'s compute durations)')

  mode = 'full'
  await assert.rejects(inferRemote(router, node.peerId, 'app', { inputs: [fp32('x', [1])], deadline: Date.now() + 5_000 }),
    (err: RemoteInferError) => err.code === 'ERR_QUEUE_FULL' && err.status === 429 && err.phase === 'unsent' && err.retryAfter === 2)
  mode = 'slow'
  await assert.rejects(inferRemote(router, node.peerId, 'app', { inputs: [fp32('x', [1])], deadline: Date.now() + 300 }), DeadlineError)
  mode = 'double'

  // Malformed: not JSON, bad header, sizes that lie, too many bytes for the header's claim.
  const raw = async (parts: Uint8Array[]): Promise<Uint8Array | undefined> => {
    const stream = await router.dialProtocol(node.peerId, INFER_PROTOCOL)
    const lp = lpStream(stream)
    for (const p of parts) await lp.write(p)
    try { return (await lp.read({ signal: AbortSignal.timeout(3_000) })).subarray() } catch { return undefined }
  }
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v))
  const answers = [
    await raw([enc('not json')]),
    await raw([enc({ app: 'app', timeoutMs: 1000, inputs: [{ name: 'x', datatype: 'FP99', shape: [1], size: 4 }] })]),
    await raw([enc({ app: 'app', timeoutMs: 1000, inputs: [{ name: 'x', datatype: 'FP32', shape: [1], size: 4 }] }), new Uint8Array(8)]),
    await raw([enc({ app: 'app', timeoutMs: 1000, inputs: [{ name: 'x', datatype: 'FP32', shape: [1], size: 100 * 1024 * 1024 }] })])
  ]
  for (const a of answers) {
    assert.ok(a != null, 'answered')
    assert.equal(a[0], 1, 'error status')
    assert.equal(JSON.parse(new TextDecoder().decode(a.subarray(1))).code, 'ERR_INVALID_INPUT')
  }
  assert.equal(bad, 4)
  // Still serving.
  const again = await inferRemote(router, node.peerId, 'app', { inputs: [fp32('x', [4])], deadline: Date.now() + 5_000 })
  assert.deepEqual([...new Float32Array(new Uint8Array(again.outputs[0]!.data).buffer)], [8])
})

test('infer protocol: an unreachable node is an unsent failure (safe to retry elsewhere)', async () => {
  const router = await host()
  const gone = await host()
  const id = gone.peerId
  const addr = gone.getMultiaddrs()[0]!
  await router.dial(addr)
  await gone.stop()
  await assert.rejects(inferRemote(router, id, 'app', { inputs: [fp32('x', [1])], deadline: Date.now() + 3_000 }),
    (err: RemoteInferError) => err instanceof RemoteInferError && err.phase === 'unsent' && err.status === 503)
})

test('infer protocol: a stalled stream is a retryable transport failure, not a model error (issue 16)', async () => {
  const node = await host()
  const router = await host()
  let bad = 0
  await serveInference(node, async (app, req, signal): Promise<InferResult> => {
    if (app === 'broken') throw new InferenceFailedError('the model failed')
    if (app === 'hang') {
      await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
    }
    return { model: app, outputs: req.inputs, queueMs: 0, computeMs: 0 }
  }, { onBadRequest: () => { bad++ }, readTimeoutMs: 300 })
  await router.dial(node.getMultiaddrs()[0]!)

  // A real model error (the replica answered with an error code) stays with the client.
  await assert.rejects(inferRemote(router, node.peerId, 'broken', { inputs: [fp32('x', [1])], deadline: Date.now() + 30_000 }),
    (err: unknown) => err instanceof RemoteInferError && err.phase === 'answered' && err.status === 500 && !retryable(err))

  // Node side: the request's tensor never comes (as when the node was frozen past its read
  // allowance). The answer must be a transport error the router retries, not ERR_INFERENCE (500).
  const stream = await router.dialProtocol(node.peerId, INFER_PROTOCOL)
  const lp = lpStream(stream)
  await lp.write(new TextEncoder().encode(JSON.stringify({ app: 'app', timeoutMs: 10_000, inputs: [{ name: 'x', datatype: 'FP32', shape: [1], size: 4 }] })))
  let answer: Uint8Array
  try {
    answer = (await lp.read({ signal: AbortSignal.timeout(30_000) })).subarray()
  } finally {
    stream.abort(new Error('test done'))
  }
  assert.equal(answer[0], 1, 'node side: error status')
  const remote = JSON.parse(new TextDecoder().decode(answer.subarray(1)))
  assert.equal(remote.code, 'ERR_UNAVAILABLE_TRANSPORT', `node side: answer was ${JSON.stringify(remote)}`)
  const rebuilt = servingErrorFromCode(remote.code, remote.message)
  assert.ok(rebuilt instanceof InferTransportError && rebuilt.status === 503, 'node side: rebuilt as a 503 transport error')
  assert.ok(retryable(new RemoteInferError(rebuilt, 'unsent')), 'node side: the router retries it on another node')
  assert.equal(bad, 0, 'node side: a stall is not counted as a malformed request')

  // Node side: the run's own timer fires (its deadline): a deadline (504), not a model error.
  const hang = await router.dialProtocol(node.peerId, INFER_PROTOCOL)
  const hlp = lpStream(hang)
  let hangAnswer: Uint8Array
  try {
    await hlp.write(new TextEncoder().encode(JSON.stringify({ app: 'hang', timeoutMs: 50, inputs: [{ name: 'x', datatype: 'FP32', shape: [1], size: 4 }] })))
    await hlp.write(new Uint8Array(4))
    hangAnswer = (await hlp.read({ signal: AbortSignal.timeout(30_000) })).subarray()
  } finally {
    hang.abort(new Error('test done'))
  }
  assert.equal(JSON.parse(new TextDecoder().decode(hangAnswer.subarray(1))).code, 'ERR_DEADLINE', 'node side: the run timed out as a deadline')

  // Router side: the answer's header comes, then its tensor stalls past the read allowance.
  const stalled = await host()
  await stalled.handle(INFER_PROTOCOL, async (s) => {
    const slp = lpStream(s)
    await slp.read()
    await slp.read()
    const head = new TextEncoder().encode(JSON.stringify({ outputs: [{ name: 'y', datatype: 'FP32', shape: [1], size: 4 }], queueMs: 0, computeMs: 0 }))
    await slp.write(Uint8Array.from([0, ...head]))
    // … and nothing more: the stream stays open until the host stops.
  })
  await router.dial(stalled.getMultiaddrs()[0]!)
  await assert.rejects(inferRemote(router, stalled.peerId, 'app', { inputs: [fp32('x', [1])], deadline: Date.now() + 60_000 }, undefined, { readTimeoutMs: 300 }),
    (err: unknown) => {
      assert.ok(err instanceof RemoteInferError, `router side: got ${String(err)}`)
      assert.ok(err.cause instanceof InferTransportError, 'router side: the cause is the transport error class')
      assert.equal(err.code, 'ERR_UNAVAILABLE_TRANSPORT')
      assert.equal(err.phase, 'lost', 'router side: sent, then lost (retried: inference is idempotent)')
      assert.ok(retryable(err), 'router side: the router retries it on another node')
      return true
    })
})
