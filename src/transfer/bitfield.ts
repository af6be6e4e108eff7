import { DecodeError } from '../util/errors.ts'

/** Which pieces of a model a node holds: one bit per piece, MSB first (as BitTorrent). */
export class Bitfield {
  readonly length: number
  readonly bytes: Uint8Array
  private count: number

  constructor (length: number, bytes?: Uint8Array) {
    if (!Number.isInteger(length) || length < 0) throw new RangeError(`invalid bitfield length ${length}`)
    this.length = length
    const size = Math.ceil(length / 8)
    if (bytes != null) {
      if (bytes.length !== size) throw new DecodeError(`bitfield of ${bytes.length} bytes for ${length} pieces`)
      // Spare bits past the end must be zero, or two encodings would mean the same set.
      const spare = size * 8 - length
      if (spare > 0 && (bytes[size - 1]! & ((1 << spare) - 1)) !== 0) throw new DecodeError('bitfield has bits set past its end')
      this.bytes = new Uint8Array(bytes)
    } else {
      this.bytes = new Uint8Array(size)
    }
    this.count = 0
    for (let i = 0; i < length; i++) if (this.has(i)) this.count++
  }

  static full (length: number): Bitfield {
    const b = new Bitfield(length)
    for (let i = 0; i < length; i++) b.set(i)
    return b
  }

  static fromBase64 (length: number, text: string): Bitfield {
    return new Bitfield(length, Buffer.from(text, 'base64'))
  }

  has (i: number): boolean {
    if (i < 0 || i >= this.length) return false
    return (this.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0
  }

  set (i: number): void {
    if (i < 0 || i >= this.length) throw new RangeError(`piece ${i} out of range`)
    if (this.has(i)) return
    this.bytes[i >> 3]! |= 0x80 >> (i & 7)
    this.count++
  }

  clear (i: number): void {
    if (!this.has(i)) return
    this.bytes[i >> 3]! &= ~(0x80 >> (i & 7))
    this.count--
  }

  get size (): number { return this.count }
  get complete (): boolean { return this.count === this.length }

  toBase64 (): string { return Buffer.from(this.bytes).toString('base64') }

  clone (): Bitfield { return new Bitfield(this.length, this.bytes) }

  *indices (): Generator<number> {
    for (let i = 0; i < this.length; i++) if (this.has(i)) yield i
  }
}
