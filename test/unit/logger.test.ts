import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chooseLogFormat } from '../../src/util/logger.ts'

/** The log format: pretty on a terminal, JSON on a pipe, what was asked for when asked. */

test('chooseLogFormat: pretty on a terminal, JSON otherwise; an explicit format wins either way', () => {
  assert.equal(chooseLogFormat(undefined, true), 'pretty')
  assert.equal(chooseLogFormat(undefined, false), 'json')
  assert.equal(chooseLogFormat(undefined, undefined), 'json', 'a closed or redirected stdout has no isTTY')
  assert.equal(chooseLogFormat('json', true), 'json')
  assert.equal(chooseLogFormat('pretty', false), 'pretty')
})

test('createLogger writes one JSON object a line, or a human-readable line with the component', () => {
  const script = (format: string): string => `
    import { createLogger, componentLogger } from ${JSON.stringify(new URL('../../src/util/logger.ts', import.meta.url).href)}
    const root = createLogger({ format: '${format}', base: { name: 'alpha' } })
    componentLogger(root, 'transfer').info({ peers: 3 }, 'pull started')
  `
  const out = (format: string): string => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script(format)], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, NO_COLOR: '1' } })
    assert.equal(r.status, 0, `${format}: ${r.stderr}`)
    return r.stdout
  }
  const json = JSON.parse(out('json').trim()) as Record<string, unknown>
  assert.deepEqual([json.level, json.name, json.component, json.msg, json.peers], [30, 'alpha', 'astrad:transfer', 'pull started', 3])
  const pretty = out('pretty')
  assert.match(pretty, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(alpha\): astrad:transfer: pull started \{"peers":3\}\n$/)
})
