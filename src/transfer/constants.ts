/**
 * Limits and defaults of model distribution, in one place. Each says why.
 */

/** Smallest piece: below this, per-piece overhead (a stream, a hash, a rename) dominates. */
export const MIN_PIECE_SIZE = 4 * 1024 * 1024
/** Largest piece: one piece is the unit of retry; 64 MiB costs ~3 s at 25 MB/s to redo. */
export const MAX_PIECE_SIZE = 64 * 1024 * 1024
/**
 * Piece size is the power of two that gives at most this many pieces (clamped to the range
 * above): a 70 GB model gets 64 MiB pieces, 1,043 of them; a 1 GiB model 256 × 4 MiB.
 */
export const TARGET_PIECES = 1024
/** Largest model: MAX_PIECE_SIZE × MAX_PIECES = 512 GiB; keeps a manifest under 600 KiB. */
export const MAX_PIECES = 8192
/** Manifest format version (part of the hashed manifest, so of the model id). */
export const MANIFEST_VERSION = 1

/** Piece transfer protocol: request = one length-prefixed header, reply = header + raw bytes. */
export const PIECE_PROTOCOL = '/astra/piece/1.0.0'
/** Tracker queries (resource role). */
export const TRACKER_PROTOCOL = '/astra/tracker/1.0.0'
/** Gossip topic on which nodes announce what they hold (resources subscribe). */
export const HAVE_TOPIC = 'astra/have/1'
