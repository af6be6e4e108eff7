import fs from 'node:fs'
import path from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { AstradError, errorMessage } from '../util/errors.ts'
import { IDENTITY_FILE } from './constants.ts'

/**
 * Loads the daemon's identity key from the data dir, or creates one. The same key gives the
 * same peer id after a restart, so the cluster recognises a returning node.
 */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  const file = path.join(dataDir, IDENTITY_FILE)
  let bytes: Buffer | undefined
  try {
    bytes = fs.readFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AstradError(`cannot read identity key ${file}: ${errorMessage(err)}`, 'ERR_IDENTITY')
    }
  }
  if (bytes != null) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new AstradError(`identity key ${file} is corrupt (${errorMessage(err)}); move it away to create a new identity`, 'ERR_IDENTITY')
    }
  }
  const key = await generateKeyPair('Ed25519')
  fs.mkdirSync(dataDir, { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, 'wx', 0o600)
  try {
    fs.writeSync(fd, privateKeyToProtobuf(key))
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  return key
}
