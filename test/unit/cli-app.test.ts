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
