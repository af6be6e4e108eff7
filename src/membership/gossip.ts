import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { Metrics } from '../metrics/index.ts'
import { DecodeError } from '../util/errors.ts'
import { decodeHeartbeat, type Heartbeat } from './heartbeat.ts'
import { decodeRecords, type WireRecord } from './records.ts'
import { MAX_HEARTBEAT_BYTES, MAX_RECORDS_PER_DIGEST } from './constants.ts'

/**
 * Gossip validation: runs inside gossipsub before a message is delivered or forwarded, so a
 * bad message is neither ingested nor spread, and its sender's score drops. Decoded payloads
 * are remembered for the message handler so nothing is decoded twice.
 */
export class GossipDecoder {
  private readonly heartbeats = new WeakMap<Uint8Array, Heartbeat>()
  private readonly digests = new WeakMap<Uint8Array, WireRecord[]>()
  private readonly metrics: Metrics

  constructor (metrics: Metrics) {
    this.metrics = metrics
  }

  validateHeartbeat = (_peer: unknown, msg: Message): TopicValidatorResult => {
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
    this.heartbeats.set(msg.data, hb)
    return TopicValidatorResult.Accept
  }

  validateDigest = (_peer: unknown, msg: Message): TopicValidatorResult => {
    if (msg.type !== 'signed') {
      this.metrics.digestsDropped.inc({ reason: 'unsigned' })
      return TopicValidatorResult.Reject
    }
    try {
      this.digests.set(msg.data, decodeRecords(msg.data, MAX_RECORDS_PER_DIGEST))
      return TopicValidatorResult.Accept
    } catch {
      this.metrics.digestsDropped.inc({ reason: 'decode' })
      return TopicValidatorResult.Reject
    }
  }

  heartbeat (msg: Message): Heartbeat | undefined {
    return this.heartbeats.get(msg.data)
  }

  digest (msg: Message): WireRecord[] | undefined {
    return this.digests.get(msg.data)
  }
}
