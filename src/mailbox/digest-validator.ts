import type { Message, TopicValidatorFn } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Host } from '../p2p/index.ts'
import { Trust } from '../trust/index.ts'
import { decodeDigest } from './wire.ts'
import { MAILBOX_TOPIC, MAX_DIGEST_BYTES } from './constants.ts'

/**
 * The gossip validator of `astra/mailbox/1`, set by resources (MailboxServer) and by nodes
 * (MailboxPuller) alike: a digest must be well formed and published (signed) by a peer holding
 * the resource role; anyone's with --insecure. A rejected digest is not forwarded either.
 */
export function digestValidator (libp2p: Host, onMalformed: () => void): TopicValidatorFn {
  return async (propagationSource: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    try {
      if (msg.data.length > MAX_DIGEST_BYTES) throw new Error('too large')
      decodeDigest(msg.data)
    } catch {
      onMalformed()
      return TopicValidatorResult.Reject
    }
    return await Trust.of(libp2p).checkAuthor(msg, 'resource', MAILBOX_TOPIC, propagationSource) ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
  }
}
