import type { PeerId } from '@libp2p/interface'
import type { Host } from './host.ts'

/**
 * The connected peers that serve a protocol (learnt through identify), e.g. the resources a
 * scheduler can pull the online list from. Backed by a libp2p topology.
 */
export class ProtocolPeers {
  private readonly peers = new Map<string, PeerId>()
  private topologyId?: string
  private readonly listeners: Array<(peer: PeerId) => void> = []

  private readonly libp2p: Host
  readonly protocol: string

  constructor (libp2p: Host, protocol: string) {
    this.libp2p = libp2p
    this.protocol = protocol
  }

  async start (): Promise<void> {
    this.topologyId = await this.libp2p.register(this.protocol, {
      onConnect: (peer) => {
        const isNew = !this.peers.has(peer.toString())
        this.peers.set(peer.toString(), peer)
        if (isNew) for (const l of this.listeners) l(peer)
      },
      onDisconnect: (peer) => { this.peers.delete(peer.toString()) }
    })
    // The topology reports only peers identified from now on: add those already connected.
    for (const peer of this.libp2p.getPeers()) {
      try {
        const info = await this.libp2p.peerStore.get(peer)
        if (!info.protocols.includes(this.protocol) || this.peers.has(peer.toString())) continue
        this.peers.set(peer.toString(), peer)
        for (const l of this.listeners) l(peer)
      } catch {}
    }
  }

  stop (): void {
    if (this.topologyId != null) this.libp2p.unregister(this.topologyId)
    this.topologyId = undefined
    this.peers.clear()
  }

  /** Called when a peer serving the protocol connects (e.g. to catch up from it at once). */
  onConnect (listener: (peer: PeerId) => void): void {
    this.listeners.push(listener)
  }

  list (): PeerId[] {
    return [...this.peers.values()]
  }

  /**
   * The peers in random order, for spreading load and failing over; `first` (a peer id string,
   * e.g. the peer that answered last) leads when it is connected.
   */
  shuffled (first?: string): PeerId[] {
    const list = this.list()
    for (let i = list.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[list[i], list[j]] = [list[j] as PeerId, list[i] as PeerId]
    }
    const i = first != null ? list.findIndex(p => p.toString() === first) : -1
    if (i > 0) list.unshift(...list.splice(i, 1))
    return list
  }
}
