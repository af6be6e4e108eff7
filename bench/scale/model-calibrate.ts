// Per-operation costs for the scale model (docs/scale.md), measured in isolation on a small
// list, so the model can predict the simulation at 10-100× the size (bench/scale/model.ts
// checks the prediction). Also the costs the simulation leaves out that can be measured in
// process: an Ed25519 signature check (gossipsub StrictSign checks one per message), with the
// public key object built once and built per message as libp2p does.

import crypto from 'node:crypto'
import v8 from 'node:v8'
import vm from 'node:vm'
import { FakeClock } from '../../src/util/time.ts'
import { OnlineList } from '../../src/membership/online-list.ts'
import { encodeHeartbeat, decodeHeartbeat } from '../../src/membership/heartbeat.ts'
import { encodeRecords, decodeRecords } from '../../src/membership/records.ts'
import { MAX_SNAPSHOT_RECORDS, HEARTBEAT_INTERVAL_MS } from '../../src/membership/constants.ts'
import { seededRandom } from '../../src/util/random.ts'
import { fakePeerId, sampleHeartbeat } from './model-sim.ts'

/** µs of CPU per operation (per record where it says so). */
export interface UnitCosts {
  /** Node side: encodeHeartbeat. */
  encodeHeartbeat: number
  /** Resource: decodeHeartbeat + OnlineList.ingest, per heartbeat. */
  ingest: number
  /** OnlineList.tick, per record visited. */
  tickPerRecord: number
  /** encodeRecords, per record (digests and snapshots). */
  encodePerRecord: number
  /** decodeRecords + OnlineList.merge, per record (digests and snapshots). */
  mergePerRecord: number
  /** Heap bytes one record takes in an OnlineList (after a full GC). */
  listBytesPerRecord: number
  /** Record bytes on the wire (digest or snapshot) for the sample heartbeat. */
  recordBytes: number
  heartbeatBytes: number
  /** Ed25519 verify of a ~300 B message, µs: KeyObject built once, and built per message. */
  ed25519VerifyUs: number
  ed25519VerifyNewKeyUs: number
  /** Size of the list the costs were measured on. */
  calibrationNodes: number
}

function cpuUs (): number {
  const u = process.cpuUsage()
  return u.user + u.system
}

/** Runs fn repeatedly for at least `minUs` of CPU; returns µs per unit (fn returns its units). */
function perUnit (fn: () => number, minUs = 200_000): number {
  fn() // warm up the JIT
  let units = 0
  const c0 = cpuUs()
  let c = c0
  while (c - c0 < minUs) {
    units += fn()
    c = cpuUs()
  }
  return (c - c0) / units
}

let gcFn: (() => void) | undefined
function gc (): void {
  if (gcFn == null) {
    v8.setFlagsFromString('--expose-gc')
    gcFn = vm.runInNewContext('gc') as () => void
  }
  gcFn()
}

/** The costs that depend on the size of the list they work on (cache misses, GC of a bigger heap). */
const SIZE_DEPENDENT = ['ingest', 'tickPerRecord', 'encodePerRecord', 'mergePerRecord'] as const

/**
 * Unit costs for a list of `nodes` records, from two calibrations (`small` and `large`, measured
 * on lists of their calibrationNodes): each size-dependent cost is interpolated on a log-log
 * line through the two, and extrapolated along it beyond them (docs/scale.md says where the
 * model's table relies on that).
 */
export function costsAt (small: UnitCosts, large: UnitCosts, nodes: number): UnitCosts {
  const out: UnitCosts = { ...large, calibrationNodes: nodes }
  const span = Math.log(large.calibrationNodes / small.calibrationNodes)
  const x = Math.log(Math.max(1, nodes) / small.calibrationNodes) / span
  for (const k of SIZE_DEPENDENT) {
    const a = Math.max(1e-6, small[k])
    const b = Math.max(1e-6, large[k])
    out[k] = Math.exp(Math.log(a) + x * Math.log(b / a))
  }
  return out
}

export function calibrate (nodes = 5_000, seed = 7): UnitCosts {
  const rand = seededRandom(seed)
  const clock = new FakeClock()
  const hbs = Array.from({ length: nodes }, (_, i) => sampleHeartbeat(fakePeerId(rand), i, clock.now() - 60_000))
  const encoded = hbs.map(h => encodeHeartbeat(h))

  const encodeHeartbeatUs = perUnit(() => {
    for (const h of hbs) { h.seq++; encodeHeartbeat(h) }
    return hbs.length
  })

  gc()
  const heap0 = process.memoryUsage().heapUsed
  const list = new OnlineList(clock)
  for (const b of encoded) list.ingest(decodeHeartbeat(b))
  gc()
  const listBytesPerRecord = (process.memoryUsage().heapUsed - heap0) / nodes

  const ingest = perUnit(() => {
    clock.advance(HEARTBEAT_INTERVAL_MS)
    for (const h of hbs) { h.seq++; list.ingest(decodeHeartbeat(encodeHeartbeat(h))) }
    return hbs.length
  }) - encodeHeartbeatUs

  const tickPerRecord = perUnit(() => {
    clock.advance(0)
    list.tick()
    return list.size
  })

  const all = list.all()
  const snapshot = encodeRecords(all, clock.now())
  const encodePerRecord = perUnit(() => { encodeRecords(all, clock.now()); return all.length })

  // decode + merge as a view does it in steady state: the records are known, with newer beats
  // (a pull) — the fast path's cost, not a fresh list's inserts. Only decode + merge is timed.
  const view = new OnlineList(clock)
  for (const r of decodeRecords(snapshot, MAX_SNAPSHOT_RECORDS)) view.merge(r)
  let mergeUs = 0
  let merged = 0
  while (mergeUs < 200_000) {
    clock.advance(HEARTBEAT_INTERVAL_MS)
    for (const h of hbs) { h.seq++; list.ingest({ ...h }) }
    const bytes = encodeRecords(list.all(), clock.now())
    const c = cpuUs()
    for (const r of decodeRecords(bytes, MAX_SNAPSHOT_RECORDS)) view.merge(r)
    mergeUs += cpuUs() - c
    merged += hbs.length
  }
  const mergePerRecord = mergeUs / merged

  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519')
  const raw = publicKey.export({ format: 'der', type: 'spki' })
  const msg = crypto.randomBytes(300)
  const sig = crypto.sign(null, msg, privateKey)
  const ed25519VerifyUs = perUnit(() => {
    for (let i = 0; i < 200; i++) if (!crypto.verify(null, msg, publicKey, sig)) throw new Error('calibration: Ed25519 verify failed')
    return 200
  })
  const ed25519VerifyNewKeyUs = perUnit(() => {
    for (let i = 0; i < 200; i++) {
      const key = crypto.createPublicKey({ key: raw, format: 'der', type: 'spki' })
      if (!crypto.verify(null, msg, key, sig)) throw new Error('calibration: Ed25519 verify failed')
    }
    return 200
  })

  return {
    encodeHeartbeat: encodeHeartbeatUs,
    ingest: Math.max(0, ingest),
    tickPerRecord,
    encodePerRecord,
    mergePerRecord,
    listBytesPerRecord,
    recordBytes: (snapshot.length - 5) / all.length,
    heartbeatBytes: encoded[0]!.length,
    ed25519VerifyUs,
    ed25519VerifyNewKeyUs,
    calibrationNodes: nodes
  }
}
