// A libp2p host for a simulated node: createHost's own stack, dialing from a chosen loopback
// source address (127.x.y.z) so 1,000 simulated nodes look like 1,000 machines to the resource
// (per-IP connection limits), and listening nowhere (the resource never dials a node).

import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createHost, type Host } from '../../src/p2p/host.ts'
import { Trust, issueMemberCert, pskBytes, type ClusterSecret } from '../../src/trust/index.ts'
import { silentLogger } from '../../src/util/logger.ts'

export interface SimHostInit {
  privateKey: PrivateKey
  /** Loopback source address for outbound TCP (e.g. 127.1.0.7). */
  localAddress: string
  /**
   * The cluster key of the daemons under test: the host joins their private network and shows
   * a node certificate signed with it, as a daemon started with --cluster-key does.
   */
  secret: ClusterSecret
}

export async function createSimHost (init: SimHostInit): Promise<Host> {
  const peerId = peerIdFromPrivateKey(init.privateKey).toString()
  const host = await createHost({ privateKey: init.privateKey, listen: [], dialFrom: init.localAddress, swarmKey: pskBytes(init.secret.psk) })
  const trust = new Trust({ clusterPublic: init.secret.key.publicKey, selfCert: await issueMemberCert(init.secret.key.privateKey, peerId, ['node']), logger: silentLogger() })
  await trust.attach(host)
  return host
}
