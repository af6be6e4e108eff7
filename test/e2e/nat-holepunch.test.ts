import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { ROOT } from '../helpers/process.ts'
import { NatLab, namespaceSupport, removeStaleLabs, type NatLabOptions, type RunResult } from '../helpers/netns.ts'

/*
 * Can Node punch a TCP hole between two NATs at all? (issue 17 goal 4, docs/nat.md "DCUtR".)
 * Plain Node sockets, no libp2p: nodes a and b behind two MASQUERADE routers learn their
 * observed address from a rendezvous server on the public net (what a relay and identify give
 * DCUtR), are told each other's at the same moment (DCUtR's SYNC), and both dial the other from
 * the local port they used towards the rendezvous — a TCP simultaneous open. Node cannot set
 * SO_REUSEPORT on a client socket, but libuv sets SO_REUSEADDR on every explicit bind, and Linux
 * lets two non-listening sockets with SO_REUSEADDR share a port: the dial can reuse the port of
 * an outgoing connection, never the port of a listener.
 */

const NET = '7.77.1'
const RV_PORT = 9000
const LOCAL_PORT = 40_001
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')

let skipReason: string | undefined
before(async () => {
  skipReason = await namespaceSupport()
  if (skipReason == null) await removeStaleLabs()
})

const RENDEZVOUS = `
const net = require('node:net')
const clients = []
const server = net.createServer(sock => {
  clients.push(sock)
  sock.on('error', () => {})
  if (clients.length === 2) {
    const [x, y] = clients
    x.write(y.remoteAddress + ' ' + y.remotePort + '\\n')
    y.write(x.remoteAddress + ' ' + x.remotePort + '\\n')
  }
})
server.listen(${RV_PORT}, '0.0.0.0', () => { process.stdout.write('listening\\n') })
setTimeout(() => process.exit(0), 45000).unref()
`

/** One side: rendezvous from LOCAL_PORT, then dial the peer's observed address from the same port until connected. */
const SIDE = `
const net = require('node:net')
const { rv, name, listen, localPort } = JSON.parse(process.env.HP)
const out = { name, errors: [] }
const done = () => { process.stdout.write(JSON.stringify(out) + '\\n'); process.exit(0) }
setTimeout(() => { out.error = 'deadline'; done() }, 25000)
async function main () {
  if (listen) {
    // As a libp2p host: a listener on the port first (reusePort: SO_REUSEPORT on the listener).
    const server = net.createServer(() => {})
    await new Promise((resolve, reject) => { server.once('error', reject); server.listen({ port: localPort, host: '0.0.0.0', reusePort: true }, resolve) })
  }
  const r = net.connect({ host: rv, port: ${RV_PORT}, localPort, localAddress: '0.0.0.0' })
  const line = await new Promise((resolve, reject) => {
    let buf = ''
    r.on('data', d => { buf += d; if (buf.includes('\\n')) resolve(buf.trim()) })
    r.once('error', reject)
  })
  out.rendezvousLocalPort = r.localPort
  const [host, port] = line.split(' ')
  out.peer = host + ':' + port
  const t0 = Date.now()
  let attempt = 0
  while (Date.now() - t0 < 15000) {
    attempt++
    const res = await new Promise(resolve => {
      const s = net.connect({ host, port: Number(port), localPort, localAddress: '0.0.0.0' })
      const timer = setTimeout(() => { s.destroy(); resolve({ err: 'timeout' }) }, 2500)
      s.once('connect', () => { clearTimeout(timer); resolve({ s }) })
      s.once('error', err => { clearTimeout(timer); resolve({ err: err.code || err.message }) })
    })
    if (res.s != null) {
      out.connected = true
      out.attempts = attempt
      out.ms = Date.now() - t0
      out.local = res.s.localAddress + ':' + res.s.localPort
      res.s.write('hello from ' + name + '\\n')
      out.got = await new Promise(resolve => {
        let buf = ''
        res.s.on('data', d => { buf += d; if (buf.includes('\\n')) resolve(buf.trim()) })
        res.s.once('error', () => resolve(buf))
        setTimeout(() => resolve(buf), 3000)
      })
      res.s.end()
      return
    }
    out.errors.push(res.err)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
main().then(done, err => { out.error = (err && (err.code || err.message)) || String(err); done() })
`

interface Side { name: string, connected?: boolean, attempts?: number, ms?: number, got?: string, peer?: string, errors: string[], error?: string, rendezvousLocalPort?: number }

/** Builds a lab, runs the rendezvous and both sides at once, tears the lab down. */
async function punch (options: NatLabOptions, listen = false): Promise<{ a: Side, b: Side, raw: RunResult[] }> {
  const lab = await NatLab.create({ publicNet: NET, ...options })
  try {
    const rv = lab.spawn(lab.ns.pub, [NODE, '-e', RENDEZVOUS], { stdio: ['ignore', 'pipe', 'pipe'] })
    await new Promise<void>((resolve, reject) => {
      rv.stdout?.on('data', (d: Buffer) => { if (d.toString().includes('listening')) resolve() })
      rv.once('exit', code => { reject(new Error(`rendezvous exited (${String(code)})`)) })
    })
    const side = async (ns: string, name: string): Promise<RunResult> => await lab.exec(ns, [NODE, '-e', SIDE], {
      timeoutMs: 40_000, env: { HP: JSON.stringify({ rv: lab.ip.resource, name, listen, localPort: LOCAL_PORT }) }
    })
    const raw = await Promise.all([side(lab.ns.a, 'a'), side(lab.ns.b, 'b')])
    const parse = (r: RunResult, name: string): Side => {
      try {
        return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Side
      } catch {
        throw new Error(`side ${name} printed no result (exit ${String(r.code)}): ${r.stdout}${r.stderr}`)
      }
    }
    return { a: parse(raw[0], 'a'), b: parse(raw[1], 'b'), raw }
  } finally {
    await lab.destroy()
  }
}

/** `ECONNREFUSED ×12, timeout ×3`. */
function summary (errors: string[]): string {
  const counts = new Map<string, number>()
  for (const e of errors) counts.set(e, (counts.get(e) ?? 0) + 1)
  return [...counts].map(([e, n]) => `${e} ×${n}`).join(', ') || 'no error'
}

after(async () => { if (skipReason == null) await removeStaleLabs() })

test('TCP hole punch from Node through two port-preserving MASQUERADE NATs: a simultaneous open from the rendezvous port connects', async (t) => {
  if (skipReason != null) {
    t.skip(`NAT lab unavailable: ${skipReason}`)
    return
  }
  // Routers that drop unsolicited SYNs (rather than answer RST): the SYN that arrives before the
  // peer's own SYN has opened its NAT is retransmitted and crosses. With RST, measured: each
  // early dial fails at once and the sides connected after ~256 dials each (~6.8 s) — a race.
  const { a, b } = await punch({ dropUnsolicited: true })
  const seen = JSON.stringify({ a, b })
  // Linux MASQUERADE keeps a free source port: each side's observed port is its local port.
  assert.equal(a.peer, `${NET}.12:${LOCAL_PORT}`, `a was told b's observed address: ${seen}`)
  assert.equal(b.peer, `${NET}.11:${LOCAL_PORT}`, `b was told a's observed address: ${seen}`)
  assert.equal(a.connected, true, `a connected to b directly: ${seen}`)
  assert.equal(b.connected, true, `b connected to a directly: ${seen}`)
  assert.equal(a.got, 'hello from b', seen)
  assert.equal(b.got, 'hello from a', seen)
  t.diagnostic(`simultaneous open: a after ${String(a.attempts)} dial(s) in ${String(a.ms)} ms (${summary(a.errors)}), b after ${String(b.attempts)} in ${String(b.ms)} ms (${summary(b.errors)})`)
})

test('the same through MASQUERADE --random-fully (symmetric mapping): no connection, the observed port is not the one the dial gets', async (t) => {
  if (skipReason != null) {
    t.skip(`NAT lab unavailable: ${skipReason}`)
    return
  }
  const { a, b } = await punch({ randomFully: true, dropUnsolicited: true })
  const seen = JSON.stringify({ a, b })
  assert.notEqual(a.connected, true, `a must not connect: ${seen}`)
  assert.notEqual(b.connected, true, `b must not connect: ${seen}`)
  t.diagnostic(`random-fully: a ${summary(a.errors)}; b ${summary(b.errors)}; observed ${a.peer ?? '?'} / ${b.peer ?? '?'} (dialled from port ${LOCAL_PORT})`)
})

test('Node cannot dial from its listening port (no SO_REUSEPORT on client sockets): EADDRINUSE', async (t) => {
  if (skipReason != null) {
    t.skip(`NAT lab unavailable: ${skipReason}`)
    return
  }
  const { a, b } = await punch({}, true)
  const seen = JSON.stringify({ a, b })
  assert.equal(a.error, 'EADDRINUSE', seen)
  assert.equal(b.error, 'EADDRINUSE', seen)
  t.diagnostic(`a listening on ${LOCAL_PORT} with reusePort, dialling from it: ${a.error ?? '?'}`)
})
