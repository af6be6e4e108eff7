import { Reader, Writer } from '../util/codec.ts'
import { DecodeError } from '../util/errors.ts'
import { readHeartbeat, writeHeartbeat, type Heartbeat, type NodeState } from './heartbeat.ts'
import type { NodeRecord } from './online-list.ts'

/**
 * Wire format of online-list records (change digests on `astra/online/1` and snapshots on
 * `/astra/online/1.0.0`): u8 kind, u32 count, then per record the heartbeat fields, the
 * concluded state and the record's age in ms at the sender (ages, not timestamps, so clocks
 * need not agree).
 */
export const RECORDS_VERSION = 1
const STATES: NodeState[] = ['alive', 'suspect', 'draining', 'dead', 'left']

export interface WireRecord {
  hb: Heartbeat
  state: NodeState
  ageMs: number
}

export function encodeRecords (records: NodeRecord[], now: number): Uint8Array {
  const w = new Writer(64 + records.length * 200)
  w.u8(RECORDS_VERSION).u32(records.length)
  for (const r of records) {
    writeHeartbeat(w, r.hb)
    w.u8(STATES.indexOf(r.state)).u32(Math.max(0, Math.min(0xffffffff, now - r.lastSeen)))
  }
  return w.finish()
}

export function decodeRecords (bytes: Uint8Array, maxRecords: number): WireRecord[] {
  const r = new Reader(bytes)
  const version = r.u8('records version')
  if (version !== RECORDS_VERSION) throw new DecodeError(`unsupported records version ${version}`)
  const n = r.u32('count')
  if (n > maxRecords) throw new DecodeError(`${n} records exceed the limit of ${maxRecords}`)
  const out: WireRecord[] = []
  for (let i = 0; i < n; i++) {
    const hb = readHeartbeat(r)
    const s = STATES[r.u8('state')]
    if (s == null) throw new DecodeError('invalid node state')
    out.push({ hb, state: s, ageMs: r.u32('age') })
  }
  r.end()
  return out
}
