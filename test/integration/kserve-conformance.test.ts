import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import zlib from 'node:zlib'
import { setTimeout as sleep } from 'node:timers/promises'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { VERSION } from '../../src/version.ts'
import { registerKServeRoutes, encodeBytesElements, decodeInferResponse, MAX_INFER_BODY_BYTES } from '../../src/serving/kserve/index.ts'
import {
  DeadlineError, InferenceFailedError, QueueFullError, UnavailableError,
  type InferRequest, type InferResult, type ModelStatus, type ServingBackend, type Tensor
} from '../../src/serving/types.ts'

/**
 * Open Inference Protocol conformance: a real RpcServer on 127.0.0.1 with the KServe routes and
 * a fake backend whose models compute something checkable, exercised over HTTP for every
 * endpoint, both tensor encodings in both directions, and every error status.
 */

const TOKEN = 'kserve-token'

/** `double`: y = 2x (FP32 [-1, 4]) and rows = 2^60 + batch (INT64, beyond 2^53 on purpose). */
const doubleStatus: ModelStatus = {
  name: 'double',
  versions: ['1'],
  platform: 'onnx_onnxv1',
  ready: true,
  signature: {
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 4] }, { name: 'rows', datatype: 'INT64', shape: [1] }]
  }
}
/** Models without a signature yet: `echo` returns its inputs as outputs, the rest fail in ways. */
const bare = (name: string, ready = true): ModelStatus => ({ name, versions: ['1'], platform: 'onnx_onnxv1', ready })

interface Seen { model: string, req: InferRequest, signal?: AbortSignal, at: number }

class FakeBackend implements ServingBackend {
  ready = true
  readonly seen: Seen[] = []
  readonly statuses = new Map<string, ModelStatus>([
    ['double', doubleStatus], ['echo', bare('echo')], ['busy', bare('busy')], ['down', bare('down')],
    ['late', bare('late')], ['hang', bare('hang')], ['crash', bare('crash')], ['loading', bare('loading', false)]
  ])

  serverReady = (): boolean => this.ready
  models = (): string[] => [...this.statuses.keys()]
  model = (name: string): ModelStatus | undefined => this.statuses.get(name)

  infer = async (name: string, req: InferRequest, signal?: AbortSignal): Promise<InferResult> => {
    this.seen.push({ model: name, req, signal, at: Date.now() })
    const done = (outputs: Tensor[]): InferResult => ({ id: req.id, model: name, version: '1', outputs, queueMs: 3, computeMs: 4, compute: { inputMs: 1, inferMs: 2.5, outputMs: 0.5 } })
    switch (name) {
      case 'double': {
        const x = req.inputs[0] as Tensor
        const values = new Float32Array(x.data.buffer, x.data.byteOffset, x.data.length / 4).map(v => v * 2)
        const all = [
          { name: 'y', datatype: 'FP32' as const, shape: x.shape, data: new Uint8Array(values.buffer) },
          { name: 'rows', datatype: 'INT64' as const, shape: [1], data: new Uint8Array(new BigInt64Array([2n ** 60n + BigInt(x.shape[0] ?? 0)]).buffer) }
        ]
        return done(req.outputs == null ? all : all.filter(t => req.outputs?.includes(t.name)))
      }
      case 'echo': return done(req.inputs.map(t => ({ ...t, data: Uint8Array.from(t.data) })))
      case 'busy': throw new QueueFullError('every replica queue of busy is full', 2)
      case 'down': throw new UnavailableError('no replica of down is ready', 'ERR_NO_REPLICA', 3)
      case 'late': throw new DeadlineError('the replica gave up at the deadline')
      case 'crash': throw new InferenceFailedError('onnxruntime: Invalid rank for input')
      case 'hang': return await new Promise<never>(() => {})
      default: throw new Error(`fake has no model ${name}`)
    }
  }
}

const backend = new FakeBackend()
let serving: ServingBackend | undefined = backend
const metrics = createMetrics()
const server = new RpcServer({ logger: silentLogger(), metrics }, { host: '127.0.0.1', port: 0, token: TOKEN })
/** Requests the fake's "replicas" hold waiting, for astrad_inference_pending_request_count. */
let pendingDouble = 0
registerKServeRoutes(server, () => serving, { registry: metrics.registry, logger: silentLogger(), pending: () => [{ model: 'double', version: '1', count: pendingDouble }] })
server.route('GET', '/metrics', async () => ({ status: 200, text: await metrics.registry.metrics(), headers: { 'content-type': metrics.registry.contentType } }))
// An admin-style JSON route: the RPC port's own body reader decodes codings too.
server.route('POST', '/test/echo', async req => ({ status: 200, body: { got: await req.json() } }))
let port = 0

before(async () => { port = (await server.listen()).port })
after(async () => { await server.close() })

interface Answer { status: number, headers: http.IncomingHttpHeaders, body: Buffer, json: () => any }

async function call (method: string, path: string, init: { body?: Buffer | string, headers?: Record<string, string>, token?: boolean, signal?: AbortSignal } = {}): Promise<Answer> {
  const body = typeof init.body === 'string' ? Buffer.from(init.body) : init.body
  return await new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent: false,
      signal: init.signal,
      headers: {
        ...(init.token !== false ? { authorization: `Bearer ${TOKEN}` } : {}),
        ...(body != null ? { 'content-length': String(body.length) } : {}),
        ...init.headers
      }
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const buf = Buffer.concat(chunks)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: () => JSON.parse(buf.toString()) })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

const postJson = async (path: string, doc: unknown, headers: Record<string, string> = {}): Promise<Answer> =>
  await call('POST', path, { body: JSON.stringify(doc), headers: { 'content-type': 'application/json', ...headers } })

/** A binary request: JSON header, then the parts, with Inference-Header-Content-Length. */
async function postBinary (path: string, header: unknown, ...parts: Uint8Array[]): Promise<Answer> {
  const json = Buffer.from(JSON.stringify(header))
  return await call('POST', path, {
    body: Buffer.concat([json, ...parts]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) }
  })
}

const f32 = (...v: number[]): Buffer => Buffer.from(new Float32Array(v).buffer)

function assertError (a: Answer, status: number, pattern: RegExp): void {
  assert.equal(a.status, status, a.body.toString())
  assert.match(String(a.headers['content-type']), /^application\/json/)
  const body = a.json()
  assert.deepEqual(Object.keys(body), ['error'], 'the spec\'s error object and nothing else')
  assert.match(body.error, pattern)
}

/** Scrapes GET /metrics; `value(series)` is the sample of that exact series, NaN when absent. */
async function scrape (): Promise<{ text: string, value: (series: string) => number }> {
  const r = await call('GET', '/metrics')
  assert.equal(r.status, 200, `GET /metrics: ${r.status}`)
  const text = r.body.toString()
  const value = (series: string): number => {
    const m = text.split('\n').find(l => l.startsWith(series + ' '))
    return m == null ? NaN : Number(m.slice(series.length + 1))
  }
  return { text, value }
}

test('metrics: every known model has its series at 0 before its first request (Triton\'s reasons, version label)', async () => {
  const { value } = await scrape()
  for (const model of ['double', 'busy', 'crash', 'loading']) {
    for (const reason of ['REJECTED', 'CANCELED', 'BACKEND', 'OTHER']) {
      assert.equal(value(`astrad_inference_request_failure{model="${model}",version="1",reason="${reason}"}`), 0, `${model} ${reason} failures exist at 0`)
    }
    for (const name of ['request_success', 'count', 'exec_count', 'request_duration_us', 'queue_duration_us', 'compute_input_duration_us', 'compute_infer_duration_us', 'compute_output_duration_us']) {
      assert.equal(value(`astrad_inference_${name}{model="${model}",version="1"}`), 0, `astrad_inference_${name} of ${model} exists at 0`)
    }
    assert.equal(value(`astrad_inference_pending_request_count{model="${model}",version="1"}`), 0, `${model} pending at 0`)
  }
})

test('server metadata, health and model metadata endpoints', async () => {
  const meta = await call('GET', '/v2')
  assert.equal(meta.status, 200)
  assert.deepEqual(meta.json(), { name: 'astrad', version: VERSION, extensions: ['binary_tensor_data'] })

  assert.deepEqual((await call('GET', '/v2/health/live', { token: false })).json(), { live: true })
  const ready = await call('GET', '/v2/health/ready', { token: false })
  assert.equal(ready.status, 200, 'health routes need no token')
  assert.deepEqual(ready.json(), { ready: true })
  assert.equal((await call('GET', '/v2', { token: false })).status, 401, 'the other routes follow the port\'s token')

  const model = await call('GET', '/v2/models/double')
  assert.equal(model.status, 200)
  assert.deepEqual(model.json(), {
    name: 'double', versions: ['1'], platform: 'onnx_onnxv1',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 4] }, { name: 'rows', datatype: 'INT64', shape: [1] }]
  })
  assert.deepEqual((await call('GET', '/v2/models/double/versions/1')).json(), model.json())
  assertError(await call('GET', '/v2/models/double/versions/7'), 404, /model 'double' has no version '7' \(versions: 1\)/)
  assertError(await call('GET', '/v2/models/nope'), 404, /unknown model 'nope'/)
  assert.deepEqual((await call('GET', '/v2/models/echo')).json(), { name: 'echo', versions: ['1'], platform: 'onnx_onnxv1' }, 'no signature yet: no inputs/outputs claimed')

  assert.deepEqual((await call('GET', '/v2/models/double/ready')).json(), { name: 'double', ready: true })
  assert.equal((await call('GET', '/v2/models/double/versions/1/ready')).status, 200)
  const loading = await call('GET', '/v2/models/loading/ready')
  assert.equal(loading.status, 503)
  assert.deepEqual(loading.json(), { name: 'loading', ready: false })
  assertError(await call('GET', '/v2/models/nope/ready'), 404, /unknown model/)
})

test('HTTP details: 405 with Allow, HEAD on GET routes, 401 with a Bearer challenge, the scheme in any case', async () => {
  const put = await call('PUT', '/v2/models/double/infer')
  assert.equal(put.status, 405)
  assert.equal(put.headers.allow, 'POST', 'a 405 lists the route\'s methods (RFC 9110 §15.5.6)')
  const post = await call('POST', '/v2/models/double')
  assert.equal(post.status, 405)
  assert.equal(post.headers.allow, 'GET, HEAD')

  for (const path of ['/v2', '/v2/models/double', '/v2/health/ready']) {
    const get = await call('GET', path)
    const head = await call('HEAD', path)
    assert.equal(head.status, 200, `HEAD ${path}: ${head.status}`)
    assert.equal(head.body.length, 0, `HEAD ${path} has no body`)
    assert.equal(head.headers['content-type'], get.headers['content-type'], `HEAD ${path}: the GET answer's content-type`)
    assert.equal(Number(head.headers['content-length']), get.body.length, `HEAD ${path}: the GET answer's length`)
  }
  assert.equal((await call('HEAD', '/v2/models/nope')).status, 404)
  assert.equal((await call('HEAD', '/v2/models/double/infer')).status, 405, 'HEAD only where GET is')

  const none = await call('GET', '/v2', { token: false })
  assert.equal(none.status, 401)
  assert.equal(none.headers['www-authenticate'], 'Bearer realm="astrad"', 'a 401 carries a challenge (RFC 9110 §15.5.2)')
  const wrong = await call('GET', '/v2', { token: false, headers: { authorization: 'Bearer nope' } })
  assert.equal(wrong.status, 401)
  assert.equal(wrong.headers['www-authenticate'], 'Bearer realm="astrad", error="invalid_token"')
  for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
    const r = await call('GET', '/v2', { token: false, headers: { authorization: `${scheme} ${TOKEN}` } })
    assert.equal(r.status, 200, `scheme '${scheme}': ${r.status}`)
  }
  assert.equal((await call('GET', '/v2', { token: false, headers: { authorization: `Basic ${TOKEN}` } })).status, 401, 'another scheme is not a bearer token')
})

test('Content-Encoding: gzip and deflate bodies are decoded (JSON and binary), others are 415, a bomb is 413', async () => {
  const doc = { id: 'z', inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }
  const plain = await postJson('/v2/models/double/infer', doc)
  assert.equal(plain.status, 200, plain.body.toString())
  const json = Buffer.from(JSON.stringify(doc))
  for (const [coding, body] of [['gzip', zlib.gzipSync(json)], ['x-gzip', zlib.gzipSync(json)], ['deflate', zlib.deflateSync(json)], ['GZIP', zlib.gzipSync(json)], ['identity', json]] as const) {
    const r = await call('POST', '/v2/models/double/infer', { body, headers: { 'content-type': 'application/json', 'content-encoding': coding } })
    assert.equal(r.status, 200, `${coding}: ${r.body.toString()}`)
    assert.deepEqual(r.json(), plain.json(), `${coding}: the same answer as the plain body`)
  }

  // Binary extension: Inference-Header-Content-Length counts the decoded JSON.
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', parameters: { binary_data_size: 32 } }], parameters: { binary_data_output: true } }))
  const raw = Buffer.concat([header, f32(1, 2, 3, 4, 5, 6, 7, 8)])
  for (const [coding, body] of [['gzip', zlib.gzipSync(raw)], ['deflate', zlib.deflateSync(raw)]] as const) {
    const r = await call('POST', '/v2/models/double/infer', { body, headers: { 'content-encoding': coding, 'inference-header-content-length': String(header.length) } })
    assert.equal(r.status, 200, `binary ${coding}: ${r.body.toString()}`)
    const out = decodeInferResponse(r.body, String(r.headers['inference-header-content-length']))
    assert.deepEqual(out.outputs[0]?.values, [2, 4, 6, 8, 10, 12, 14, 16], `binary ${coding}`)
  }

  const echo = await call('POST', '/test/echo', { body: zlib.gzipSync('{"a":[1,2]}'), headers: { 'content-encoding': 'gzip' } })
  assert.equal(echo.status, 200, echo.body.toString())
  assert.deepEqual(echo.json(), { got: { a: [1, 2] } }, 'the RPC port\'s JSON routes decode too')

  const before = backend.seen.length
  const br = await call('POST', '/v2/models/double/infer', { body: zlib.brotliCompressSync(json), headers: { 'content-encoding': 'br' } })
  assertError(br, 415, /Content-Encoding "br": 'br' is not supported; send the body plain, gzip or deflate/)
  assert.equal(br.headers['accept-encoding'], 'gzip, deflate', 'a 415 for a coding says which are accepted (RFC 9110 §15.5.16)')
  assertError(await call('POST', '/v2/models/double/infer', { body: zlib.gzipSync(zlib.gzipSync(json)), headers: { 'content-encoding': 'gzip, gzip' } }), 415, /one coding at most/)
  assertError(await call('POST', '/v2/models/double/infer', { body: json, headers: { 'content-encoding': 'gzip' } }), 400, /the gzip request body cannot be decoded/)
  assertError(await call('POST', '/v2/models/double/infer', { body: zlib.gzipSync(json).subarray(0, 20), headers: { 'content-encoding': 'gzip' } }), 400, /the gzip request body cannot be decoded/)
  assert.equal((await call('POST', '/test/echo', { body: '{}', headers: { 'content-encoding': 'br' } })).status, 415)

  // A bomb: ~65 KB of gzip that inflates past the body cap is stopped at the cap.
  const bomb = zlib.gzipSync(Buffer.alloc(MAX_INFER_BODY_BYTES + 1024 * 1024), { level: 9 })
  assert.ok(bomb.length < 1024 * 1024, `the bomb is small (${bomb.length} bytes)`)
  // (Binary: the 64 MiB cap; as JSON the 16 MiB JSON cap stops it, naming the binary extension.)
  const boom = await call('POST', '/v2/models/double/infer', { body: bomb, headers: { 'content-encoding': 'gzip', 'inference-header-content-length': '100' } })
  assertError(boom, 413, /the decoded gzip request body exceeds the limit of 67108864 bytes/)
  assertError(await call('POST', '/v2/models/double/infer', { body: bomb, headers: { 'content-encoding': 'gzip' } }), 413, /at most 16777216 bytes .*binary tensor data extension/)
  assert.equal(backend.seen.length, before, 'no refused body reached the backend')

  // A client that leaves halfway through a gzip body: counted as CANCELED, nothing reaches the backend.
  const canceled = async (): Promise<number> => (await scrape()).value('astrad_inference_request_failure{model="double",version="1",reason="CANCELED"}')
  const canceledBefore = await canceled()
  const half = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v2/models/double/infer', agent: false, headers: { authorization: `Bearer ${TOKEN}`, 'content-encoding': 'gzip', 'content-length': String(json.length * 10) } })
  half.on('error', () => {})
  half.write(zlib.gzipSync(json).subarray(0, 10))
  let seenCanceled = canceledBefore
  try {
    await sleep(50)
    half.destroy()
    for (let i = 0; i < 500 && seenCanceled === canceledBefore; i++) {
      await sleep(10)
      seenCanceled = await canceled()
    }
  } finally {
    half.destroy()
  }
  assert.equal(seenCanceled - canceledBefore, 1, `a gzip body cut off by the client is CANCELED (last seen ${seenCanceled}, before ${canceledBefore})`)
  assert.equal(backend.seen.length, before, 'the cut-off body did not reach the backend')
  assert.equal((await call('GET', '/v2/health/live', { token: false })).status, 200, 'still serving')
})

test('Accept-Encoding: gzip or deflate answers are compressed, the inference header length still counts the decoded JSON', async () => {
  const doc = { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }], outputs: [{ name: 'y', parameters: { binary_data: true } }, { name: 'rows' }] }
  const plain = await postJson('/v2/models/double/infer', doc)
  assert.equal(plain.headers['content-encoding'], undefined)
  for (const [accept, coding, decode] of [['gzip', 'gzip', zlib.gunzipSync], ['deflate', 'deflate', zlib.inflateSync], ['deflate;q=0.5, gzip;q=0.8', 'gzip', zlib.gunzipSync], ['gzip;q=0, deflate', 'deflate', zlib.inflateSync]] as const) {
    const r = await postJson('/v2/models/double/infer', doc, { 'accept-encoding': accept })
    assert.equal(r.status, 200, `${accept}: ${r.body.toString()}`)
    assert.equal(r.headers['content-encoding'], coding, `Accept-Encoding: ${accept}`)
    assert.equal(Number(r.headers['content-length']), r.body.length)
    assert.equal(r.headers['inference-header-content-length'], plain.headers['inference-header-content-length'])
    assert.deepEqual(decode(r.body), plain.body, `${accept}: the plain answer, compressed`)
  }
  for (const accept of ['br', 'identity', '*', 'gzip;q=0']) {
    const r = await postJson('/v2/models/double/infer', doc, { 'accept-encoding': accept })
    assert.equal(r.headers['content-encoding'], undefined, `Accept-Encoding: ${accept} gets a plain answer`)
    assert.deepEqual(r.body, plain.body)
  }
})

test('readiness follows the backend; no backend at all is not ready and infer is 503 with Retry-After', async () => {
  backend.ready = false
  assert.equal((await call('GET', '/v2/health/ready', { token: false })).status, 503)
  backend.ready = true
  serving = undefined
  try {
    const r = await call('GET', '/v2/health/ready', { token: false })
    assert.equal(r.status, 503)
    assert.deepEqual(r.json(), { ready: false })
    assert.equal((await call('GET', '/v2/health/live', { token: false })).status, 200)
    const inf = await postJson('/v2/models/double/infer', { inputs: [] })
    assertError(inf, 503, /not serving/)
    assert.equal(inf.headers['retry-after'], '1')
    assertError(await call('GET', '/v2/models/double'), 503, /not serving/)
  } finally {
    serving = backend
  }
})

test('JSON infer: nested or flat data, id echoed, output selection, deadline passed to the backend', async () => {
  const before = Date.now()
  const r = await postJson('/v2/models/double/infer', { id: 'req-42', inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [[1, 2, 3, 4], [0.5, -1, 1e3, 0]] }] })
  assert.equal(r.status, 200, r.body.toString())
  assert.match(String(r.headers['content-type']), /^application\/json/)
  assert.equal(r.headers['inference-header-content-length'], undefined)
  assert.equal(r.body.toString(), '{"model_name":"double","model_version":"1","id":"req-42","outputs":[' +
    '{"name":"y","datatype":"FP32","shape":[2,4],"data":[2,4,6,8,1,-2,2000,0]},' +
    '{"name":"rows","datatype":"INT64","shape":[1],"data":[1152921504606846978]}]}', 'INT64 written digit for digit')
  const seen = backend.seen.at(-1) as Seen
  assert.equal(seen.req.id, 'req-42')
  assert.equal(seen.req.outputs, undefined)
  assert.ok(seen.req.deadline >= before + 30_000 && seen.req.deadline <= Date.now() + 30_000, 'the default 30 s deadline')
  assert.ok(seen.signal instanceof AbortSignal)

  const only = await postJson('/v2/models/double/versions/1/infer', {
    inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 1, 1, 1] }],
    outputs: [{ name: 'rows' }],
    parameters: { timeout: 2_500_000 }
  })
  assert.equal(only.status, 200)
  assert.deepEqual(only.json().outputs.map((o: { name: string }) => o.name), ['rows'])
  const s2 = backend.seen.at(-1) as Seen
  assert.deepEqual(s2.req.outputs, ['rows'])
  assert.ok(Math.abs(s2.req.deadline - (s2.at + 2500)) < 500, 'parameters.timeout is microseconds (Triton)')
  await postJson('/v2/models/double/infer', { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 1, 1, 1] }] }, { 'astrad-timeout-ms': '700' })
  const s3 = backend.seen.at(-1) as Seen
  assert.ok(Math.abs(s3.req.deadline - (s3.at + 700)) < 500, 'the astrad-timeout-ms header')
})

test('binary extension both ways: binary inputs, binary outputs (requested per output or all), raw binary request', async () => {
  const r = await postBinary('/v2/models/double/infer', {
    inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', parameters: { binary_data_size: 32 } }],
    outputs: [{ name: 'y', parameters: { binary_data: true } }, { name: 'rows' }]
  }, f32(1, 2, 3, 4, 5, 6, 7, 8))
  assert.equal(r.status, 200, r.body.toString())
  assert.equal(r.headers['content-type'], 'application/octet-stream')
  const n = Number(r.headers['inference-header-content-length'])
  const header = JSON.parse(r.body.subarray(0, n).toString())
  assert.deepEqual(header.outputs[0], { name: 'y', datatype: 'FP32', shape: [2, 4], parameters: { binary_data_size: 32 } })
  assert.deepEqual(header.outputs[1].data, [1152921504606846978])
  assert.deepEqual(r.body.subarray(n), f32(2, 4, 6, 8, 10, 12, 14, 16))
  assert.equal(Number(r.headers['content-length']), r.body.length)

  const all = await postJson('/v2/models/double/infer', { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }], parameters: { binary_data_output: true } })
  const decoded = decodeInferResponse(all.body, String(all.headers['inference-header-content-length']))
  assert.deepEqual(decoded.outputs.map(o => [o.name, o.values]), [['y', [2, 4, 6, 8]], ['rows', [2n ** 60n + 1n]]])

  const raw = await call('POST', '/v2/models/double/infer', { body: f32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), headers: { 'inference-header-content-length': '0' } })
  assert.equal(raw.status, 200, raw.body.toString())
  const rawOut = decodeInferResponse(raw.body, String(raw.headers['inference-header-content-length']))
  assert.deepEqual(rawOut.outputs[0]?.shape, [3, 4])
  assert.deepEqual(rawOut.outputs[0]?.values, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24])
})

test('every datatype travels exactly through the server, JSON and binary', async () => {
  const inputs = [
    { name: 'b', datatype: 'BOOL', shape: [3], data: [true, false, true] },
    { name: 'u8', datatype: 'UINT8', shape: [2], data: [0, 255] },
    { name: 'u16', datatype: 'UINT16', shape: [1], data: [65535] },
    { name: 'u32', datatype: 'UINT32', shape: [1], data: [4294967295] },
    { name: 'u64', datatype: 'UINT64', shape: [2], data: ['18446744073709551615', 1] },
    { name: 'i8', datatype: 'INT8', shape: [1], data: [-128] },
    { name: 'i16', datatype: 'INT16', shape: [1], data: [-32768] },
    { name: 'i32', datatype: 'INT32', shape: [1, 1], data: [[-2147483648]] },
    { name: 'i64', datatype: 'INT64', shape: [2], data: [-9223372036854775808n, 9007199254740993n] },
    { name: 'h', datatype: 'FP16', shape: [3], data: [0.1, -65504, 'Infinity'] },
    { name: 'f', datatype: 'FP32', shape: [2], data: [0.1, 'NaN'] },
    { name: 'd', datatype: 'FP64', shape: [1], data: [0.1] },
    { name: 's', datatype: 'BYTES', shape: [2], data: ['héllo', ''] }
  ]
  // bigint as raw digits in the request text, as a Python client would write them.
  const text = JSON.stringify({ inputs }, (_k, v: unknown) => typeof v === 'bigint' ? `@@${v}@@` : v).replace(/"@@(-?\d+)@@"/g, '$1')
  const j = await call('POST', '/v2/models/echo/infer', { body: text })
  assert.equal(j.status, 200, j.body.toString())
  const out = j.body.toString()
  assert.match(out, /"name":"i64","datatype":"INT64","shape":\[2\],"data":\[-9223372036854775808,9007199254740993\]/)
  assert.match(out, /"name":"u64","datatype":"UINT64","shape":\[2\],"data":\[18446744073709551615,1\]/)
  assert.match(out, /"name":"h","datatype":"FP16","shape":\[3\],"data":\[0\.0999755859375,-65504,"Infinity"\]/)
  assert.match(out, /"name":"f","datatype":"FP32","shape":\[2\],"data":\[0\.10000000149011612,"NaN"\]/)
  assert.match(out, /"name":"s","datatype":"BYTES","shape":\[2\],"data":\["héllo",""\]/)
  assert.match(out, /"name":"b","datatype":"BOOL","shape":\[3\],"data":\[true,false,true\]/)

  // The same tensors asked back in binary: the bytes are the little-endian layout.
  const b = await call('POST', '/v2/models/echo/infer', { body: text.replace(/}$/, ',"parameters":{"binary_data_output":true}}') })
  const d = decodeInferResponse(b.body, String(b.headers['inference-header-content-length']))
  const byName = new Map(d.outputs.map(o => [o.name, o.values]))
  assert.deepEqual(byName.get('i64'), [-(2n ** 63n), 2n ** 53n + 1n])
  assert.deepEqual(byName.get('u64'), [2n ** 64n - 1n, 1n])
  assert.deepEqual(byName.get('h'), [0.0999755859375, -65504, Infinity])
  assert.deepEqual(byName.get('b'), [true, false, true])
  assert.deepEqual((byName.get('s') as Uint8Array[]).map(x => Buffer.from(x).toString()), ['héllo', ''])

  // Binary BYTES in: bytes that are not UTF-8 come back only as binary.
  const blob = Buffer.from(encodeBytesElements([Buffer.from([0xff, 0x00, 0xfe])]))
  const bin = await postBinary('/v2/models/echo/infer', { inputs: [{ name: 'raw', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: blob.length } }], parameters: { binary_data_output: true } }, blob)
  assert.equal(bin.status, 200)
  assert.deepEqual(bin.body.subarray(Number(bin.headers['inference-header-content-length'])), blob)
  assertError(await postBinary('/v2/models/echo/infer', { inputs: [{ name: 'raw', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: blob.length } }] }, blob), 400, /not UTF-8 text/)
})

test('400s: wrong name, shape, datatype, size, malformed JSON, bad binary header length', async () => {
  const x = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4], ...over })
  const path = '/v2/models/double/infer'
  const before = backend.seen.length
  assertError(await postJson(path, { inputs: [x({ name: 'input' })] }), 400, /unknown input 'input' \(model inputs: x\)/)
  assertError(await postJson(path, { inputs: [x({ shape: [4], data: [1, 2, 3, 4] })] }), 400, /shape \[4\] has rank 1, the model expects rank 2 \[-1, 4\]/)
  assertError(await postJson(path, { inputs: [x({ shape: [1, 3], data: [1, 2, 3] })] }), 400, /shape \[1, 3\] does not match the model's \[-1, 4\] \(dimension 1 must be 4\)/)
  assertError(await postJson(path, { inputs: [x({ datatype: 'FP64' })] }), 400, /datatype FP64, the model expects FP32/)
  assertError(await postJson(path, { inputs: [x({ datatype: 'float32' })] }), 400, /unknown datatype "float32"/)
  assertError(await postJson(path, { inputs: [x({ data: [1, 2, 3] })] }), 400, /has 4 elements but "data" has 3/)
  assertError(await postJson(path, { inputs: [] }), 400, /missing input 'x' \(FP32 \[-1, 4\]\)/)
  assertError(await postJson(path, { inputs: [x()], outputs: [{ name: 'z' }] }), 400, /unknown output 'z'/)
  assertError(await call('POST', path, { body: '{"inputs": [' }), 400, /not valid JSON/)
  assertError(await postBinary(path, { inputs: [x({ data: undefined, parameters: { binary_data_size: 12 } })] }, f32(1, 2, 3)), 400, /12 bytes of data, but shape \[1, 4\] of FP32 needs 16/)
  assertError(await postBinary(path, { inputs: [x({ data: undefined, parameters: { binary_data_size: 16 } })] }, f32(1, 2, 3, 4), Buffer.from([0])), 400, /1 bytes after the JSON header/)
  const body = Buffer.concat([Buffer.from(JSON.stringify({ inputs: [x({ data: undefined, parameters: { binary_data_size: 16 } })] })), f32(1, 2, 3, 4)])
  assertError(await call('POST', path, { body, headers: { 'inference-header-content-length': 'abc' } }), 400, /must be one non-negative integer/)
  assertError(await call('POST', path, { body, headers: { 'inference-header-content-length': String(body.length + 10) } }), 400, /exceeds the body/)
  assertError(await call('POST', path, { body, headers: { 'inference-header-content-length': '20' } }), 400, /not valid JSON/)
  assertError(await call('POST', path, { body: JSON.stringify({ inputs: [x()] }), headers: { 'astrad-timeout-ms': 'soon' } }), 400, /astrad-timeout-ms must be a positive integer/)
  assertError(await call('POST', '/v2/models/echo/infer', { body: f32(1), headers: { 'inference-header-content-length': '0' } }), 400, /needs the model's signature/)
  assert.equal(backend.seen.length, before, 'no bad request reached the backend')
})

test('404, 413, 429 + Retry-After, 503 + Retry-After, 504 (backend and edge deadline), 500', async () => {
  const one = { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }
  assertError(await postJson('/v2/models/nope/infer', one), 404, /unknown model 'nope'/)
  assertError(await postJson('/v2/models/double/versions/2/infer', one), 404, /no version '2'/)

  const busy = await postJson('/v2/models/busy/infer', one)
  assertError(busy, 429, /queue of busy is full/)
  assert.equal(busy.headers['retry-after'], '2')
  const down = await postJson('/v2/models/down/infer', one)
  assertError(down, 503, /no replica of down is ready/)
  assert.equal(down.headers['retry-after'], '3')
  assertError(await postJson('/v2/models/late/infer', one), 504, /gave up at the deadline/)
  assertError(await postJson('/v2/models/crash/infer', one), 500, /Invalid rank/)

  // A backend that never answers: the edge answers 504 at the request's deadline.
  const t0 = Date.now()
  const hang = await postJson('/v2/models/hang/infer', { ...one, parameters: { timeout: 150_000 } })
  const took = Date.now() - t0
  assertError(hang, 504, /deadline of 150 ms/)
  // Not before the deadline; the backend never answers, so only the deadline can end it.
  assert.ok(took >= 140, `answered before the deadline (${took} ms)`)
  const seen = backend.seen.at(-1) as Seen
  assert.equal(seen.signal?.aborted, true, 'the backend was told to stop')

  // Too large: refused from Content-Length without reading the body.
  const big = await new Promise<{ status: number, body: string, connection?: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v2/models/double/infer', agent: false, headers: { authorization: `Bearer ${TOKEN}`, 'content-length': String(MAX_INFER_BODY_BYTES + 1), 'inference-header-content-length': '100' } }, res => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: text, connection: res.headers.connection }) })
    })
    req.on('error', reject)
    req.write(Buffer.alloc(1024))
  })
  assert.equal(big.status, 413)
  assert.match(JSON.parse(big.body).error, /exceeds the limit of 67108864 bytes/)
  assert.equal(big.connection, 'close')
})

test('a client that goes away aborts the backend\'s signal', async () => {
  const ac = new AbortController()
  const count = backend.seen.length
  const pending = call('POST', '/v2/models/hang/infer', { body: JSON.stringify({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }), signal: ac.signal }).catch((err: unknown) => err)
  let seen: Seen | undefined
  for (let i = 0; i < 200 && seen == null; i++) {
    await sleep(10)
    seen = backend.seen.slice(count).find(s => s.model === 'hang')
  }
  assert.ok(seen?.signal != null, 'the request reached the backend')
  assert.equal(seen.signal.aborted, false)
  ac.abort()
  assert.equal((await pending as Error).name, 'AbortError')
  for (let i = 0; i < 200 && !seen.signal.aborted; i++) await sleep(10)
  assert.equal(seen.signal.aborted, true, 'aborted when the connection closed, long before the 30 s deadline')
  assert.equal((seen.signal.reason as { code?: string }).code, 'ERR_CANCELED')
})

test('astrad_inference_* metrics: Triton\'s set with model and version labels, failures by Triton\'s reasons, pending count, compute split', async () => {
  // Every failure reason, provoked once more here so the test does not lean on the order of the others.
  const one = { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }
  const before = await scrape()
  assert.equal((await postJson('/v2/models/busy/infer', one)).status, 429)
  assert.equal((await postJson('/v2/models/crash/infer', one)).status, 500)
  assert.equal((await postJson('/v2/models/down/infer', one)).status, 503)
  assert.equal((await postJson('/v2/models/double/infer', { inputs: [] })).status, 400)
  const ac = new AbortController()
  const count = backend.seen.length
  const gone = call('POST', '/v2/models/hang/infer', { body: JSON.stringify(one), signal: ac.signal }).catch((err: unknown) => err)
  for (let i = 0; i < 500 && !backend.seen.slice(count).some(x => x.model === 'hang'); i++) await sleep(10)
  ac.abort()
  await gone
  const failures = (b: typeof before, model: string, reason: string): number => b.value(`astrad_inference_request_failure{model="${model}",version="1",reason="${reason}"}`)
  let after = await scrape()
  for (let i = 0; i < 500 && failures(after, 'hang', 'CANCELED') === failures(before, 'hang', 'CANCELED'); i++) {
    await sleep(10)
    after = await scrape()
  }
  const grew = (model: string, reason: string): number => failures(after, model, reason) - failures(before, model, reason)
  assert.equal(grew('busy', 'REJECTED'), 1, 'queue full (429) is REJECTED')
  assert.equal(grew('crash', 'BACKEND'), 1, 'the model failed (500) is BACKEND')
  assert.equal(grew('down', 'OTHER'), 1, 'no replica ready (503) is OTHER')
  assert.equal(grew('double', 'OTHER'), 1, 'a bad request (400) is OTHER')
  assert.equal(grew('hang', 'CANCELED'), 1, 'the client left: CANCELED')
  assert.doesNotMatch(after.text, /reason="(invalid|rejected|unavailable|deadline|canceled|backend)"/, 'no lower-case reasons')

  const { value, text } = after
  const v = (name: string): number => value(`astrad_inference_${name}{model="double",version="1"}`)
  assert.ok(v('request_success') >= 5, `successes: ${v('request_success')}`)
  assert.equal(v('exec_count'), v('request_success'), 'one execution per request')
  assert.ok(v('count') > v('request_success'), 'batch elements counted')
  assert.ok(v('queue_duration_us') >= v('request_success') * 3000, 'queueMs × 1000 per request')
  assert.equal(v('compute_input_duration_us'), v('request_success') * 1000, 'the backend\'s compute split, input')
  assert.equal(v('compute_infer_duration_us'), v('request_success') * 2500, 'the backend\'s compute split, run')
  assert.equal(v('compute_output_duration_us'), v('request_success') * 500, 'the backend\'s compute split, output')
  assert.ok(v('request_duration_us') > 0)
  assert.equal(v('request_duration_seconds_count'), v('request_success'))
  assert.ok(value('astrad_inference_request_failure{model="late",version="1",reason="OTHER"}') >= 1, 'deadline (504) is OTHER')

  assert.equal(v('pending_request_count'), 0)
  pendingDouble = 3
  assert.equal((await scrape()).value('astrad_inference_pending_request_count{model="double",version="1"}'), 3, 'read from the replicas at scrape')
  pendingDouble = 0
  assert.doesNotMatch(text, /model="nope"/)
  assert.match(text, /# TYPE astrad_inference_request_failure counter/)
  assert.match(text, /# TYPE astrad_inference_pending_request_count gauge/)
})
