// One side of the raw libp2p throughput baseline (forked by transfer-raw.ts): a host with the
// daemon's own stack (src/p2p/host.ts: TCP, the private network every astrad cluster runs
// (pnet, key PSK: 64 hex digits), Noise, Yamux), no astrad logic on the byte path.
//
//   receiver PSK             listens on 127.0.0.1, counts the bytes of every inbound stream of
//                            PUSH_PROTOCOL and answers each with its byte count (8 bytes) once
//                            the sender has closed its side; sends {type: 'ready', addr}.
//   sender PSK ADDR BYTES N  dials ADDR, opens N streams and pushes BYTES in total, 256 KiB
//                            messages (the piece server's chunk), honouring send()/onDrain
//                            backpressure; sends {type: 'result', ms, bytes}.
// Both answer {type: 'cpu', userMs, systemMs} to the message 'cpu' and exit on 'exit'.

import crypto from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { createHost, type Host } from '../../src/p2p/host.ts'
import { pskBytes } from '../../src/trust/index.ts'
import { PIECE_CHUNK_BYTES } from '../../src/transfer/constants.ts'

export const PUSH_PROTOCOL = '/astra-bench/push/1.0.0'

function reply (msg: unknown): void {
  process.send?.(msg)
}

/** The private-network key both sides were given (argv). */
let psk = ''

async function newHost (listen: string[]): Promise<Host> {
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen, swarmKey: pskBytes(psk) })
  await host.start()
  return host
}

async function receiver (): Promise<Host> {
  const host = await newHost(['/ip4/127.0.0.1/tcp/0'])
  await host.handle(PUSH_PROTOCOL, (stream: Stream) => {
    let bytes = 0
    stream.addEventListener('message', (evt: { data: Uint8Array | { byteLength: number } }) => {
      bytes += evt.data.byteLength
    })
    stream.addEventListener('remoteCloseWrite', () => {
      const ack = new Uint8Array(8)
      new DataView(ack.buffer).setBigUint64(0, BigInt(bytes))
      stream.send(ack)
      stream.close().catch(() => {})
    })
  }, { maxInboundStreams: 64 })
  const addr = host.getMultiaddrs().find(a => a.toString().startsWith('/ip4/127.0.0.1/tcp/'))
  if (addr == null) throw new Error('receiver has no loopback address')
  reply({ type: 'ready', addr: addr.toString() })
  return host
}

async function pushOne (stream: Stream, bytes: number, block: Uint8Array): Promise<number> {
  const acked = new Promise<number>((resolve, reject) => {
    let got = new Uint8Array(0)
    stream.addEventListener('message', (evt: { data: Uint8Array | { subarray: () => Uint8Array } }) => {
      const data = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      const next = new Uint8Array(got.length + data.length)
      next.set(got)
      next.set(data, got.length)
      got = next
      if (got.length >= 8) resolve(Number(new DataView(got.buffer, got.byteOffset).getBigUint64(0)))
    })
    stream.addEventListener('close', (evt: { error?: Error }) => {
      if (got.length < 8) reject(evt.error ?? new Error('stream closed before the ack'))
    })
  })
  let sent = 0
  let off = 0
  while (sent < bytes) {
    const n = Math.min(PIECE_CHUNK_BYTES, bytes - sent)
    if (off + n > block.length) off = 0
    if (!stream.send(block.subarray(off, off + n))) await stream.onDrain()
    sent += n
    off += n
  }
  await stream.close()
  return await acked
}

async function sender (addr: string, bytes: number, streams: number): Promise<Host> {
  const host = await newHost([])
  const block = crypto.randomBytes(16 * 1024 * 1024)
  const ma = multiaddr(addr)
  // Connection set up first (TCP + Noise + Yamux handshakes are not part of the throughput).
  await host.dial(ma)
  const per = Math.floor(bytes / streams)
  const shares = Array.from({ length: streams }, (_, i) => i === streams - 1 ? bytes - per * (streams - 1) : per)
  const opened = await Promise.all(shares.map(async () => await host.dialProtocol(ma, PUSH_PROTOCOL)))
  const t0 = performance.now()
  const received = await Promise.all(opened.map(async (s, i) => await pushOne(s, shares[i] as number, block)))
  const ms = performance.now() - t0
  const total = received.reduce((a, b) => a + b, 0)
  if (total !== bytes) throw new Error(`receiver counted ${total} of ${bytes} bytes`)
  reply({ type: 'result', ms, bytes: total })
  return host
}

async function main (): Promise<void> {
  const [role, key, ...args] = process.argv.slice(2)
  psk = key ?? ''
  let host: Host | undefined
  process.on('message', (msg: unknown) => {
    if (msg === 'cpu') {
      const u = process.cpuUsage()
      reply({ type: 'cpu', userMs: u.user / 1000, systemMs: u.system / 1000 })
    } else if (msg === 'exit') {
      void (async () => {
        try { await host?.stop() } catch {}
        process.exit(0)
      })()
    }
  })
  if (role === 'receiver') host = await receiver()
  else if (role === 'sender') host = await sender(args[0] ?? '', Number(args[1]), Number(args[2]))
  else throw new Error(`unknown role ${String(role)}`)
}

main().catch((err: unknown) => {
  reply({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  process.exit(1)
})
