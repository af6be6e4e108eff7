import type { Stream } from '@libp2p/interface'
import { RequestError } from '../util/errors.ts'

/**
 * Stream I/O shared by the piece and probe protocols: both answer with a status byte, then
 * either their own OK body or an error frame (u16 length · JSON {code, message, …}).
 */
export const STATUS_OK = 0
export const STATUS_ERROR = 1
/** An error frame's JSON is a code and a sentence; anything longer is a broken peer. */
export const MAX_ERROR_JSON_BYTES = 1024

/** Writes one message, waiting for the stream to drain when its buffer is full. */
export async function send (stream: Stream, data: Uint8Array, signal: AbortSignal): Promise<void> {
  if (!stream.send(data)) await stream.onDrain({ signal })
}

/** STATUS_ERROR · u16 n · n bytes of JSON {code, message, …extra}. */
export function errorFrame (code: string, message: string, extra: Record<string, unknown> = {}): Uint8Array {
  // A message is cut to 512 characters so the frame stays within MAX_ERROR_JSON_BYTES.
  const json = new TextEncoder().encode(JSON.stringify({ code, message: message.slice(0, 512), ...extra }))
  const out = new Uint8Array(3 + json.length)
  out[0] = STATUS_ERROR
  new DataView(out.buffer).setUint16(1, json.length)
  out.set(json, 3)
  return out
}

/** Reads the rest of an error frame (after its status byte). Unparseable JSON gives `{}`. */
export async function readErrorFrame (reader: StreamReader, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const n = new DataView((await reader.exactly(2, signal)).buffer).getUint16(0)
  if (n > MAX_ERROR_JSON_BYTES) throw new RequestError(`error message of ${n} bytes (max ${MAX_ERROR_JSON_BYTES})`, 'ERR_BAD_RESPONSE')
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(await reader.exactly(n, signal)))
    return value != null && typeof value === 'object' ? value as Record<string, unknown> : {}
  } catch (err) {
    if (err instanceof RequestError) throw err
    return {}
  }
}

/**
 * Reads a libp2p stream with backpressure. libp2p 3 streams push 'message' events and yamux
 * grants the sender more window as soon as data arrives, so a slow consumer (a disk write, a
 * download token bucket) would buffer without bound. This reader pauses the stream (yamux then
 * stops granting window and the sender stalls) while more than `highWater` bytes wait, and
 * resumes below half of it.
 */
export class StreamReader {
  private readonly stream: Stream
  private readonly highWater: number
  private readonly chunks: Uint8Array[] = []
  private queued = 0
  private ended = false
  private error?: Error
  private wake?: PromiseWithResolvers<void>
  private paused = false
  private readonly cleanup: () => void

  constructor (stream: Stream, highWater: number) {
    this.stream = stream
    this.highWater = highWater
    const onMessage = (evt: { data: Uint8Array | Iterable<Uint8Array> }): void => {
      // A Uint8ArrayList (what a resumed stream delivers: everything that waited) is taken
      // buffer by buffer; its subarray() would copy it all into one new buffer.
      if (evt.data instanceof Uint8Array) this.push(evt.data)
      else for (const data of evt.data) this.push(data)
      if (this.queued > this.highWater && !this.paused && this.stream.readStatus === 'readable') {
        this.paused = true
        this.stream.pause()
      }
      this.wake?.resolve()
    }
    const onClose = (evt: { error?: Error }): void => {
      if (evt.error != null) this.error = evt.error
      this.ended = true
      this.wake?.resolve()
    }
    const onRemoteCloseWrite = (): void => {
      // The sender is done: whatever it sent is already here or in the stream's pause buffer.
      // Take it all now (bounded by the yamux window) so nothing is dropped at close.
      if (this.paused && this.stream.readStatus === 'paused') {
        this.paused = false
        this.stream.resume()
      }
      this.ended = true
      this.wake?.resolve()
    }
    stream.addEventListener('message', onMessage as never)
    stream.addEventListener('close', onClose as never)
    stream.addEventListener('remoteCloseWrite', onRemoteCloseWrite)
    this.cleanup = () => {
      stream.removeEventListener('message', onMessage as never)
      stream.removeEventListener('close', onClose as never)
      stream.removeEventListener('remoteCloseWrite', onRemoteCloseWrite)
    }
  }

  private push (data: Uint8Array): void {
    if (data.length === 0) return
    this.chunks.push(data)
    this.queued += data.length
  }

  /** The next chunk (at most `max` bytes), or null at the end of the stream. */
  async next (max: number, signal?: AbortSignal): Promise<Uint8Array | null> {
    while (this.chunks.length === 0) {
      if (this.error != null) throw this.error
      if (this.ended) return null
      signal?.throwIfAborted()
      this.wake = Promise.withResolvers<void>()
      const aborted = (): void => { this.wake?.reject(signal?.reason) }
      signal?.addEventListener('abort', aborted, { once: true })
      try {
        await this.wake.promise
      } finally {
        signal?.removeEventListener('abort', aborted)
        this.wake = undefined
      }
    }
    let chunk = this.chunks[0]!
    if (chunk.length > max) {
      this.chunks[0] = chunk.subarray(max)
      chunk = chunk.subarray(0, max)
    } else {
      this.chunks.shift()
    }
    this.queued -= chunk.length
    if (this.paused && this.queued <= this.highWater / 2 && this.stream.readStatus === 'paused') {
      this.paused = false
      this.stream.resume()
    }
    return chunk
  }

  /** Exactly `n` bytes (a header), or an error if the stream ends first. */
  async exactly (n: number, signal?: AbortSignal): Promise<Uint8Array> {
    const out = new Uint8Array(n)
    let filled = 0
    while (filled < n) {
      const chunk = await this.next(n - filled, signal)
      if (chunk == null) throw new RequestError(`stream ended after ${filled} of ${n} header bytes`, 'ERR_BAD_RESPONSE')
      out.set(chunk, filled)
      filled += chunk.length
    }
    return out
  }

  close (): void {
    this.cleanup()
  }
}
