import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCli, EXIT_USAGE, EXIT_FAILED, EXIT_OK } from '../../src/cli/index.ts'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { run } from '../helpers/cli.ts'
import { MemoryLog } from '../helpers/memory-log.ts'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { registerAppRoutes } from '../../src/placement/index.ts'

test('every command has --help and exits 0', async () => {
  for (const cmd of createCli().commands.map(c => c.name())) {
    const r = await run(cmd, '--help')
    assert.equal(r.code, EXIT_OK, cmd)
    assert.match(r.out, /Usage: astrad/)
  }
})

test('usage errors exit 2 with one line and no stack trace', async () => {
  for (const args of [['--bogus'], ['start', '--bogus'], ['nosuchcommand'], ['start', '--cores', 'x'], ['start', '--rpc', 'nope'], ['status', '--rpc', 'nope'], ['start', '--log-level', 'loud'], ['drain', '--timeout', 'soon', '--rpc', '127.0.0.1:1'], ['cordon', '--rpc', 'nope'], ['uncordon', 'extra-arg']]) {
    const r = await run(...args)
    assert.equal(r.code, EXIT_USAGE, args.join(' '))
    assert.doesNotMatch(r.err, /\n\s+at /, `stack trace for ${args.join(' ')}`)
    assert.ok(r.err.trim().split('\n').length <= 2, `short message for ${args.join(' ')}: ${r.err}`)
  }
})

test('a client command with no daemon listening fails with exit 1 and a clear message', async () => {
  const r = await run('status', '--rpc', '127.0.0.1:1')
  assert.equal(r.code, EXIT_FAILED)
  assert.match(r.err, /no astrad daemon answers at http:\/\/127\.0\.0\.1:1/)
})

test('swarm-key prints a key in the libp2p format', async () => {
  const r = await run('swarm-key')
  assert.equal(r.code, EXIT_OK)
  assert.match(r.out, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
})

test('creating commands print just the id on stdout: app deploy the app name, swarm-key FILE its path; details on stderr or with --json', async () => {
  const log = new MemoryLog()
  const model = 'ab'.repeat(32)
  log.seed('model', model, { name: 'm.onnx' })
  const server = new RpcServer({ logger: silentLogger(), metrics: createMetrics() }, { host: '127.0.0.1', port: 0 })
  registerAppRoutes(server, { clusterLog: () => log, placer: () => undefined, self: () => 'ops' })
  const rpc = `127.0.0.1:${(await server.listen()).port}`
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-cli-'))
  try {
    const spec = path.join(dir, 'vad.json')
    fs.writeFileSync(spec, JSON.stringify({ name: 'vad', model, replicas: 2, resources: { cpu: 1, gpu: 0 } }))
    const created = await run('app', 'deploy', spec, '--rpc', rpc)
    assert.equal(created.code, EXIT_OK, `deploy: ${created.err}`)
    assert.equal(created.out, 'vad\n', 'deploy: stdout is the name and a newline')
    assert.match(created.err, /^vad: created \(generation 1, 2 replica\(s\)\)\n$/)
    fs.writeFileSync(spec, JSON.stringify({ name: 'vad', model, replicas: 3, resources: { cpu: 1, gpu: 0 } }))
    const scaled = await run('app', 'deploy', spec, '--rpc', rpc, '--json')
    assert.equal(scaled.code, EXIT_OK, `deploy --json: ${scaled.err}`)
    const doc = JSON.parse(scaled.out) as { change: string, app: { generation: number } }
    assert.equal(doc.change, 'scaled')
    assert.equal(doc.app.generation, 1)

    const keyFile = path.join(dir, 'swarm.key')
    const key = await run('swarm-key', keyFile)
    assert.equal(key.code, EXIT_OK, `swarm-key: ${key.err}`)
    assert.equal(key.out, `${keyFile}\n`)
    assert.match(fs.readFileSync(keyFile, 'utf8'), /^\/key\/swarm\/psk\/1\.0\.0\/\n/)
  } finally {
    await server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('help texts: no "(default: [])" or doubled default, app deploy lists routing, --log-level and --log-format show their defaults', async () => {
  const helps = new Map<string, string>()
  const visit = async (path: string[], cmd: ReturnType<typeof createCli>): Promise<void> => {
    const r = await run(...path, '--help')
    assert.equal(r.code, EXIT_OK, path.join(' '))
    helps.set(path.join(' ') || 'astrad', r.out.replace(/\s+/g, ' '))
    for (const sub of cmd.commands) await visit([...path, sub.name()], sub)
  }
  await visit([], createCli())
  assert.ok(helps.size > 20, `every command and subcommand: ${[...helps.keys()].join(', ')}`)
  for (const [name, text] of helps) {
    assert.doesNotMatch(text, /\(default: \[\]\)/, name)
    assert.doesNotMatch(text, /\(default: [^)]*\) \(default:/, name)
  }
  assert.match(helps.get('infer') ?? '', /--output <NAME> return this output only; repeat for several \(default: all\) --json/)
  assert.match(helps.get('app deploy') ?? '', /"routing"\?: measured\|article\|static/)
  assert.match(helps.get('start') ?? '', /--log-level <level> log level \(default: info\)/)
  assert.match(helps.get('start') ?? '', /--log-format <format> log lines as json or pretty \(default: pretty on a terminal, json otherwise\)/)
})
