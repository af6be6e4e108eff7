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
import { parseJoinToken, readClusterSecret, readOperatorCredential } from '../../src/trust/index.ts'
import { assertOneLine } from '../helpers/cli.ts'

test('every command has --help and exits 0', async () => {
  for (const cmd of createCli().commands) {
    for (const args of [[cmd.name()], ...cmd.commands.map(sub => [cmd.name(), sub.name()])]) {
      const r = await run(...args, '--help')
      assert.equal(r.code, EXIT_OK, args.join(' '))
      assert.match(r.out, /Usage: astrad/, args.join(' '))
    }
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

/** A temp dir for one test, removed after it. */
async function inTempDir (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-cli-'))
  try {
    await fn(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

test('cluster init creates a 0600 cluster key and refuses to overwrite it', async () => {
  await inTempDir(async dir => {
    const file = path.join(dir, 'cluster.key')
    const r = await run('cluster', 'init', file)
    assert.equal(r.code, EXIT_OK, r.err)
    assert.equal(r.out, `${file}\n`)
    assert.equal(fs.statSync(file).mode & 0o777, 0o600)
    const before = fs.readFileSync(file, 'utf8')
    await readClusterSecret(file)
    const again = await run('cluster', 'init', file)
    assert.equal(again.code, EXIT_USAGE, 'a second init on the same file')
    assertOneLine(again, 'init over an existing key')
    assert.match(again.err, /exists/)
    assert.equal(fs.readFileSync(file, 'utf8'), before, 'the existing key is untouched')
  })
})

test('cluster token prints one line that parseJoinToken accepts, granting the roles asked', async () => {
  await inTempDir(async dir => {
    const key = path.join(dir, 'cluster.key')
    assert.equal((await run('cluster', 'init', key)).code, EXIT_OK)
    for (const [roles, want] of [['node', ['node']], ['resource,scheduler', ['resource', 'scheduler']], [' node , node ', ['node']]] as const) {
      const r = await run('cluster', 'token', '--cluster-key', key, '--roles', roles, '--ttl', '2h')
      assert.equal(r.code, EXIT_OK, `${roles}: ${r.err}`)
      assert.equal(r.out.split('\n').length, 2, `one line and a newline: ${r.out}`)
      assert.ok(r.out.startsWith('astrad-join-v1.'), r.out)
      const token = await parseJoinToken(r.out)
      assert.deepEqual(token.grant.roles, want, roles)
      const left = (token.grant.expiresAt ?? 0) - Date.now()
      assert.ok(left > 7_100_000 && left <= 7_200_000, `--ttl 2h: expires in ${left} ms`)
      assert.match(r.err, /^join token for /)
    }
    const never = await run('cluster', 'token', '--cluster-key', key, '--roles', 'node', '--ttl', 'never')
    assert.equal((await parseJoinToken(never.out)).grant.expiresAt, undefined, '--ttl never')
  })
})

test('cluster token and operator: a bad --roles, --ttl or NAME exits 2 with one line', async () => {
  await inTempDir(async dir => {
    const key = path.join(dir, 'cluster.key')
    assert.equal((await run('cluster', 'init', key)).code, EXIT_OK)
    for (const [args, flag] of [
      [['token', '--roles', 'worker'], '--roles'],
      [['token', '--roles', 'node,'], null],
      [['token', '--roles', ','], '--roles'],
      [['token', '--roles', 'node', '--ttl', '3x'], '--ttl'],
      [['token', '--roles', 'node', '--ttl', '0d'], '--ttl'],
      [['token', '--roles', 'node', '--ttl', '-1h'], '--ttl'],
      [['token'], '--roles'],
      [['operator', 'a b', '--out', path.join(dir, 'x.cred')], 'NAME'],
      [['operator', 'alice', '--ttl', 'soon', '--out', path.join(dir, 'y.cred')], '--ttl']
    ] as Array<[string[], string | null]>) {
      const r = await run('cluster', ...args, '--cluster-key', key)
      if (flag == null) {
        assert.equal(r.code, EXIT_OK, `${args.join(' ')}: an empty entry is ignored: ${r.err}`)
        continue
      }
      assert.equal(r.code, EXIT_USAGE, `${args.join(' ')}: ${r.out}${r.err}`)
      assertOneLine(r, args.join(' '))
      assert.ok(r.err.includes(flag), `${args.join(' ')} names ${flag}: ${r.err}`)
    }
    assert.ok(!fs.existsSync(path.join(dir, 'x.cred')) && !fs.existsSync(path.join(dir, 'y.cred')), 'no credential written on a usage error')
  })
})

test('cluster operator writes a 0600 credential readOperatorCredential accepts, and refuses to overwrite it', async () => {
  await inTempDir(async dir => {
    const key = path.join(dir, 'cluster.key')
    assert.equal((await run('cluster', 'init', key)).code, EXIT_OK)
    const out = path.join(dir, 'alice.cred')
    const r = await run('cluster', 'operator', 'alice', '--cluster-key', key, '--out', out, '--ttl', '30d')
    assert.equal(r.code, EXIT_OK, r.err)
    assert.equal(r.out, `${out}\n`)
    assert.match(r.err, /ASTRAD_CREDENTIAL=/)
    assert.equal(fs.statSync(out).mode & 0o777, 0o600)
    const cred = await readOperatorCredential(out)
    assert.equal(cred.name, 'alice')
    assert.deepEqual(cred.clusterJwk, (await readClusterSecret(key)).key.publicJwk, 'vouched for by this cluster key')
    const again = await run('cluster', 'operator', 'alice', '--cluster-key', key, '--out', out)
    assert.equal(again.code, EXIT_USAGE)
    assertOneLine(again, 'operator over an existing credential')
    assert.match(again.err, /--out/)
  })
})

test('cluster token and operator without a usable cluster key exit 2 with one line naming --cluster-key', async () => {
  await inTempDir(async dir => {
    const notKey = path.join(dir, 'not.key')
    fs.writeFileSync(notKey, '{"v": 1}')
    const saved = { dataDir: process.env.ASTRAD_DATA_DIR, clusterKey: process.env.ASTRAD_CLUSTER_KEY }
    // No flag, no ASTRAD_CLUSTER_KEY and no one-host cluster in the data dir.
    process.env.ASTRAD_DATA_DIR = dir
    delete process.env.ASTRAD_CLUSTER_KEY
    try {
      for (const args of [
        ['token', '--roles', 'node', '--cluster-key', path.join(dir, 'missing.key')],
        ['token', '--roles', 'node', '--cluster-key', notKey],
        ['token', '--roles', 'node'],
        ['operator', 'bob', '--out', path.join(dir, 'bob.cred'), '--cluster-key', path.join(dir, 'missing.key')],
        ['operator', 'bob', '--out', path.join(dir, 'bob.cred')]
      ]) {
        const r = await run('cluster', ...args)
        assert.equal(r.code, EXIT_USAGE, `${args.join(' ')}: ${r.out}${r.err}`)
        assertOneLine(r, args.join(' '))
        assert.match(r.err, /--cluster-key/, args.join(' '))
        assert.equal(r.out, '', `${args.join(' ')}: nothing on stdout`)
      }
      assert.ok(!fs.existsSync(path.join(dir, 'bob.cred')))
    } finally {
      for (const [k, v] of [['ASTRAD_DATA_DIR', saved.dataDir], ['ASTRAD_CLUSTER_KEY', saved.clusterKey]] as const) {
        if (v == null) delete process.env[k]
        else process.env[k] = v
      }
    }
  })
})

test('creating commands print just the id on stdout: app deploy the app name, cluster init FILE its path; details on stderr or with --json', async () => {
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

    const keyFile = path.join(dir, 'cluster.key')
    const key = await run('cluster', 'init', keyFile)
    assert.equal(key.code, EXIT_OK, `cluster init: ${key.err}`)
    assert.equal(key.out, `${keyFile}\n`)
    assert.match(key.err, /^next: 'astrad cluster token/)
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
