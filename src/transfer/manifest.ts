import { createHash } from 'node:crypto'
import { z } from 'zod'
import { DecodeError } from '../util/errors.ts'
import { MANIFEST_VERSION, MAX_PIECES, MAX_PIECE_SIZE, MIN_PIECE_SIZE, TARGET_PIECES } from './constants.ts'

/**
 * A model's manifest: what its bytes are, piece by piece. The id is the SHA-256 of the
 * canonical manifest, so the id names the content: two files with the same bytes have the same
 * id, and a peer cannot serve other bytes under it without failing a piece hash.
 */
export interface Manifest {
  version: typeof MANIFEST_VERSION
  /** Total bytes. */
  size: number
  /** Bytes per piece; the last piece holds the remainder. */
  pieceSize: number
  /** Lower-case hex SHA-256 of each piece, in order. */
  pieces: string[]
  /** Lower-case hex SHA-256 of the whole file. */
  sha256: string
}

const HEX64 = /^[0-9a-f]{64}$/

export const manifestSchema = z.object({
  version: z.literal(MANIFEST_VERSION),
  size: z.number().int().min(1).max(MAX_PIECE_SIZE * MAX_PIECES),
  pieceSize: z.number().int().min(MIN_PIECE_SIZE).max(MAX_PIECE_SIZE),
  pieces: z.array(z.string().regex(HEX64)).min(1).max(MAX_PIECES),
  sha256: z.string().regex(HEX64)
}).strict().superRefine((m, ctx) => {
  if (m.pieces.length !== Math.ceil(m.size / m.pieceSize)) {
    ctx.addIssue({ code: 'custom', message: `${m.pieces.length} piece hashes for ${m.size} bytes in pieces of ${m.pieceSize}` })
  }
}) as z.ZodType<Manifest>

export const modelIdSchema = z.string().regex(HEX64, 'a model id is 64 lower-case hex characters')

/** The piece size for a file of `size` bytes (see TARGET_PIECES). */
export function pieceSizeFor (size: number): number {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`invalid model size ${size}`)
  let piece = MIN_PIECE_SIZE
  while (piece < MAX_PIECE_SIZE && Math.ceil(size / piece) > TARGET_PIECES) piece *= 2
  if (Math.ceil(size / piece) > MAX_PIECES) throw new RangeError(`a model of ${size} bytes exceeds the largest supported (${MAX_PIECE_SIZE * MAX_PIECES} bytes)`)
  return piece
}

export function pieceCount (m: Pick<Manifest, 'size' | 'pieceSize'>): number {
  return Math.ceil(m.size / m.pieceSize)
}

/** Length of piece `index` (the last one is short). */
export function pieceLength (m: Pick<Manifest, 'size' | 'pieceSize'>, index: number): number {
  const start = index * m.pieceSize
  if (!Number.isInteger(index) || index < 0 || start >= m.size) throw new RangeError(`piece ${index} out of range`)
  return Math.min(m.pieceSize, m.size - start)
}

/** The canonical text of a manifest: fixed key order, no spaces. The id hashes exactly this. */
export function canonicalManifest (m: Manifest): string {
  return JSON.stringify({ version: m.version, size: m.size, pieceSize: m.pieceSize, pieces: m.pieces, sha256: m.sha256 })
}

export function manifestId (m: Manifest): string {
  return createHash('sha256').update(canonicalManifest(m)).digest('hex')
}

/** Validates untrusted manifest JSON (from a peer, the cluster log, disk). */
export function parseManifest (value: unknown): Manifest {
  const parsed = manifestSchema.safeParse(value)
  if (!parsed.success) throw new DecodeError(`invalid manifest: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
  return parsed.data
}

export function sha256Hex (data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * Splits a byte stream into pieces of `pieceSize` while hashing them and the whole; calls
 * `onPiece` with each full piece (the last one short) and returns the manifest. Used by
 * `model add` and by tests; throws if the stream is not `size` bytes long.
 */
export async function buildManifest (source: AsyncIterable<Uint8Array>, size: number, onPiece: (index: number, data: Buffer, sha256: string) => Promise<void> | void): Promise<Manifest> {
  const pieceSize = pieceSizeFor(size)
  const whole = createHash('sha256')
  const pieces: string[] = []
  let buffer = Buffer.allocUnsafe(Math.min(pieceSize, size))
  let filled = 0
  let total = 0
  const flush = async (): Promise<void> => {
    const data = buffer.subarray(0, filled)
    const hash = sha256Hex(data)
    pieces.push(hash)
    await onPiece(pieces.length - 1, data, hash)
    filled = 0
    // The consumer may hold on to `data` (an async write); never reuse its memory.
    buffer = Buffer.allocUnsafe(Math.min(pieceSize, Math.max(1, size - total)))
  }
  for await (const chunk of source) {
    whole.update(chunk)
    let offset = 0
    while (offset < chunk.length) {
      if (total >= size) throw new DecodeError(`the model is longer than the declared ${size} bytes`)
      const n = Math.min(chunk.length - offset, buffer.length - filled, size - total)
      buffer.set(chunk.subarray(offset, offset + n), filled)
      filled += n
      offset += n
      total += n
      if (filled === buffer.length) await flush()
    }
  }
  if (total !== size) throw new DecodeError(`the model has ${total} bytes, ${size} were declared`)
  return { version: MANIFEST_VERSION, size, pieceSize, pieces, sha256: whole.digest('hex') }
}
