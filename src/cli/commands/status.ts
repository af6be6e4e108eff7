import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { table, ago, formatNodeLimit, renderLimits, renderModels, renderTransfers } from '../format.ts'
import { formatBytes, formatRate } from '../../config/units.ts'
import type { SecurityStatus, StatusDocument } from '../../daemon/status.ts'
import type { LimitsInfo, ModelInfo, TransferInfo } from '../../transfer/index.ts'
import { renderMessages, renderNotices } from './notice.ts'
import type { PipelineStatus } from '../../pipeline/backend.ts'

/**
 * The model-distribution parts of the status document (issue 3). Optional: a daemon of an
 * older version does not send them, and its status still renders.
 */
interface TransferStatus {
  transfers?: TransferInfo[]
  limits?: LimitsInfo
  models?: ModelInfo[]
  nodes: Array<{ uploadLimit?: number, downloadLimit?: number, uploadRate?: number, downloadRate?: number, transfers?: number }>
}

/** States in which a node serves and moves nothing: its last heartbeat's figures are history. */
const DEPARTED = new Set(['dead', 'left'])

/** The node table's columns: the compact default, then what `--wide` adds (like `kubectl get -o wide`). */
const NODE_COLUMNS = ['NAME', 'CELL', 'STATE', 'ROLES', 'LOAD', 'REPLICAS', 'AGE']
const WIDE_COLUMNS = ['CORES', 'GPUS', 'INFLIGHT', 'WEIGHT', 'UP LIMIT', 'UP RATE', 'DOWN LIMIT', 'DOWN RATE', 'PULLS', 'LAST SEEN', 'PEER']

export interface RenderStatusOptions {
  /** Every node column, not only the compact default. */
  wide?: boolean
  /** Wall clock (ms since the epoch) for AGE. @default Date.now() */
  now?: number
}

/** One row of the node table; a dead or left node shows '-' for what it no longer does. */
function nodeRow (n: StatusDocument['nodes'][number], x: TransferStatus['nodes'][number], wide: boolean, now: number): string[] {
  const live = !DEPARTED.has(n.state)
  const figure = (text: string | undefined): string => live && text != null ? text : '-'
  const row = [
    n.name, n.cell, n.cordoned === true ? `${n.state},cordoned` : n.state, n.roles.join(','), figure(`${Math.round(n.cpuUtil * 100)}%`), figure(String(n.replicas)),
    n.startedAt != null ? ago(now - n.startedAt) : '-'
  ]
  if (!wide) return row
  return [
    ...row, String(n.cores), String(n.gpus), figure(String(n.inflight)), figure(n.weight?.toFixed(2)),
    formatNodeLimit(x.uploadLimit), figure(x.uploadRate != null ? formatRate(x.uploadRate) : undefined),
    formatNodeLimit(x.downloadLimit), figure(x.downloadRate != null ? formatRate(x.downloadRate) : undefined),
    figure(x.transfers != null ? String(x.transfers) : undefined),
    ago(n.lastSeenMs), `…${n.peerId.slice(-8)}`
  ]
}

/** Where a daemon's secret came from, as the status line says it. */
const SOURCE_TEXT: Record<string, string> = {
  created: 'cluster-key, created at first start',
  membership: 'join-token, saved in the data dir'
}

/** One line: how the daemon holds its cluster secret; --insecure said loudly. */
export function renderSecurity (s: SecurityStatus, now = Date.now()): string {
  if (s.mode === 'insecure') return 'INSECURE: no cluster secret (--insecure): anyone who reaches the P2P port can join\n'
  const left = (s.certExpiresAt ?? Infinity) - now
  const expiry = s.certExpiresAt == null ? '' : left <= 0 ? ', EXPIRED' : `, expires in ${left >= 2 * 86_400_000 ? `${Math.floor(left / 86_400_000)}d` : ago(left)}`
  return `security: secure (certificate for ${s.roles.join(',')}, from ${SOURCE_TEXT[s.source] ?? s.source}${expiry})\n`
}

export function renderStatus (s: StatusDocument, options: RenderStatusOptions = {}): string {
  const wide = options.wide === true
  const now = options.now ?? Date.now()
  const self = s.self
  let out = `${self.name} (${self.peerId}) astrad ${self.version}, roles ${self.roles.join(',')}, ${self.state}\n`
  if (self.security != null) out += renderSecurity(self.security, now)
  // Absent from daemons older than the mailbox; messages are the operators' words: shown first.
  const messages = s.messages ?? []
  const notices = s.notices ?? []
  if (messages.length > 0) out += `\nmessages:\n${renderMessages(messages)}\n`
  out += `view: ${s.view.source}${s.view.stalenessMs > 0 ? `, ${ago(s.view.stalenessMs)} old` : ''}${s.view.error != null ? ` (${s.view.error})` : ''}\n\n`
  const counts = new Map<string, number>()
  for (const n of s.nodes) counts.set(n.state, (counts.get(n.state) ?? 0) + 1)
  const t = s as unknown as TransferStatus
  out += table(wide ? [...NODE_COLUMNS, ...WIDE_COLUMNS] : NODE_COLUMNS, s.nodes.map((n, i) => nodeRow(n, t.nodes[i] ?? {}, wide, now)))
  out += `\n${s.nodes.length} daemons: ${[...counts].map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}\n`
  if (s.apps.length > 0) {
    out += '\napps:\n' + table(
      ['APP', 'GEN', 'DESIRED', 'PLACED', 'READY', 'OLD', 'OWNER', 'ROUTES', 'NOTE'],
      s.apps.map(a => [
        a.name, String(a.generation), String(a.desired), String(a.placed), String(a.ready), String(a.old),
        a.owner != null ? `…${a.owner.slice(-8)}` : '-',
        a.weights.map(w => `${w.name}:${w.ejected ? 'ejected' : w.weight.toFixed(2)}`).join(' ') || '-',
        a.ready < a.desired && a.lastError != null ? a.lastError : a.autoscaling?.reason ?? ''
      ])
    )
  }
  out += renderDevices(s)
  const pipelines = s.pipelines ?? []
  if (pipelines.length > 0) out += '\npipelines:\n' + renderPipelineStatus(pipelines)
  if (notices.length > 0) out += `\nnotices:\n${renderNotices(notices)}`
  if (t.limits != null) out += `\nP2P limits of ${self.name}:\n${renderLimits(t.limits)}`
  out += renderRelay(s)
  if (t.transfers != null && t.transfers.length > 0) out += `\ntransfers on ${self.name}:\n${renderTransfers(t.transfers)}`
  if (t.models != null && t.models.length > 0) out += `\nmodels:\n${renderModels(t.models)}`
  return out
}

/**
 * NAT traversal (docs/nat.md): a resource's relay line (slots, relayed connections, bytes, rate
 * against its limit), then how this daemon reaches each peer (direct or relayed, and the last
 * hole punch with it). Absent from daemons older than issue 17.
 */
export function renderRelay (s: StatusDocument): string {
  let out = ''
  const r = s.relay
  if (r != null) {
    const limit = r.limit.limit != null ? `${formatRate(r.limit.limit)} (${r.limit.source})` : `none of its own (${r.limit.source})`
    out += `\nrelay: ${r.reservations} slots, ${r.traffic.connections} relayed connections open (${r.traffic.connectionsTotal} since start), ` +
      `${formatBytes(r.traffic.bytes.to_source)} to dialers, ${formatBytes(r.traffic.bytes.to_destination)} to slot holders, ` +
      `${formatRate(r.limit.rateBps)} now, limit ${limit} and the upload limit\n`
  }
  const peers = s.peers ?? []
  if (peers.length > 0) {
    out += '\npeers:\n' + table(['PEER', 'PATH', 'HOLE PUNCH'], peers.map(p => [
      p.name ?? `…${p.peerId.slice(-8)}`, p.path, p.holePunch != null ? p.holePunch.result : '-'
    ]))
    const hp = s.holePunch
    if (hp != null && hp.attempts > 0) out += `hole punches: ${hp.attempts} started; ${Object.entries(hp.results).map(([k, v]) => `${v} ${k}`).join(', ') || 'none decided'}\n`
  }
  return out
}

/** A provider as the devices table says it: `webgpu`, `webgpu?` (probing), `cuda✗` (failed). */
function providerMark (name: string, p: { state: string }): string {
  return p.state === 'ok' ? name : p.state === 'probing' ? `${name}?` : `${name}✗`
}

/**
 * Accelerators (docs/gpus.md): one row per node that offers cards or has detected ones — kind,
 * cards, performance factor, utilisation, providers (✗ failed, ? probing) and why the first
 * offered GPU provider failed; then each GPU app's replicas with the provider they run on.
 * Empty where no node has any (older daemons send no devices).
 */
export function renderDevices (s: StatusDocument): string {
  let out = ''
  const nodes = s.nodes.filter(n => n.devices != null && (n.devices.count > 0 || n.devices.detected.length > 0))
  if (nodes.length > 0) {
    out += '\ndevices:\n' + table(['NODE', 'KIND', 'CARDS', 'PERF', 'GPU UTIL', 'PROVIDERS', 'NOTE'], nodes.map(n => {
      const d = n.devices!
      const providers = Object.entries(d.providers)
      // Why no GPU provider works, where none does (a working one makes the others' failures moot).
      const gpuOk = providers.some(([name, p]) => name !== 'cpu' && p.state === 'ok')
      const failed = gpuOk ? undefined : providers.find(([name, p]) => name !== 'cpu' && p.state === 'failed' && d.count > 0)
      return [
        n.name, `${d.kind}${d.software === true ? ' (software vulkan)' : ''}`, String(d.count), String(d.perf), `${Math.round(n.gpuUtil * 100)}%`,
        providers.map(([name, p]) => providerMark(name, p)).join(' '),
        d.count === 0 ? `detected: ${d.detected.map(x => `${x.kind} ${x.name}`).join(', ')} (offer with --gpus)` : failed != null ? `${failed[0]}: ${failed[1].reason ?? ''}` : ''
      ]
    }))
  }
  const rows: string[][] = []
  for (const a of s.apps) {
    for (const r of a.replicas ?? []) rows.push([a.name, (a.executionProviders ?? []).join(','), r.node, r.state, r.provider ?? '-', r.fallback ?? ''])
  }
  if (rows.length > 0) out += '\ngpu replicas:\n' + table(['APP', 'PREFERENCE', 'NODE', 'STATE', 'RUNS ON', 'FALLBACK'], rows)
  return out
}

/** One row per pipeline stage under its pipeline's row: `ocr` ready, then `  detect` 2/2/2. */
export function renderPipelineStatus (pipelines: PipelineStatus[]): string {
  const rows: string[][] = []
  for (const p of pipelines) {
    rows.push([p.name, String(p.generation), '', '', '', p.ready ? 'ready' : 'not ready', p.ready ? '' : p.lastError ?? ''])
    for (const [stage, st] of Object.entries(p.stages)) {
      rows.push([`  ${stage}`, String(st.generation), String(st.desired), String(st.placed), String(st.ready), st.ready > 0 ? 'ready' : 'not ready', st.ready < st.desired && st.lastError != null ? st.lastError : ''])
    }
  }
  return table(['PIPELINE/STAGE', 'GEN', 'DESIRED', 'PLACED', 'READY', 'STATE', 'NOTE'], rows)
}

export function statusCommand (io: CliIo): Command {
  return withRpcOptions(new Command('status'))
    .description('show the cluster as the daemon at --rpc sees it')
    .option('--json', 'print one JSON object')
    .option('--watch', 'refresh every second until interrupted')
    .option('--wide', 'every node column: cores, GPUs, in-flight requests, routing weight, P2P limits and rates, last seen, peer id')
    .action(async (flags: { rpc?: string, rpcToken?: string, json?: boolean, watch?: boolean, wide?: boolean }) => {
      const client = rpcClient(flags)
      const once = async (): Promise<void> => {
        const s = await client.call<StatusDocument>('GET', '/v1/status')
        if (flags.json === true) io.stdout(JSON.stringify(s) + '\n')
        else io.stdout((flags.watch === true && process.stdout.isTTY ? '\x1b[2J\x1b[H' : '') + renderStatus(s, { wide: flags.wide }))
      }
      await once()
      while (flags.watch === true) {
        await new Promise(resolve => setTimeout(resolve, 1000))
        await once()
      }
    })
}
