import { type Host, ProtocolPeers, request } from '../p2p/index.ts'
import { REQUEST_TIMEOUT_MS } from '../p2p/constants.ts'
import type { Logger } from '../util/logger.ts'
import { DecodeError, LifecycleError, RequestError, errorMessage } from '../util/errors.ts'
import { checkKey, checkKindName, encodeValue, typed, type Entry, type Kind, type WriteOptions, type Written } from './kind.ts'
import { decodeEntryResponse, decodeListResponse, decodeWriteResponse, encodeJson } from './wire.ts'
import type { ClusterLog } from './cluster-log.ts'
import { ACCESS_PROTOCOL, LIST_PAGE_ENTRIES, MAX_ACCESS_RESPONSE_BYTES, MAX_LIST_PAGES, READ_TIMEOUT_ROUNDS, RESOURCE_WAIT_MS, UNREACHABLE_ROUNDS, UNREACHABLE_RETRY_MS } from './constants.ts'

/**
 * The cluster log as daemons without the resource role see it: the same put/delete/get/list,
 * all async (they go over the network). Features written against this interface work in any
 * daemon: remotely through `clusterLogClient`, in a resource through `localAccess`.
 */
export interface ClusterLogAccess {
  /** Durable on the accepting resource, and on a second one when `replicas` is 2 (see Written). */
  put<T>(kind: Kind<T>, key: string, value: T, options?: WriteOptions): Promise<Written<T>>
  delete<T>(kind: Kind<T>, key: string, options?: WriteOptions): Promise<Written<T>>
  get<T>(kind: Kind<T>, key: string, options?: { signal?: AbortSignal }): Promise<Entry<T> | undefined>
  list<T>(kind: Kind<T>, options?: { includeDeleted?: boolean, signal?: AbortSignal }): Promise<Array<Entry<T>>>
}

export interface ClusterLogClient extends ClusterLogAccess {
  start(): Promise<void>
  stop(): Promise<void>
}

export interface ClusterLogClientComponents {
  libp2p: Host
  logger: Logger
}

export interface ClusterLogClientInit {
  /** Per-attempt deadline (each resource tried gets this long). @default REQUEST_TIMEOUT_MS */
  timeoutMs?: number
}

/** The ClusterLogAccess of a resource in this process (no network hop). */
export function localAccess (log: ClusterLog): ClusterLogAccess {
  return {
    put: async (kind, key, value, options) => await log.put(kind, key, value, options),
    delete: async (kind, key, options) => await log.delete(kind, key, options),
    get: async (kind, key) => log.get(kind, key),
    list: async (kind, options) => log.list(kind, options)
  }
}

/**
 * `access` with every put and delete carrying `auth` (a signed operator request): hands one
 * request's authority to code written against ClusterLogAccess (deployApp, the notice admin).
 */
export function withAuth (access: ClusterLogAccess, auth: string | undefined): ClusterLogAccess {
  if (auth == null) return access
  return {
    put: async (kind, key, value, options) => await access.put(kind, key, value, { ...options, auth }),
    delete: async (kind, key, options) => await access.delete(kind, key, { ...options, auth }),
    get: async (kind, key, options) => await access.get(kind, key, options),
    list: async (kind, options) => await access.list(kind, options)
  }
}

function authOf (options: WriteOptions): { auth?: string } {
  return options.auth != null ? { auth: options.auth } : {}
}

export function clusterLogClient (init: ClusterLogClientInit = {}): (components: ClusterLogClientComponents) => ClusterLogClient {
  return (components) => new RemoteClusterLog(components, init)
}

/** Failures worth trying another resource for; anything else (a refused value) is final. */
const RETRYABLE = new Set(['ERR_UNREACHABLE', 'ERR_TIMEOUT', 'ERR_REQUEST', 'ERR_BAD_RESPONSE', 'ERR_LIFECYCLE', 'ERR_INTERNAL'])

/**
 * Talks `/astra/log/1.0.0` to connected resources. Sticks to the resource that answered last
 * (so a reader sees its own writes while that resource is up) and fails over to the others in
 * random order. Writes retried on another resource are idempotent in value (same kind, key and
 * value; the later version wins), so a timeout that hid a success does no harm.
 */
class RemoteClusterLog implements ClusterLogClient {
  private readonly components: ClusterLogClientComponents
  private readonly timeoutMs?: number
  private resources?: ProtocolPeers
  private preferred?: string

  constructor (components: ClusterLogClientComponents, init: ClusterLogClientInit) {
    this.components = components
    this.timeoutMs = init.timeoutMs
  }

  async start (): Promise<void> {
    if (this.resources != null) return
    const resources = new ProtocolPeers(this.components.libp2p, ACCESS_PROTOCOL)
    await resources.start()
    this.resources = resources
  }

  async stop (): Promise<void> {
    this.resources?.stop()
    this.resources = undefined
  }

  async put<T> (kind: Kind<T>, key: string, value: T, options: WriteOptions = {}): Promise<Written<T>> {
    this.requireStarted()
    checkKindName(kind.name)
    checkKey(key)
    const encoded = encodeValue(kind, value)
    const res = await this.call({ op: 'put', kind: kind.name, key, value: encoded.value, ...authOf(options) }, options.signal, decodeWriteResponse)
    return { ...typed(kind, this.expect(res.entry, kind, key)), replicas: res.replicas }
  }

  async delete<T> (kind: Kind<T>, key: string, options: WriteOptions = {}): Promise<Written<T>> {
    this.requireStarted()
    checkKindName(kind.name)
    checkKey(key)
    const res = await this.call({ op: 'delete', kind: kind.name, key, ...authOf(options) }, options.signal, decodeWriteResponse)
    return { ...(this.expect(res.entry, kind, key) as Entry<T>), replicas: res.replicas }
  }

  async get<T> (kind: Kind<T>, key: string, options: { signal?: AbortSignal } = {}): Promise<Entry<T> | undefined> {
    this.requireStarted()
    checkKindName(kind.name)
    checkKey(key)
    const entry = await this.call({ op: 'get', kind: kind.name, key }, options.signal, decodeEntryResponse)
    return entry != null ? typed(kind, this.expect(entry, kind, key)) : undefined
  }

  async list<T> (kind: Kind<T>, options: { includeDeleted?: boolean, signal?: AbortSignal } = {}): Promise<Array<Entry<T>>> {
    this.requireStarted()
    checkKindName(kind.name)
    const out: Array<Entry<T>> = []
    let after: string | undefined
    // Pages follow key order; with failover, a later page may come from another resource
    // (eventually consistent, like any read).
    for (let pages = 0; ; pages++) {
      if (pages >= MAX_LIST_PAGES) throw new RequestError(`cluster-log list of ${kind.name} exceeds ${MAX_LIST_PAGES} pages`, 'ERR_BAD_RESPONSE')
      const page = await this.call({
        op: 'list', kind: kind.name, includeDeleted: options.includeDeleted === true, limit: LIST_PAGE_ENTRIES, ...(after != null ? { after } : {})
      }, options.signal, decodeListResponse)
      const from = after
      for (const entry of page.entries) {
        if (entry.kind !== kind.name || entry.key === from) throw new RequestError('cluster-log list page is not the one asked for', 'ERR_BAD_RESPONSE')
        after = entry.key
        try {
          out.push(typed(kind, entry))
        } catch (err) {
          if (!(err instanceof DecodeError)) throw err
          this.components.logger.warn({ kind: kind.name, key: entry.key, err: errorMessage(err) }, 'skipping cluster object that does not match its kind')
        }
      }
      if (!page.more || page.entries.length === 0) return out
    }
  }

  private requireStarted (): ProtocolPeers {
    if (this.resources == null) throw new LifecycleError('cluster-log client is not started')
    return this.resources
  }

  private expect (entry: Entry<unknown> | undefined, kind: Kind<unknown>, key: string): Entry<unknown> {
    if (entry == null || entry.kind !== kind.name || entry.key !== key) {
      throw new RequestError(`cluster-log answer is not ${kind.name}/${key}`, 'ERR_BAD_RESPONSE')
    }
    return entry
  }

  /** One request, tried on the preferred resource, then the others, until one answers. */
  private async call<R> (req: Record<string, unknown>, signal: AbortSignal | undefined, decode: (bytes: Uint8Array) => R): Promise<R> {
    const payload = encodeJson(req)
    const resources = this.requireStarted()
    // Just after start (or a reconnect) the resource is connected but identify has not yet
    // told us it serves the log: wait a moment rather than fail the caller.
    const waitUntil = Date.now() + RESOURCE_WAIT_MS
    while (resources.list().length === 0 && Date.now() < waitUntil) {
      signal?.throwIfAborted()
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    let peers = resources.shuffled(this.preferred)
    let last: unknown
    const read = req.op === 'get' || req.op === 'list'
    let timeoutMs = this.timeoutMs ?? REQUEST_TIMEOUT_MS
    let timeoutRounds = 0
    for (let round = 0; ; round++) {
      const failed: unknown[] = []
      for (const peer of peers) {
        signal?.throwIfAborted()
        try {
          const bytes = await request(this.components.libp2p, peer, ACCESS_PROTOCOL, payload, {
            signal, timeoutMs, maxResponseBytes: MAX_ACCESS_RESPONSE_BYTES
          })
          let result: R
          try {
            result = decode(bytes)
          } catch (err) {
            throw new RequestError(`bad cluster-log answer from ${peer.toString()}: ${errorMessage(err)}`, 'ERR_BAD_RESPONSE', { cause: err })
          }
          this.preferred = peer.toString()
          return result
        } catch (err) {
          signal?.throwIfAborted()
          const code = (err as { code?: string }).code
          if (code == null || !RETRYABLE.has(code)) throw err
          last = err
          failed.push(err)
          if (this.preferred === peer.toString()) this.preferred = undefined
          this.components.logger.debug({ peer: peer.toString(), op: req.op, err: errorMessage(err) }, 'cluster-log resource failed, trying another')
        }
      }
      // Another round when no resource could even be reached (UNREACHABLE_ROUNDS), or, for a
      // read, when every one was reached but too slow to answer (READ_TIMEOUT_ROUNDS, each with
      // twice the time: a starved resource answers late, and a late answer beats an error).
      const codes = failed.map(err => (err as { code?: string }).code)
      const unreachable = codes.length > 0 && codes.every(code => code === 'ERR_UNREACHABLE')
      const slow = read && codes.length > 0 && codes.every(code => code === 'ERR_UNREACHABLE' || code === 'ERR_TIMEOUT') && !unreachable
      if (slow && timeoutRounds + 1 < READ_TIMEOUT_ROUNDS) {
        timeoutRounds++
        timeoutMs *= 2
      } else if (!unreachable || round + 1 >= UNREACHABLE_ROUNDS) break
      await new Promise(resolve => setTimeout(resolve, UNREACHABLE_RETRY_MS))
      signal?.throwIfAborted()
      peers = resources.shuffled(this.preferred)
    }
    throw new RequestError(
      peers.length === 0
        ? 'no cluster-log resource is connected'
        : `no cluster-log resource answered (tried ${peers.length}): ${errorMessage(last)}`,
      'ERR_NO_RESOURCE',
      { cause: last }
    )
  }
}
