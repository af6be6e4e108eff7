import { formatBytes, formatRate } from '../../../config/units.ts'
import { formatDuration } from '../../format.ts'

/** The stream a progress bar draws on: a terminal (stderr), never a pipe. */
export type ProgressStream = NodeJS.WritableStream & { isTTY?: boolean, columns?: number }

export interface ProgressUpdate {
  done: number
  rateBps: number
  /** Shown when set: peers sending right now. */
  peers?: number
  etaSeconds: number | null
}

/** A progress bar, or nothing when there is no terminal. */
export interface Progress {
  update: (u: ProgressUpdate) => void
  stop: () => void
}

const NO_PROGRESS: Progress = { update: () => {}, stop: () => {} }

/** The stream to draw on by default: stderr when it is a terminal. */
export function defaultProgressStream (): ProgressStream | null {
  return process.stderr.isTTY === true ? process.stderr : null
}

/**
 * A bar on `stream` (bytes, rate, peers, ETA) when it is a terminal; a no-op otherwise.
 * cli-progress is loaded here, only when a bar is drawn.
 */
export async function createProgress (stream: ProgressStream | null, label: string, total: number): Promise<Progress> {
  if (stream == null || stream.isTTY !== true) return NO_PROGRESS
  const { SingleBar } = await import('cli-progress')
  const bar = new SingleBar({
    stream,
    format: '{label} [{bar}] {percentage}% | {bytes} | {rate}{peers} | {timing}',
    barsize: 24,
    hideCursor: false,
    fps: 8,
    etaBuffer: 20
  })
  // Payload keys must not be cli-progress's own (eta, value, total, …), which it overwrites.
  const payload = (u: ProgressUpdate): Record<string, string> => ({
    label,
    bytes: `${formatBytes(u.done)}/${formatBytes(total)}`,
    rate: formatRate(u.rateBps),
    peers: u.peers != null ? ` | ${u.peers} peer${u.peers === 1 ? '' : 's'}` : '',
    timing: `ETA ${formatDuration(u.etaSeconds)}`
  })
  // The last line of a finished transfer: its average rate and duration, not the 0 B/s and
  // 0 peers of the moment it ended.
  const finished = (first: { at: number, done: number }, done: number): Record<string, string> => {
    const seconds = (performance.now() - first.at) / 1000
    const moved = done - first.done
    return {
      label,
      bytes: `${formatBytes(done)}/${formatBytes(total)}`,
      rate: moved > 0 && seconds > 0 ? `${formatRate(moved / seconds)} average` : 'nothing to move',
      peers: '',
      timing: `done in ${formatDuration(seconds)}`
    }
  }
  bar.start(Math.max(total, 1), 0, payload({ done: 0, rateBps: 0, etaSeconds: null }))
  const first = { at: performance.now(), done: 0 }
  let seen = false
  let last = 0
  let stopped = false
  return {
    update: u => {
      if (stopped) return
      if (!seen) {
        // A resumed transfer starts part-way: its average counts what this run moved.
        seen = true
        first.done = u.done
      }
      last = u.done
      bar.update(Math.min(u.done, Math.max(total, 1)), payload(u))
    },
    stop: () => {
      if (stopped) return
      stopped = true
      if (seen && last >= total) bar.update(Math.max(total, 1), finished(first, last))
      bar.stop()
    }
  }
}

/** Rate over a sliding window of recent samples, for transfers whose rate the client measures. */
export class RateMeter {
  private readonly samples: Array<{ t: number, bytes: number }> = []
  private readonly windowMs: number

  constructor (windowMs = 3000) {
    this.windowMs = windowMs
  }

  /** Records the running total `bytes` at time `now` and returns bytes/s over the window. */
  sample (bytes: number, now = Date.now()): number {
    this.samples.push({ t: now, bytes })
    while (this.samples.length > 2 && (this.samples[0] as { t: number }).t < now - this.windowMs) this.samples.shift()
    const first = this.samples[0] as { t: number, bytes: number }
    const dt = (now - first.t) / 1000
    return dt > 0 ? (bytes - first.bytes) / dt : 0
  }
}
