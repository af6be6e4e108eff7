import { z } from 'zod'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Host } from '../p2p/index.ts'
import { handleRequests } from '../p2p/index.ts'
import { RequestStreams, handleRequestStreams, type StreamSpec } from '../p2p/request-stream.ts'
import { DecodeError, errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { batchingSchema } from '../batching/spec.ts'
import { EXECUTION_PROVIDERS, MAX_GPU_PERF, devicesConstants } from '../devices/index.ts'
import type { Ledger, LedgerSnapshot, Reservation } from './ledger.ts'
import {
  MAX_CPU, MAX_GPU, MAX_LEDGER_RESPONSE_BYTES, MAX_RESERVE_REQUEST_BYTES, MAX_RESERVE_STREAMS, MAX_RESERVE_STREAMS_PER_PEER, RESERVE_PROTOCOL,
  RESERVE_STREAM_IDLE_MS, RESERVE_STREAM_PROTOCOL, RESERVE_TIMEOUT_MS
} from './constants.ts'

/**
 * `/astra/reserve/1.0.0`: one JSON request, one JSON answer (p2p/request.ts framing).
 *   {op:'reserve', reservation} → the ledger after the commit, or an error ERR_NO_CAPACITY /
 *                                 ERR_DRAINING / ERR_CORDONED / ERR_DUPLICATE / ERR_TOO_MANY (with the code)
 *   {op:'release', replica}     → the ledger after the release
 *   {op:'ledger'}               → the ledger
 * Every answer carries the whole ledger, so a rejected scheduler refreshes its view for free.
 *
 * `/astra/reserve/1.1.0`: the same requests and answers on a stream the scheduler keeps open to
 * the node, in order (src/p2p/request-stream.ts); who may ask is checked for every request.
 */

/** Reservations on long-lived streams. Writes: a request whose stream ended under it is not repeated. */
export const RESERVE_STREAM: StreamSpec = {
  protocol: RESERVE_STREAM_PROTOCOL,
  oneShot: RESERVE_PROTOCOL,
  maxRequestBytes: MAX_RESERVE_REQUEST_BYTES,
  maxResponseBytes: MAX_LEDGER_RESPONSE_BYTES,
  timeoutMs: RESERVE_TIMEOUT_MS,
  maxStreamsPerPeer: MAX_RESERVE_STREAMS_PER_PEER,
  idleMs: RESERVE_STREAM_IDLE_MS,
  maxPipelined: MAX_RESERVE_STREAMS,
  retryGone: false
}

const { MAX_DETECTED_DEVICES, MAX_PROBE_REASON_CHARS } = devicesConstants

const resources = z.object({ cpu: z.number().min(0).max(MAX_CPU), gpu: z.number().int().min(0).max(MAX_GPU) }).strict()

const reservationSchema = z.object({
  replica: z.string().min(1).max(200),
  app: z.string().min(1).max(63),
  generation: z.number().int().min(1),
  model: z.string().regex(/^[0-9a-f]{64}$/),
  resources,
  threads: z.number().int().min(1).max(64),
  maxQueue: z.number().int().min(0).max(100_000),
  batching: batchingSchema.optional(),
  owner: z.string().min(1).max(128),
  executionProviders: z.array(z.enum(EXECUTION_PROVIDERS)).min(1).max(EXECUTION_PROVIDERS.length).optional()
}).strict()

const probe = z.object({ state: z.enum(['ok', 'failed', 'probing']), reason: z.string().max(MAX_PROBE_REASON_CHARS).optional(), ms: z.number().min(0).optional() })
/** A node's device report (src/devices): bounded, so a node cannot bloat a scheduler's view. */
const devicesSchema = z.object({
  kind: z.string().max(64),
  count: z.number().int().min(0).max(MAX_GPU * 4),
  perf: z.number().gt(0).max(MAX_GPU_PERF),
  detected: z.array(z.object({ kind: z.string().max(32), name: z.string().max(200), source: z.string().max(200) })).max(MAX_DETECTED_DEVICES),
  providers: z.partialRecord(z.enum(EXECUTION_PROVIDERS), probe),
  software: z.boolean().optional()
})

const requestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('reserve'), reservation: reservationSchema }).strict(),
  z.object({ op: z.literal('release'), replica: z.string().min(1).max(200) }).strict(),
  z.object({ op: z.literal('ledger') }).strict()
])

type ReserveRequest = z.infer<typeof requestSchema>

const tensorSpec = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number().int()) })
const ledgerSchema = z.object({
  version: z.number().int().min(0),
  capacity: resources,
  used: z.object({ cpu: z.number(), gpu: z.number() }),
  accepting: z.boolean(),
  cordoned: z.boolean().optional(),
  replicas: z.array(reservationSchema.extend({
    state: z.enum(['loading', 'ready', 'failed']),
    error: z.string().optional(),
    signature: z.object({ inputs: z.array(tensorSpec), outputs: z.array(tensorSpec) }).optional(),
    provider: z.enum(EXECUTION_PROVIDERS).optional(),
    fallback: z.string().optional(),
    since: z.number()
  })),
  devices: devicesSchema.optional()
})

const encoder = new TextEncoder()
const decoder = new TextDecoder()

function encode (value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

function decodeJson (bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(decoder.decode(bytes))
  } catch (err) {
    throw new DecodeError(`${what} is not JSON: ${errorMessage(err)}`)
  }
}

export interface ReserveServerOptions {
  /** Called for every request refused as malformed (counted by the caller). */
  onBadRequest?: (err: unknown, peer: PeerId) => void
  /** Called after each accepted/rejected reservation. */
  onReserve?: (accepted: boolean) => void
}

/** Node side: answers reservations from the ledger, to schedulers only (reserve, release and ledger reads). */
export async function serveReservations (libp2p: Host, ledger: Ledger, options: ReserveServerOptions = {}): Promise<void> {
  const serve = (bytes: Uint8Array): Uint8Array => {
    const parsed = requestSchema.safeParse(decodeJson(bytes, 'reserve request'))
    if (!parsed.success) throw new DecodeError(`bad reserve request: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
    const req: ReserveRequest = parsed.data
    if (req.op === 'reserve') {
      try {
        ledger.reserve(req.reservation)
        options.onReserve?.(true)
      } catch (err) {
        options.onReserve?.(false)
        throw err
      }
    } else if (req.op === 'release') {
      ledger.release(req.replica)
    }
    return encode(ledger.snapshot())
  }
  const onError = (err: unknown, peer: PeerId): void => { if (err instanceof DecodeError) options.onBadRequest?.(err, peer) }
  await handleRequests(libp2p, RESERVE_PROTOCOL, serve, {
    maxRequestBytes: MAX_RESERVE_REQUEST_BYTES,
    maxResponseBytes: MAX_LEDGER_RESPONSE_BYTES,
    timeoutMs: RESERVE_TIMEOUT_MS,
    maxInboundStreams: MAX_RESERVE_STREAMS,
    authorize: Trust.guard(libp2p, 'scheduler', RESERVE_PROTOCOL),
    onError
  })
  await handleRequestStreams(libp2p, RESERVE_STREAM, serve, { authorize: Trust.guard(libp2p, 'scheduler', RESERVE_STREAM_PROTOCOL), onError })
}

/** What placement needs from the protocol (the Placer's tests stand in for it). */
export interface ReserveApi {
  reserve: (peer: PeerId | string, reservation: Reservation, signal?: AbortSignal) => Promise<LedgerSnapshot>
  release: (peer: PeerId | string, replica: string, signal?: AbortSignal) => Promise<LedgerSnapshot>
  ledger: (peer: PeerId | string, signal?: AbortSignal) => Promise<LedgerSnapshot>
}

/**
 * Scheduler side, on a stream kept open to each node (1.0.0, one stream per request, with nodes
 * that lack 1.1.0). Rejections throw RequestError with the node's code (ERR_NO_CAPACITY …).
 */
export class ReserveClient implements ReserveApi {
  private readonly streams: RequestStreams

  constructor (libp2p: Host) {
    this.streams = new RequestStreams(libp2p, RESERVE_STREAM)
  }

  /** Closes the streams kept open (the daemon stops). */
  async close (): Promise<void> {
    await this.streams.close()
  }

  async reserve (peer: PeerId | string, reservation: Reservation, signal?: AbortSignal): Promise<LedgerSnapshot> {
    return await this.call(peer, { op: 'reserve', reservation }, signal)
  }

  async release (peer: PeerId | string, replica: string, signal?: AbortSignal): Promise<LedgerSnapshot> {
    return await this.call(peer, { op: 'release', replica }, signal)
  }

  async ledger (peer: PeerId | string, signal?: AbortSignal): Promise<LedgerSnapshot> {
    return await this.call(peer, { op: 'ledger' }, signal)
  }

  private async call (to: PeerId | string, req: ReserveRequest, signal?: AbortSignal): Promise<LedgerSnapshot> {
    const peer = typeof to === 'string' ? peerIdFromString(to) : to
    const bytes = await this.streams.request(peer, encode(req), { signal, timeoutMs: RESERVE_TIMEOUT_MS })
    const parsed = ledgerSchema.safeParse(decodeJson(bytes, 'ledger'))
    if (!parsed.success) throw new DecodeError(`bad ledger from ${peer.toString()}: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
    return parsed.data as LedgerSnapshot
  }
}
