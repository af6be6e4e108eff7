import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { table, ago, formatNodeLimit, renderLimits, renderModels, renderTransfers } from '../format.ts'
import { formatRate } from '../../config/units.ts'
import type { StatusDocument } from '../../daemon/status.ts'
import type { LimitsInfo, ModelInfo, TransferInfo } from '../../transfer/index.ts'
import { renderMessages, renderNotices } from './notice.ts'

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

export function renderStatus (s: StatusDocument): string {
  const self = s.self
  let out = `${self.name} (${self.peerId}) astrad ${self.version}, roles ${self.roles.join(',')}, ${self.state}\n`
  // Absent from daemons older than the mailbox; messages are the operators' words: shown first.
  const messages = s.messages ?? []
  const notices = s.notices ?? []
  if (messages.length > 0) out += `\nmessages:\n${renderMessages(messages)}\n`
  out += `view: ${s.view.source}${s.view.stalenessMs > 0 ? `, ${ago(s.view.stalenessMs)} old` : ''}${s.view.error != null ? ` (${s.view.error})` : ''}\n\n`
  const counts = new Map<string, number>()
  for (const n of s.nodes) counts.set(n.state, (counts.get(n.state) ?? 0) + 1)
  const t = s as unknown as TransferStatus
  out += table(
    ['NAME', 'CELL', 'STATE', 'ROLES', 'CORES', 'GPUS', 'CPU', 'INFLIGHT', 'REPLICAS', 'WEIGHT', 'UP LIMIT', 'UP RATE', 'DOWN LIMIT', 'DOWN RATE', 'PULLS', 'LAST SEEN', 'PEER'],
    s.nodes.map((n, i) => {
      const x = t.nodes[i] ?? {}
      return [
        n.name, n.cell, n.cordoned === true ? `${n.state},cordoned` : n.state, n.roles.join(','), String(n.cores), String(n.gpus),
        `${Math.round(n.cpuUtil * 100)}%`, String(n.inflight), String(n.replicas), n.weight != null ? n.weight.toFixed(2) : '-',
        formatNodeLimit(x.uploadLimit), x.uploadRate != null ? formatRate(x.uploadRate) : '-',
        formatNodeLimit(x.downloadLimit), x.downloadRate != null ? formatRate(x.downloadRate) : '-',
        x.transfers != null ? String(x.transfers) : '-',
        ago(n.lastSeenMs), `…${n.peerId.slice(-8)}`
      ]
    })
  )
  out += `\n${s.nodes.length} daemons: ${[...counts].map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}\n`
  if (s.apps.length > 0) {
    out += '\napps:\n' + table(
      ['APP', 'GEN', 'DESIRED', 'PLACED', 'READY', 'OLD', 'OWNER', 'ROUTES', 'NOTE'],
      s.apps.map(a => [
        a.name, String(a.generation), String(a.desired), String(a.placed), String(a.ready), String(a.old),
        a.owner != null ? `…${a.owner.slice(-8)}` : '-',
        a.weights.map(w => `${w.name}:${w.ejected ? 'ejected' : w.weight.toFixed(2)}`).join(' ') || '-',
        a.ready < a.desired && a.lastError != null ? a.lastError : ''
      ])
    )
  }
  if (notices.length > 0) out += `\nnotices:\n${renderNotices(notices)}`
  if (t.limits != null) out += `\nP2P limits of ${self.name}:\n${renderLimits(t.limits)}`
  if (t.transfers != null && t.transfers.length > 0) out += `\ntransfers on ${self.name}:\n${renderTransfers(t.transfers)}`
  if (t.models != null && t.models.length > 0) out += `\nmodels:\n${renderModels(t.models)}`
  return out
}

export function statusCommand (io: CliIo): Command {
  return withRpcOptions(new Command('status'))
    .description('show the cluster as the daemon at --rpc sees it')
    .option('--json', 'print one JSON object')
    .option('--watch', 'refresh every second until interrupted')
    .action(async (flags: { rpc?: string, rpcToken?: string, json?: boolean, watch?: boolean }) => {
      const client = rpcClient(flags)
      const once = async (): Promise<void> => {
        const s = await client.call<StatusDocument>('GET', '/v1/status')
        if (flags.json === true) io.stdout(JSON.stringify(s) + '\n')
        else io.stdout((flags.watch === true && process.stdout.isTTY ? '\x1b[2J\x1b[H' : '') + renderStatus(s))
      }
      await once()
      while (flags.watch === true) {
        await new Promise(resolve => setTimeout(resolve, 1000))
        await once()
      }
    })
}
