import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../../src/p2p/index.ts'
import { Trust, issueMemberCert, pskBytes, type ClusterSecret, type Role } from '../../src/trust/index.ts'
import { silentLogger } from '../../src/util/logger.ts'

/**
 * A bare libp2p host (the project's createHost, not started) for tests that play a peer by hand:
 * with `secret`, it holds the cluster's private-network key; with `roles` too, a member
 * certificate for them, served over /astra/cert/1.0.0 like a daemon's. Without `secret` it
 * cannot connect to a secure cluster at all. `stop()` it, then `detach()` its trust.
 */
export async function testHost (secret?: ClusterSecret, roles?: Role[], listen: string[] = ['/ip4/127.0.0.1/tcp/0']): Promise<{ host: Host, trust?: Trust }> {
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen, swarmKey: secret != null ? pskBytes(secret.psk) : undefined })
  if (secret == null || roles == null) return { host }
  const cert = await issueMemberCert(secret.key.privateKey, host.peerId.toString(), roles)
  const trust = new Trust({ clusterPublic: secret.key.publicKey, selfCert: cert, logger: silentLogger() })
  await trust.attach(host)
  return { host, trust }
}
