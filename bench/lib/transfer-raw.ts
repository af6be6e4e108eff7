// Raw libp2p stream throughput between two processes on loopback: the ceiling one astrad
// transfer between two daemons can approach (same TCP + pnet + Noise + Yamux stack, no disk, no hash,
// no token bucket, no protocol logic). Each side is its own process, as two daemons are.

import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { forkTs, stop, sleep, type Managed } from './procs.ts'
import { newPsk } from '../../src/trust/keys.ts'

const HOST_MODULE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'transfer-raw-host.ts')

export interface RawResult {
  streams: number
  bytes: number
  ms: number
  /** bytes / s (decimal MB/s = / 1e6). */
  bytesPerSec: number
  /** CPU seconds of each side during the run (includes start-up, ~0.3 s). */
  senderCpuSec: number
  receiverCpuSec: number
}

interface Msg { type: string, [k: string]: unknown }

function nextMessage (m: Managed, type: string, timeoutMs: number): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${m.name}: no '${type}' message within ${timeoutMs} ms\n${m.tail.join('\n')}`)) }, timeoutMs)
    const onMsg = (msg: Msg): void => {
      if (msg.type === 'error') { cleanup(); reject(new Error(`${m.name}: ${String(msg.message)}`)) }
      if (msg.type === type) { cleanup(); resolve(msg) }
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`${m.name} exited ${String(code)} before '${type}'\n${m.tail.join('\n')}`)) }
    const cleanup = (): void => {
      clearTimeout(timer)
      m.child.off('message', onMsg)
      m.child.off('exit', onExit)
    }
    m.child.on('message', onMsg)
    m.child.on('exit', onExit)
  })
}

async function cpuOf (m: Managed): Promise<number> {
  const p = nextMessage(m, 'cpu', 5_000)
  m.child.send('cpu')
  const msg = await p
  return (Number(msg.userMs) + Number(msg.systemMs)) / 1000
}

/** Pushes `bytes` over `streams` parallel streams of one connection; one trial. */
export async function runRaw (bytes: number, streams: number, timeoutMs: number): Promise<RawResult> {
  // Both sides in one private network, as every astrad daemon now runs (like for like).
  const psk = newPsk()
  const recv = forkTs('raw-receiver', HOST_MODULE, ['receiver', psk])
  let send: Managed | undefined
  try {
    const ready = await nextMessage(recv, 'ready', 20_000)
    send = forkTs('raw-sender', HOST_MODULE, ['sender', psk, String(ready.addr), String(bytes), String(streams)])
    const result = await nextMessage(send, 'result', timeoutMs)
    const ms = Number(result.ms)
    const [senderCpuSec, receiverCpuSec] = await Promise.all([cpuOf(send), cpuOf(recv)])
    return { streams, bytes, ms, bytesPerSec: bytes / (ms / 1000), senderCpuSec, receiverCpuSec }
  } finally {
    for (const m of [send, recv]) {
      if (m == null) continue
      try { m.child.send('exit') } catch {}
    }
    await Promise.all([send, recv].map(async m => {
      if (m == null) return
      await Promise.race([m.exited, sleep(3_000)])
      await stop(m, 'SIGKILL', 3_000)
    }))
  }
}
