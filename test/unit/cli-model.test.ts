import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { Writable } from 'node:stream'
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { Command } from 'commander'
import { EXIT_OK, EXIT_FAILED, EXIT_USAGE } from '../../src/cli/index.ts'
import { modelCommand } from '../../src/cli/commands/model/index.ts'
import { saveModel } from '../../src/cli/commands/model/pull.ts'
import { createProgress } from '../../src/cli/commands/model/progress.ts'
import { RpcClient } from '../../src/rpc/index.ts'
import { renderStatus } from '../../src/cli/commands/status.ts'
import type { StatusDocument } from '../../src/daemon/status.ts'
import { run, assertOneLine } from '../helpers/cli.ts'

/**
 * `astrad model …` against a fake daemon: a real HTTP server on 127.0.0.1 that implements the
 * RPC contract of docs/transfer.md with canned answers (a transfer that goes downloading →
 * complete over a few polls, a failed one, a pinned model, a hash mismatch, a cut stream).
 */

const TOKEN = 'test-token'
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-cli-model-'))

interface FakeModel {
  id: string
  name: string
  body: Buffer
  /** What pull/poll answer: states in order, the last one repeats. */
  plan: Array<'downloading' | 'complete' | 'failed'>
  /** Serve these bytes under the real hash (a daemon gone wrong). */
  corruptBody?: Buffer
  /** Cut the data stream after this many bytes. */
  cutAfter?: number
  /** Send this many bytes of the data stream, then nothing more. */
  stallAfter?: number
  pinned?: boolean
  held?: boolean
}

function modelInfo (m: FakeModel): Record<string, unknown> {
  return {
    id: m.id,
    name: m.name,
    size: m.body.length,
    pieceSize: 4 * 1024 * 1024,
    pieces: Math.ceil(m.body.length / (4 * 1024 * 1024)),
    sha256: sha(m.body),
    addedAt: 1_700_000_000_000,
    addedBy: '12D3KooWFake',
    nodesComplete: 3,
    nodesPartial: 1,
    local: m.held === true ? { havePieces: 1, haveBytes: m.body.length, complete: true, pinned: m.pinned === true } : { havePieces: 0, haveBytes: 0, complete: false, pinned: false }
  }
}

function transfer (m: FakeModel, step: number): Record<string, unknown> {
  const state = m.plan[Math.min(step, m.plan.length - 1)] ?? 'complete'
  const size = m.body.length
  const have = state === 'complete' ? size : Math.min(size, Math.floor(size * (step + 1) / (m.plan.length + 1)))
  return {
    id: m.id,
    name: m.name,
    size,
    pieces: 1,
    havePieces: state === 'complete' ? 1 : 0,
    haveBytes: have,
    rateBps: 12_500_000,
    peers: 3,
    state,
    ...(state === 'failed' ? { error: 'no peer holds piece 0 (60 s without progress)' } : {}),
    startedAt: Date.now(),
    etaSeconds: state === 'downloading' ? 7 : null
  }
}

/** Everything the fake daemon saw, for the assertions. */
const seen = {
  uploads: [] as Array<{ name: string, contentLength: string | undefined, chunked: boolean, sha: string, size: number }>,
  polls: new Map<string, number>(),
  deletes: [] as string[],
  unauthorized: 0
}

const models: FakeModel[] = []
function addFake (m: Omit<FakeModel, 'id'> & { id?: string }): FakeModel {
  const full = { ...m, id: m.id ?? sha(m.body) }
  models.push(full)
  return full
}

const slow = addFake({ name: 'slow-model', body: randomBytes(300_000), plan: ['downloading', 'downloading', 'downloading', 'complete'] })
const ready = addFake({ name: 'ready-model', body: randomBytes(50_000), plan: ['complete'], held: true })
const broken = addFake({ name: 'broken-model', body: randomBytes(1000), plan: ['downloading', 'failed'] })
const liar = addFake({ name: 'liar-model', body: randomBytes(200_000), plan: ['complete'], held: true, corruptBody: randomBytes(200_000) })
const cut = addFake({ name: 'cut-model', body: randomBytes(500_000), plan: ['complete'], held: true, cutAfter: 100_000 })
const stalled = addFake({ name: 'stalled-model', body: randomBytes(300_000), plan: ['complete'], held: true, stallAfter: 100_000 })
const pinned = addFake({ name: 'pinned-model', body: randomBytes(100), plan: ['complete'], held: true, pinned: true })
// Two ids sharing their first 10 hex digits: a 10-digit prefix is ambiguous, 12 is not.
const twinA = addFake({ id: 'abcdef0123' + sha(Buffer.from('a')).slice(10), name: 'twin-a', body: randomBytes(10), plan: ['complete'] })
const twinB = addFake({ id: 'abcdef0123' + sha(Buffer.from('b')).slice(10), name: 'twin-b', body: randomBytes(10), plan: ['complete'] })

function send (res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) })
  res.end(text)
}

async function readBody (req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

const statusDoc = (): Record<string, unknown> => ({
  self: { peerId: '12D3KooWSelf', name: 'alpha', roles: ['node'], version: '0.1.0', addrs: [], cell: 'default', state: 'ready' },
  view: { source: 'resource', stalenessMs: 0 },
  nodes: [
    { peerId: '12D3KooWSelfAAAAAAAA', name: 'alpha', cell: 'default', state: 'alive', roles: ['node'], cores: 4, gpus: 0, cpuUtil: 0.1, inflight: 0, lastSeenMs: 200, replicas: 0, uploadLimit: 25_000_000, downloadLimit: 0, uploadRate: 1_200_000, downloadRate: 30_000_000, transfers: 1 },
    { peerId: '12D3KooWOldBBBBBBBB', name: 'beta', cell: 'default', state: 'alive', roles: ['node'], cores: 2, gpus: 0, cpuUtil: 0.5, inflight: 1, lastSeenMs: 900, replicas: 0 }
  ],
  apps: [],
  models: [modelInfo(slow), modelInfo(ready)],
  notices: [],
  transfers: [transfer(slow, 1), transfer(broken, 5)],
  limits: {
    upload: { limit: 25_000_000, source: 'auto', node: 25_000_000, cluster: null, measured: 210_000_000 },
    download: { limit: 50_000_000, source: 'cluster', node: null, cluster: 50_000_000, measured: null },
    uploadRateBps: 1_200_000,
    downloadRateBps: 30_000_000
  }
})

async function handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x')
  if (req.headers.authorization !== `Bearer ${TOKEN}`) {
    seen.unauthorized++
    send(res, 401, { error: 'missing or wrong bearer token' })
    return
  }
  const p = url.pathname
  const byId = (id: string | undefined): FakeModel | undefined => models.find(m => m.id === id)
  let m: RegExpExecArray | null
  if (req.method === 'POST' && p === '/v1/models') {
    const name = url.searchParams.get('name') ?? ''
    if (name === 'refuse-me') {
      // Answer before reading the body (the daemon's disk is full), as a real daemon may.
      send(res, 507, { error: 'no space left for a model of this size', code: 'ERR_NO_SPACE' })
      return
    }
    const body = await readBody(req)
    seen.uploads.push({ name, contentLength: req.headers['content-length'], chunked: req.headers['transfer-encoding'] != null, sha: sha(body), size: body.length })
    send(res, 201, { id: sha(body), name, size: body.length, pieceSize: 4 * 1024 * 1024, pieces: 1 })
    return
  }
  await readBody(req)
  if (req.method === 'GET' && p === '/v1/models') return send(res, 200, { models: models.map(modelInfo) })
  if ((m = /^\/v1\/models\/([0-9a-f]{64})$/.exec(p)) != null) {
    const model = byId(m[1])
    if (model == null) return send(res, 404, { error: `no model ${m[1]}`, code: 'ERR_NOT_FOUND' })
    if (req.method === 'GET') return send(res, 200, modelInfo(model))
    if (req.method === 'DELETE') {
      if (model.pinned === true) return send(res, 409, { error: `model ${model.id} is in use by replica:chat-0`, code: 'ERR_PINNED' })
      seen.deletes.push(`${model.id}${url.search}`)
      return send(res, 200, { id: model.id, removed: true })
    }
  }
  if (req.method === 'POST' && (m = /^\/v1\/models\/([0-9a-f]{64})\/pull$/.exec(p)) != null) {
    const model = byId(m[1])
    if (model == null) return send(res, 404, { error: 'no model', code: 'ERR_NOT_FOUND' })
    seen.polls.set(model.id, 0)
    const t = transfer(model, 0)
    return send(res, t.state === 'complete' ? 200 : 202, t)
  }
  if (req.method === 'GET' && (m = /^\/v1\/transfers\/([0-9a-f]{64})$/.exec(p)) != null) {
    const model = byId(m[1])
    const n = model != null ? seen.polls.get(model.id) : undefined
    if (model == null || n == null) return send(res, 404, { error: 'no transfer', code: 'ERR_NOT_FOUND' })
    seen.polls.set(model.id, n + 1)
    return send(res, 200, transfer(model, n + 1))
  }
  if (req.method === 'GET' && (m = /^\/v1\/models\/([0-9a-f]{64})\/data$/.exec(p)) != null) {
    const model = byId(m[1])
    if (model == null) return send(res, 404, { error: 'no model', code: 'ERR_NOT_FOUND' })
    if (model.held !== true) return send(res, 409, { error: 'incomplete', code: 'ERR_INCOMPLETE' })
    const bytes = model.corruptBody ?? model.body
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(model.body.length), 'x-astrad-sha256': sha(model.body) })
    if (model.stallAfter != null) {
      res.write(bytes.subarray(0, model.stallAfter))
      return
    }
    if (model.cutAfter != null) {
      res.write(bytes.subarray(0, model.cutAfter), () => { setTimeout(() => res.destroy(), 20) })
      return
    }
    for (let i = 0; i < bytes.length; i += 65536) res.write(bytes.subarray(i, i + 65536))
    res.end()
    return
  }
  if (req.method === 'GET' && p === '/v1/status') return send(res, 200, statusDoc())
  send(res, 404, { error: `no route ${p}` })
}

let server: http.Server
let rpc = ''
before(async () => {
  server = http.createServer((req, res) => {
    handle(req, res).catch(err => { res.destroy(err as Error) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  rpc = `127.0.0.1:${(server.address() as { port: number }).port}`
})
after(async () => {
  server.closeAllConnections()
  await new Promise(resolve => server.close(resolve))
  fs.rmSync(tmp, { recursive: true, force: true })
})

const daemon = (): string[] => ['--rpc', rpc, '--rpc-token', TOKEN]

test('model --help lists the subcommands; each has --help', async () => {
  const r = await run('model', '--help')
  assert.equal(r.code, EXIT_OK)
  for (const sub of ['add', 'ls', 'pull', 'rm']) {
    assert.match(r.out, new RegExp(`\\n  ${sub} `), sub)
    const s = await run('model', sub, '--help')
    assert.equal(s.code, EXIT_OK, sub)
    assert.match(s.out, new RegExp(`Usage: astrad model ${sub}`))
    assert.match(s.out, /--rpc <host:port>/)
  }
})

test('model limit is gone: the cluster-wide cap is a bandwidth notice', async () => {
  const help = await run('model', '--help')
  assert.doesNotMatch(help.out, /\n  limit /)
  assert.match(help.out, /notice publish --kind bandwidth/)
  const r = await run('model', 'limit', '--upload', '25MB/s', ...daemon())
  assert.equal(r.code, EXIT_USAGE)
  assert.match(r.err, /unknown command 'limit'/)
})

test('model add streams the file with its Content-Length and prints the id', async () => {
  const file = path.join(tmp, 'weights.onnx')
  const data = randomBytes(3 * 1024 * 1024 + 17)
  fs.writeFileSync(file, data)
  const r = await run('model', 'add', file, ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  assert.equal(r.out, `${sha(data)}\n`)
  assert.equal(r.err, '', 'no progress bar on a pipe')
  const up = seen.uploads.at(-1)
  assert.deepEqual(up, { name: 'weights.onnx', contentLength: String(data.length), chunked: false, sha: sha(data), size: data.length })

  const j = await run('model', 'add', file, '--name', 'my model/v2', '--json', ...daemon())
  assert.equal(j.code, EXIT_OK, j.err)
  assert.deepEqual(JSON.parse(j.out), { id: sha(data), name: 'my model/v2', size: data.length, pieceSize: 4 * 1024 * 1024, pieces: 1 })
  assert.equal(seen.uploads.at(-1)?.name, 'my model/v2')
})

test('model add: bad FILE and bad --name are usage errors (exit 2), one line, nothing sent', async () => {
  const before = seen.uploads.length
  const empty = path.join(tmp, 'empty.bin')
  fs.writeFileSync(empty, '')
  for (const [args, re] of [
    [['model', 'add'], /missing required argument 'FILE'/],
    [['model', 'add', path.join(tmp, 'nope.bin')], /FILE: .*nope\.bin does not exist/],
    [['model', 'add', tmp], /FILE: .* is a directory/],
    [['model', 'add', empty], /FILE: .*empty\.bin is empty/],
    [['model', 'add', empty, '--name', ''], /--name/],
    [['model', 'add', empty, '--name', 'a\tb'], /--name/]
  ] as Array<[string[], RegExp]>) {
    const r = await run(...args, ...daemon())
    assert.equal(r.code, EXIT_USAGE, args.join(' '))
    assert.match(r.err, re, args.join(' '))
    assertOneLine(r, args.join(' '))
  }
  assert.equal(seen.uploads.length, before)
})

test('model add: a daemon that refuses before reading the body fails at once with its message', async () => {
  const file = path.join(tmp, 'big.bin')
  fs.writeFileSync(file, Buffer.alloc(16 * 1024 * 1024, 7))
  const t0 = Date.now()
  const r = await run('model', 'add', file, '--name', 'refuse-me', ...daemon())
  assert.equal(r.code, EXIT_FAILED)
  assert.match(r.err, /no space left for a model of this size/)
  assertOneLine(r, 'refused add')
  assert.ok(Date.now() - t0 < 5000, 'no hang on an early answer')
})

test('model ls prints a table; --json the daemon document', async () => {
  const r = await run('model', 'ls', ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  const lines = r.out.trimEnd().split('\n')
  assert.match(lines[0] ?? '', /^ID\s+NAME\s+SIZE\s+PIECES\s+COMPLETE ON\s+LOCAL$/)
  assert.equal(lines.length, models.length + 1)
  const slowLine = lines.find(l => l.includes('slow-model')) ?? ''
  assert.ok(slowLine.startsWith(slow.id.slice(0, 12) + ' '), slowLine)
  assert.ok(!slowLine.includes(slow.id.slice(0, 13)), 'ids are cut to 12 characters')
  assert.match(slowLine, /300 kB\s+1\s+3 \(\+1 partial\)\s+0%$/)
  assert.match(lines.find(l => l.includes('pinned-model')) ?? '', /100% pinned$/)
  const j = await run('model', 'ls', '--json', ...daemon())
  assert.equal(JSON.parse(j.out).models.length, models.length)
})

test('model pull polls until complete and writes --output verified, atomically', async () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'out-'))
  const out = path.join(dir, 'slow.bin')
  // The slow model is held only once the pull completes.
  slow.held = false
  // The fake transfer starts 1/5 done (a resumed download): 240 of 300 kB are fetched by this pull.
  const r0 = await run('model', 'pull', slow.id.slice(0, 12), ...daemon())
  assert.equal(r0.code, EXIT_OK, r0.err)
  assert.match(r0.out, new RegExp(`^${slow.id.slice(0, 12)} slow-model: complete \\(240 kB in [0-9.]+s, .+/s\\)\\n$`))
  assert.equal(r0.err, '', 'no progress bar on a pipe')
  assert.equal(seen.polls.get(slow.id), 3, 'polled until the transfer completed, then stopped')

  slow.held = true
  const r = await run('model', 'pull', slow.id, '--output', out, ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  assert.match(r.out, /slow-model: complete/)
  assert.match(r.out, new RegExp(`wrote ${out.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(300 kB, sha256 ${sha(slow.body)} verified\\)`))
  assert.deepEqual(fs.readFileSync(out), slow.body)
  assert.deepEqual(fs.readdirSync(dir), ['slow.bin'], 'no temporary file left')
  fs.rmSync(dir, { recursive: true })
})

test('model pull of a held model with --json prints the transfer and the file', async () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'out-'))
  const out = path.join(dir, 'ready.bin')
  const r = await run('model', 'pull', ready.id.slice(0, 8), '--output', out, '--json', ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  const doc = JSON.parse(r.out)
  assert.equal(doc.state, 'complete')
  assert.equal(doc.id, ready.id)
  assert.deepEqual(doc.output, { path: out, size: ready.body.length, sha256: sha(ready.body) })
  assert.deepEqual(fs.readFileSync(out), ready.body)
  fs.rmSync(dir, { recursive: true })
})

test('model pull: a failed transfer exits 1 with the daemon\'s reason', async () => {
  const r = await run('model', 'pull', broken.id, ...daemon())
  assert.equal(r.code, EXIT_FAILED)
  assert.match(r.err, /pull of .* \(broken-model\) failed: no peer holds piece 0/)
  assertOneLine(r, 'failed pull')
})

test('model pull --output: a hash mismatch or a cut stream writes nothing and leaves no temp file', async () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'out-'))
  const out = path.join(dir, 'model.bin')
  fs.writeFileSync(out, 'previous contents')
  for (const [model, re] of [[liar, /SHA-256 mismatch/], [cut, /closed the data stream early|sent 100000 of 500000/]] as Array<[FakeModel, RegExp]>) {
    const r = await run('model', 'pull', model.id, '--output', out, ...daemon())
    assert.equal(r.code, EXIT_FAILED, model.name)
    assert.match(r.err, re, model.name)
    assert.match(r.err, /not written|nothing was written/)
    assertOneLine(r, model.name)
    assert.deepEqual(fs.readdirSync(dir), ['model.bin'], `no temporary file after ${model.name}`)
    assert.equal(fs.readFileSync(out, 'utf8'), 'previous contents', 'the old file is untouched')
  }
  fs.rmSync(dir, { recursive: true })
})

test('an interrupted --output download (Ctrl-C) removes its temporary file', async () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'out-'))
  const out = path.join(dir, 'stalled.bin')
  const client = new RpcClient({ host: '127.0.0.1', port: Number(rpc.split(':')[1]) }, TOKEN)
  const ac = new AbortController()
  const saving = saveModel(client, modelInfo(stalled) as never, out, { progressStream: null, signal: ac.signal })
  const deadline = Date.now() + 5000
  while (fs.readdirSync(dir).length === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  assert.match(fs.readdirSync(dir)[0] ?? '', /^\.stalled\.bin\.[0-9a-f]{8}\.astrad-tmp$/, 'the temporary file sits beside the output')
  ac.abort()
  await assert.rejects(saving, { name: 'AstradError', code: 'ERR_INTERRUPTED' })
  assert.deepEqual(fs.readdirSync(dir), [])
  fs.rmSync(dir, { recursive: true })
})

test('model pull/rm: bad, unknown and ambiguous ids', async () => {
  const cases: Array<[string[], number, RegExp]> = [
    [['model', 'pull'], EXIT_USAGE, /missing required argument 'ID'/],
    [['model', 'pull', 'abc'], EXIT_USAGE, /ID: expected a model id or its first 8\+ hex characters/],
    [['model', 'pull', 'not-hex-at-all'], EXIT_USAGE, /ID: /],
    [['model', 'pull', 'f'.repeat(65)], EXIT_USAGE, /ID: /],
    [['model', 'pull', '00000000ff'], EXIT_FAILED, /no model 00000000ff \(see: astrad model ls\)/],
    [['model', 'pull', '0'.repeat(64)], EXIT_FAILED, /no model 0{64}/],
    [['model', 'pull', 'abcdef0123'], EXIT_FAILED, /abcdef0123 matches 2 models .*give more characters/],
    [['model', 'rm', 'ABCDEF0123'], EXIT_FAILED, /matches 2 models/],
    [['model', 'pull', slow.id, '--output', tmp], EXIT_USAGE, /--output: .* is a directory/],
    [['model', 'pull', slow.id, '--output', path.join(tmp, 'no', 'such', 'dir', 'x')], EXIT_USAGE, /--output: directory .* does not exist/]
  ]
  for (const [args, code, re] of cases) {
    const r = await run(...args, ...daemon())
    assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`)
    assert.match(r.err, re, args.join(' '))
    assertOneLine(r, args.join(' '))
  }
  // 12 digits tell the twins apart.
  const r = await run('model', 'rm', twinB.id.slice(0, 12), ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  assert.equal(r.out, `removed ${twinB.id.slice(0, 12)} twin-b\n`)
  assert.equal(seen.deletes.at(-1), twinB.id)
  assert.ok(twinA.id !== twinB.id)
})

test('model rm: pinned is refused (exit 1); --forget asks for the cluster-wide delete', async () => {
  const p = await run('model', 'rm', pinned.id, ...daemon())
  assert.equal(p.code, EXIT_FAILED)
  assert.match(p.err, /in use by replica:chat-0/)
  assertOneLine(p, 'pinned rm')
  const f = await run('model', 'rm', ready.id.slice(0, 9), '--forget', ...daemon())
  assert.equal(f.code, EXIT_OK, f.err)
  assert.equal(seen.deletes.at(-1), `${ready.id}?forget=1`)
  assert.match(f.out, /and forgot it cluster-wide/)
})

test('every model subcommand: no daemon → exit 1 with a clear message; a wrong token → exit 1', async () => {
  const file = path.join(tmp, 'small.bin')
  fs.writeFileSync(file, 'abc')
  for (const args of [['add', file], ['ls'], ['pull', slow.id], ['rm', slow.id]]) {
    const r = await run('model', ...args, '--rpc', '127.0.0.1:1')
    assert.equal(r.code, EXIT_FAILED, args.join(' '))
    assert.match(r.err, /no astrad daemon answers at http:\/\/127\.0\.0\.1:1/, args.join(' '))
    assertOneLine(r, args.join(' '))
  }
  const before = seen.unauthorized
  const w = await run('model', 'add', file, '--rpc', rpc, '--rpc-token', 'wrong')
  assert.equal(w.code, EXIT_FAILED)
  assert.match(w.err, /missing or wrong bearer token/)
  assert.equal(seen.unauthorized, before + 1)
})

/** A stream that says it is a terminal and keeps what is drawn on it. */
function fakeTty (isTTY: boolean): Writable & { isTTY: boolean, columns: number, text: () => string } {
  let text = ''
  const w = new Writable({ write (chunk: Buffer, _e, cb) { text += chunk.toString(); cb() } })
  return Object.assign(w, { isTTY, columns: 120, text: () => text })
}

async function runModel (stream: Writable | null, ...args: string[]): Promise<string> {
  let out = ''
  const io = { stdout: (s: string) => { out += s }, stderr: (s: string) => { out += s } }
  const program = new Command('astrad').exitOverride().addCommand(modelCommand(io, { progressStream: stream as never, pollIntervalMs: 20 }))
  await program.parseAsync(['node', 'astrad', 'model', ...args, ...daemon()])
  return out
}

test('a progress bar is drawn on a terminal (bytes, rate, peers, ETA), nothing on a pipe', async () => {
  slow.held = true
  const tty = fakeTty(true)
  const out = await runModel(tty, 'pull', slow.id, '--output', path.join(tmp, 'bar.bin'))
  assert.match(out, /complete/)
  const drawn = tty.text()
  assert.match(drawn, /pulling \[/)
  assert.match(drawn, /pulling \[=+\] 100% \| 300 kB\/300 kB \| [\d.]+ [kMG]?B\/s average \| done in \d+s/)
  assert.match(drawn, /saving \[/)

  const pipe = fakeTty(false)
  await runModel(pipe, 'pull', slow.id, '--output', path.join(tmp, 'bar.bin'))
  const file = path.join(tmp, 'bar-add.bin')
  fs.writeFileSync(file, randomBytes(2 * 1024 * 1024))
  await runModel(pipe, 'add', file)
  assert.equal(pipe.text(), '')

  const tty2 = fakeTty(true)
  await runModel(tty2, 'add', file)
  assert.match(tty2.text(), /uploading \[.*\] 100% \| 2\.10 MB\/2\.10 MB/)
})

test('the final bar line of a finished transfer shows its average rate and duration, not 0 B/s and 0 peers', async () => {
  const tty = fakeTty(true)
  const bar = await createProgress(tty as never, 'pulling', 2_000_000)
  bar.update({ done: 0, rateBps: 0, peers: 0, etaSeconds: null })
  bar.update({ done: 1_000_000, rateBps: 5_000_000, peers: 3, etaSeconds: 1 })
  // cli-progress redraws on a timer (8 frames/s): let it draw the running figures.
  await new Promise(resolve => setTimeout(resolve, 300))
  bar.update({ done: 2_000_000, rateBps: 0, peers: 0, etaSeconds: 0 })
  bar.stop()
  const frames = tty.text().split(/\r|\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/).map(f => f.trim()).filter(f => f !== '')
  const final = frames.at(-1) ?? ''
  assert.match(final, /^pulling \[=+\] 100% \| 2\.00 MB\/2\.00 MB \| [\d.]+ [kMG]?B\/s average \| done in \d+s$/, `final line: ${final}`)
  assert.ok(frames.some(f => / \| 3 peers \| ETA 1s$/.test(f)), `a running frame shows peers and ETA:\n${frames.join('\n')}`)

  // Stopped before the end (a failure): the last running figures stay.
  const cut = fakeTty(true)
  const partial = await createProgress(cut as never, 'pulling', 2_000_000)
  partial.update({ done: 500_000, rateBps: 1_000_000, peers: 2, etaSeconds: 2 })
  partial.stop()
  assert.doesNotMatch(cut.text(), /average|done in/)
})

test('status shows transfers, limits with their source, per-node limits and rates (--wide), models', () => {
  const text = renderStatus(statusDoc() as unknown as StatusDocument, { wide: true })
  const lines = text.split('\n')
  assert.match(lines.find(l => l.startsWith('NAME')) ?? '', /REPLICAS\s+AGE\s+CORES\s+GPUS\s+INFLIGHT\s+WEIGHT\s+UP LIMIT\s+UP RATE\s+DOWN LIMIT\s+DOWN RATE\s+PULLS\s+LAST SEEN/)
  assert.match(lines.find(l => l.startsWith('alpha  ')) ?? '', /25\.0 MB\/s\s+1\.20 MB\/s\s+unlimited\s+30\.0 MB\/s\s+1\s/)
  assert.match(lines.find(l => l.startsWith('beta  ')) ?? '', /-\s+-\s+-\s+-\s+-\s/, 'a daemon without the fields shows dashes')
  assert.match(text, /upload: {3}25\.0 MB\/s \(auto, measured 210 MB\/s\), now 1\.20 MB\/s/)
  assert.match(text, /download: 50\.0 MB\/s \(cluster cap\), now 30\.0 MB\/s/)
  assert.match(text, /transfers on alpha:\nMODEL\s+NAME\s+PROGRESS\s+SIZE\s+RATE\s+PEERS\s+ETA\s+STATE/)
  assert.match(text, new RegExp(`${slow.id.slice(0, 12)}\\s+slow-model\\s+40%\\s+300 kB\\s+12\\.5 MB/s\\s+3\\s+7s\\s+downloading`))
  assert.match(text, /broken-model\s+\d+%\s+1\.00 kB\s+-\s+-\s+-\s+failed: no peer holds piece 0/)
  assert.match(text, /models:\nID\s+NAME\s+SIZE\s+PIECES\s+COMPLETE ON\s+LOCAL/)

  // A daemon of the previous version: no transfer fields at all.
  const old = statusDoc()
  delete old.transfers
  delete old.limits
  old.models = []
  const plain = renderStatus(old as unknown as StatusDocument)
  assert.doesNotMatch(plain, /transfers on|P2P limits|models:/)
})

test('astrad status through the CLI renders the transfer sections', async () => {
  const r = await run('status', ...daemon())
  assert.equal(r.code, EXIT_OK, r.err)
  assert.match(r.out, /P2P limits of alpha:/)
  assert.match(r.out, /transfers on alpha:/)
})

test('client commands load neither libp2p nor cli-progress', () => {
  const script = `
    import { registerHooks } from 'node:module'
    const seen = []
    registerHooks({ resolve (s, c, next) { seen.push(s); return next(s, c) } })
    const { runCli } = await import(${JSON.stringify(new URL('../../src/cli/index.ts', import.meta.url).href)})
    const io = { stdout: () => {}, stderr: () => {} }
    await runCli(['node', 'astrad', 'model', 'ls', '--rpc', '127.0.0.1:1'], io)
    await runCli(['node', 'astrad', 'model', 'pull', 'abcdef0123', '--rpc', '127.0.0.1:1'], io)
    console.log(JSON.stringify({ commander: seen.includes('commander'), heavy: seen.filter(s => /libp2p|cli-progress|onnxruntime/.test(s)) }))
  `
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 })
  assert.equal(r.status, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout.trim()), { commander: true, heavy: [] })
})

test('against the daemon\'s real RPC server and transfer routes (stub service): add, refuse, ls, pull --output, rm', async () => {
  const { RpcServer } = await import('../../src/rpc/index.ts')
  const { registerTransferRoutes, TransferError } = await import('../../src/transfer/index.ts')
  const { createMetrics } = await import('../../src/metrics/index.ts')
  const { silentLogger } = await import('../../src/util/logger.ts')
  const held = new Map<string, { name: string, body: Buffer, pinned: boolean }>()
  const info = (id: string): Record<string, unknown> => {
    const m = held.get(id) as { name: string, body: Buffer, pinned: boolean }
    return { id, name: m.name, size: m.body.length, pieceSize: 4 << 20, pieces: 1, sha256: createHash('sha256').update(m.body).digest('hex'), addedAt: 1, addedBy: 'x', nodesComplete: 1, nodesPartial: 0, local: { havePieces: 1, haveBytes: m.body.length, complete: true, pinned: m.pinned } }
  }
  const done = (id: string): Record<string, unknown> => ({ id, name: held.get(id)?.name, size: held.get(id)?.body.length, pieces: 1, havePieces: 1, haveBytes: held.get(id)?.body.length, rateBps: 0, peers: 0, state: 'complete', startedAt: 0, etaSeconds: null, phase: 'done', failures: 0 })
  const service = {
    add: async (source: AsyncIterable<Uint8Array>, size: number, name: string) => {
      if (name === 'refuse-me') throw new TransferError('no space left for a model of this size', 'ERR_NO_SPACE', 507)
      const parts: Uint8Array[] = []
      for await (const c of source) parts.push(c)
      const body = Buffer.concat(parts)
      assert.equal(body.length, size)
      held.set(sha(body), { name, body, pinned: name === 'pinned' })
      return { id: sha(body), name, size, pieceSize: 4 << 20, pieces: 1 }
    },
    models: async () => [...held.keys()].map(info),
    model: async (id: string) => held.has(id) ? info(id) : undefined,
    pull: async (id: string) => {
      if (!held.has(id)) throw new TransferError(`no model ${id}`, 'ERR_NOT_FOUND', 404)
      return done(id)
    },
    transfer: (id: string) => held.has(id) ? done(id) : undefined,
    transfers: () => [],
    limitsInfo: () => ({}),
    readModel: (id: string) => {
      const m = held.get(id)
      if (m == null) throw new TransferError('no copy', 'ERR_NOT_FOUND', 404)
      return { size: m.body.length, sha256: sha(m.body), stream: (async function * () { for (let i = 0; i < m.body.length; i += 1 << 20) yield m.body.subarray(i, i + (1 << 20)) })() }
    },
    remove: async (id: string) => {
      if (held.get(id)?.pinned === true) throw new TransferError(`model ${id} is in use by replica:r1`, 'ERR_PINNED', 409)
      held.delete(id)
    }
  }
  const rpcServer = new RpcServer({ logger: silentLogger(), metrics: createMetrics() }, { host: '127.0.0.1', port: 0, token: TOKEN })
  registerTransferRoutes(rpcServer, () => service as never)
  const addr = await rpcServer.listen()
  const real = ['--rpc', `127.0.0.1:${addr.port}`, '--rpc-token', TOKEN]
  try {
    const file = path.join(tmp, 'real.bin')
    const data = randomBytes(9 * 1024 * 1024 + 3)
    fs.writeFileSync(file, data)
    const a = await run('model', 'add', file, '--json', ...real)
    assert.equal(a.code, EXIT_OK, a.err)
    assert.equal(JSON.parse(a.out).id, sha(data))

    const big = path.join(tmp, 'big-real.bin')
    fs.writeFileSync(big, Buffer.alloc(32 * 1024 * 1024, 1))
    const refused = await run('model', 'add', big, '--name', 'refuse-me', ...real)
    assert.equal(refused.code, EXIT_FAILED)
    assert.match(refused.err, /no space left for a model of this size/)

    const pinnedFile = path.join(tmp, 'pinned.bin')
    fs.writeFileSync(pinnedFile, 'pinned bytes')
    assert.equal((await run('model', 'add', pinnedFile, '--name', 'pinned', ...real)).code, EXIT_OK)

    const ls = await run('model', 'ls', ...real)
    assert.match(ls.out, new RegExp(`${sha(data).slice(0, 12)}\\s+real\\.bin\\s+9\\.44 MB\\s+1\\s+1\\s+100%`))

    const out = path.join(tmp, 'real-out.bin')
    const p = await run('model', 'pull', sha(data).slice(0, 8), '--output', out, ...real)
    assert.equal(p.code, EXIT_OK, p.err)
    assert.match(p.out, /already held/)
    assert.deepEqual(fs.readFileSync(out), data)

    const unknown = await run('model', 'pull', '0'.repeat(64), ...real)
    assert.equal(unknown.code, EXIT_FAILED)
    assert.match(unknown.err, /no model 0{64}/)

    const rmPinned = await run('model', 'rm', sha(Buffer.from('pinned bytes')), ...real)
    assert.equal(rmPinned.code, EXIT_FAILED)
    assert.match(rmPinned.err, /in use by replica:r1/)
    const rm = await run('model', 'rm', sha(data).slice(0, 10), ...real)
    assert.equal(rm.code, EXIT_OK, rm.err)
    assert.equal(held.has(sha(data)), false)
  } finally {
    await rpcServer.close()
  }
})
