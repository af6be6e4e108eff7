import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Metrics } from '../metrics/index.ts'
import { Trust } from '../trust/index.ts'
import { DecodeError } from '../util/errors.ts'
import { decodeHeartbeat, type Heartbeat } from './heartbeat.ts'
import { decodeRecords, type WireRecord } from './records.ts'
import { MAX_HEARTBEAT_BYTES, MAX_RECORDS_PER_DIGEST, ONLINE_TOPIC } from './constants.ts'

/**
 * Gossip validation: runs inside gossipsub before a message is delivered or forwarded, so a
 * bad message is neither ingested nor spread, and its sender's score drops. Decoded payloads
 * are remembered for the message handler so nothing is decoded twice.
 *
 * Authority (docs/security.md): a heartbeat's author (gossipsub StrictSign `from`) must be the
 * peer it describes and hold a certificate for every role the heartbeat claims (a heartbeat
 * claiming the node role draws placements); a digest's author must hold the resource role. A
 * message failing either is rejected, so gossipsub lowers the score of the peer that forwarded
 * it and spreads it no further.
 */
export class GossipDecoder {
  private readonly heartbeats = new WeakMap<Uint8Array, Heartbeat>()
  private readonly digests = new WeakMap<Uint8Array, WireRecord[]>()
  private readonly metrics: Metrics
  /** The host whose trust (`Trust.of`) decides who holds which role. */
  private readonly host: object

  constructor (metrics: Metrics, host: object) {
    this.metrics = metrics
    this.host = host
  }

  validateHeartbeat = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const drop = (reason: string): TopicValidatorResult => {
      this.metrics.heartbeatsDropped.inc({ reason })
      return TopicValidatorResult.Reject
    }
    if (msg.type !== 'signed') return drop('unsigned')
    if (msg.data.length > MAX_HEARTBEAT_BYTES) return drop('oversize')
    let hb: Heartbeat
    try {
      hb = decodeHeartbeat(msg.data)
    } catch (err) {
      return drop(err instanceof DecodeError ? 'decode' : 'error')
    }
    if (hb.peerId !== msg.from.toString()) return drop('signer')
    if (!await holdsClaimedRoles(this.host, msg.from, hb, msg.topic, peer)) return drop('role')
    this.heartbeats.set(msg.data, hb)
    return TopicValidatorResult.Accept
  }

  validateDigest = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const drop = (reason: string): TopicValidatorResult => {
      this.metrics.digestsDropped.inc({ reason })
      return TopicValidatorResult.Reject
    }
    if (msg.type !== 'signed') return drop('unsigned')
    let records: WireRecord[]
    try {
      records = decodeRecords(msg.data, MAX_RECORDS_PER_DIGEST)
    } catch {
      return drop('decode')
    }
    if (!await Trust.of(this.host).check(msg.from, 'resource', ONLINE_TOPIC, peer)) return drop('role')
    this.digests.set(msg.data, records)
    return TopicValidatorResult.Accept
  }

  heartbeat (msg: Message): Heartbeat | undefined {
    return this.heartbeats.get(msg.data)
  }

  digest (msg: Message): WireRecord[] | undefined {
    return this.digests.get(msg.data)
  }
}

/**
 * Whether `author` holds a certificate for every role `hb` claims (refusals counted under
 * `where`). Every daemon heartbeats, whatever its roles, so any member may; what it claims is
 * bounded by what the cluster key granted it.
 */
export async function holdsClaimedRoles (host: object, author: PeerId, hb: Heartbeat, where: string, via?: PeerId): Promise<boolean> {
  const trust = Trust.of(host)
  if (!await trust.check(author, hb.roles, where, via)) return false
  const held = trust.cachedRoles(author.toString())
  const missing = hb.roles.filter(r => held?.has(r) !== true)
  if (missing.length === 0) return true
  trust.refuse(where, 'role', author.toString(), `claims ${missing.join(',')} without a certificate for it`)
  return false
}
