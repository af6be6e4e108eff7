import { DecodeError } from './errors.ts'

// One of each for the process: these run for every heartbeat (1,000/s on a busy resource).
const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * Tiny bounds-checked binary writer/reader for the compact wire formats (heartbeats, online
 * digests). Big-endian, no varints: fields are fixed-width so sizes are predictable and every
 * read is checked against the buffer end.
 */
export class Writer {
  private buf: Uint8Array
  private view: DataView
  private pos = 0

  constructor (initial = 256) {
    this.buf = new Uint8Array(initial)
    this.view = new DataView(this.buf.buffer)
  }

  private ensure (n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  u8 (v: number): this { this.ensure(1); this.view.setUint8(this.pos, v); this.pos += 1; return this }
  u16 (v: number): this { this.ensure(2); this.view.setUint16(this.pos, v); this.pos += 2; return this }
  u32 (v: number): this { this.ensure(4); this.view.setUint32(this.pos, v >>> 0); this.pos += 4; return this }
  /** Unsigned integer up to 2^53 (timestamps, counters). */
  u64 (v: number): this {
    this.ensure(8)
    this.view.setBigUint64(this.pos, BigInt(Math.max(0, Math.trunc(v))))
    this.pos += 8
    return this
  }

  /** Length-prefixed (u8) bytes, at most 255. */
  bytes8 (b: Uint8Array): this {
    if (b.length > 255) throw new RangeError('bytes8: longer than 255')
    this.u8(b.length)
    this.ensure(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
    return this
  }

  /** Length-prefixed (u16) bytes, at most 65,535. */
  bytes16 (b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError('bytes16: longer than 65535')
    this.u16(b.length)
    this.ensure(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
    return this
  }

  /** Length-prefixed (u8) UTF-8 string; callers validate lengths before encoding. */
  str8 (s: string): this { return this.bytes8(utf8Encoder.encode(s)) }

  finish (): Uint8Array { return this.buf.slice(0, this.pos) }
}

export class Reader {
  private readonly view: DataView
  private pos = 0

  private readonly buf: Uint8Array

  constructor (buf: Uint8Array) {
    this.buf = buf
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  private need (n: number, what: string): void {
    if (this.pos + n > this.buf.length) throw new DecodeError(`truncated: ${what} needs ${n} bytes at offset ${this.pos} of ${this.buf.length}`)
  }

  u8 (what = 'u8'): number { this.need(1, what); const v = this.view.getUint8(this.pos); this.pos += 1; return v }
  u16 (what = 'u16'): number { this.need(2, what); const v = this.view.getUint16(this.pos); this.pos += 2; return v }
  u32 (what = 'u32'): number { this.need(4, what); const v = this.view.getUint32(this.pos); this.pos += 4; return v }
  u64 (what = 'u64'): number {
    this.need(8, what)
    const v = this.view.getBigUint64(this.pos)
    this.pos += 8
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError(`${what}: out of range`)
    return Number(v)
  }

  bytes8 (what = 'bytes'): Uint8Array {
    const n = this.u8(what)
    this.need(n, what)
    const b = this.buf.slice(this.pos, this.pos + n)
    this.pos += n
    return b
  }

  bytes16 (what = 'bytes'): Uint8Array {
    const n = this.u16(what)
    this.need(n, what)
    const b = this.buf.slice(this.pos, this.pos + n)
    this.pos += n
    return b
  }

  str8 (what = 'string'): string {
    try {
      return utf8Decoder.decode(this.bytes8(what))
    } catch (err) {
      if (err instanceof DecodeError) throw err
      throw new DecodeError(`${what}: invalid UTF-8`)
    }
  }

  get remaining (): number { return this.buf.length - this.pos }

  /** Fails if bytes are left over: a message must be exactly one record. */
  end (): void {
    if (this.remaining !== 0) throw new DecodeError(`${this.remaining} trailing bytes`)
  }
}
