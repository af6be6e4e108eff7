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
    format: '{label} [{bar}] {percentage}% | {bytes} | {rate}{peers} | ETA {etaText}',
    barsize: 24,
    hideCursor: false,
    fps: 8,
    etaBuffer: 20
  })
  const payload = (u: ProgressUpdate): Record<string, string> => ({
    label,
    bytes: `${formatBytes(u.done)}/${formatBytes(total)}`,
    rate: formatRate(u.rateBps),
    peers: u.peers != null ? ` | ${u.peers} peer${u.peers === 1 ? '' : 's'}` : '',
    etaText: formatDuration(u.etaSeconds)
  })
  bar.start(Math.max(total, 1), 0, payload({ done: 0, rateBps: 0, etaSeconds: null }))
  let stopped = false
  return {
    update: u => { if (!stopped) bar.update(Math.min(u.done, Math.max(total, 1)), payload(u)) },
    stop: () => {
      if (stopped) return
      stopped = true
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
