import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Command, CommanderError } from 'commander'
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, type CliIo } from '../../src/cli/index.ts'
import { inferCommand } from '../../src/cli/commands/infer.ts'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { AstradError, ConfigError } from '../../src/util/errors.ts'
import { registerKServeRoutes } from '../../src/serving/kserve/index.ts'
import { QueueFullError, type InferRequest, type InferResult, type ModelStatus, type ServingBackend, type Tensor } from '../../src/serving/types.ts'

/**
 * `astrad infer` against the daemon's real RPC server and KServe routes with a fake backend.
 * The command is run the way runCli runs commands (same exit-code mapping), on its own program
 * because registering it in createCli is the integrator's step.
 */

const TOKEN = 't0ken'
const status = (name: string, signature?: ModelStatus['signature']): ModelStatus => ({ name, versions: ['1'], platform: 'onnx_onnxv1', ready: true, ...(signature != null ? { signature } : {}) })
const models = new Map<string, ModelStatus>([
  ['double', status('double', {
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 3] }, { name: 'sum', datatype: 'FP64', shape: [1] }]
  })],
  ['typed', status('typed', {
    inputs: [
      { name: 'flag', datatype: 'BOOL', shape: [-1] }, { name: 'id', datatype: 'INT64', shape: [] },
      { name: 'text', datatype: 'BYTES', shape: [-1] }, { name: 'half', datatype: 'FP16', shape: [-1] }
    ],
    outputs: [{ name: 'flag', datatype: 'BOOL', shape: [-1] }, { name: 'id', datatype: 'INT64', shape: [] }, { name: 'text', datatype: 'BYTES', shape: [-1] }, { name: 'half', datatype: 'FP16', shape: [-1] }]
  })],
  ['long', status('long', { inputs: [{ name: 'n', datatype: 'INT32', shape: [1] }], outputs: [{ name: 'seq', datatype: 'INT32', shape: [-1] }] })],
  ['busy', status('busy', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [1] }] })],
  ['hang', status('hang', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [1] }] })],
  ['loading', status('loading')]
])

const seen: InferRequest[] = []
const backend: ServingBackend = {
  serverReady: () => true,
  models: () => [...models.keys()],
  model: name => models.get(name),
  infer: async (name, req): Promise<InferResult> => {
    seen.push(req)
    const done = (outputs: Tensor[]): InferResult => ({ model: name, outputs: req.outputs == null ? outputs : outputs.filter(o => req.outputs?.includes(o.name)), queueMs: 0, computeMs: 0 })
    const x = req.inputs[0] as Tensor
    switch (name) {
      case 'double': {
        const v = new Float32Array(x.data.buffer, x.data.byteOffset, x.data.length / 4)
        return done([
          { name: 'y', datatype: 'FP32', shape: x.shape, data: new Uint8Array(v.map(e => e * 2).buffer) },
          { name: 'sum', datatype: 'FP64', shape: [1], data: new Uint8Array(new Float64Array([v.reduce((a, b) => a + b, 0)]).buffer) }
        ])
      }
      case 'typed': return done(req.inputs.map(t => ({ ...t, data: Uint8Array.from(t.data) })))
      case 'long': {
        const n = new Int32Array(Uint8Array.from(x.data).buffer)[0] ?? 0
        return done([{ name: 'seq', datatype: 'INT32', shape: [n], data: new Uint8Array(Int32Array.from({ length: n }, (_, i) => i).buffer) }])
      }
      case 'busy': throw new QueueFullError('all replicas of busy are full')
      case 'hang': return await new Promise<never>(() => {})
      default: throw new Error('no such fake')
    }
  }
}

const server = new RpcServer({ logger: silentLogger(), metrics: createMetrics() }, { host: '127.0.0.1', port: 0, token: TOKEN })
registerKServeRoutes(server, () => backend, { logger: silentLogger() })
let rpc: string[] = []
before(async () => { rpc = ['--rpc', `127.0.0.1:${(await server.listen()).port}`, '--rpc-token', TOKEN] })
after(async () => { await server.close() })

/** Runs `astrad infer ...` with runCli's exit-code mapping. */
async function run (...args: string[]): Promise<{ code: number, out: string, err: string }> {
  let out = ''
  let err = ''
  const io: CliIo = { stdout: s => { out += s }, stderr: s => { err += s } }
  const program = new Command('astrad').exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
  program.addCommand(inferCommand(io).exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr }))
  let code = EXIT_OK
  try {
    await program.parseAsync(['node', 'astrad', 'infer', ...args])
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode === 0 ? EXIT_OK : EXIT_USAGE
    else if (e instanceof ConfigError) { err += `astrad: ${e.message}\n`; code = EXIT_USAGE } else if (e instanceof AstradError) { err += `astrad: ${e.message}\n`; code = EXIT_FAILED } else throw e
  }
  return { code, out, err }
}

test('infers with datatypes from the signature and shapes from the nesting; prints name, datatype, shape, values', async () => {
  const r = await run('double', '--input', 'x=[[1, 2, 3], [0.1, -5, 1e3]]', ...rpc)
  assert.equal(r.code, EXIT_OK, r.err)
  assert.equal(r.out, 'y  FP32  [2, 3]\n  [2, 4, 6, 0.2, -10, 2000]\nsum  FP64  [1]\n  [1001.1000000014901]\n')
  const req = seen.at(-1) as InferRequest
  assert.deepEqual(req.inputs.map(t => [t.name, t.datatype, t.shape]), [['x', 'FP32', [2, 3]]])

  const only = await run('double', '--input', 'x=[[1,1,1]]', '--output', 'sum', ...rpc)
  assert.equal(only.out, 'sum  FP64  [1]\n  [3]\n')
  assert.deepEqual(seen.at(-1)?.outputs, ['sum'])
})

test('every kind of value: scalars, booleans, exact 64-bit integers, strings, FP16 rounding', async () => {
  const r = await run('typed', '--input', 'flag=[true,false]', '--input', 'id=9007199254740993', '--input', 'text=["héllo","x"]', '--input', 'half=[0.1, 65504]', ...rpc)
  assert.equal(r.code, EXIT_OK, r.err)
  assert.equal(r.out, [
    'flag  BOOL  [2]\n  [true, false]\n',
    'id  INT64  []\n  [9007199254740993]\n',
    'text  BYTES  [2]\n  ["héllo", "x"]\n',
    'half  FP16  [2]\n  [0.1, 65504]\n'
  ].join(''))
})

test('--json prints the server\'s JSON answer as sent, digits and all', async () => {
  const r = await run('typed', '--input', 'flag=[true]', '--input', 'id=-9223372036854775808', '--input', 'text=[]', '--input', 'half=[1]', '--json', ...rpc)
  assert.equal(r.code, EXIT_OK, r.err)
  assert.match(r.out, /"name":"id","datatype":"INT64","shape":\[\],"data":\[-9223372036854775808\]/)
  assert.equal(JSON.parse(r.out).model_name, 'typed')
})

test('long outputs are cut after a glance', async () => {
  const r = await run('long', '--input', 'n=[40]', ...rpc)
  assert.equal(r.code, EXIT_OK, r.err)
  assert.equal(r.out, 'seq  INT32  [40]\n  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, … (24 more)]\n')
})

test('usage errors exit 2 with one line naming the problem', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['double'], /--input: give each input/],
    [['double', '--input', 'x'], /expected NAME=JSON/],
    [['double', '--input', 'x=[1,'], /the value of 'x' is not JSON/],
    [['double', '--input', 'x=[[1,2],[3]]'], /the value of 'x' is not a tensor: not rectangular/],
    [['double', '--input', 'x=[1]', '--input', 'x=[2]'], /input 'x' is given twice/],
    [['double', '--input', 'z=[1]'], /app 'double' has no input 'z' \(its inputs: 'x' \(FP32 \[-1, 3\]\)\)/],
    [['typed', '--input', 'flag=[true]'], /missing 'id' \(INT64 \[\]\), 'text' \(BYTES \[-1\]\), 'half' \(FP16 \[-1\]\)/],
    [['double', '--input', 'x=[[1,2,3]]', '--output', 'w'], /--output: app 'double' has no output 'w'/],
    [['double', '--input', 'x=[[1,2,3]]', '--timeout', 'soon'], /positive whole number of milliseconds/],
    [['double', '--input', 'x=[[1,2,3]]', '--rpc', 'nope'], /--rpc/]
  ]
  for (const [args, pattern] of cases) {
    const r = await run(...args, ...(args.includes('--rpc') ? [] : rpc))
    assert.equal(r.code, EXIT_USAGE, `${args.join(' ')}: ${r.err}`)
    assert.match(r.err, pattern, args.join(' '))
    assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`)
    assert.doesNotMatch(r.err, /\n\s+at /)
  }
})

test('server errors exit 1 with the server\'s message', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['nope', '--input', 'x=[1]'], /unknown model 'nope'/],
    [['double', '--input', 'x=[1,2,3]'], /shape \[3\] has rank 1, the model expects rank 2 \[-1, 3\]/],
    [['typed', '--input', 'flag=[1]', '--input', 'id=1', '--input', 'text=["a"]', '--input', 'half=[1]'], /input 'flag': element 0 \(1\) is not true or false \(BOOL\)/],
    [['busy', '--input', 'x=[1]'], /all replicas of busy are full/],
    [['loading', '--input', 'x=[1]'], /app 'loading' has no known inputs yet/]
  ]
  for (const [args, pattern] of cases) {
    const r = await run(...args, ...rpc)
    assert.equal(r.code, EXIT_FAILED, `${args.join(' ')}: ${r.err}`)
    assert.match(r.err, pattern, args.join(' '))
  }
  const noDaemon = await run('double', '--input', 'x=[[1,2,3]]', '--rpc', '127.0.0.1:1')
  assert.equal(noDaemon.code, EXIT_FAILED)
  assert.match(noDaemon.err, /no astrad daemon answers/)
})

test('--timeout becomes the request deadline: a model that never answers fails at it with 504', async () => {
  const t0 = Date.now()
  const r = await run('hang', '--input', 'x=[1]', '--timeout', '200', ...rpc)
  const t1 = Date.now()
  assert.equal(r.code, EXIT_FAILED)
  assert.match(r.err, /deadline of 200 ms/)
  const req = seen.at(-1) as InferRequest
  // The backend never answers: only the deadline ended the call. The deadline the backend got is
  // --timeout from when the request was made, somewhere between t0 and the answer.
  assert.ok(req.deadline >= t0 + 200 && req.deadline <= t1 + 200, `deadline ${req.deadline - t0} ms after t0, answer at ${t1 - t0} ms`)
})

test('--help documents the command', async () => {
  const r = await run('--help')
  assert.equal(r.code, EXIT_OK)
  assert.match(r.out, /Usage: astrad infer \[options\] <APP>/)
  assert.match(r.out, /--input <NAME=JSON>/)
  assert.match(r.out, /--rpc <host:port>/)
})
