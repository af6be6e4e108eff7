import { Reader, Writer } from '../util/codec.ts'
import { DecodeError } from '../util/errors.ts'
import { ROLES, type Role } from '../config/defaults.ts'
import { HEARTBEAT_VERSION, MAX_HEARTBEAT_BYTES, MAX_LABEL_BYTES } from './constants.ts'

/** What a daemon announces about itself every second. */
export type AnnouncedState = 'alive' | 'draining' | 'left'
/** What the cluster concludes: the announced state, or suspect/dead from silence. */
export type NodeState = AnnouncedState | 'suspect' | 'dead'

export interface Heartbeat {
  /** Base58 peer id; must equal the gossip message's signer. */
  peerId: string
  /** Start time of this process (ms): a restarted daemon counts seq from 0 in a new incarnation. */
  incarnation: number
  seq: number
  state: AnnouncedState
  /** The operator cordoned the node (`astrad cordon`): schedulers place no new replica there. */
  cordoned: boolean
  roles: Role[]
  name: string
  cell: string
  cores: number
  gpus: number
  /** Per-device performance factor of the GPUs (1 = reference card). */
  gpuPerf: number
  /** Host CPU utilization, 0..1, measured over the last interval. */
  cpuUtil: number
  gpuUtil: number
  /** Requests being served by this daemon right now. */
  inflight: number
  ledgerVersion: number
  readyReplicas: number
  /** Digest of the models held complete (changes when the set changes). */
  modelsDigest: number
  /** Revision of the mailbox applied (public mailbox issue). */
  mailboxCursor: number
  /** P2P limits in force, bytes/s (0 = none), and recent rates, bytes/s. */
  uploadLimit: number
  downloadLimit: number
  uploadRate: number
  downloadRate: number
  /** Model downloads in progress. */
  transfers: number
}

const ANNOUNCED: AnnouncedState[] = ['alive', 'draining', 'left']
/** Bits of the flags byte (version 3 on). */
const FLAG_CORDONED = 1
/** The version before the flags byte: still read, so a newer daemon understands an older one. */
const HEARTBEAT_VERSION_NO_FLAGS = 2
const PEER_ID_RE = /^[1-9A-HJ-NP-Za-km-z]{40,100}$/

function clampU16 (v: number): number { return Math.max(0, Math.min(0xffff, Math.round(v))) }
function clampU32 (v: number): number { return Math.max(0, Math.min(0xffffffff, Math.round(v))) }

function rolesMask (roles: Role[]): number {
  let m = 0
  for (const r of roles) m |= 1 << ROLES.indexOf(r)
  return m
}

function rolesFromMask (m: number): Role[] {
  if (m === 0 || m >= 1 << ROLES.length) throw new DecodeError(`invalid roles mask ${m}`)
  return ROLES.filter((_, i) => (m & (1 << i)) !== 0)
}

/** Writes the heartbeat fields (shared by heartbeats and online-list records). */
export function writeHeartbeat (w: Writer, hb: Heartbeat): void {
  // Without flags the older version 2 is written, so daemons that predate version 3 still read
  // every heartbeat but a cordoned node's.
  const flags = hb.cordoned ? FLAG_CORDONED : 0
  if (flags === 0) w.u8(HEARTBEAT_VERSION_NO_FLAGS).u8(ANNOUNCED.indexOf(hb.state))
  else w.u8(HEARTBEAT_VERSION).u8(ANNOUNCED.indexOf(hb.state)).u8(flags)
  w.u64(hb.incarnation)
    .u32(hb.seq)
    .str8(hb.peerId)
    .u8(rolesMask(hb.roles))
    .str8(hb.name)
    .str8(hb.cell)
    .u16(clampU16(hb.cores))
    .u16(clampU16(hb.gpus))
    .u16(clampU16(hb.gpuPerf * 100))
    .u16(clampU16(hb.cpuUtil * 10_000))
    .u16(clampU16(hb.gpuUtil * 10_000))
    .u32(clampU32(hb.inflight))
    .u32(clampU32(hb.ledgerVersion))
    .u16(clampU16(hb.readyReplicas))
    .u32(clampU32(hb.modelsDigest))
    .u32(clampU32(hb.mailboxCursor))
    .u32(clampU32(hb.uploadLimit))
    .u32(clampU32(hb.downloadLimit))
    .u32(clampU32(hb.uploadRate))
    .u32(clampU32(hb.downloadRate))
    .u16(clampU16(hb.transfers))
}

export function readHeartbeat (r: Reader): Heartbeat {
  const version = r.u8('version')
  if (version !== HEARTBEAT_VERSION && version !== HEARTBEAT_VERSION_NO_FLAGS) throw new DecodeError(`unsupported heartbeat version ${version}`)
  const stateIdx = r.u8('state')
  const state = ANNOUNCED[stateIdx]
  if (state == null) throw new DecodeError(`invalid state ${stateIdx}`)
  const flags = version === HEARTBEAT_VERSION_NO_FLAGS ? 0 : r.u8('flags')
  const incarnation = r.u64('incarnation')
  const seq = r.u32('seq')
  const peerId = r.str8('peerId')
  if (!PEER_ID_RE.test(peerId)) throw new DecodeError('invalid peer id')
  const roles = rolesFromMask(r.u8('roles'))
  const name = r.str8('name')
  const cell = r.str8('cell')
  if (Buffer.byteLength(name) > MAX_LABEL_BYTES || Buffer.byteLength(cell) > MAX_LABEL_BYTES) throw new DecodeError('label too long')
  const cores = r.u16('cores')
  const gpus = r.u16('gpus')
  const gpuPerf = r.u16('gpuPerf') / 100
  const cpuUtil = Math.min(1, r.u16('cpuUtil') / 10_000)
  const gpuUtil = Math.min(1, r.u16('gpuUtil') / 10_000)
  return {
    peerId,
    incarnation,
    seq,
    state,
    cordoned: (flags & FLAG_CORDONED) !== 0,
    roles,
    name,
    cell,
    cores,
    gpus,
    gpuPerf,
    cpuUtil,
    gpuUtil,
    inflight: r.u32('inflight'),
    ledgerVersion: r.u32('ledgerVersion'),
    readyReplicas: r.u16('readyReplicas'),
    modelsDigest: r.u32('modelsDigest'),
    mailboxCursor: r.u32('mailboxCursor'),
    uploadLimit: r.u32('uploadLimit'),
    downloadLimit: r.u32('downloadLimit'),
    uploadRate: r.u32('uploadRate'),
    downloadRate: r.u32('downloadRate'),
    transfers: r.u16('transfers')
  }
}

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  const w = new Writer(192)
  writeHeartbeat(w, hb)
  const bytes = w.finish()
  if (bytes.length > MAX_HEARTBEAT_BYTES) throw new RangeError(`heartbeat of ${bytes.length} bytes exceeds ${MAX_HEARTBEAT_BYTES}`)
  return bytes
}

/** Decodes one heartbeat message; throws DecodeError on anything malformed or oversized. */
export function decodeHeartbeat (bytes: Uint8Array): Heartbeat {
  if (bytes.length > MAX_HEARTBEAT_BYTES) throw new DecodeError(`heartbeat of ${bytes.length} bytes exceeds ${MAX_HEARTBEAT_BYTES}`)
  const r = new Reader(bytes)
  const hb = readHeartbeat(r)
  r.end()
  return hb
}

/** Topic of a peer's heartbeats: shard = hash(peer id) mod shards. */
export function heartbeatTopic (peerId: string, shards: number): string {
  let h = 2166136261
  for (let i = 0; i < peerId.length; i++) h = Math.imul(h ^ peerId.charCodeAt(i), 16777619)
  return `astra/hb/1/${(h >>> 0) % shards}`
}
