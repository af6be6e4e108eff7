import type { PeerId } from '@libp2p/interface'
import { Trust } from '../trust/index.ts'
import { type Host, handleRequests, request } from '../p2p/index.ts'
import type { OnlineList } from './online-list.ts'
import { encodeRecords, decodeRecords, type WireRecord } from './records.ts'
import type { Clock } from '../util/time.ts'
import { ONLINE_PROTOCOL, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_RECORDS, SNAPSHOT_REQUEST } from './constants.ts'

/**
 * `/astra/online/1.0.0`, both sides: a resource serves its full online list to any member, and
 * a list is pulled only from a peer holding the resource role (a list is a set of conclusions).
 */

export async function serveOnlineList (libp2p: Host, list: OnlineList, clock: Clock, onError: () => void): Promise<void> {
  await handleRequests(libp2p, ONLINE_PROTOCOL, () => encodeRecords(list.all(), clock.now()), {
    maxResponseBytes: MAX_SNAPSHOT_BYTES,
    authorize: Trust.guard(libp2p, 'member', ONLINE_PROTOCOL),
    onError
  })
}

/** Pulls a resource's full online list; tries the given resources in order until one answers. */
export async function pullOnlineList (libp2p: Host, resources: PeerId[], signal?: AbortSignal): Promise<WireRecord[]> {
  let last: unknown = new Error('no resource daemon is connected')
  for (const peer of resources) {
    if (!await Trust.of(libp2p).check(peer, 'resource', ONLINE_PROTOCOL)) {
      last = new Error(`${peer.toString()} serves the online list but holds no resource certificate`)
      continue
    }
    try {
      const bytes = await request(libp2p, peer, ONLINE_PROTOCOL, SNAPSHOT_REQUEST, { maxResponseBytes: MAX_SNAPSHOT_BYTES, signal })
      return decodeRecords(bytes, MAX_SNAPSHOT_RECORDS)
    } catch (err) {
      last = err
    }
  }
  throw last
}
