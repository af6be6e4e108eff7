import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import http from 'node:http'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics, type Metrics } from '../../src/metrics/index.ts'
import { registerKServeRoutes, MAX_INFER_BODY_BYTES, MAX_JSON_INFER_BODY_BYTES } from '../../src/serving/kserve/index.ts'
import { registerNoticeRoutes } from '../../src/mailbox/routes.ts'
import { registerTransferRoutes } from '../../src/transfer/index.ts'
import type { InferRequest, InferResult, ModelStatus, ServingBackend } from '../../src/serving/types.ts'
import type { Logger } from '../../src/util/logger.ts'
import { waitFor } from '../helpers/wait.ts'

/**
 * Issue 16 items 3 and 4 on a real RPC port on 127.0.0.1: the port-wide budget of buffered body
 * bytes (503 beyond, the gauge never above it), the body deadline (408, socket closed) that a
 * streamed upload making progress is not cut by, the JSON infer cap below the binary one, and
 * malformed percent-encoding in a path (400 everywhere, nothing logged at error level).
 */

/** `echo` returns its inputs; no signature, so any input is taken. */
const echo: ModelStatus = { name: 'echo', versions: ['1'], platform: 'onnx_onnxv1', ready: true }
const backend: ServingBackend = {
  serverReady: () => true,
  models: () => ['echo'],
  model: (name: string) => name === 'echo' ? echo : undefined,
  infer: async (name: string, req: InferRequest): Promise<InferResult> => ({ id: req.id, model: name, version: '1', outputs: req.inputs, queueMs: 0, computeMs: 0 })
}

/** Log lines as pino writes them, to check what reached error level (50) or above. */
const logLines: Array<{ level: number, msg?: string }> = []
function capturingLogger (): Logger {
  return pino({ level: 'trace' }, new Writable({
    write (chunk: Buffer, _enc, done) { logLines.push(JSON.parse(chunk.toString('utf8'))); done() }
  }))
}

/** Budget of the big server: room for one 20 MiB binary body but not two. */
const BUDGET = 24 * 1024 * 1024
const bigMetrics = createMetrics()
/** Long body deadline: the budget test holds bodies open; its sockets are closed in finally. */
const big = new RpcServer({ logger: capturingLogger(), metrics: bigMetrics }, { host: '127.0.0.1', port: 0, maxBodyBytesInFlight: BUDGET, bodyTimeoutMs: 120_000 })
registerKServeRoutes(big, () => backend, { logger: capturingLogger() })
registerNoticeRoutes(big, () => undefined)

/** Short body deadline for the slowloris and streamed-upload tests. */
const DEADLINE_MS = 300
const slowMetrics = createMetrics()
const slow = new RpcServer({ logger: capturingLogger(), metrics: slowMetrics }, { host: '127.0.0.1', port: 0, bodyTimeoutMs: DEADLINE_MS })
registerKServeRoutes(slow, () => backend, { logger: capturingLogger() })
/**
 * The real `POST /v1/models` route over a stub transfer service whose `add` consumes the
 * upload as the store does (piece by piece as it arrives), counting what it has read.
 */
let uploaded = 0
registerTransferRoutes(slow, () => ({
  add: async (source: AsyncIterable<Uint8Array>, size: number, name: string) => {
    uploaded = 0
    for await (const chunk of source) uploaded += chunk.length
    return { id: 'f'.repeat(64), name, size: uploaded, pieceSize: 4 << 20, pieces: 1 }
  }
}) as never)

let bigPort = 0
let slowPort = 0
before(async () => {
  bigPort = (await big.listen()).port
  slowPort = (await slow.listen()).port
})
after(async () => {
  await big.close()
  await slow.close()
})

interface Raw {
  socket: net.Socket
  /** Everything received so far. */
  received: () => string
  /** The status of the answer, once its status line is in. */
  status: () => number | undefined
  closed: Promise<void>
}

/** A raw HTTP/1.1 request: `head` and the first part of its body, then whatever the test writes. */
async function open (port: number, head: string, first?: Buffer): Promise<Raw> {
  const socket = net.connect(port, '127.0.0.1')
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString('latin1') })
  // Writes after the server closed fail with EPIPE/ECONNRESET: expected in these tests.
  socket.on('error', () => {})
  const closed = new Promise<void>(resolve => { socket.once('close', () => { resolve() }) })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.write(head)
  if (first != null) socket.write(first)
  return {
    socket,
    received: () => got,
    status: () => { const m = /^HTTP\/1\.1 (\d{3})/.exec(got); return m == null ? undefined : Number(m[1]) },
    closed
  }
}

const binaryHead = (port: number, bodyBytes: number, headerBytes: number): string =>
  `POST /v2/models/echo/infer HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/octet-stream\r\n` +
  `inference-header-content-length: ${headerBytes}\r\ncontent-length: ${bodyBytes}\r\n\r\n`

/** A binary infer body: an FP32 input of `floats` elements, binary output asked for. */
function binaryBody (floats: number): { body: Buffer, headerBytes: number } {
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: [1, floats], datatype: 'FP32', parameters: { binary_data_size: floats * 4 } }], parameters: { binary_data_output: true } }))
  return { body: Buffer.concat([header, Buffer.alloc(floats * 4)]), headerBytes: header.length }
}

async function gauge (metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name)
  assert.ok(metric != null, `no metric ${name}`)
  const { values } = await metric.get()
  return values.filter(v => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l)).reduce((a, v) => a + v.value, 0)
}

/** A whole request with a body (node:http client), answered: its status and body text. */
async function request (port: number, head: string, body: Buffer): Promise<{ status: number, text: string }> {
  const [line = '', ...headerLines] = head.split('\r\n').filter(l => l !== '')
  const [method, path] = line.split(' ')
  const headers: Record<string, string> = {}
  for (const h of headerLines) { const i = h.indexOf(':'); headers[h.slice(0, i).trim()] = h.slice(i + 1).trim() }
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }) })
      res.on('error', reject)
    })
    req.setTimeout(30_000, () => { req.destroy(new Error(`${method} ${path}: no answer within 30 s`)) })
    req.on('error', reject)
    req.end(body)
  })
}

test('rpc limits: concurrent large bodies held open past the port budget are refused with 503 before they are read, and the gauge never passes the budget', async () => {
  const declared = 10 * 1024 * 1024
  const held: Raw[] = []
  let peak = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await gauge(bigMetrics, 'astrad_rpc_body_in_flight_bytes'))
      await sleep(5)
    }
  })()
  try {
    // Two 10 MiB bodies fit in 24 MiB: each sends 1 MiB and then holds.
    for (let i = 0; i < 2; i++) {
      held.push(await open(bigPort, binaryHead(bigPort, declared, 100), Buffer.alloc(1024 * 1024)))
    }
    await waitFor('both held bodies counted in astrad_rpc_body_in_flight_bytes', async () => await gauge(bigMetrics, 'astrad_rpc_body_in_flight_bytes') === 2 * declared)
    // The third (declared) and a fourth (chunked, no length: counted as it arrives) do not fit.
    const third = await open(bigPort, binaryHead(bigPort, declared, 100), Buffer.alloc(64 * 1024))
    held.push(third)
    await waitFor('a 503 for the third body', () => third.status())
    assert.equal(third.status(), 503, third.received().slice(0, 300))
    assert.match(third.received(), /retry-after: \d+/i)
    await waitFor('the third connection closed', async () => { await third.closed; return true })
    const chunked = await open(bigPort,
      `POST /v2/models/echo/infer HTTP/1.1\r\nhost: x\r\ninference-header-content-length: 100\r\ntransfer-encoding: chunked\r\n\r\n`)
    held.push(chunked)
    const piece = Buffer.alloc(1024 * 1024)
    // Up to 16 MiB (the budget has 4 MiB left), each piece written once the last is sent.
    for (let i = 0; i < 16 && chunked.status() === undefined && !chunked.socket.destroyed; i++) {
      chunked.socket.write(`${piece.length.toString(16)}\r\n`)
      chunked.socket.write(piece)
      await new Promise<void>(resolve => { chunked.socket.write('\r\n', () => { resolve() }) })
    }
    await waitFor('a 503 for the chunked body once it passes the budget', () => chunked.status()).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; in flight: ${await gauge(bigMetrics, 'astrad_rpc_body_in_flight_bytes')} bytes; received: ${JSON.stringify(chunked.received().slice(0, 300))}; closed: ${chunked.socket.destroyed}`)
    })
    assert.equal(chunked.status(), 503, chunked.received().slice(0, 300))
    assert.ok(await gauge(bigMetrics, 'astrad_rpc_body_refused_total', { reason: 'budget' }) >= 2, 'refusals counted in astrad_rpc_body_refused_total{reason="budget"}')
    // The held requests are still being served: neither was answered.
    assert.equal(held[0]!.status(), undefined)
    assert.equal(held[1]!.status(), undefined)
  } finally {
    for (const r of held) r.socket.destroy()
    sampling = false
    await sampler
  }
  assert.ok(peak <= BUDGET, `astrad_rpc_body_in_flight_bytes peaked at ${peak}, above the budget ${BUDGET}`)
  await waitFor('the budget given back once the clients left', async () => await gauge(bigMetrics, 'astrad_rpc_body_in_flight_bytes') === 0)
  // Room again: a whole body is served.
  const { body, headerBytes } = binaryBody(1024)
  const ok = await request(bigPort, binaryHead(bigPort, body.length, headerBytes), body)
  assert.equal(ok.status, 200, ok.text)
})

test('rpc limits: a JSON infer body over the JSON cap is a 413 naming the binary extension; the same size in binary form is served', async () => {
  assert.ok(MAX_JSON_INFER_BODY_BYTES < MAX_INFER_BODY_BYTES)
  // The JSON form (`0,` per element): declared over the cap, refused before it is read.
  const jsonFloats = Math.ceil(MAX_JSON_INFER_BODY_BYTES / 2) + 1024
  const json = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: [1, jsonFloats], datatype: 'FP32', data: new Array(jsonFloats).fill(0) }] }))
  assert.ok(json.length > MAX_JSON_INFER_BODY_BYTES)
  const refused = await request(bigPort,
    `POST /v2/models/echo/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${json.length}\r\n\r\n`, json)
  assert.equal(refused.status, 413, refused.text.slice(0, 300))
  assert.match(refused.text, /binary tensor data extension/)
  assert.match(refused.text, /Inference-Header-Content-Length/)
  // A body of the same size in binary form.
  const { body, headerBytes } = binaryBody(Math.ceil(json.length / 4))
  assert.ok(body.length > MAX_JSON_INFER_BODY_BYTES && body.length <= BUDGET)
  const served = await request(bigPort, binaryHead(bigPort, body.length, headerBytes), body)
  assert.equal(served.status, 200, served.text.slice(0, 300))
})

test('rpc limits: a body not whole within the body deadline is a 408 and its socket is closed', async () => {
  const r = await open(slowPort, binaryHead(slowPort, 1000, 100), Buffer.alloc(10))
  try {
    await waitFor('a 408 for the slow body', () => r.status())
    assert.equal(r.status(), 408, r.received().slice(0, 300))
    await waitFor('the slow body\'s connection closed by the server', async () => { await r.closed; return true })
    assert.ok(await gauge(slowMetrics, 'astrad_rpc_body_refused_total', { reason: 'timeout' }) >= 1)
  } finally {
    r.socket.destroy()
  }
  await waitFor('the budget given back after the 408', async () => await gauge(slowMetrics, 'astrad_rpc_body_in_flight_bytes') === 0)
})

test('rpc limits: a model upload (POST /v1/models) that keeps making progress is not cut by the body deadline', async () => {
  const piece = 64 * 1024
  const pieces = 12
  const r = await open(slowPort, `POST /v1/models?name=big.onnx HTTP/1.1\r\nhost: x\r\ncontent-length: ${piece * pieces}\r\n\r\n`)
  try {
    const started = Date.now()
    for (let i = 1; i <= pieces; i++) {
      r.socket.write(Buffer.alloc(piece))
      await waitFor(`the server to have read piece ${i}`, () => uploaded >= i * piece || r.status() !== undefined)
      if (i < pieces) assert.equal(r.status(), undefined, `answered before the upload was whole: ${r.received().slice(0, 300)}`)
      // Spread the upload over several body deadlines.
      if (i < pieces) await sleep(Math.ceil(DEADLINE_MS / 3))
    }
    assert.ok(Date.now() - started > DEADLINE_MS, 'the upload lasted longer than the body deadline')
    await waitFor('the upload\'s answer', () => r.status())
    assert.equal(r.status(), 201, r.received().slice(0, 300))
    assert.match(r.received(), new RegExp(`"size":${piece * pieces}`))
  } finally {
    r.socket.destroy()
  }
})

test('rpc limits: a malformed percent-encoding in a path is a 400 on every route, logged below error level, and the port keeps serving', async () => {
  const before = logLines.length
  for (const [method, path] of [
    ['GET', '/v1/notices/%ff%fe'], ['POST', '/v1/notices/%ff%fe/stop'], ['GET', '/v2/models/%ff%fe'],
    ['GET', '/v2/models/%ff%fe/ready'], ['POST', '/v2/models/%ff%fe/infer'], ['GET', '/v2/models/echo/versions/%E0%A4%A/ready']
  ] as const) {
    const r = await request(bigPort, `${method} ${path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n`, Buffer.alloc(0))
    assert.equal(r.status, 400, `${method} ${path}: ${r.text}`)
    assert.match(r.text, /ERR_BAD_PATH|percent-encoded/, `${method} ${path}: ${r.text}`)
  }
  const model = await request(slowPort, 'GET /v1/models/%ff%fe HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n', Buffer.alloc(0))
  assert.equal(model.status, 400, `GET /v1/models/%ff%fe: ${model.text}`)
  const errors = logLines.slice(before).filter(l => l.level >= 50)
  assert.deepEqual(errors, [], 'nothing logged at error level')
  const live = await request(bigPort, 'GET /v2/health/live HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n', Buffer.alloc(0))
  assert.equal(live.status, 200, live.text)
})
