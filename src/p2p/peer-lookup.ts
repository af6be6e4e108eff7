import { NotFoundError, type AbortOptions, type PeerId, type PeerInfo, type PeerRouting } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from 'libp2p'
import { handleRequests, request } from './request.ts'
import { MAX_LOOKUP_ADDRS, PEER_LOOKUP_PROTOCOL, PEER_LOOKUP_TIMEOUT_MS } from './constants.ts'

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * Resource side of `/astra/peer/1.0.0`: the addresses of a member connected here (what identify
 * told this resource), or none. The request is the peer id as text; the answer JSON
 * `{"addrs": [multiaddr…]}`. `authorize`: who may ask (members).
 */
export async function servePeerLookup (libp2p: Libp2p, authorize: (peer: PeerId) => Promise<void>): Promise<void> {
  await handleRequests(libp2p, PEER_LOOKUP_PROTOCOL, async req => {
    const id = peerIdFromString(decoder.decode(req))
    let addrs: string[] = []
    if (libp2p.getConnections(id).length > 0) {
      try {
        addrs = (await libp2p.peerStore.get(id)).addresses.map(a => a.multiaddr.toString()).slice(0, MAX_LOOKUP_ADDRS)
      } catch {}
    }
    return encoder.encode(JSON.stringify({ addrs }))
  }, { authorize, maxRequestBytes: 256 })
}

/**
 * libp2p's peer routing for members: when the dialer has no address for a peer, ask the
 * connected resources (PEER_LOOKUP_PROTOCOL). Set up before the host exists (`peerRouters`),
 * attached once it does.
 */
export class PeerLookup implements PeerRouting {
  private host?: Libp2p
  private isResource: (peer: PeerId) => Promise<boolean> = async () => false

  /** `isResource`: whether an answer from this peer may be used (the resource role). */
  attach (host: Libp2p, isResource: (peer: PeerId) => Promise<boolean>): void {
    this.host = host
    this.isResource = isResource
  }

  async findPeer (id: PeerId, options: AbortOptions = {}): Promise<PeerInfo> {
    const host = this.host
    const key = id.toString()
    if (host == null) throw new NotFoundError('peer lookup not attached yet')
    // Asking opens streams only on open connections; a lookup never starts another for the same peer.
    if (this.looking.has(key)) throw new NotFoundError(`already looking up ${key}`)
    this.looking.add(key)
    try {
      return await this.ask(host, id, options)
    } finally {
      this.looking.delete(key)
    }
  }

  private readonly looking = new Set<string>()

  private async ask (host: Libp2p, id: PeerId, options: AbortOptions): Promise<PeerInfo> {
    const asked = new Set<string>()
    for (const conn of host.getConnections()) {
      const peer = conn.remotePeer
      if (conn.status !== 'open' || asked.has(peer.toString()) || peer.equals(id)) continue
      asked.add(peer.toString())
      try {
        if (!(await host.peerStore.get(peer)).protocols.includes(PEER_LOOKUP_PROTOCOL)) continue
        if (!await this.isResource(peer)) continue
        const answer = await request(host, peer, PEER_LOOKUP_PROTOCOL, encoder.encode(id.toString()), { timeoutMs: PEER_LOOKUP_TIMEOUT_MS, maxResponseBytes: 16 * 1024, signal: options.signal })
        const doc = JSON.parse(decoder.decode(answer)) as { addrs?: unknown }
        const multiaddrs: Multiaddr[] = []
        for (const a of Array.isArray(doc.addrs) ? doc.addrs.slice(0, MAX_LOOKUP_ADDRS) : []) {
          try { if (typeof a === 'string') multiaddrs.push(multiaddr(a)) } catch {}
        }
        if (multiaddrs.length > 0) return { id, multiaddrs }
      } catch {
        // One resource not answering: ask the next.
        options.signal?.throwIfAborted()
      }
    }
    throw new NotFoundError(`no connected resource knows the addresses of ${id.toString()}`)
  }

  /**
   * This router knows no "closest" peers. It never yields and ends when the caller stops asking:
   * libp2p's random walk (relay discovery) loops over this, and one that ended at once would spin.
   */
  async * getClosestPeers (_key: Uint8Array, options: AbortOptions = {}): AsyncGenerator<PeerInfo> {
    const signal = options.signal
    if (signal == null || signal.aborted) return
    await new Promise(resolve => { signal.addEventListener('abort', resolve, { once: true }) })
  }
}
