import type { Libp2p, PeerId } from '@libp2p/interface'
import { RequestStreams, handleRequestStreams, type RequestStreamOptions, type RequestStreamServerOptions, type RequestStreamsInit, type StreamSpec } from '../p2p/request-stream.ts'
import {
  MAILBOX_MAX_STREAMS_PER_PEER, MAILBOX_PROTOCOL, MAILBOX_STREAM_IDLE_MS, MAILBOX_STREAM_MAX_PIPELINED, MAILBOX_STREAM_PROTOCOL,
  MAX_PULL_REQUEST_BYTES, MAX_PULL_RESPONSE_BYTES, PULL_TIMEOUT_MS
} from './constants.ts'

/**
 * `/astra/mailbox-pull/1.1.0`: a node keeps one pull stream open to its resource and sends its
 * pull requests on it (src/p2p/request-stream.ts); a resource that answers only
 * `/astra/mailbox/1.0.0` is pulled one stream per request. Pulls are reads: one whose stream
 * ended under it is sent again on a new one.
 */
export const MAILBOX_PULL_STREAM: StreamSpec = {
  protocol: MAILBOX_STREAM_PROTOCOL,
  oneShot: MAILBOX_PROTOCOL,
  maxRequestBytes: MAX_PULL_REQUEST_BYTES,
  maxResponseBytes: MAX_PULL_RESPONSE_BYTES,
  timeoutMs: PULL_TIMEOUT_MS,
  maxStreamsPerPeer: MAILBOX_MAX_STREAMS_PER_PEER,
  idleMs: MAILBOX_STREAM_IDLE_MS,
  maxPipelined: MAILBOX_STREAM_MAX_PIPELINED,
  retryGone: true
}

export { FrameDecoder, requestFrame } from '../p2p/request-stream.ts'

/** Serves mailbox pulls on long-lived streams: `serve` answers one pull request. */
export async function handlePullStreams (libp2p: Libp2p, serve: (req: Uint8Array) => Uint8Array, options: RequestStreamServerOptions = {}): Promise<void> {
  await handleRequestStreams(libp2p, MAILBOX_PULL_STREAM, serve, options)
}

/** The node side: `pull(peer, request)` on the pull stream kept open to `peer`. */
export class PullStreams extends RequestStreams {
  constructor (libp2p: Libp2p, init: RequestStreamsInit = {}) {
    super(libp2p, MAILBOX_PULL_STREAM, init)
  }

  async pull (peer: PeerId, payload: Uint8Array, options: RequestStreamOptions = {}): Promise<Uint8Array> {
    return await this.request(peer, payload, options)
  }
}
