import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { ProcessCluster, requireBinary, runBinary } from '../helpers/process.ts'
import { assertOneLine } from '../helpers/cli.ts'

/**
 * Log format of a real `dist/astrad start` whose stdout is a pipe (as under systemd or a
 * collector): JSON lines by default and with --log-format json; human-readable lines with
 * --log-format pretty (what a terminal gets by default); a bad value is a usage error.
 */

const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

const lines = (log: string): string[] => log.split('\n').filter(l => l.trim() !== '')

test('on a pipe the logs are JSON lines, by default and with --log-format json', async () => {
  for (const [name, args] of [['plain', []], ['json', ['--log-format', 'json']]] as const) {
    const p = await cluster.start(name, ['--role', 'resource', ...args])
    const seen = lines(p.log())
    assert.ok(seen.length > 0, `${name}: no log line`)
    for (const l of seen) {
      const entry = JSON.parse(l) as { level?: unknown, msg?: unknown, name?: unknown }
      assert.equal(typeof entry.level, 'number', `${name}: ${l}`)
      assert.equal(entry.name, name, `${name}: ${l}`)
    }
    p.child.kill('SIGKILL')
  }
})

test('--log-format pretty and ASTRAD_LOG_FORMAT=pretty give human-readable lines', async () => {
  const flag = await cluster.start('pretty', ['--role', 'resource', '--log-format', 'pretty'])
  const env = await cluster.start('envpretty', ['--role', 'resource'], { env: { ASTRAD_LOG_FORMAT: 'pretty' } })
  for (const p of [flag, env]) {
    const seen = lines(p.log())
    const first = seen[0] ?? ''
    assert.match(first, /^\[?\d\d:\d\d:\d\d\.\d{3}\]? INFO \(/, `${p.name}: first line ${first}`)
    assert.ok(seen.every(l => !l.startsWith('{')), `${p.name}: a JSON line among\n${seen.join('\n')}`)
    p.child.kill('SIGKILL')
  }
})

test('a bad --log-format or ASTRAD_LOG_FORMAT is a one-line usage error naming it', async () => {
  const flag = await runBinary(['start', '--log-format', 'xml'])
  assert.equal(flag.code, 2, flag.stderr)
  assert.match(flag.stderr, /--log-format/)
  assertOneLine({ err: flag.stderr }, '--log-format xml')
  const env = await runBinary(['start', '--role', 'resource'], { ASTRAD_LOG_FORMAT: 'xml' })
  assert.equal(env.code, 2, env.stderr)
  assert.match(env.stderr, /ASTRAD_LOG_FORMAT.*expected one of json, pretty, got 'xml'/)
  assertOneLine({ err: env.stderr }, 'ASTRAD_LOG_FORMAT=xml')
})
