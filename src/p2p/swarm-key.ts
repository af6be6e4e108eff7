import fs from 'node:fs'
import { ConfigError, errorMessage } from '../util/errors.ts'

/**
 * Reads and checks a libp2p private-network key file:
 *   /key/swarm/psk/1.0.0/
 *   /base16/
 *   <64 hex digits>
 * Daemons with different keys cannot complete a connection at all.
 */
export function readSwarmKey (file: string): Uint8Array {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError('--swarm-key', `cannot read ${file}: ${errorMessage(err)}`)
  }
  const lines = text.split(/\r?\n/).map(l => l.trim()).filter(l => l !== '')
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? '') || lines.length !== 3) {
    throw new ConfigError('--swarm-key', `${file} is not a swarm key (expected '/key/swarm/psk/1.0.0/', '/base16/' and 64 hex digits on three lines; create one with 'astrad swarm-key')`)
  }
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${lines[2]}`)
}

/** A new random swarm key in the file format above. */
export function newSwarmKey (): string {
  const bytes = new Uint8Array(32)
  crypto.getRandomValues(bytes)
  return `/key/swarm/psk/1.0.0/\n/base16/\n${Buffer.from(bytes).toString('hex')}\n`
}
