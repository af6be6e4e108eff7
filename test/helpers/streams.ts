import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host, type HostInit } from '../../src/p2p/host.ts'
import type { Stream } from '@libp2p/interface'

/** Sends `data` in `chunk`-byte messages, waiting for 'drain' when the stream asks; rejects naming how far it got if the stream closes. */
export async function sendAll (stream: Stream, data: Uint8Array, chunk = 64 * 1024): Promise<void> {
  for (let off = 0; off < data.byteLength; off += chunk) {
    if (!stream.send(data.subarray(off, off + chunk))) {
      await new Promise<void>((resolve, reject) => {
        stream.addEventListener('drain', () => { resolve() }, { once: true })
        stream.addEventListener('close', () => { reject(new Error(`stream closed after ${off} bytes`)) }, { once: true })
      })
    }
  }
}

/**
 * Started astrad hosts (listening on nothing unless `init.listen` says) that the caller stops
 * in `after` with `stopAll`; `extra` takes other libp2p nodes to stop with them.
 */
export function hostPool (): { host: (init?: Partial<HostInit>) => Promise<Host>, extra: (h: { stop: () => void | Promise<void> }) => void, stopAll: () => Promise<void> } {
  const started: Array<{ stop: () => void | Promise<void> }> = []
  return {
    host: async (init = {}) => {
      const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: [], ...init })
      started.push(h)
      await h.start()
      return h
    },
    extra: h => { started.push(h) },
    stopAll: async () => { await Promise.allSettled(started.map(async h => { await h.stop() })) }
  }
}
