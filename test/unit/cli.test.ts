import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCli, EXIT_USAGE, EXIT_FAILED, EXIT_OK } from '../../src/cli/index.ts'
import { run } from '../helpers/cli.ts'

test('every command has --help and exits 0', async () => {
  for (const cmd of createCli().commands.map(c => c.name())) {
    const r = await run(cmd, '--help')
    assert.equal(r.code, EXIT_OK, cmd)
    assert.match(r.out, /Usage: astrad/)
  }
})

test('usage errors exit 2 with one line and no stack trace', async () => {
  for (const args of [['--bogus'], ['start', '--bogus'], ['nosuchcommand'], ['start', '--cores', 'x'], ['start', '--rpc', 'nope'], ['status', '--rpc', 'nope'], ['start', '--log-level', 'loud'], ['drain', '--timeout', 'soon', '--rpc', '127.0.0.1:1']]) {
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
