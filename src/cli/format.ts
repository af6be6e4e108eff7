import { formatBytes, formatRate } from '../config/units.ts'
import type { LimitsInfo, ModelInfo, TransferInfo } from '../transfer/index.ts'

type LimitState = LimitsInfo['upload']

/** Plain-text table: left-aligned columns, two spaces apart. */
export function table (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n') + '\n'
}

/** 1234 ms → "1.2s"; ≥ 1 min → "3m"; ≥ 1 h → "2h". */
export function ago (ms: number): string {
  if (ms < 0) return '-'
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`
  if (ms < 60_000) return `${Math.round(ms / 1000)}s`
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`
  return `${Math.round(ms / 3_600_000)}h`
}

/** 42 → "42s", 185 → "3m05s", 7380 → "2h03m"; null → "-". */
export function formatDuration (seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '-'
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Whole percent, rounded down so that "100%" means done. */
export function percent (part: number, whole: number): string {
  if (!(whole > 0)) return '-'
  return `${Math.floor(Math.min(1, Math.max(0, part / whole)) * 100)}%`
}

/** A heartbeat limit in bytes/s, where 0 means unlimited. */
export function formatNodeLimit (bps: number | undefined): string {
  if (bps == null) return '-'
  return bps === 0 ? 'unlimited' : formatRate(bps)
}

/** One direction of this daemon's limits: "25.0 MB/s (auto, measured 210 MB/s)". */
export function formatLimitState (l: LimitState): string {
  const notes: string[] = []
  if (l.source === 'flag') notes.push('set by flag')
  else if (l.source === 'auto') notes.push(l.measured != null ? `auto, measured ${formatRate(l.measured)}` : 'auto')
  else if (l.source === 'probing') notes.push('auto: measuring the link')
  else if (l.source === 'no-peer') notes.push('auto: no peer to measure')
  else if (l.source === 'cluster') notes.push(`cluster cap${l.node != null ? `; node ${formatRate(l.node)}` : ''}`)
  if (l.source !== 'cluster' && l.cluster != null) notes.push(`cluster cap ${formatRate(l.cluster)}`)
  return `${l.limit == null ? 'unlimited' : formatRate(l.limit)}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`
}

/** The daemon's upload and download limits with their source and current rates, two lines. */
export function renderLimits (l: LimitsInfo): string {
  return `upload:   ${formatLimitState(l.upload)}, now ${formatRate(l.uploadRateBps)}\n` +
    `download: ${formatLimitState(l.download)}, now ${formatRate(l.downloadRateBps)}\n`
}

/** `model ls` and the models of `status`. */
export function renderModels (models: ModelInfo[]): string {
  return table(
    ['ID', 'NAME', 'SIZE', 'PIECES', 'COMPLETE ON', 'LOCAL'],
    models.map(m => [
      m.id.slice(0, 12), m.name, formatBytes(m.size), String(m.pieces),
      String(m.nodesComplete) + (m.nodesPartial > 0 ? ` (+${m.nodesPartial} partial)` : ''),
      m.local == null ? '-' : `${m.local.complete ? '100%' : percent(m.local.haveBytes, m.size)}${m.local.pinned ? ' pinned' : ''}`
    ])
  )
}

/** Transfers of one daemon: progress, rate, peers, ETA, state (with the error of a failed one). */
export function renderTransfers (transfers: TransferInfo[]): string {
  return table(
    ['MODEL', 'NAME', 'PROGRESS', 'SIZE', 'RATE', 'PEERS', 'ETA', 'STATE'],
    transfers.map(t => [
      t.id.slice(0, 12), t.name, t.state === 'complete' ? '100%' : percent(t.haveBytes, t.size), formatBytes(t.size),
      t.state === 'downloading' ? formatRate(t.rateBps) : '-', t.state === 'downloading' ? String(t.peers) : '-',
      t.state === 'downloading' ? formatDuration(t.etaSeconds) : '-',
      t.state === 'failed' && t.error != null ? `failed: ${t.error}` : t.state
    ])
  )
}
