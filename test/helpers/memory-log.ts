import { InvalidEntryError, type ClusterLogAccess, type Entry, type Kind, type Written } from '../../src/clusterlog/index.ts'
import { RequestError } from '../../src/util/errors.ts'
import { inboxKey, type Notice } from '../../src/mailbox/notice.ts'

/**
 * The cluster log in a Map for tests of code above it (NoticeAdmin, the notice routes): values
 * checked with their kind's schema as the real log does; writes counted; outages and part-way
 * failures on demand.
 */
export class MemoryLog implements ClusterLogAccess {
  readonly entries = new Map<string, Entry<unknown>>()
  readonly puts: Array<{ kind: string, key: string }> = []
  deletes = 0
  /** Throw ERR_NO_RESOURCE on every call. */
  down = false
  /** Fail the put after this many more succeed. */
  failPutsAfter: number | undefined
  private version = 0

  private check (): void {
    if (this.down) throw new RequestError('no cluster-log resource is connected', 'ERR_NO_RESOURCE')
  }

  /** Writes without the schema check or counting: a record another daemon wrote. */
  seed (kind: string, key: string, value: unknown): void {
    this.version++
    this.entries.set(`${kind}\u0000${key}`, { kind, key, value, deleted: false, version: String(this.version).padStart(16, '0'), origin: 'other', rev: this.version })
  }

  async put<T>(kind: Kind<T>, key: string, value: T): Promise<Written<T>> {
    this.check()
    if (this.failPutsAfter !== undefined) {
      if (this.failPutsAfter === 0) throw new RequestError('no cluster-log resource answered (tried 2): timeout', 'ERR_NO_RESOURCE')
      this.failPutsAfter--
    }
    const parsed = kind.schema.safeParse(value)
    if (!parsed.success) throw new InvalidEntryError(`value does not match kind '${kind.name}': ${parsed.error.issues[0]?.message ?? ''}`)
    this.puts.push({ kind: kind.name, key })
    this.seed(kind.name, key, structuredClone(parsed.data))
    return { ...this.entries.get(`${kind.name}\u0000${key}`) as Entry<T>, replicas: 1 }
  }

  async delete<T>(kind: Kind<T>, key: string): Promise<Written<T>> {
    this.check()
    this.deletes++
    const e = { kind: kind.name, key, value: undefined, deleted: true, version: String(++this.version).padStart(16, '0'), origin: 'mem', rev: this.version }
    this.entries.set(`${kind.name}\u0000${key}`, e)
    return { ...e, replicas: 1 }
  }

  async get<T>(kind: Kind<T>, key: string): Promise<Entry<T> | undefined> {
    this.check()
    return this.entries.get(`${kind.name}\u0000${key}`) as Entry<T> | undefined
  }

  async list<T>(kind: Kind<T>, options: { includeDeleted?: boolean } = {}): Promise<Array<Entry<T>>> {
    this.check()
    return [...this.entries.values()].filter(e => e.kind === kind.name && (options.includeDeleted === true || !e.deleted)).sort((a, b) => a.key.localeCompare(b.key)) as Array<Entry<T>>
  }

  notice (id: string): Notice | undefined {
    return this.entries.get(`notice\u0000${id}`)?.value as Notice | undefined
  }

  inbox (peerId: string, id: string): Notice | undefined {
    return this.entries.get(`inbox\u0000${inboxKey(peerId, id)}`)?.value as Notice | undefined
  }
}
