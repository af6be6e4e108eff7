import type { z } from 'zod'
import { AstradError, DecodeError, errorMessage } from '../util/errors.ts'
import { KIND_PATTERN, MAX_KEY_BYTES, MAX_VALUE_BYTES } from './constants.ts'

/**
 * A kind of cluster object (apps, model manifests, notices …): a name and the schema of its
 * values. Values must be plain JSON (the schema's output is what is stored and replicated).
 */
export interface Kind<T> {
  name: string
  schema: z.ZodType<T>
}

/** One object as this daemon sees it. */
export interface Entry<T> {
  kind: string
  key: string
  /** undefined for a tombstone. */
  value: T | undefined
  deleted: boolean
  /** HLC version; plain string order is version order, equal strings are the same write. */
  version: string
  /** Peer id of the resource that accepted the write. */
  origin: string
  /**
   * Local revision at which this object last changed on the daemon that answered (its change
   * feed cursor); not comparable between resources.
   */
  rev: number
  /**
   * Who made this change: the name of the operator whose signed request the accepting resource
   * verified (docs/security.md); INSECURE_AUTHOR with --insecure; absent on entries written
   * before authors were recorded.
   */
  author?: string
}

/** Options of a put or delete. */
export interface WriteOptions {
  signal?: AbortSignal
  /**
   * The signed operator request that caused this write (the `astrad-operator` header its RPC
   * port verified). The resource where the write lands checks it again (trust's authorizeWrite)
   * and records the operator as the entry's author; required unless the cluster runs --insecure.
   */
  auth?: string
}

/** A put or delete as acknowledged. */
export interface Written<T> extends Entry<T> {
  /**
   * Resources that held the write durably (fsynced) when it was acknowledged: 2 when a second
   * resource confirmed it, 1 when none was reachable or none confirmed in time (then the loss of
   * the accepting resource's disk before replication loses it).
   */
  replicas: number
}

/** A write or key the cluster log refuses (bad kind name, key, value, size). */
export class InvalidEntryError extends AstradError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_INVALID_ENTRY', options)
    this.name = 'InvalidEntryError'
  }
}

export function defineKind<T> (name: string, schema: z.ZodType<T>): Kind<T> {
  checkKindName(name)
  return { name, schema }
}

export function isKindName (name: string): boolean {
  return KIND_PATTERN.test(name)
}

export function checkKindName (name: string): void {
  if (!isKindName(name)) throw new InvalidEntryError(`kind ${JSON.stringify(name.slice(0, 40))} must match ${String(KIND_PATTERN)}`)
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

/** Keys: 1..MAX_KEY_BYTES UTF-8 bytes, no control characters, no unpaired surrogates. */
export function isKey (key: string): boolean {
  if (key.length === 0 || key.length > MAX_KEY_BYTES || CONTROL.test(key) || !key.isWellFormed()) return false
  return Buffer.byteLength(key, 'utf8') <= MAX_KEY_BYTES
}

export function checkKey (key: string): void {
  if (typeof key !== 'string' || !isKey(key)) {
    throw new InvalidEntryError(`key must be 1..${MAX_KEY_BYTES} UTF-8 bytes without control characters`)
  }
}

/**
 * JSON text of a value, size-checked. Throws InvalidEntryError for values that are not JSON
 * (undefined, functions, cycles, absurd nesting) or too large.
 */
export function valueText (value: unknown): string {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw new InvalidEntryError(`value is not JSON: ${errorMessage(err)}`)
  }
  if (text === undefined) throw new InvalidEntryError('value is not JSON (undefined); use delete() to remove an object')
  const bytes = Buffer.byteLength(text, 'utf8')
  if (bytes > MAX_VALUE_BYTES) throw new InvalidEntryError(`value of ${bytes} bytes exceeds ${MAX_VALUE_BYTES}`)
  return text
}

/** Checks a value a caller is about to write against its kind and returns its JSON text. */
export function encodeValue<T> (kind: Kind<T>, value: T): { value: T, text: string } {
  const parsed = kind.schema.safeParse(value)
  if (!parsed.success) {
    throw new InvalidEntryError(`value does not match kind '${kind.name}': ${parsed.error.issues.map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, { cause: parsed.error })
  }
  return { value: parsed.data, text: valueText(parsed.data) }
}

/**
 * Types an untyped entry (from the store or a resource) as `kind`. A value that does not match
 * the schema (written by a daemon with another idea of the kind) is a DecodeError.
 */
export function typed<T> (kind: Kind<T>, entry: Entry<unknown>): Entry<T> {
  if (entry.deleted) return entry as Entry<T>
  const parsed = kind.schema.safeParse(entry.value)
  if (!parsed.success) {
    throw new DecodeError(`stored ${kind.name}/${entry.key} does not match its schema: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
  }
  return { ...entry, value: parsed.data }
}
