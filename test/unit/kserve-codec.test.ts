import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  dataToJson, decodeElements, decodeInferRequest, decodeInferResponse, encodeBytesElements, encodeElements,
  encodeInferResponse, fromHalfBits, tensorFromJson, tensorOfValue, toHalfBits
} from '../../src/serving/kserve/index.ts'
import { InferenceFailedError, InvalidInferRequestError, type DataType, type InferResult, type ModelSignature, type Tensor } from '../../src/serving/types.ts'

/** JSON body + binary parts as one request body, with its Inference-Header-Content-Length. */
function binaryBody (header: unknown, ...parts: Uint8Array[]): { body: Buffer, length: string } {
  const json = Buffer.from(JSON.stringify(header))
  return { body: Buffer.concat([json, ...parts]), length: String(json.length) }
}

const bytesOf = (arr: ArrayBufferView): Buffer => Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength)

function invalid (fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidInferRequestError, `expected InvalidInferRequestError, got ${String(err)}`)
    assert.equal(err.status, 400)
    assert.equal(err.code, 'ERR_INVALID_INPUT')
    assert.match(err.message, pattern)
    return true
  })
}

test('FP16: every half value converts back exactly, and float64 rounds to nearest even like Float16Array', () => {
  const F16 = (globalThis as unknown as { Float16Array?: new (n: number) => { [i: number]: number, buffer: ArrayBuffer } }).Float16Array
  assert.ok(F16 != null, 'Node 24 has Float16Array to check against')
  const ref = new F16(1)
  const refBits = new Uint16Array(ref.buffer)
  for (let h = 0; h < 0x10000; h++) {
    refBits[0] = h
    const want = ref[0] as number
    const got = fromHalfBits(h)
    assert.ok(Object.is(want, got) || (Number.isNaN(want) && Number.isNaN(got)), `bits ${h.toString(16)}: ${want} vs ${got}`)
    if (!Number.isNaN(got)) assert.equal(toHalfBits(got), h, `round trip of ${got}`)
    // Exactly half-way to the next half: ties go to the even neighbour.
    const next = fromHalfBits(h + 1)
    if (h < 0x7bff && Number.isFinite(next)) {
      const mid = (got + next) / 2
      ref[0] = mid
      assert.equal(toHalfBits(mid), refBits[0], `tie at ${mid}`)
    }
  }
  for (const v of [0.1, 1 / 3, 65519.99, 65520, 1e-8, 2 ** -25, 2 ** -25 * 1.000001, -0, 1e30]) {
    ref[0] = v
    assert.equal(toHalfBits(v), refBits[0], String(v))
  }
  assert.equal(toHalfBits(NaN) & 0x7c00, 0x7c00)
})

test('every datatype: JSON values → raw little-endian bytes → JSON text, flat and nested alike', () => {
  const cases: Array<{ datatype: DataType, values: unknown[], bytes: Buffer, json: string }> = [
    { datatype: 'BOOL', values: [true, false, true, true], bytes: Buffer.from([1, 0, 1, 1]), json: '[true,false,true,true]' },
    { datatype: 'UINT8', values: [0, 1, 254, 255], bytes: Buffer.from([0, 1, 254, 255]), json: '[0,1,254,255]' },
    { datatype: 'UINT16', values: [0, 1, 65534, 65535], bytes: bytesOf(new Uint16Array([0, 1, 65534, 65535])), json: '[0,1,65534,65535]' },
    { datatype: 'UINT32', values: [0, 7, 2 ** 31, 2 ** 32 - 1], bytes: bytesOf(new Uint32Array([0, 7, 2 ** 31, 2 ** 32 - 1])), json: '[0,7,2147483648,4294967295]' },
    { datatype: 'UINT64', values: [0, 2 ** 53 - 1, '18446744073709551615', '9007199254740993'], bytes: bytesOf(new BigUint64Array([0n, 2n ** 53n - 1n, 2n ** 64n - 1n, 2n ** 53n + 1n])), json: '[0,9007199254740991,18446744073709551615,9007199254740993]' },
    { datatype: 'INT8', values: [-128, -1, 0, 127], bytes: bytesOf(new Int8Array([-128, -1, 0, 127])), json: '[-128,-1,0,127]' },
    { datatype: 'INT16', values: [-32768, -1, 0, 32767], bytes: bytesOf(new Int16Array([-32768, -1, 0, 32767])), json: '[-32768,-1,0,32767]' },
    { datatype: 'INT32', values: [-(2 ** 31), -1, 0, 2 ** 31 - 1], bytes: bytesOf(new Int32Array([-(2 ** 31), -1, 0, 2 ** 31 - 1])), json: '[-2147483648,-1,0,2147483647]' },
    { datatype: 'INT64', values: ['-9223372036854775808', -1, 16000, '9223372036854775807'], bytes: bytesOf(new BigInt64Array([-(2n ** 63n), -1n, 16000n, 2n ** 63n - 1n])), json: '[-9223372036854775808,-1,16000,9223372036854775807]' },
    { datatype: 'FP16', values: [1, -2.5, 0.1, 65504], bytes: bytesOf(new Uint16Array([0x3c00, 0xc100, 0x2e66, 0x7bff])), json: `[1,-2.5,${fromHalfBits(0x2e66)},65504]` },
    { datatype: 'FP32', values: [1.5, -0, 'NaN', '-Infinity'], bytes: bytesOf(new Float32Array([1.5, -0, NaN, -Infinity])), json: '[1.5,-0.0,"NaN","-Infinity"]' },
    { datatype: 'FP64', values: [0.1, 1e300, 'Infinity', -5e-324], bytes: bytesOf(new Float64Array([0.1, 1e300, Infinity, -5e-324])), json: '[0.1,1e+300,"Infinity",-5e-324]' },
    { datatype: 'BYTES', values: ['', 'a', 'héllo', '日本'], bytes: Buffer.from(encodeBytesElements(['', 'a', 'héllo', '日本'].map(s => Buffer.from(s)))), json: '["","a","héllo","日本"]' }
  ]
  for (const c of cases) {
    const flat = tensorFromJson('t', c.datatype, [2, 2], c.values, c.datatype)
    assert.deepEqual(Buffer.from(flat.data), c.bytes, `${c.datatype} bytes`)
    const nested = tensorFromJson('t', c.datatype, [2, 2], [c.values.slice(0, 2), c.values.slice(2)], c.datatype)
    assert.deepEqual(Buffer.from(nested.data), c.bytes, `${c.datatype} nested = flat`)
    assert.equal(dataToJson(flat), c.json, `${c.datatype} JSON`)
    // The JSON the server writes reads back to the same bytes (64-bit digits included).
    const reparsed = decodeInferRequest(Buffer.from(`{"inputs":[{"name":"t","datatype":"${c.datatype}","shape":[4],"data":${c.json}}]}`), undefined)
    assert.deepEqual(Buffer.from((reparsed.inputs[0] as Tensor).data), c.bytes, `${c.datatype} JSON round trip`)
  }
})

test('64-bit integers: literals beyond 2^53 are read exactly from the request text; unrepresentable ones are refused', () => {
  const body = (data: string, datatype = 'INT64'): Buffer => Buffer.from(`{"inputs":[{"name":"n","datatype":"${datatype}","shape":[2],"data":${data}}]}`)
  const exact = decodeInferRequest(body('[9007199254740993, -9223372036854775808]'), undefined)
  assert.deepEqual(decodeElements(exact.inputs[0] as Tensor), [9007199254740993n, -(2n ** 63n)])
  const u = decodeInferRequest(body('[18446744073709551615, 0]', 'UINT64'), undefined)
  assert.deepEqual(decodeElements(u.inputs[0] as Tensor), [2n ** 64n - 1n, 0n])
  invalid(() => decodeInferRequest(body('[9223372036854775808, 0]'), undefined), /element 0 .* out of range for INT64/)
  invalid(() => decodeInferRequest(body('[1e19, 0]'), undefined), /cannot be read exactly/)
  invalid(() => decodeInferRequest(body('["12x", 0]'), undefined), /not an integer or a decimal string/)
  invalid(() => decodeInferRequest(body('[-1, 0]', 'UINT64'), undefined), /out of range for UINT64/)
  invalid(() => decodeInferRequest(body('[1.5, 0]'), undefined), /not an integer/)
  // A big integer in an FP64 tensor is just a number.
  const f = decodeInferRequest(body('[9007199254740993, 0]', 'FP64'), undefined)
  assert.deepEqual(decodeElements(f.inputs[0] as Tensor), [9007199254740992, 0])
})

test('values out of range or of the wrong kind are 400s naming input and element', () => {
  const t = (datatype: DataType, values: unknown[]): Tensor => tensorFromJson('x', datatype, [values.length], values, "input 'x'")
  invalid(() => t('UINT8', [0, 256]), /input 'x': element 1 \(256\) is out of range for UINT8 \(0\.\.255\)/)
  invalid(() => t('UINT8', [-1]), /out of range for UINT8/)
  invalid(() => t('INT8', [128]), /out of range for INT8/)
  invalid(() => t('INT32', [1.5]), /element 0 \(1\.5\) is not an integer \(INT32\)/)
  invalid(() => t('UINT16', ['3']), /not an integer/)
  invalid(() => t('BOOL', [1]), /not true or false/)
  invalid(() => t('FP32', ['1.0']), /not a number/)
  invalid(() => t('FP32', [1e39]), /out of range for FP32/)
  invalid(() => t('FP16', [65520]), /out of range for FP16/)
  invalid(() => t('FP16', [null]), /not a number/)
  invalid(() => t('BYTES', [3]), /not a string \(BYTES\)/)
  assert.equal(t('FP16', [65519]).data.length, 2, 'rounds to 65504, in range')
})

test('shape and data must agree: flat count or nesting exactly as the shape', () => {
  const req = (input: Record<string, unknown>): Buffer => Buffer.from(JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', ...input }] }))
  invalid(() => decodeInferRequest(req({ shape: [2, 3], data: [1, 2, 3, 4, 5] }), undefined), /shape \[2, 3\] has 6 elements but "data" has 5/)
  invalid(() => decodeInferRequest(req({ shape: [2, 2], data: [[1, 2], [3]] }), undefined), /data\[1\] has 1 entries, expected 2/)
  invalid(() => decodeInferRequest(req({ shape: [2, 2], data: [[1, 2], 3, 4] }), undefined), /nested "data" does not match shape/)
  invalid(() => decodeInferRequest(req({ shape: [2], data: [[1, 2], [3, 4]] }), undefined), /nested deeper than shape/)
  invalid(() => decodeInferRequest(req({ shape: [2, -1], data: [1, 2] }), undefined), /not a non-negative integer/)
  invalid(() => decodeInferRequest(req({ shape: [1.5], data: [1] }), undefined), /not a non-negative integer/)
  invalid(() => decodeInferRequest(req({ shape: '2', data: [1, 2] }), undefined), /"shape" must be an array/)
  invalid(() => decodeInferRequest(req({ shape: [2 ** 40, 2 ** 40], data: [] }), undefined), /too many elements/)
  invalid(() => decodeInferRequest(req({ shape: [2 ** 30], data: [] }), undefined), /exceeds \d+ bytes/)
  invalid(() => decodeInferRequest(req({ shape: [1], data: 1 }), undefined), /"data" must be an array/)
  invalid(() => decodeInferRequest(req({ shape: [1] }), undefined), /"data" is missing/)
  // Scalars and empty tensors.
  assert.deepEqual(decodeInferRequest(req({ shape: [], data: [7] }), undefined).inputs[0]?.data, new Uint8Array(new Float32Array([7]).buffer))
  assert.equal(decodeInferRequest(req({ shape: [0, 3], data: [] }), undefined).inputs[0]?.data.length, 0)
  assert.equal(decodeInferRequest(req({ shape: [2, 0], data: [[], []] }), undefined).inputs[0]?.data.length, 0)
})

test('request structure: malformed JSON, bad fields, duplicates, unknown datatype', () => {
  invalid(() => decodeInferRequest(Buffer.from('{"inputs": [}'), undefined), /not valid JSON/)
  invalid(() => decodeInferRequest(Buffer.from('[]'), undefined), /must be a JSON object/)
  invalid(() => decodeInferRequest(Buffer.from(''), undefined), /not valid JSON/)
  invalid(() => decodeInferRequest(Buffer.from([0x7b, 0xff, 0x7d]), undefined), /not valid UTF-8/)
  invalid(() => decodeInferRequest(Buffer.from('{}'), undefined), /"inputs" must be an array/)
  invalid(() => decodeInferRequest(Buffer.from('{"id": 5, "inputs": []}'), undefined), /"id" must be a string/)
  invalid(() => decodeInferRequest(Buffer.from('{"inputs": [{"name": "x", "datatype": "FLOAT32", "shape": [1], "data": [1]}]}'), undefined), /unknown datatype "FLOAT32" \(one of BOOL, /)
  invalid(() => decodeInferRequest(Buffer.from('{"inputs": [{"name": "", "datatype": "FP32", "shape": [1], "data": [1]}]}'), undefined), /"name" must be a non-empty string/)
  const x = { name: 'x', datatype: 'FP32', shape: [1], data: [1] }
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x, x] })), undefined), /input 'x' is given twice/)
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], outputs: [{ name: 'y' }, { name: 'y' }] })), undefined), /requested twice/)
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], parameters: { binary_data_output: 'yes' } })), undefined), /"binary_data_output" must be true or false/)
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], parameters: { nested: { a: 1 } } })), undefined), /parameter "nested" must be a string, number or boolean/)
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], parameters: { timeout: -5 } })), undefined), /"timeout" must be a non-negative integer/)
  invalid(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], outputs: [{ name: 'y', parameters: { binary_data: 1 } }] })), undefined), /"binary_data" must be true or false/)

  const ok = decodeInferRequest(Buffer.from(JSON.stringify({
    id: 'r1', model_name: 'ignored', inputs: [x], outputs: [{ name: 'a', parameters: { binary_data: true } }, { name: 'b' }],
    parameters: { binary_data_output: false, timeout: 250_000, custom: 'kept out' }
  })), undefined)
  assert.equal(ok.id, 'r1')
  assert.deepEqual(ok.outputs, [{ name: 'a', binary: true }, { name: 'b', binary: undefined }])
  assert.equal(ok.binaryOutput, false)
  assert.equal(ok.timeoutUs, 250_000)
  assert.equal(decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [x], outputs: [] })), undefined).outputs, undefined, 'an empty list means every output')
})

test('binary extension: inputs in order after the JSON header, sizes adding up to the body exactly', () => {
  const u32 = new Uint32Array([1, 2, 3, 4])
  const { body, length } = binaryBody({
    inputs: [
      { name: 'input0', shape: [2, 2], datatype: 'UINT32', parameters: { binary_data_size: 16 } },
      { name: 'json', shape: [1], datatype: 'INT8', data: [-3] },
      { name: 'input1', shape: [3], datatype: 'BOOL', parameters: { binary_data_size: 3 } },
      { name: 'text', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: 13 } }
    ]
  }, bytesOf(u32), Buffer.from([1, 0, 1]), Buffer.from(encodeBytesElements([Buffer.from('abc'), Buffer.from('de')])))
  const r = decodeInferRequest(body, length)
  assert.deepEqual(r.inputs.map(t => t.name), ['input0', 'json', 'input1', 'text'])
  assert.deepEqual(decodeElements(r.inputs[0] as Tensor), [1, 2, 3, 4])
  assert.deepEqual(decodeElements(r.inputs[1] as Tensor), [-3])
  assert.deepEqual(decodeElements(r.inputs[2] as Tensor), [true, false, true])
  assert.deepEqual((decodeElements(r.inputs[3] as Tensor) as Uint8Array[]).map(b => Buffer.from(b).toString()), ['abc', 'de'])
  for (const t of r.inputs) assert.equal(t.data.byteOffset % 8, 0, `${t.name} is aligned for typed-array views`)

  const one = (size: number, ...parts: Uint8Array[]): { body: Buffer, length: string } => binaryBody({ inputs: [{ name: 'x', shape: [2], datatype: 'FP32', parameters: { binary_data_size: size } }] }, ...parts)
  const f = bytesOf(new Float32Array([1, 2]))
  let b = one(8, f)
  assert.deepEqual(decodeElements(decodeInferRequest(b.body, b.length).inputs[0] as Tensor), [1, 2])
  b = one(4, f.subarray(0, 4))
  invalid(() => decodeInferRequest(b.body, b.length), /4 bytes of data, but shape \[2\] of FP32 needs 8/)
  b = one(8, f, Buffer.from([9]))
  invalid(() => decodeInferRequest(b.body, b.length), /1 bytes after the JSON header/)
  b = one(12, f)
  invalid(() => decodeInferRequest(b.body, b.length), /runs past the end of the body/)
  b = one(8, f)
  invalid(() => decodeInferRequest(b.body, undefined), /not valid (JSON|UTF-8).*needs the Inference-Header-Content-Length header/)
  invalid(() => decodeInferRequest(b.body, String(b.body.length + 1)), /exceeds the body/)
  invalid(() => decodeInferRequest(b.body, 'twelve'), /must be one non-negative integer/)
  invalid(() => decodeInferRequest(b.body, ['10', '10']), /must be one non-negative integer/)
  invalid(() => decodeInferRequest(b.body, String(Number(b.length) - 1)), /not valid JSON/)
  const json = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: [2], datatype: 'FP32', parameters: { binary_data_size: 8 } }] }))
  invalid(() => decodeInferRequest(json, undefined), /is the Inference-Header-Content-Length header missing/)
  b = binaryBody({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1], parameters: { binary_data_size: 4 } }] }, f.subarray(0, 4))
  invalid(() => decodeInferRequest(b.body, b.length), /both "data" and "binary_data_size"/)
  b = binaryBody({ inputs: [{ name: 'x', shape: [2], datatype: 'BOOL', parameters: { binary_data_size: 2 } }] }, Buffer.from([1, 2]))
  invalid(() => decodeInferRequest(b.body, b.length), /BOOL element 1 is byte 2/)
  b = binaryBody({ inputs: [{ name: 'x', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: 9 } }] }, Buffer.from(encodeBytesElements([Buffer.from('abcde')])))
  invalid(() => decodeInferRequest(b.body, b.length), /BYTES data holds 1 element, shape needs 2/)
  b = binaryBody({ inputs: [{ name: 'x', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 6 } }] }, Buffer.from([9, 0, 0, 0, 1, 2]))
  invalid(() => decodeInferRequest(b.body, b.length), /declares 9 bytes but only 2 remain/)
  b = binaryBody({ inputs: [{ name: 'x', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 2 } }] }, Buffer.from([9, 0]))
  invalid(() => decodeInferRequest(b.body, b.length), /ends inside the 4-byte length/)
})

const signature: ModelSignature = {
  inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, -1] }, { name: 'sr', datatype: 'INT64', shape: [] }],
  outputs: [{ name: 'output', datatype: 'FP32', shape: [-1, 1] }, { name: 'stateN', datatype: 'FP32', shape: [2, -1, 128] }]
}

test('the edge checks inputs and requested outputs against the model signature', () => {
  const input = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ name: 'input', datatype: 'FP32', shape: [1, 2], data: [0, 0], ...over })
  const sr = { name: 'sr', datatype: 'INT64', shape: [], data: [16000] }
  const req = (inputs: unknown[], outputs?: unknown[]): Buffer => Buffer.from(JSON.stringify({ inputs, ...(outputs != null ? { outputs } : {}) }))
  assert.equal(decodeInferRequest(req([input(), sr], [{ name: 'stateN' }]), undefined, signature).inputs.length, 2)
  invalid(() => decodeInferRequest(req([input({ name: 'inpt' }), sr]), undefined, signature), /unknown input 'inpt' \(model inputs: input, sr\)/)
  invalid(() => decodeInferRequest(req([input({ datatype: 'FP64' }), sr]), undefined, signature), /input 'input': datatype FP64, the model expects FP32/)
  invalid(() => decodeInferRequest(req([input({ shape: [2], data: [0, 0] }), sr]), undefined, signature), /input 'input': shape \[2\] has rank 1, the model expects rank 2 \[-1, -1\]/)
  invalid(() => decodeInferRequest(req([input(), { ...sr, shape: [1] }]), undefined, signature), /input 'sr': shape \[1\] has rank 1, the model expects rank 0 \[\]/)
  invalid(() => decodeInferRequest(req([input()]), undefined, signature), /missing input 'sr' \(INT64 \[\]\)/)
  invalid(() => decodeInferRequest(req([input(), sr], [{ name: 'state' }]), undefined, signature), /unknown output 'state' requested \(model outputs: output, stateN\)/)
  assert.equal(decodeInferRequest(req([{ ...sr }, input({ shape: [3, 0], data: [] })]), undefined, signature).inputs.length, 2, 'a zero-size dimension fits a symbolic one')
})

test('raw binary request (Inference-Header-Content-Length: 0): the body is the one input, shape deduced from the signature', () => {
  const one: ModelSignature = { inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 4] }] }
  const r = decodeInferRequest(bytesOf(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8])), '0', one)
  assert.deepEqual(r.inputs[0]?.shape, [2, 4])
  assert.equal(r.binaryOutput, true, 'every output comes back binary')
  assert.deepEqual(decodeElements(r.inputs[0] as Tensor), [1, 2, 3, 4, 5, 6, 7, 8])
  // Two variable dimensions: the leading (batch) one is 1, the other deduced.
  const two: ModelSignature = { inputs: [{ name: 'x', datatype: 'INT16', shape: [-1, -1] }], outputs: [] }
  assert.deepEqual(decodeInferRequest(bytesOf(new Int16Array([1, 2, 3])), '0', two).inputs[0]?.shape, [1, 3])
  const bytes: ModelSignature = { inputs: [{ name: 'b', datatype: 'BYTES', shape: [1] }], outputs: [] }
  const rb = decodeInferRequest(Buffer.from('raw text'), '0', bytes)
  assert.deepEqual((decodeElements(rb.inputs[0] as Tensor) as Uint8Array[]).map(b => Buffer.from(b).toString()), ['raw text'])
  invalid(() => decodeInferRequest(Buffer.alloc(6), '0', one), /not a whole number of FP32 elements/)
  invalid(() => decodeInferRequest(Buffer.alloc(20), '0', one), /5 elements do not fit shape \[-1, 4\]/)
  invalid(() => decodeInferRequest(Buffer.alloc(8), '0', signature), /only for a model with one input; this one has 2/)
  invalid(() => decodeInferRequest(Buffer.alloc(8), '0', undefined), /needs the model's signature/)
  invalid(() => decodeInferRequest(Buffer.alloc(8), '0', { inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1, -1] }], outputs: [] }), /more than one variable dimension/)
})

function result (outputs: Tensor[]): InferResult {
  return { model: 'm', outputs, queueMs: 1, computeMs: 2 }
}
const f32 = (name: string, shape: number[], values: number[]): Tensor => ({ name, datatype: 'FP32', shape, data: new Uint8Array(new Float32Array(values).buffer) })

test('response: JSON outputs, binary outputs after the JSON header, only and in the order requested', () => {
  const big: Tensor = { name: 'n', datatype: 'INT64', shape: [1], data: new Uint8Array(new BigInt64Array([2n ** 62n + 1n]).buffer) }
  const res = result([f32('a', [2], [1.5, NaN]), f32('b', [1, 1], [-0]), big])
  const json = encodeInferResponse(res, { id: 'q', inputs: [], binaryOutput: false }, 'm')
  assert.equal(json.headers['content-type'], 'application/json')
  assert.equal(json.headers['inference-header-content-length'], undefined)
  assert.equal(Buffer.from(json.body).toString(), '{"model_name":"m","id":"q","outputs":[{"name":"a","datatype":"FP32","shape":[2],"data":[1.5,"NaN"]},{"name":"b","datatype":"FP32","shape":[1,1],"data":[-0.0]},{"name":"n","datatype":"INT64","shape":[1],"data":[4611686018427387905]}]}')

  const mixed = encodeInferResponse({ ...res, version: '3' }, { inputs: [], outputs: [{ name: 'n', binary: true }, { name: 'a', binary: false }, { name: 'b' }], binaryOutput: true }, 'm')
  assert.equal(mixed.headers['content-type'], 'application/octet-stream')
  const n = Number(mixed.headers['inference-header-content-length'])
  const header = JSON.parse(Buffer.from(mixed.body.subarray(0, n)).toString())
  assert.equal(header.model_version, '3')
  assert.deepEqual(header.outputs.map((o: { name: string }) => o.name), ['n', 'a', 'b'])
  assert.deepEqual(header.outputs[0].parameters, { binary_data_size: 8 })
  assert.deepEqual(header.outputs[1].data, [1.5, 'NaN'])
  assert.deepEqual(header.outputs[2].parameters, { binary_data_size: 4 }, 'binary_data_output applies to an output without its own binary_data')
  assert.deepEqual(Buffer.from(mixed.body.subarray(n)), Buffer.concat([Buffer.from(big.data), Buffer.from(new Float32Array([-0]).buffer)]))
  // The client decoder reads it back exactly.
  const back = decodeInferResponse(mixed.body, String(n))
  assert.deepEqual(back.outputs.map(o => [o.name, o.values]), [['n', [2n ** 62n + 1n]], ['a', [1.5, 'NaN']], ['b', [-0]]])

  assert.throws(() => encodeInferResponse(res, { inputs: [], outputs: [{ name: 'zz' }], binaryOutput: false }, 'm'), (e: unknown) => e instanceof InferenceFailedError && e.status === 500)
  const broken = result([{ name: 'x', datatype: 'FP32', shape: [3], data: new Uint8Array(8) }])
  assert.throws(() => encodeInferResponse(broken, { inputs: [], binaryOutput: false }, 'm'), (e: unknown) => e instanceof InferenceFailedError && /needs 12/.test(e.message))
  const notText: Tensor = { name: 'b', datatype: 'BYTES', shape: [1], data: encodeBytesElements([new Uint8Array([0xff, 0xfe])]) }
  invalid(() => encodeInferResponse(result([notText]), { inputs: [], binaryOutput: false }, 'm'), /not UTF-8 text .*"binary_data": true/)
  assert.doesNotThrow(() => encodeInferResponse(result([notText]), { inputs: [], binaryOutput: true }, 'm'))
})

test('client side: tensors from nested JSON values must be rectangular', () => {
  assert.deepEqual(tensorOfValue(3), { shape: [], data: [3] })
  assert.deepEqual(tensorOfValue([[1, 2, 3], [4, 5, 6]]), { shape: [2, 3], data: [1, 2, 3, 4, 5, 6] })
  assert.deepEqual(tensorOfValue([]), { shape: [0], data: [] })
  assert.deepEqual(tensorOfValue([[], []]), { shape: [2, 0], data: [] })
  assert.deepEqual(tensorOfValue([[true], [false]]), { shape: [2, 1], data: [true, false] })
  assert.throws(() => tensorOfValue([[1, 2], [3]]), /not rectangular/)
  assert.throws(() => tensorOfValue([1, [2]]), /not rectangular/)
  assert.throws(() => tensorOfValue([{ a: 1 }]), /elements must be numbers/)
  assert.throws(() => tensorOfValue(null), /expected a number/)
})

test('encodeElements is strict about the element count it is given, not the shape (flattenData does that)', () => {
  assert.equal(encodeElements([1, 2, 3], 'INT16', 'x').length, 6)
  assert.equal(encodeElements([], 'BYTES', 'x').length, 0)
})
