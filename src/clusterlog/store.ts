import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { DatabaseSync, type StatementSync } from 'node:sqlite'
import { AstradError, DecodeError, errorMessage } from '../util/errors.ts'
import type { Clock } from '../util/time.ts'
import { ClockSkewError, HybridClock, ORIGIN_PATTERN, formatVersion, parseVersion } from './hlc.ts'
import type { Entry } from './kind.ts'
import { SCHEMA_VERSION } from './constants.ts'

/**
 * The cluster log on disk (node:sqlite, WAL, synchronous=FULL: a commit is on disk before the
 * call that made it returns). Pure storage and merge logic, no network:
 *
 * - `entries`: every write ever seen, by (origin, seq). Each origin numbers its writes 1, 2, 3 …
 *   and entries are applied per origin without gaps, so the per-origin high-water marks (the
 *   version vector) describe exactly what this store holds.
 * - `objects`: the current (kind, key) → winning entry, last-writer-wins by HLC version.
 *   Deletes are tombstones. Each change of an object gets the next local `rev` (change feed).
 * - A superseded entry keeps its place in the log (so vectors stay gap-free) but loses its
 *   value ("pruned"): the newest version of every object is always held in full by whoever
 *   holds it, so replicas converge without keeping old values.
 */

/** A log entry as stored and replicated. `value` is JSON text; absent on tombstones and pruned entries. */
export interface LogEntry {
  origin: string
  seq: number
  kind: string
  key: string
  version: string
  deleted: boolean
  pruned: boolean
  value?: string
  /** Who made the change (Entry.author); absent on entries written before authors were recorded. */
  author?: string
}

export type RejectReason = 'gap' | 'clock_skew' | 'bad_version'

export interface ApplyResult {
  /** Entries new to this store (including ones that lost to a newer version). */
  applied: number
  /** Objects that changed, in rev order. */
  changed: Array<Entry<unknown>>
  /** Entries refused; the rest of the same origin in the batch is skipped after one. */
  rejected: Array<{ origin: string, seq: number, reason: RejectReason }>
}

export interface LogStoreInit {
  /** Path of the database file; its directory is created. */
  file: string
  /** This daemon's peer id: the first part of its origin id. */
  peerId: string
  /** Physical clock of the HLC. @default the system clock */
  clock?: Clock
  /** @default MAX_CLOCK_DRIFT_MS */
  maxDriftMs?: number
}

/** The database file cannot be used (corrupt, locked by another process, newer schema, unreadable). */
export class LogStoreError extends AstradError {
  constructor (message: string, code: string, options?: ErrorOptions) {
    super(message, code, options)
    this.name = 'LogStoreError'
  }
}

interface ObjectRow {
  kind: string
  key: string
  origin: string
  seq: number
  hlc: string
  deleted: number
  rev: number
  value: string | null
  author: string | null
}

interface EntryRow {
  origin: string
  seq: number
  kind: string
  key: string
  hlc: string
  deleted: number
  pruned: number
  value: string | null
  author: string | null
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
  origin TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  hlc TEXT NOT NULL,
  deleted INTEGER NOT NULL,
  pruned INTEGER NOT NULL,
  value TEXT,
  author TEXT,
  PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  origin TEXT NOT NULL,
  seq INTEGER NOT NULL,
  hlc TEXT NOT NULL,
  deleted INTEGER NOT NULL,
  rev INTEGER NOT NULL UNIQUE,
  PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS high_water (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
`

const OBJECT_COLUMNS = 'o.kind, o.key, o.origin, o.seq, o.hlc, o.deleted, o.rev, e.value, e.author'
const OBJECT_JOIN = 'objects o JOIN entries e ON e.origin = o.origin AND e.seq = o.seq'

export class LogStore {
  readonly file: string
  /** This store's writer id: `<peerId>:<epoch>`. */
  readonly origin: string
  readonly clock: HybridClock
  private readonly db: DatabaseSync
  private readonly hw = new Map<string, number>()
  private rev = 0
  private entries = 0
  private closed = false
  private readonly stmt: {
    insertEntry: StatementSync
    prune: StatementSync
    setHighWater: StatementSync
    objectMeta: StatementSync
    upsertObject: StatementSync
    getObject: StatementSync
    listLive: StatementSync
    listAll: StatementSync
    changes: StatementSync
    entriesFrom: StatementSync
    entryAt: StatementSync
  }

  private constructor (file: string, db: DatabaseSync, origin: string, clock: HybridClock) {
    this.file = file
    this.db = db
    this.origin = origin
    this.clock = clock
    this.stmt = {
      insertEntry: db.prepare('INSERT INTO entries (origin, seq, kind, key, hlc, deleted, pruned, value, author) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      prune: db.prepare('UPDATE entries SET value = NULL, pruned = 1 WHERE origin = ? AND seq = ?'),
      setHighWater: db.prepare('INSERT INTO high_water (origin, seq) VALUES (?, ?) ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq'),
      objectMeta: db.prepare('SELECT origin, seq, hlc FROM objects WHERE kind = ? AND key = ?'),
      upsertObject: db.prepare(`INSERT INTO objects (kind, key, origin, seq, hlc, deleted, rev) VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (kind, key) DO UPDATE SET origin = excluded.origin, seq = excluded.seq, hlc = excluded.hlc, deleted = excluded.deleted, rev = excluded.rev`),
      getObject: db.prepare(`SELECT ${OBJECT_COLUMNS} FROM ${OBJECT_JOIN} WHERE o.kind = ? AND o.key = ?`),
      listLive: db.prepare(`SELECT ${OBJECT_COLUMNS} FROM ${OBJECT_JOIN} WHERE o.kind = ? AND o.key > ? AND o.deleted = 0 ORDER BY o.key LIMIT ?`),
      listAll: db.prepare(`SELECT ${OBJECT_COLUMNS} FROM ${OBJECT_JOIN} WHERE o.kind = ? AND o.key > ? ORDER BY o.key LIMIT ?`),
      changes: db.prepare(`SELECT ${OBJECT_COLUMNS} FROM ${OBJECT_JOIN} WHERE o.rev > ? ORDER BY o.rev LIMIT ?`),
      entriesFrom: db.prepare('SELECT origin, seq, kind, key, hlc, deleted, pruned, value, author FROM entries WHERE origin = ? AND seq > ? ORDER BY seq'),
      entryAt: db.prepare('SELECT origin, seq, kind, key, hlc, deleted, pruned, value, author FROM entries WHERE origin = ? AND seq = ?')
    }
    for (const row of db.prepare('SELECT origin, seq FROM high_water').all() as Array<{ origin: string, seq: number }>) {
      this.hw.set(row.origin, row.seq)
    }
    this.rev = (db.prepare('SELECT COALESCE(MAX(rev), 0) AS rev FROM objects').get() as { rev: number }).rev
    this.entries = (db.prepare('SELECT COUNT(*) AS n FROM entries').get() as { n: number }).n
    const newest = (db.prepare('SELECT MAX(hlc) AS hlc FROM entries').get() as { hlc: string | null }).hlc
    // After a restart our writes must still sort after everything we held, even if the wall
    // clock stepped back meanwhile.
    if (newest != null) clock.observe(parseVersion(newest))
  }

  /**
   * Opens (creating if needed) the database. A file that is not a database, fails its integrity
   * check, is held by another process, or has a newer schema gives a LogStoreError naming the
   * file and what to do; never a crash halfway.
   */
  static open (init: LogStoreInit): LogStore {
    if (!/^[A-Za-z0-9]{16,128}$/.test(init.peerId)) throw new LogStoreError(`not a peer id: ${init.peerId}`, 'ERR_CLUSTERLOG_OPEN')
    const file = init.file
    let db: DatabaseSync | undefined
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      db = new DatabaseSync(file)
      // One process owns the file: a second daemon on the same data dir fails at open.
      db.exec('PRAGMA locking_mode = EXCLUSIVE')
      db.exec('PRAGMA journal_mode = WAL')
      // FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
      db.exec('PRAGMA synchronous = FULL')
      const check = db.prepare('PRAGMA quick_check').all() as Array<{ quick_check: string }>
      if (check.length !== 1 || check[0]?.quick_check !== 'ok') {
        throw new LogStoreError(`cluster log ${file} failed its integrity check (${check.slice(0, 3).map(r => r.quick_check).join('; ')}); move it away and restart: this resource will catch up from its peers`, 'ERR_CLUSTERLOG_CORRUPT')
      }
      const origin = migrate(db, file, init.peerId)
      const clock = new HybridClock(origin, { physical: init.clock, maxDriftMs: init.maxDriftMs })
      return new LogStore(file, db, origin, clock)
    } catch (err) {
      try { db?.close() } catch {}
      if (err instanceof LogStoreError) throw err
      const errcode = (err as { errcode?: number }).errcode
      if (errcode === 5 || errcode === 6) {
        throw new LogStoreError(`cluster log ${file} is in use by another process (is another astrad running on this data dir?)`, 'ERR_CLUSTERLOG_LOCKED', { cause: err })
      }
      if (errcode === 11 || errcode === 26) {
        throw new LogStoreError(`cluster log ${file} is corrupt or not a database (${errorMessage(err)}); move it away and restart: this resource will catch up from its peers`, 'ERR_CLUSTERLOG_CORRUPT', { cause: err })
      }
      throw new LogStoreError(`cannot open cluster log ${file}: ${errorMessage(err)}`, 'ERR_CLUSTERLOG_OPEN', { cause: err })
    }
  }

  /** Local revision: the rev of the newest object change. */
  get revision (): number { return this.rev }

  /** Log entries held (all origins, pruned included). */
  get entryCount (): number { return this.entries }

  get isOpen (): boolean { return !this.closed }

  highWater (origin: string): number { return this.hw.get(origin) ?? 0 }

  /** Per-origin high-water marks: everything up to these seqs is held, nothing beyond. */
  versionVector (): Map<string, number> { return new Map(this.hw) }

  /**
   * A local write (text undefined = delete): a new entry of our origin, winning by construction.
   * `author`: who made the change (the operator), recorded with the entry and replicated.
   */
  write (kind: string, key: string, text: string | undefined, author?: string): Entry<unknown> {
    const t = this.clock.now()
    const version = formatVersion(t)
    const seq = this.highWater(this.origin) + 1
    const deleted = text === undefined
    const rev = this.rev + 1
    this.transaction(() => {
      this.stmt.insertEntry.run(this.origin, seq, kind, key, version, deleted ? 1 : 0, 0, text ?? null, author ?? null)
      this.stmt.setHighWater.run(this.origin, seq)
      const cur = this.stmt.objectMeta.get(kind, key) as { origin: string, seq: number, hlc: string } | undefined
      if (cur != null) {
        // The clock has observed every stored version, so this cannot happen short of a bug.
        if (cur.hlc >= version) throw new AstradError(`clock went backwards: ${version} ≤ ${cur.hlc}`, 'ERR_INTERNAL')
        this.stmt.prune.run(cur.origin, cur.seq)
      }
      this.stmt.upsertObject.run(kind, key, this.origin, seq, version, deleted ? 1 : 0, rev)
    })
    this.hw.set(this.origin, seq)
    this.rev = rev
    this.entries++
    return {
      kind, key, value: text === undefined ? undefined : JSON.parse(text), deleted, version, origin: peerOf(this.origin), rev, ...(author != null ? { author } : {})
    }
  }

  /**
   * Merges entries from a peer in one transaction. Per origin they must continue our high-water
   * mark without gaps (duplicates are skipped); an entry too far in the future (clock skew) or
   * out of order stops its origin for this batch. Each entry is kept; it replaces the current
   * object if its version is newer (LWW), else it is stored pruned.
   */
  apply (batch: LogEntry[]): ApplyResult {
    const result: ApplyResult = { applied: 0, changed: [], rejected: [] }
    const hw = new Map<string, number>()
    const blocked = new Set<string>()
    let rev = this.rev
    this.transaction(() => {
      for (const e of batch) {
        if (blocked.has(e.origin)) continue
        const have = hw.get(e.origin) ?? this.highWater(e.origin)
        if (e.seq <= have) continue
        const reject = (reason: RejectReason): void => {
          result.rejected.push({ origin: e.origin, seq: e.seq, reason })
          blocked.add(e.origin)
        }
        if (e.seq !== have + 1) { reject('gap'); continue }
        let t
        try {
          t = parseVersion(e.version)
        } catch {
          reject('bad_version'); continue
        }
        if (t.origin !== e.origin) { reject('bad_version'); continue }
        try {
          this.clock.receive(t)
        } catch (err) {
          if (!(err instanceof ClockSkewError)) throw err
          reject('clock_skew'); continue
        }
        const cur = this.stmt.objectMeta.get(e.kind, e.key) as { origin: string, seq: number, hlc: string } | undefined
        // A pruned entry has no value to install even when it is newer than ours: the version
        // that superseded it is newer still and held in full by its holders; it will arrive.
        const install = !e.pruned && (cur == null || cur.hlc < e.version)
        const value = install && !e.deleted ? (e.value ?? null) : null
        this.stmt.insertEntry.run(e.origin, e.seq, e.kind, e.key, e.version, e.deleted ? 1 : 0, install ? 0 : 1, value, e.author ?? null)
        this.stmt.setHighWater.run(e.origin, e.seq)
        hw.set(e.origin, e.seq)
        result.applied++
        if (!install) continue
        if (cur != null) this.stmt.prune.run(cur.origin, cur.seq)
        rev++
        this.stmt.upsertObject.run(e.kind, e.key, e.origin, e.seq, e.version, e.deleted ? 1 : 0, rev)
        result.changed.push({
          kind: e.kind,
          key: e.key,
          value: e.deleted ? undefined : parseValue(value, e.kind, e.key),
          deleted: e.deleted,
          version: e.version,
          origin: peerOf(e.origin),
          rev,
          ...(e.author != null ? { author: e.author } : {})
        })
      }
    })
    for (const [origin, seq] of hw) this.hw.set(origin, seq)
    this.rev = rev
    this.entries += result.applied
    return result
  }

  get (kind: string, key: string): Entry<unknown> | undefined {
    const row = this.stmt.getObject.get(kind, key) as ObjectRow | undefined
    return row != null ? toEntry(row) : undefined
  }

  /** Objects of a kind in key order, from after `after`, at most `limit`. */
  list (kind: string, options: { includeDeleted?: boolean, after?: string, limit?: number } = {}): Array<Entry<unknown>> {
    const stmt = options.includeDeleted === true ? this.stmt.listAll : this.stmt.listLive
    return (stmt.all(kind, options.after ?? '', options.limit ?? -1) as unknown as ObjectRow[]).map(toEntry)
  }

  /** Like list, lazily: the caller stops reading when its page is full. */
  * scan (kind: string, options: { includeDeleted?: boolean, after?: string } = {}): Generator<Entry<unknown>> {
    const stmt = options.includeDeleted === true ? this.stmt.listAll : this.stmt.listLive
    for (const row of stmt.iterate(kind, options.after ?? '', -1) as Iterable<ObjectRow>) yield toEntry(row)
  }

  /** Objects changed after `rev`, oldest change first (each object once, at its latest rev). */
  changesSince (rev: number, limit: number): Array<Entry<unknown>> {
    return (this.stmt.changes.all(rev, limit) as unknown as ObjectRow[]).map(toEntry)
  }

  /**
   * The entries this store holds beyond `have` (a peer's version vector), per origin in seq
   * order. A generator: the caller stops when its batch is full, without reading further.
   */
  * missing (have: ReadonlyMap<string, number>): Generator<LogEntry> {
    for (const [origin, top] of [...this.hw]) {
      const from = have.get(origin) ?? 0
      if (top <= from) continue
      for (const row of this.stmt.entriesFrom.iterate(origin, from) as Iterable<EntryRow>) yield toLogEntry(row)
    }
  }

  /** One log entry as held now (pruned if superseded since), or undefined if not held. */
  logEntry (origin: string, seq: number): LogEntry | undefined {
    const row = this.stmt.entryAt.get(origin, seq) as EntryRow | undefined
    return row != null ? toLogEntry(row) : undefined
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.db.close()
  }

  private transaction (fn: () => void): void {
    this.db.exec('BEGIN IMMEDIATE')
    try {
      fn()
      this.db.exec('COMMIT')
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK')
      throw err
    }
  }
}

/** The peer id part of an origin id. */
export function peerOf (origin: string): string {
  const i = origin.indexOf(':')
  return i < 0 ? origin : origin.slice(0, i)
}

function parseValue (text: string | null, kind: string, key: string): unknown {
  if (text == null) throw new DecodeError(`cluster log: ${kind}/${key} has no stored value`)
  try {
    return JSON.parse(text)
  } catch {
    throw new DecodeError(`cluster log: ${kind}/${key} holds invalid JSON`)
  }
}

function toLogEntry (row: EntryRow): LogEntry {
  const e: LogEntry = {
    origin: row.origin, seq: row.seq, kind: row.kind, key: row.key, version: row.hlc, deleted: row.deleted === 1, pruned: row.pruned === 1
  }
  if (row.value != null) e.value = row.value
  if (row.author != null) e.author = row.author
  return e
}

function toEntry (row: ObjectRow): Entry<unknown> {
  const deleted = row.deleted === 1
  return {
    kind: row.kind,
    key: row.key,
    value: deleted ? undefined : parseValue(row.value, row.kind, row.key),
    deleted,
    version: row.hlc,
    origin: peerOf(row.origin),
    rev: row.rev,
    ...(row.author != null ? { author: row.author } : {})
  }
}

/** Creates or checks the schema; returns this store's origin id (new epoch if the peer id changed). */
function migrate (db: DatabaseSync, file: string, peerId: string): string {
  db.exec('BEGIN IMMEDIATE')
  try {
    db.exec(SCHEMA)
    const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined
    if (row == null) {
      db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(SCHEMA_VERSION)
    } else if (row.version !== SCHEMA_VERSION) {
      throw new LogStoreError(`cluster log ${file} has schema version ${row.version}; this astrad reads version ${SCHEMA_VERSION}`, 'ERR_CLUSTERLOG_SCHEMA')
    }
    // Databases from before authors were recorded gain the column (their entries have none).
    const columns = db.prepare('PRAGMA table_info(entries)').all() as Array<{ name: string }>
    if (!columns.some(c => c.name === 'author')) db.exec('ALTER TABLE entries ADD COLUMN author TEXT')
    let origin = (db.prepare("SELECT value FROM meta WHERE name = 'origin'").get() as { value: string } | undefined)?.value
    if (origin == null || !ORIGIN_PATTERN.test(origin) || peerOf(origin) !== peerId) {
      origin = `${peerId}:${randomBytes(4).toString('hex')}`
      db.prepare("INSERT INTO meta (name, value) VALUES ('origin', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value").run(origin)
    }
    db.exec('COMMIT')
    return origin
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK')
    throw err
  }
}
