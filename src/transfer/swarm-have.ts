import type { PeerId, Stream } from '@libp2p/interface'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import { DecodeError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { StreamReader, send } from './stream-io.ts'
import { SWARM_HAVE_PROTOCOL, MAX_SWARM_HAVE_BYTES, SWARM_HAVE_TIMEOUT_MS, MAX_INBOUND_SWARM_HAVE_STREAMS } from './constants.ts'

/**
 * `/astra/have/1.0.0`: a downloader tells the peers downloading the same model what it holds,
 * at once, as pieces verify (the tracker would tell them only at their next refresh, 2 s).
 * One stream per message, sender → receiver, no answer:
 *
 *   u8 version(1) · 32 B model id · u16 n · n B bitfield (one bit per piece, MSB first)
 *
 * The whole bitfield, not one piece: a message lost or overtaken by a newer one costs
 * nothing. Only role **node** may send it (docs/security.md: have messages are from nodes);
 * a receiver uses it only for a model it is downloading, and only to choose whom to ask (every
 * piece is still verified), so a lie costs the liar's peer a refused request.
 */

const VERSION = 1
const HEADER = 1 + 32 + 2

export interface SwarmHaveMessage {
  id: string
  bitfield: Uint8Array
}

export function encodeSwarmHave (m: SwarmHaveMessage): Uint8Array {
  const id = Buffer.from(m.id, 'hex')
  if (id.length !== 32) throw new RangeError('model id must be 32 bytes of hex')
  if (m.bitfield.length > MAX_SWARM_HAVE_BYTES - HEADER) throw new RangeError(`bitfield of ${m.bitfield.length} bytes is too long`)
  const out = new Uint8Array(HEADER + m.bitfield.length)
  out[0] = VERSION
  out.set(id, 1)
  new DataView(out.buffer).setUint16(33, m.bitfield.length)
  out.set(m.bitfield, HEADER)
  return out
}

export function decodeSwarmHave (bytes: Uint8Array): SwarmHaveMessage {
  if (bytes.length < HEADER) throw new DecodeError(`have message of ${bytes.length} bytes, at least ${HEADER} expected`)
  if (bytes[0] !== VERSION) throw new DecodeError(`unsupported have message version ${String(bytes[0])}`)
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(33)
  if (bytes.length !== HEADER + n) throw new DecodeError(`have message of ${bytes.length} bytes, its header says ${HEADER + n}`)
  return { id: Buffer.from(bytes.subarray(1, 33)).toString('hex'), bitfield: bytes.slice(HEADER) }
}

export interface SwarmHaveComponents {
  libp2p: Host
  logger: Logger
  /** A node's bitfield of a model, as it sent it (the receiver checks its length against the manifest). */
  onHave: (peer: PeerId, m: SwarmHaveMessage) => void
}

export interface SwarmHaveStats {
  sent: number
  received: number
  rejected: number
}

/** Sends and receives direct have messages between downloaders of one model. */
export class SwarmHave {
  private readonly components: SwarmHaveComponents
  private readonly streams = new Set<Stream>()
  private started = false
  readonly stats: SwarmHaveStats = { sent: 0, received: 0, rejected: 0 }

  constructor (components: SwarmHaveComponents) {
    this.components = components
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.components.libp2p.handle(SWARM_HAVE_PROTOCOL, (stream, connection) => {
      void this.receive(stream, connection.remotePeer)
    }, { maxInboundStreams: MAX_INBOUND_SWARM_HAVE_STREAMS, runOnLimitedConnection: true })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.libp2p.unhandle(SWARM_HAVE_PROTOCOL).catch(() => {})
    for (const s of this.streams) s.abort(new Error('have protocol stopping'))
    this.streams.clear()
  }

  /**
   * Tells `peer` what we hold of a model. Only over a connection that is already open: a
   * downloader talks to the peers it trades with, it does not dial the swarm. Never throws.
   */
  send (peer: PeerId, m: SwarmHaveMessage): void {
    const { libp2p, logger } = this.components
    if (!this.started || libp2p.getConnections(peer).length === 0) return
    const bytes = encodeSwarmHave(m)
    void (async () => {
      const signal = AbortSignal.timeout(SWARM_HAVE_TIMEOUT_MS)
      const stream = await libp2p.dialProtocol(peer, SWARM_HAVE_PROTOCOL, { signal, runOnLimitedConnection: true })
      try {
        await send(stream, bytes, signal)
        await stream.close({ signal })
        this.stats.sent++
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
        throw err
      }
    })().catch((err: unknown) => {
      logger.debug({ peer: peer.toString(), err: errorMessage(err) }, 'have message not sent')
    })
  }

  private async receive (stream: Stream, peer: PeerId): Promise<void> {
    const { logger } = this.components
    this.streams.add(stream)
    const reader = new StreamReader(stream, MAX_SWARM_HAVE_BYTES)
    const signal = AbortSignal.timeout(SWARM_HAVE_TIMEOUT_MS)
    try {
      await Trust.of(this.components.libp2p).require(peer, 'node', SWARM_HAVE_PROTOCOL)
      const parts: Uint8Array[] = []
      let size = 0
      for (;;) {
        const chunk = await reader.next(MAX_SWARM_HAVE_BYTES + 1 - size, signal)
        if (chunk == null) break
        parts.push(chunk)
        size += chunk.length
        if (size > MAX_SWARM_HAVE_BYTES) throw new DecodeError(`have message longer than ${MAX_SWARM_HAVE_BYTES} bytes`)
      }
      const m = decodeSwarmHave(Buffer.concat(parts))
      this.stats.received++
      this.components.onHave(peer, m)
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      this.stats.rejected++
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      logger.debug({ peer: peer.toString(), err: errorMessage(err) }, 'have message refused')
    } finally {
      reader.close()
      this.streams.delete(stream)
    }
  }
}
