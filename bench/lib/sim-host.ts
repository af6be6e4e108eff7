// A libp2p host for a simulated node: createHost's own stack, dialing from a chosen loopback
// source address (127.x.y.z) so 1,000 simulated nodes look like 1,000 machines to the resource
// (per-IP connection limits), and listening nowhere (the resource never dials a node).

import type { PrivateKey } from '@libp2p/interface'
import { createHost, type Host } from '../../src/p2p/host.ts'

export interface SimHostInit {
  privateKey: PrivateKey
  /** Loopback source address for outbound TCP (e.g. 127.1.0.7). */
  localAddress: string
}

export async function createSimHost (init: SimHostInit): Promise<Host> {
  return await createHost({ privateKey: init.privateKey, listen: [], dialFrom: init.localAddress })
}
