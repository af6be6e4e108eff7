import { encodeModel, floatTensor, OnnxDataType, type OnnxModel } from './onnx-writer.ts'
import { mulberry32 } from '../util/random.ts'

/**
 * The built-in demo model that `astrad start` with no arguments deploys as app `demo`: a small
 * two-layer classifier generated here (no download, no dependency).
 *
 *   x [batch, 4] → MatMul W1 [4, 8] → Add b1 → Relu → MatMul W2 [8, 3] → Add b2 → Softmax
 *   → probabilities [batch, 3]
 *
 * Its weights are fixed pseudo-random numbers: the three "classes" mean nothing; the model
 * exists to show a working cluster. The bytes must never change by accident: they hash to the
 * demo's model id, which every node of a cluster (of any astrad version) must agree on.
 */

/** App name the demo is deployed as. */
export const DEMO_APP = 'demo'
export const DEMO_INPUT = 'x'
export const DEMO_OUTPUT = 'probabilities'
/** Features per row (the input's second dimension). */
export const DEMO_FEATURES = 4
export const DEMO_HIDDEN = 8
export const DEMO_CLASSES = 3
/** One input row for examples (values exact in float32, so the printed JSON is what runs). */
export const DEMO_EXAMPLE_INPUT: readonly number[] = Object.freeze([0.5, -1.25, 2, 0.75])

// Fixed for all time (see the file comment): changing any of these changes the model id.
/** Seed of the weight generator. */
const SEED = 0x61737472 // 'astr'
/** ONNX IR version 7 goes with opset 13 (ONNX 1.8), read by every onnxruntime since 1.6. */
const IR_VERSION = 7
/** Opset 13: Softmax over one axis (older opsets flatten the trailing axes). */
const OPSET = 13
/** No astrad version here: a new release must produce the same bytes. */
const PRODUCER = { name: 'astrad-demo', version: '1' }

interface DemoWeights {
  w1: number[] // [4, 8] row-major
  b1: number[] // [8]
  w2: number[] // [8, 3]
  b2: number[] // [3]
}

/**
 * Weights are multiples of 1/256 in [-1, 1]: exact in float32, so the model file holds exactly
 * the numbers demoReference computes with.
 */
function weights (): DemoWeights {
  const next = mulberry32(SEED)
  const value = (): number => ((next() % 513) - 256) / 256
  const take = (n: number): number[] => Array.from({ length: n }, value)
  return {
    w1: take(DEMO_FEATURES * DEMO_HIDDEN),
    b1: take(DEMO_HIDDEN),
    w2: take(DEMO_HIDDEN * DEMO_CLASSES),
    b2: take(DEMO_CLASSES)
  }
}

function describe (): OnnxModel {
  const w = weights()
  return {
    irVersion: IR_VERSION,
    opsets: [{ version: OPSET }],
    producerName: PRODUCER.name,
    producerVersion: PRODUCER.version,
    graph: {
      name: 'astrad_demo_classifier',
      nodes: [
        { opType: 'MatMul', name: 'fc1', inputs: [DEMO_INPUT, 'W1'], outputs: ['h1'] },
        { opType: 'Add', name: 'fc1_bias', inputs: ['h1', 'b1'], outputs: ['h1b'] },
        { opType: 'Relu', name: 'relu', inputs: ['h1b'], outputs: ['h'] },
        { opType: 'MatMul', name: 'fc2', inputs: ['h', 'W2'], outputs: ['z1'] },
        { opType: 'Add', name: 'fc2_bias', inputs: ['z1', 'b2'], outputs: ['logits'] },
        { opType: 'Softmax', name: 'softmax', inputs: ['logits'], outputs: [DEMO_OUTPUT], attributes: [{ name: 'axis', int: -1 }] }
      ],
      initializers: [
        floatTensor('W1', [DEMO_FEATURES, DEMO_HIDDEN], w.w1),
        floatTensor('b1', [DEMO_HIDDEN], w.b1),
        floatTensor('W2', [DEMO_HIDDEN, DEMO_CLASSES], w.w2),
        floatTensor('b2', [DEMO_CLASSES], w.b2)
      ],
      inputs: [{ name: DEMO_INPUT, elemType: OnnxDataType.FLOAT, shape: ['batch', DEMO_FEATURES] }],
      outputs: [{ name: DEMO_OUTPUT, elemType: OnnxDataType.FLOAT, shape: ['batch', DEMO_CLASSES] }]
    }
  }
}

/** The demo model's ONNX bytes: the same on every call (a fresh copy the caller may keep). */
export function demoModel (): Uint8Array {
  return encodeModel(describe())
}

/**
 * The demo model's math in plain JavaScript (float64 over the float32 inputs), for tests and
 * for checking a cluster's answer: one probability row of DEMO_CLASSES per input row.
 */
export function demoReference (rows: number[][]): number[][] {
  const w = weights()
  return rows.map((row, r) => {
    if (row.length !== DEMO_FEATURES) throw new RangeError(`row ${r}: expected ${DEMO_FEATURES} values, got ${row.length}`)
    const x = row.map(v => Math.fround(v))
    const h = Array.from({ length: DEMO_HIDDEN }, (_, j) => {
      let s = w.b1[j] as number
      for (let i = 0; i < DEMO_FEATURES; i++) s += (x[i] as number) * (w.w1[i * DEMO_HIDDEN + j] as number)
      return Math.max(0, s)
    })
    const logits = Array.from({ length: DEMO_CLASSES }, (_, k) => {
      let s = w.b2[k] as number
      for (let j = 0; j < DEMO_HIDDEN; j++) s += (h[j] as number) * (w.w2[j * DEMO_CLASSES + k] as number)
      return s
    })
    const max = Math.max(...logits)
    const e = logits.map(z => Math.exp(z - max))
    const sum = e.reduce((a, b) => a + b, 0)
    return e.map(v => v / sum)
  })
}

/** The KServe v2 JSON body for one DEMO_EXAMPLE_INPUT row. */
export function demoRequestBody (): string {
  return JSON.stringify({ inputs: [{ name: DEMO_INPUT, shape: [1, DEMO_FEATURES], datatype: 'FP32', data: DEMO_EXAMPLE_INPUT }] })
}

/** A host for a URL: wildcard listen addresses are reached on loopback, IPv6 goes in brackets. */
function urlHost (host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1'
  if (host === '::' || host === '[::]') return '[::1]'
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

/** The one-line curl command that asks the demo app for one prediction (README, start banner). */
export function demoCurl (rpc: { host: string, port: number }): string {
  return `curl -s http://${urlHost(rpc.host)}:${rpc.port}/v2/models/${DEMO_APP}/infer -H 'content-type: application/json' -d '${demoRequestBody()}'`
}
