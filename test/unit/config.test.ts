import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { resolveConfig, parseBootstrap } from '../../src/config/index.ts'
import { ConfigError } from '../../src/util/errors.ts'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-cfg-'))
after(() => { fs.rmSync(tmp, { recursive: true, force: true }) })
function file (name: string, content: string): string {
  const p = path.join(tmp, name)
  fs.writeFileSync(p, content)
  return p
}

function configError (key: string) {
  return (err: unknown): boolean => err instanceof ConfigError && err.key.startsWith(key)
}

test('defaults: all roles, loopback RPC on 7070', () => {
  const c = resolveConfig({ flags: {}, env: {} })
  assert.deepEqual(c.roles, ['node', 'resource', 'scheduler'])
  assert.deepEqual(c.rpc, { host: '127.0.0.1', port: 7070 })
  assert.ok(c.cores >= 1)
})

test('precedence: flags > ASTRAD_* env > config file > defaults', () => {
  const cfg = file('p.json', JSON.stringify({ name: 'from-file', cell: 'file-cell', cores: 3, gpus: 1, role: 'node' }))
  const c = resolveConfig({
    flags: { config: cfg, name: 'from-flag' },
    env: { ASTRAD_NAME: 'from-env', ASTRAD_CELL: 'env-cell' }
  })
  assert.equal(c.name, 'from-flag')
  assert.equal(c.cell, 'env-cell')
  assert.equal(c.cores, 3)
  assert.equal(c.gpus, 1)
  assert.deepEqual(c.roles, ['node'])
  const viaEnv = resolveConfig({ flags: {}, env: { ASTRAD_CONFIG: cfg } })
  assert.equal(viaEnv.name, 'from-file')
})

test('repeatable and comma-separated list settings', () => {
  const c = resolveConfig({ flags: { listen: ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'], role: 'node,scheduler' }, env: { ASTRAD_BOOTSTRAP: '10.0.0.1:7071,resource.astrad.svc:7071' } })
  assert.deepEqual(c.listen, ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'])
  assert.deepEqual(c.roles, ['node', 'scheduler'])
  assert.deepEqual(c.bootstrap, ['/ip4/10.0.0.1/tcp/7071', '/dns/resource.astrad.svc/tcp/7071'])
})

test('bootstrap accepts full multiaddrs, multiaddrs without /p2p and host:port', () => {
  const full = '/ip4/127.0.0.1/tcp/7071/p2p/12D3KooWPXqCHDbr5WGwt8M7qPFTWXBf9hdEnMR5woPM85riaG2y'
  assert.equal(parseBootstrap(full), full)
  assert.equal(parseBootstrap('/ip4/127.0.0.1/tcp/7071'), '/ip4/127.0.0.1/tcp/7071')
  assert.equal(parseBootstrap('[::1]:7071'), '/ip6/::1/tcp/7071')
  assert.throws(() => parseBootstrap('nonsense'))
  assert.throws(() => parseBootstrap('host:0'))
})

test('bad values name the flag, variable or file key', () => {
  assert.throws(() => resolveConfig({ flags: { cores: '0' }, env: {} }), configError('--cores'))
  assert.throws(() => resolveConfig({ flags: { role: 'node,bogus' }, env: {} }), configError('--role'))
  assert.throws(() => resolveConfig({ flags: { listen: ['not-a-multiaddr'] }, env: {} }), configError('--listen'))
  assert.throws(() => resolveConfig({ flags: { rpc: 'localhost' }, env: {} }), configError('--rpc'))
  assert.throws(() => resolveConfig({ flags: { name: 'bad name!' }, env: {} }), configError('--name'))
  assert.throws(() => resolveConfig({ flags: {}, env: { ASTRAD_GPUS: '-1' } }), configError('ASTRAD_GPUS'))
  assert.throws(() => resolveConfig({ flags: {}, env: { ASTRAD_LOG_LEVEL: 'loud' } }), configError('ASTRAD_LOG_LEVEL'))
  const cfg = file('bad-cores.json', JSON.stringify({ cores: 'many' }))
  assert.throws(() => resolveConfig({ flags: { config: cfg }, env: {} }), configError('cores (in'))
})

test('config files: missing, not JSON, not an object, unknown key', () => {
  assert.throws(() => resolveConfig({ flags: { config: path.join(tmp, 'missing.json') }, env: {} }), configError('--config'))
  assert.throws(() => resolveConfig({ flags: { config: file('broken.json', '{"name": ') }, env: {} }), configError('--config'))
  assert.throws(() => resolveConfig({ flags: { config: file('array.json', '[1]') }, env: {} }), configError('--config'))
  assert.throws(() => resolveConfig({ flags: { config: file('unknown.json', '{"colour": "red"}') }, env: {} }), configError('colour'))
  assert.throws(() => resolveConfig({ flags: {}, env: { ASTRAD_CONFIG: path.join(tmp, 'missing.json') } }), configError('ASTRAD_CONFIG'))
})

test('a non-loopback RPC bind needs a token', () => {
  assert.throws(() => resolveConfig({ flags: { rpc: '0.0.0.0:7070' }, env: {} }), configError('--rpc'))
  const c = resolveConfig({ flags: { rpc: '0.0.0.0:7070', rpcToken: 'a-long-enough-token-123' }, env: {} })
  assert.equal(c.rpc.host, '0.0.0.0')
  assert.throws(() => resolveConfig({ flags: { rpc: '0.0.0.0:7070', rpcToken: 'short' }, env: {} }), configError('--rpc-token'))
})

test('log format: unset by default (chosen by the terminal), set by flag, ASTRAD_LOG_FORMAT or the file key logFormat; bad values name the key', () => {
  assert.equal(resolveConfig({ flags: {}, env: {} }).logFormat, undefined)
  assert.equal(resolveConfig({ flags: { logFormat: 'json' }, env: { ASTRAD_LOG_FORMAT: 'pretty' } }).logFormat, 'json')
  assert.equal(resolveConfig({ flags: {}, env: { ASTRAD_LOG_FORMAT: 'pretty' } }).logFormat, 'pretty')
  assert.equal(resolveConfig({ flags: { config: file('fmt.json', '{"logFormat":"json"}') }, env: {} }).logFormat, 'json')
  assert.throws(() => resolveConfig({ flags: { logFormat: 'xml' }, env: {} }), configError('--log-format'))
  assert.throws(() => resolveConfig({ flags: {}, env: { ASTRAD_LOG_FORMAT: 'xml' } }), configError('ASTRAD_LOG_FORMAT'))
  assert.throws(() => resolveConfig({ flags: { config: file('bad-fmt.json', '{"logFormat":"xml"}') }, env: {} }), configError('logFormat (in'))
})
