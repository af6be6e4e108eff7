import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { spawnSync } from 'node:child_process'
import { EXIT_OK, EXIT_FAILED, EXIT_USAGE } from '../../src/cli/index.ts'
import { renderStatus } from '../../src/cli/commands/status.ts'
import { RpcServer } from '../../src/rpc/index.ts'
import { createMetrics } from '../../src/metrics/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { MemoryLog } from '../helpers/memory-log.ts'
import { NoticeAdmin, type Member } from '../../src/mailbox/admin.ts'
import { registerNoticeRoutes } from '../../src/mailbox/routes.ts'
import type { StatusDocument } from '../../src/daemon/status.ts'
import { run, assertOneLine } from '../helpers/cli.ts'

/**
 * `astrad notice …` against the daemon's real RPC server and notice routes, backed by a
 * NoticeAdmin over an in-memory cluster log and a fixed online list.
 */

const TOKEN = 'notice-token'


const peer = (c: string): string => `12D3KooW${'B'.repeat(43)}${c}`
const members: Member[] = [
  { peerId: peer('a'), name: 'alpha', cell: 'a', roles: ['node'], state: 'alive', mailboxCursor: 0 },
  { peerId: peer('b'), name: 'beta', cell: 'a', roles: ['node'], state: 'alive', mailboxCursor: 0 },
  { peerId: peer('c'), name: 'gamma', cell: 'b', roles: ['node', 'resource'], state: 'alive', mailboxCursor: 0 }
]

const log = new MemoryLog()
let ready = true
const admin = new NoticeAdmin({ clusterLog: () => log, members: async () => members, self: () => 'ops' })
let server: RpcServer
let rpc = ''

before(async () => {
  server = new RpcServer({ logger: silentLogger(), metrics: createMetrics() }, { host: '127.0.0.1', port: 0, token: TOKEN })
  registerNoticeRoutes(server, () => ready ? admin : undefined)
  rpc = `127.0.0.1:${(await server.listen()).port}`
})
after(async () => { await server.close() })

const daemon = (): string[] => ['--rpc', rpc, '--rpc-token', TOKEN]

async function ok (...args: string[]): Promise<string> {
  const r = await run(...args, ...daemon())
  assert.equal(r.code, EXIT_OK, `${args.join(' ')}: ${r.err}`)
  return r.out
}

/** Raw request to the RPC port, for what the CLI never sends. */
async function raw (method: string, path: string, body?: string): Promise<{ status: number, json: Record<string, unknown> }> {
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(rpc.split(':')[1]), method, path, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } }, res => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('notice --help lists the subcommands; each has --help with --rpc', async () => {
  const r = await run('notice', '--help')
  assert.equal(r.code, EXIT_OK)
  for (const sub of ['publish', 'canary', 'promote', 'stop', 'recall', 'edit', 'ls', 'show']) {
    assert.match(r.out, new RegExp(`\\n  ${sub} `), sub)
    const s = await run('notice', sub, '--help')
    assert.equal(s.code, EXIT_OK, sub)
    assert.match(s.out, new RegExp(`Usage: astrad notice ${sub}`))
    assert.match(s.out, /--rpc <host:port>/)
  }
})

test('publish prints just the id on stdout (N=$(…); notice show $N works), details on stderr; --json exactly {id, revision, state}', async () => {
  const r = await run('notice', 'publish', '--kind', 'message', '--data', '{"text":"maintenance tonight 22:00","level":"warn"}', ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  assert.match(r.out, /^[0-9a-f]{12}\n$/, 'stdout is the id and a newline')
  const m = /^message notice published, revision (\d+), audience all\n$/.exec(r.err)
  assert.ok(m != null, `stderr: ${r.err}`)
  assert.match(await ok('notice', 'show', r.out.trim()), new RegExp(`^id: +${r.out.trim()}$`, 'm'))
  const j = JSON.parse(await ok('notice', 'publish', '--kind', 'bandwidth', '--data', '{"upload":"200Mbit/s"}', '--canary', 'alpha', '--canary', 'beta', '--cells', 'a', '--expires', '2h', '--json')) as Record<string, unknown>
  assert.deepEqual(Object.keys(j).sort(), ['id', 'revision', 'state'])
  assert.equal(j.state, 'canary')
  assert.equal(j.revision, Number(m[1]) + 1)
  const v = await admin.get(j.id as string)
  assert.deepEqual(v.data, { upload: 25_000_000, download: null })
  assert.deepEqual(v.audience, { cells: ['a'], canary: [peer('a'), peer('b')], node: null })
  assert.ok(v.expiresAt != null && Math.abs(v.expiresAt - (Date.now() + 7_200_000)) < 10_000)

  const p = await run('notice', 'publish', '--kind', 'drain', '--node', 'gamma,beta', ...daemon())
  assert.match(p.out, /^[0-9a-f]{12}\n$/)
  assert.match(p.err, /^drain notice published, revision \d+, audience private: gamma,beta\n$/)
})

test('canary, promote, edit, stop, recall print "<id> <state> revision N"; ls and show follow', async () => {
  const { id } = JSON.parse(await ok('notice', 'publish', '--kind', 'message', '--data', '{"text":"new model rolling out"}', '--canary', 'alpha', '--json')) as { id: string }
  const short = id.slice(0, 6)
  assert.match(await ok('notice', 'canary', short, 'beta,gamma'), new RegExp(`^${id} canary revision \\d+ \\(canary: beta,gamma\\)\\n$`))
  assert.match(await ok('notice', 'show', short), /^canary: +beta \(12D3KooW\w+b\), gamma \(12D3KooW\w+c\)$/m)
  assert.match(await ok('notice', 'promote', short), new RegExp(`^${id} published revision \\d+\\n$`))
  const edited = await ok('notice', 'edit', id, '--data', '{"text":"new model live","level":"warn"}', '--json')
  assert.equal((JSON.parse(edited) as { state: string }).state, 'published')

  members[0]!.mailboxCursor = 1_000
  const ls = await ok('notice', 'ls')
  const lines = ls.trimEnd().split('\n')
  assert.match(lines[0] ?? '', /^ID\s+KIND\s+STATE\s+REVISION\s+AUDIENCE\s+APPLIED\s+EXPIRES$/)
  const row = lines.find(l => l.startsWith(id)) ?? ''
  assert.match(row, /^[0-9a-f]{12}\s+message\s+published\s+\d+\s+all\s+1\/3\s+-$/)
  assert.match(lines.find(l => l.includes('bandwidth')) ?? '', /canary\s+\d+\s+canary: alpha,beta\s+1\/2\s+in (1h59m|2h00m)$/)
  const j = JSON.parse(await ok('notice', 'ls', '--json')) as { notices: Array<{ id: string }> }
  assert.equal(j.notices[0]?.id, id, 'newest first')
  assert.equal(j.notices.length, lines.length - 1)

  const show = await ok('notice', 'show', short)
  assert.match(show, new RegExp(`^id: +${id}$`, 'm'))
  assert.match(show, /^kind: +message$/m)
  assert.match(show, /^state: +published$/m)
  assert.match(show, /^audience: +every cell$/m)
  assert.doesNotMatch(show, /^canary:/m, 'promoted: no whitelist any more')
  assert.match(show, /^applied: +1 of 3 target node\(s\) at revision \d+$/m)
  assert.match(show, /^expires: +never$/m)
  assert.match(show, /^created: +\d{4}-\d\d-\d\dT.*Z \([\d.]+s ago\)$/m)
  assert.match(show, /^via: +ops$/m)
  assert.match(show, /^data:\n {2}\{\n {4}"text": "new model live",\n {4}"level": "warn"\n {2}\}\n$/m)
  assert.equal((JSON.parse(await ok('notice', 'show', id, '--json')) as { by: string }).by, 'ops')

  assert.match(await ok('notice', 'stop', id), new RegExp(`^${id} stopped revision \\d+\\n$`))
  const refused = await run('notice', 'edit', id, '--data', '{"text":"x"}', ...daemon())
  assert.equal(refused.code, EXIT_FAILED)
  assert.match(refused.err, new RegExp(`notice ${id} is stopped; only canary or published notices can be edited`))
  assertOneLine(refused, 'edit stopped')

  assert.match(await ok('notice', 'recall', id), new RegExp(`^${id} recalled revision \\d+\\n$`))
  assert.match(await ok('notice', 'show', id), /^data: null \(recalled\)$/m)
})

test('usage errors exit 2 with one line and send nothing', async () => {
  const puts = log.puts.length
  const cases: Array<[string[], RegExp]> = [
    [['notice', 'publish', '--kind', 'message', '--data', '{text:'], /--data <json>.*not JSON/],
    [['notice', 'publish', '--data', '{}'], /required option '--kind <kind>' not specified/],
    [['notice', 'publish', '--kind', 'drain', '--cells', ','], /--cells <cells>.*comma-separated list/],
    [['notice', 'edit', 'abcd12'], /required option '--data <json>' not specified/],
    [['notice', 'edit', 'abcd12', '--data', 'nope'], /--data <json>.*not JSON/],
    [['notice', 'show', 'xyz'], /ID: expected a notice id \(12 hex digits\) or its first 4\+ digits/],
    [['notice', 'recall', 'abc'], /ID: expected a notice id/],
    [['notice', 'canary', 'abcd12'], /missing required argument 'NODES'/],
    [['notice', 'canary', 'abcd12', ','], /NODES: give at least one node/],
    [['notice', 'bogus'], /unknown command 'bogus'/]
  ]
  for (const [args, re] of cases) {
    const r = await run(...args, ...daemon())
    assert.equal(r.code, EXIT_USAGE, `${args.join(' ')}: ${r.err}`)
    assert.match(r.err, re, args.join(' '))
    assertOneLine(r, args.join(' '))
  }
  assert.equal(log.puts.length, puts)
})

test('what the daemon refuses exits 1 with its message', async () => {
  const puts = log.puts.length
  const cases: Array<[string[], RegExp]> = [
    [['notice', 'publish', '--kind', 'shout', '--data', '{}'], /unknown notice kind "shout" \(kinds: bandwidth, drain, preload, message, config\)/],
    [['notice', 'publish', '--kind', 'message', '--data', '{"text":"x"}', '--canary', 'nosuch'], /unknown node 'nosuch' \(known nodes: alpha, beta, gamma\)/],
    [['notice', 'publish', '--kind', 'config', '--data', '{"config":{}}'], /unknown key 'config' \(allowed: logLevel, cacheSize\)/],
    [['notice', 'publish', '--kind', 'drain'], /a drain for every node needs --data '\{"all":true\}'/],
    [['notice', 'publish', '--kind', 'message', '--data', '{"text":"x"}', '--expires', '2020-01-01T00:00:00Z'], /expiry '2020-01-01T00:00:00Z' is in the past/],
    [['notice', 'publish', '--kind', 'message', '--data', '"just text"'], /message data must be a JSON object/],
    [['notice', 'show', 'ffff0000'], /no notice ffff0000 \(see: astrad notice ls\)/],
    [['notice', 'promote', 'ffff0000'], /no notice ffff0000/]
  ]
  for (const [args, re] of cases) {
    const r = await run(...args, ...daemon())
    assert.equal(r.code, EXIT_FAILED, `${args.join(' ')}: ${r.err}`)
    assert.match(r.err, re, args.join(' '))
    assertOneLine(r, args.join(' '))
  }
  assert.equal(log.puts.length, puts)
  const none = await run('notice', 'ls', '--rpc', '127.0.0.1:1')
  assert.equal(none.code, EXIT_FAILED)
  assert.match(none.err, /no astrad daemon answers at http:\/\/127\.0\.0\.1:1/)
  const token = await run('notice', 'ls', '--rpc', rpc, '--rpc-token', 'wrong')
  assert.equal(token.code, EXIT_FAILED)
  assert.match(token.err, /missing or wrong bearer token/)
})

test('routes: malformed bodies are 400 with a code, a starting daemon 503, errors carry their code', async () => {
  let r = await raw('POST', '/v1/notices', '{"kind":')
  assert.equal(r.status, 400)
  assert.match(String(r.json.error), /not valid JSON/)
  r = await raw('POST', '/v1/notices', '{"kind":"message","data":{"text":"x"},"audience":"all"}')
  assert.deepEqual([r.status, r.json.code], [400, 'ERR_BAD_REQUEST'])
  assert.match(String(r.json.error), /Unrecognized key/)
  r = await raw('POST', '/v1/notices', '')
  assert.deepEqual([r.status, r.json.code], [400, 'ERR_BAD_REQUEST'])
  r = await raw('POST', '/v1/notices/abcd12/canary', '{"nodes":"alpha"}')
  assert.deepEqual([r.status, r.json.code], [400, 'ERR_BAD_REQUEST'])
  r = await raw('GET', '/v1/notices/zz')
  assert.deepEqual([r.status, r.json.code], [400, 'ERR_BAD_NOTICE'])
  r = await raw('GET', '/v1/notices/ffff0000')
  assert.deepEqual([r.status, r.json.code], [404, 'ERR_NOT_FOUND'])
  r = await raw('POST', '/v1/notices', '{"kind":"message","data":{"text":"x"},"canary":["nosuch"]}')
  assert.deepEqual([r.status, r.json.code], [400, 'ERR_UNKNOWN_NODE'])
  const created = await raw('POST', '/v1/notices', '{"kind":"message","data":{"text":"x"}}')
  assert.equal(created.status, 201)
  r = await raw('POST', `/v1/notices/${String(created.json.id)}/promote`)
  assert.deepEqual([r.status, r.json.code], [409, 'ERR_STATE'])
  r = await raw('DELETE', `/v1/notices/${String(created.json.id)}`)
  assert.equal(r.status, 405)
  ready = false
  try {
    r = await raw('GET', '/v1/notices')
    assert.equal(r.status, 503)
    assert.match(String(r.json.error), /daemon is starting/)
  } finally {
    ready = true
  }
})

test('status shows messages first and a notices section; an older daemon without them still renders', async () => {
  const doc = {
    self: { peerId: '12D3KooWSelf', name: 'alpha', roles: ['node'], version: '0.1.0', addrs: [], cell: 'a', state: 'ready' },
    view: { source: 'resource', stalenessMs: 0 },
    nodes: [],
    apps: [],
    notices: [
      { id: 'ab12cd34ef56', kind: 'message', state: 'published', audience: 'all', targets: 3, applied: 2, expiresAt: Date.now() + 3_600_000 + 30_000, revision: 7 },
      { id: '0123456789ab', kind: 'drain', state: 'canary', audience: 'canary: beta', targets: 1, applied: 0, expiresAt: null, revision: 6 }
    ],
    messages: [
      { id: 'ab12cd34ef56', level: 'warn', text: 'maintenance tonight 22:00', since: Date.now() - 60_000, expiresAt: null },
      { id: 'cafe00000000', level: 'info', text: 'new model\nrolled out', since: Date.now(), expiresAt: null }
    ]
  }
  const text = renderStatus(doc as unknown as StatusDocument)
  const warn = text.indexOf('! maintenance tonight 22:00 (notice ab12cd34ef56, warning)')
  assert.ok(warn > 0, text)
  assert.ok(warn < text.indexOf('view: '), 'messages come before the rest')
  assert.match(text, /^- new model rolled out \(notice cafe00000000\)$/m)
  assert.match(text, /notices:\nID\s+KIND\s+STATE\s+REVISION\s+AUDIENCE\s+APPLIED\s+EXPIRES\n/)
  assert.match(text, /^ab12cd34ef56\s+message\s+published\s+7\s+all\s+2\/3\s+in 1h00m$/m)
  assert.match(text, /^0123456789ab\s+drain\s+canary\s+6\s+canary: beta\s+0\/1\s+-$/m)

  const old: Record<string, unknown> = { ...doc }
  delete old.notices
  delete old.messages
  const plain = renderStatus(old as unknown as StatusDocument)
  assert.doesNotMatch(plain, /messages:|notices:/)
  const empty = renderStatus({ ...doc, notices: [], messages: [] } as unknown as StatusDocument)
  assert.doesNotMatch(empty, /messages:|notices:/)
})

test('notice commands load no libp2p code', () => {
  const script = `
    import { registerHooks } from 'node:module'
    const seen = []
    registerHooks({ resolve (s, c, next) { seen.push(s); return next(s, c) } })
    const { runCli } = await import(${JSON.stringify(new URL('../../src/cli/index.ts', import.meta.url).href)})
    const io = { stdout: () => {}, stderr: () => {} }
    await runCli(['node', 'astrad', 'notice', 'ls', '--rpc', '127.0.0.1:1'], io)
    await runCli(['node', 'astrad', 'notice', 'publish', '--kind', 'message', '--data', '{}', '--rpc', '127.0.0.1:1'], io)
    console.log(JSON.stringify(seen.filter(s => /libp2p|onnxruntime|zod|mailbox\\/(notice|admin)/.test(s))))
  `
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 })
  assert.equal(r.status, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout.trim()), [])
})
