import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { encodeBytesElements } from '../../src/inference/codec.ts'
import { validateInputs } from '../../src/inference/index.ts'
import { InvalidInferRequestError, type InferRequest, type ModelSignature, type Tensor } from '../../src/serving/types.ts'

// Silero VAD's signature (as the pool reports it) plus a BYTES input, to cover every rule.
const SIGNATURE: ModelSignature = {
  inputs: [
    { name: 'input', datatype: 'FP32', shape: [-1, -1] },
    { name: 'state', datatype: 'FP32', shape: [2, -1, 128] },
    { name: 'sr', datatype: 'INT64', shape: [] },
    { name: 'text', datatype: 'BYTES', shape: [-1] }
  ],
  outputs: [
    { name: 'output', datatype: 'FP32', shape: [-1, 1] },
    { name: 'stateN', datatype: 'FP32', shape: [-1, -1, -1] }
  ]
}

function tensors (batch = 1): Tensor[] {
  return [
    { name: 'input', datatype: 'FP32', shape: [batch, 512], data: new Uint8Array(batch * 512 * 4) },
    { name: 'state', datatype: 'FP32', shape: [2, batch, 128], data: new Uint8Array(2 * batch * 128 * 4) },
    { name: 'sr', datatype: 'INT64', shape: [], data: new Uint8Array(8) },
    { name: 'text', datatype: 'BYTES', shape: [2], data: encodeBytesElements(['héllo', '']) }
  ]
}

function request (change: (inputs: Tensor[]) => Tensor[] = t => t, outputs?: string[]): InferRequest {
  return { inputs: change(tensors()), outputs, deadline: Date.now() + 1000 }
}

/** Replaces one field of the input called `name`. */
function withInput (name: string, patch: Partial<Tensor>): (inputs: Tensor[]) => Tensor[] {
  return inputs => inputs.map(t => t.name === name ? { ...t, ...patch } : t)
}

/** Asserts a 400 whose message names `mentions` (the input or output at fault). */
function rejects (req: InferRequest, mentions: string): void {
  assert.throws(() => { validateInputs(SIGNATURE, req) }, (err: unknown) => {
    assert.ok(err instanceof InvalidInferRequestError, `expected InvalidInferRequestError, got ${String(err)}`)
    assert.equal(err.code, 'ERR_INVALID_INPUT')
    assert.equal(err.status, 400)
    assert.ok(err.message.includes(`'${mentions}'`), `message should name '${mentions}': ${err.message}`)
    return true
  })
}

describe('validateInputs', () => {
  test('accepts a well-formed request, any size for symbolic dimensions, inputs in any order', () => {
    validateInputs(SIGNATURE, request())
    validateInputs(SIGNATURE, { inputs: tensors(3).reverse(), deadline: 0 })
    validateInputs(SIGNATURE, request(withInput('input', { shape: [0, 7], data: new Uint8Array(0) })))
    validateInputs(SIGNATURE, request(t => t, ['stateN']))
    validateInputs(SIGNATURE, request(t => t, []))
  })

  test('every model input must be present exactly once, and no other', () => {
    rejects(request(inputs => inputs.filter(t => t.name !== 'sr')), 'sr')
    rejects(request(inputs => [...inputs, { ...inputs[2]! }]), 'sr')
    rejects(request(inputs => [...inputs, { name: 'extra', datatype: 'FP32', shape: [1], data: new Uint8Array(4) }]), 'extra')
  })

  test('datatype must equal the model\'s', () => {
    rejects(request(withInput('sr', { datatype: 'INT32', data: new Uint8Array(4) })), 'sr')
    rejects(request(withInput('input', { datatype: 'FP64', data: new Uint8Array(512 * 8) })), 'input')
  })

  test('rank and every fixed dimension must match; dimensions are non-negative integers', () => {
    rejects(request(withInput('state', { shape: [2, 1, 64], data: new Uint8Array(2 * 64 * 4) })), 'state')
    rejects(request(withInput('state', { shape: [1, 1, 128], data: new Uint8Array(128 * 4) })), 'state')
    rejects(request(withInput('state', { shape: [2, 128], data: new Uint8Array(2 * 128 * 4) })), 'state')
    rejects(request(withInput('sr', { shape: [1] })), 'sr')
    rejects(request(withInput('input', { shape: [-1, 512] })), 'input')
    rejects(request(withInput('input', { shape: [1.5, 512] })), 'input')
    rejects(request(withInput('input', { shape: 'x' as unknown as number[] })), 'input')
  })

  test('data length must be elements × element size (a scalar has one element)', () => {
    rejects(request(withInput('input', { data: new Uint8Array(512 * 4 - 1) })), 'input')
    rejects(request(withInput('input', { data: new Uint8Array(512 * 4 + 4) })), 'input')
    rejects(request(withInput('sr', { data: new Uint8Array(16) })), 'sr')
    rejects(request(withInput('sr', { data: new Uint8Array(0) })), 'sr')
    rejects(request(withInput('input', { data: Array.from({ length: 2048 }, () => 0) as unknown as Uint8Array })), 'input')
  })

  test('BYTES: well-formed length-prefixed UTF-8 elements, as many as the shape says', () => {
    rejects(request(withInput('text', { shape: [3] })), 'text')
    rejects(request(withInput('text', { data: new Uint8Array([5, 0, 0, 0, 104, 105]) })), 'text') // length past the end
    rejects(request(withInput('text', { shape: [1], data: new Uint8Array([1, 0, 0]) })), 'text') // truncated prefix
    rejects(request(withInput('text', { shape: [1], data: encodeBytesElements([new Uint8Array([0xff, 0xfe])]) })), 'text')
    validateInputs(SIGNATURE, request(withInput('text', { shape: [0], data: new Uint8Array(0) })))
  })

  test('requested outputs must exist, once each', () => {
    rejects(request(t => t, ['output', 'nope']), 'nope')
    rejects(request(t => t, ['output', 'output']), 'output')
  })
})
