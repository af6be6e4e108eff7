import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { EXIT_OK, EXIT_FAILED } from '../../src/cli/index.ts'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { registerAppRoutes, type AppListEntry } from '../../src/placement/index.ts'
import { MemoryLog } from '../helpers/memory-log.ts'
import { run, assertOneLine } from '../helpers/cli.ts'

/**
 * `astrad app deploy|ls` against the daemon's real RPC server and app routes over an in-memory
 * cluster log: the defaults a spec may leave out, and schema errors written for people.
 */

const TOKEN = 'app-token'
const MODEL = 'c'.repeat(64)
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-cli-app-'))
const log = new MemoryLog()
let server: RpcServer
let rpc = ''

before(async () => {
  log.seed('model', MODEL, {})
  server = new RpcServer({ logger: silentLogger(), metrics: createMetrics() }, { host: '127.0.0.1', port: 0, token: TOKEN })
  registerAppRoutes(server, { clusterLog: () => log, placer: () => undefined, self: () => 'ops' })
  rpc = `127.0.0.1:${(await server.listen()).port}`
})
after(async () => {
  await server.close()
  fs.rmSync(tmp, { recursive: true, force: true })
})

async function deploy (name: string, spec: unknown): Promise<{ code: number, out: string, err: string }> {
  const file = path.join(tmp, `${name}.json`)
  fs.writeFileSync(file, JSON.stringify(spec))
  return await run('app', 'deploy', file, '--rpc', rpc, '--rpc-token', TOKEN)
}

test('app deploy: a spec without resources, or without gpu, gets the documented defaults', async () => {
  const none = await deploy('plain', { name: 'plain', model: MODEL, replicas: 1 })
  assert.equal(none.code, EXIT_OK, `no resources: ${none.err}`)
  const noGpu = await deploy('cpu2', { name: 'cpu2', model: MODEL, replicas: 1, resources: { cpu: 2 } })
  assert.equal(noGpu.code, EXIT_OK, `no gpu: ${noGpu.err}`)
  const threads = await deploy('threads', { name: 'threads', model: MODEL, replicas: 1, threads: 3 })
  assert.equal(threads.code, EXIT_OK, `threads only: ${threads.err}`)
  const ls = await run('app', 'ls', '--json', '--rpc', rpc, '--rpc-token', TOKEN)
  assert.equal(ls.code, EXIT_OK, ls.err)
  const apps = new Map((JSON.parse(ls.out) as { apps: AppListEntry[] }).apps.map(a => [a.spec.name, a.spec.resources]))
  assert.deepEqual(apps.get('plain'), { cpu: 1, gpu: 0 }, 'cpu defaults to threads (1), gpu to 0')
  assert.deepEqual(apps.get('cpu2'), { cpu: 2, gpu: 0 })
  assert.deepEqual(apps.get('threads'), { cpu: 3, gpu: 0 }, 'one core per worker thread')
})

test('app deploy: a bad spec exits 1 with one line that names the key, the rule and the value', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ name: 'bad', model: MODEL, replicas: 1, resources: { cpu: 'two' } }, /app spec: resources\.cpu must be a number from 0 to 4096 \(got "two"\)/],
    [{ name: 'bad', model: MODEL, replicas: 1, resources: { cpu: 1, ram: 4 } }, /app spec: resources has unknown key "ram" \(known: cpu, gpu\)/],
    [{ name: 'bad', model: MODEL, replicas: 1, threads: 0 }, /app spec: threads must be ≥ 1 \(got 0\)/],
    [{ name: 'bad', model: MODEL }, /app spec: replicas is required/],
    [{ model: MODEL, replicas: 1 }, /app spec: name is required/],
    [{ name: 'bad', model: MODEL, replicas: 1, routing: 'fast' }, /routing must be one of "measured", "article", "static" \(got "fast"\)/]
  ]
  for (const [spec, re] of cases) {
    const r = await deploy('bad', spec)
    const what = JSON.stringify(spec)
    assert.equal(r.code, EXIT_FAILED, `${what}: exit ${r.code}, stderr ${r.err}`)
    assertOneLine(r, what)
    assert.match(r.err, re, what)
    assert.doesNotMatch(r.err, /Invalid input|expected number, received/, `zod's own wording for ${what}`)
  }
})

test('app deploy|ls|rm of a pipeline: stages roll on their own, names are not shared with apps', async () => {
  const stage = { model: MODEL, replicas: 1 }
  const spec = { name: 'ocr', stages: { detect: stage, read: { ...stage, replicas: 2 } }, steps: [{ stage: 'detect' }, { stage: 'read', inputs: { x: 'detect.boxes' } }] }
  const created = await deploy('ocr', spec)
  assert.equal(created.code, EXIT_OK, `create: ${created.err}`)
  assert.equal(created.out, 'ocr\n')
  assert.match(created.err, /ocr: pipeline created \(generation 1\); stages: detect created \(generation 1, 1 replica\(s\)\), read created \(generation 1, 2 replica\(s\)\)/)
  // A roll of one stage (threads) bumps that stage's generation only; a scale of the other rolls nothing.
  const changed = await deploy('ocr2', { ...spec, stages: { detect: { ...stage, threads: 2 }, read: { ...stage, replicas: 3 } } })
  assert.equal(changed.code, EXIT_OK, changed.err)
  assert.match(changed.err, /pipeline rolled \(generation 2\); stages: detect rolled \(generation 2, 1 replica\(s\)\), read scaled \(generation 1, 3 replica\(s\)\)/)

  const ls = await run('app', 'ls', '--json', '--rpc', rpc, '--rpc-token', TOKEN)
  assert.equal(ls.code, EXIT_OK, ls.err)
  const doc = JSON.parse(ls.out) as { apps: AppListEntry[], pipelines: Array<{ name: string, generation: number, stages: Record<string, { generation: number }> }> }
  const p = doc.pipelines.find(x => x.name === 'ocr')
  assert.deepEqual(p?.stages != null ? Object.fromEntries(Object.entries(p.stages).map(([k, v]) => [k, v.generation])) : undefined, { detect: 2, read: 1 })
  const stageApps = doc.apps.filter(a => a.pipeline?.name === 'ocr').map(a => [a.spec.name, a.generation, a.spec.replicas])
  assert.deepEqual(stageApps, [['ocr.detect', 2, 1], ['ocr.read', 1, 3]])
  const text = await run('app', 'ls', '--rpc', rpc, '--rpc-token', TOKEN)
  assert.match(text.out, /PIPELINE\/STAGE/)
  assert.match(text.out, /^ {2}read +1 +3 /m)

  // One name space: no app named like the pipeline or one of its stage apps, and back.
  const clash = await deploy('clash', { name: 'ocr.read', model: MODEL, replicas: 1 })
  assert.equal(clash.code, EXIT_FAILED)
  assertOneLine(clash, 'clash')
  assert.match(clash.err, /name: 'ocr\.read' is stage 'read' of pipeline 'ocr'/)
  const rmStage = await run('app', 'rm', 'ocr.read', '--rpc', rpc, '--rpc-token', TOKEN)
  assert.equal(rmStage.code, EXIT_FAILED)
  assertOneLine(rmStage, 'rmStage')
  assert.match(rmStage.err, /stage 'read' of pipeline 'ocr'.*app rm ocr/)
  const taken = await deploy('plain2', { ...spec, name: 'plain' })
  assert.equal(taken.code, EXIT_FAILED)
  assertOneLine(taken, 'taken')
  assert.match(taken.err, /name: an app named 'plain' exists/)
  const bad = await deploy('bad', { ...spec, name: 'bad', steps: [{ stage: 'read' }, { stage: 'detect', inputs: { x: 'nope.y' } }] })
  assert.equal(bad.code, EXIT_FAILED)
  assertOneLine(bad, 'bad')
  assert.match(bad.err, /step 'detect' inputs\.x: 'nope\.y' reads no known source/)

  const rm = await run('app', 'rm', 'ocr', '--rpc', rpc, '--rpc-token', TOKEN)
  assert.equal(rm.code, EXIT_OK, rm.err)
  const after = JSON.parse((await run('app', 'ls', '--json', '--rpc', rpc, '--rpc-token', TOKEN)).out) as { apps: AppListEntry[], pipelines: unknown[] }
  assert.equal(after.pipelines.length, 0)
  assert.ok(!after.apps.some(a => a.pipeline != null), 'the stage apps went with the pipeline')
})
