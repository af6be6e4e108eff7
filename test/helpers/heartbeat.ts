import type { Heartbeat } from '../../src/membership/heartbeat.ts'

/** A valid-looking base58 peer id for pure-logic tests (no libp2p needed). */
export function fakePeerId (i: number): string {
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
  let s = '12D3KooW'
  let x = i + 1
  for (let k = 0; k < 44; k++) { s += alphabet[(x * 7 + k * 13) % alphabet.length]; x = Math.floor(x / 3) + k }
  return s
}

export function heartbeat (overrides: Partial<Heartbeat> = {}): Heartbeat {
  return {
    peerId: fakePeerId(0),
    incarnation: 1_700_000_000_000,
    seq: 1,
    state: 'alive',
    cordoned: false,
    roles: ['node'],
    name: 'n1',
    cell: 'default',
    cores: 8,
    gpus: 0,
    gpuPerf: 1,
    cpuUtil: 0.25,
    gpuUtil: 0,
    inflight: 3,
    ledgerVersion: 0,
    readyReplicas: 0,
    modelsDigest: 0,
    mailboxCursor: 0,
    uploadLimit: 0,
    downloadLimit: 0,
    uploadRate: 0,
    downloadRate: 0,
    transfers: 0,
    ...overrides
  }
}
