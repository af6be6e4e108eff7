import { Command, InvalidArgumentError } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { table, ago, formatDuration } from '../format.ts'
import { ConfigError, errorMessage } from '../../util/errors.ts'
import type { NoticeView, PublishRequest } from '../../mailbox/admin.ts'
import type { ActiveMessage, NoticeSummary } from '../../daemon/status.ts'

// Type-only imports from the mailbox: a client command must not load the daemon's code.

interface RpcFlags {
  rpc?: string
  rpcToken?: string
}

/** A notice id or a prefix the daemon resolves (MIN_NOTICE_PREFIX in src/mailbox/admin.ts). */
const ID_RE = /^[0-9a-f]{4,12}$/

function checkId (raw: string): string {
  const id = raw.trim().toLowerCase()
  if (!ID_RE.test(id)) throw new ConfigError('ID', `expected a notice id (12 hex digits) or its first 4+ digits, got '${raw}' (see: astrad notice ls)`)
  return id
}

/** `--data`: any JSON value (the daemon checks it against the kind). */
function parseJsonArgument (value: string): unknown {
  try {
    return JSON.parse(value)
  } catch (err) {
    throw new InvalidArgumentError(`not JSON (${errorMessage(err)}); example: '{"text":"maintenance tonight","level":"warn"}'.`)
  }
}

/** `--canary a,b --canary c` → [a, b, c]. */
function collectList (value: string, previous: string[] | undefined): string[] {
  const items = value.split(',').map(s => s.trim()).filter(s => s !== '')
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list.')
  return [...(previous ?? []), ...items]
}

/** One row of `notice ls` and of the NOTICES section of `status`. */
export function renderNotices (rows: NoticeSummary[], now = Date.now()): string {
  return table(
    ['ID', 'KIND', 'STATE', 'REVISION', 'AUDIENCE', 'APPLIED', 'EXPIRES'],
    rows.map(n => [n.id, n.kind, n.state, String(n.revision), n.audience, appliedText(n), expiresText(n.expiresAt, now)])
  )
}

/** `message` notices in force, warnings marked: printed first in `status`. */
export function renderMessages (messages: ActiveMessage[]): string {
  return messages.map(m => `${m.level === 'warn' ? '!' : '-'} ${m.text.replace(/\s*\n\s*/g, ' ')} (notice ${m.id}${m.level === 'warn' ? ', warning' : ''})\n`).join('')
}

/** "2/3", or "1/1 (1 left)" when nodes applied the notice and then left. */
export function appliedText (n: Pick<NoticeSummary, 'applied' | 'targets' | 'left'>): string {
  return `${n.applied}/${n.targets}${n.left != null && n.left > 0 ? ` (${n.left} left)` : ''}`
}

function expiresText (at: number | null, now: number): string {
  if (at == null) return '-'
  return at <= now ? `expired ${ago(now - at)} ago` : `in ${formatDuration((at - now) / 1000)}`
}

function when (ms: number, now: number): string {
  return `${new Date(ms).toISOString()} (${ms <= now ? `${ago(now - ms)} ago` : `in ${formatDuration((ms - now) / 1000)}`})`
}

function toSummary (v: NoticeView): NoticeSummary {
  return { id: v.id, kind: v.kind, state: v.state, audience: v.audienceText, targets: v.targets, applied: v.applied, left: v.left, expiresAt: v.expiresAt, revision: v.revision }
}

/** `notice show`: every field, the full audience with names, the payload as indented JSON. */
export function renderNotice (v: NoticeView, now = Date.now()): string {
  const named = (v.nodes ?? []).map(n => `${n.name} (${n.peerId})`)
  const lines: Array<[string, string]> = [
    ['id', v.id],
    ['kind', v.kind],
    ['state', v.state],
    ['revision', String(v.revision)],
    ['audience', v.private ? `private mailbox of ${named.length} node(s)` : v.audience.cells != null ? `cells ${v.audience.cells.join(', ')}` : 'every cell']
  ]
  if (v.private) lines.push(['nodes', named.join(', ')])
  else if (v.audience.canary != null) lines.push(['canary', `${named.join(', ')}${v.state === 'canary' ? '' : ' (whitelist while in canary)'}`])
  lines.push(
    ['applied', `${v.applied} of ${v.targets} target node(s) at revision ${v.revision}${v.left > 0 ? ` (${v.left} applied it and left)` : ''}`],
    ['expires', v.expiresAt == null ? 'never' : `${when(v.expiresAt, now)}${v.expiresAt <= now ? ', expired' : ''}`],
    ['created', when(v.createdAt, now)],
    ['updated', when(v.updatedAt, now)],
    ['author', v.author ?? 'none (no verified operator wrote it: nodes ignore it)'],
    ['via', v.by]
  )
  const width = Math.max(...lines.map(([k]) => k.length)) + 2
  let out = lines.map(([k, val]) => `${(k + ':').padEnd(width)}${val}\n`).join('')
  out += `data:${v.data === null ? ' null (recalled)\n' : '\n' + JSON.stringify(v.data, null, 2).replace(/^/gm, '  ') + '\n'}`
  return out
}

/** `astrad notice …`: orders to the fleet through the public mailbox, via the daemon at --rpc. */
export function noticeCommand (io: CliIo): Command {
  const sub = (name: string): Command => withRpcOptions(new Command(name))
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
  const result = (v: NoticeView, json: boolean | undefined, extra = ''): void => {
    if (json === true) io.stdout(JSON.stringify({ id: v.id, revision: v.revision, state: v.state }) + '\n')
    else io.stdout(`${v.id} ${v.state} revision ${v.revision}${extra}\n`)
  }
  const path = (id: string, action: string): string => `/v1/notices/${encodeURIComponent(checkId(id))}/${action}`

  const publish = sub('publish')
    .description('publish a notice to the fleet (or with --canary to a few nodes first); prints its id')
    .requiredOption('--kind <kind>', 'bandwidth | drain | preload | message | config')
    .option('--data <json>', 'the payload, e.g. bandwidth {"upload":"25MB/s"}, drain {"reason":"…","all":true}, preload {"model":"<id>"}, message {"text":"…","level":"warn"}, config {"logLevel":"debug"} (default {})', parseJsonArgument)
    .option('--canary <nodes>', 'canary whitelist: only these nodes (names or peer ids, comma-separated) see it until promoted', collectList)
    .option('--cells <cells>', 'only nodes in these cells (comma-separated)', collectList)
    .option('--node <nodes>', 'a private notice to these nodes only (names or peer ids); not with --canary or --cells', collectList)
    .option('--expires <when>', 'never applied after: a duration (90s, 30m, 2h, 7d) or an ISO-8601 date-time')
    .option('--json', 'print {"id","revision","state"}')
    .action(async (flags: RpcFlags & { kind: string, data?: unknown, canary?: string[], cells?: string[], node?: string[], expires?: string, json?: boolean }) => {
      const req: PublishRequest = {
        kind: flags.kind,
        data: flags.data ?? {},
        ...(flags.canary != null ? { canary: flags.canary } : {}),
        ...(flags.cells != null ? { cells: flags.cells } : {}),
        ...(flags.node != null ? { nodes: flags.node } : {}),
        ...(flags.expires != null ? { expires: flags.expires } : {})
      }
      const v = await rpcClient(flags).call<NoticeView>('POST', '/v1/notices', req)
      // The id alone on stdout, so `N=$(astrad notice publish …)` works; the rest for humans.
      if (flags.json === true) result(v, true)
      else {
        io.stdout(`${v.id}\n`)
        io.stderr(`${v.kind} notice ${v.state}, revision ${v.revision}, audience ${v.audienceText}\n`)
      }
    })

  const canary = sub('canary')
    .description('replace the whitelist of a notice in canary')
    .argument('<ID>', 'notice id or its first 4+ hex digits')
    .argument('<NODES...>', 'node names or peer ids (comma- or space-separated)')
    .option('--json', 'print {"id","revision","state"}')
    .action(async (id: string, nodes: string[], flags: RpcFlags & { json?: boolean }) => {
      const list = nodes.flatMap(n => n.split(',')).map(s => s.trim()).filter(s => s !== '')
      if (list.length === 0) throw new ConfigError('NODES', 'give at least one node')
      const v = await rpcClient(flags).call<NoticeView>('POST', path(id, 'canary'), { nodes: list })
      result(v, flags.json, ` (${v.audienceText})`)
    })

  const transition = (name: string, description: string): Command => sub(name)
    .description(description)
    .argument('<ID>', 'notice id or its first 4+ hex digits')
    .option('--json', 'print {"id","revision","state"}')
    .action(async (id: string, flags: RpcFlags & { json?: boolean }) => {
      result(await rpcClient(flags).call<NoticeView>('POST', path(id, name)), flags.json)
    })

  const edit = sub('edit')
    .description('give a canary or published notice new data (a new revision supersedes the old one)')
    .argument('<ID>', 'notice id or its first 4+ hex digits')
    .requiredOption('--data <json>', 'the new payload (same form as publish)', parseJsonArgument)
    .option('--json', 'print {"id","revision","state"}')
    .action(async (id: string, flags: RpcFlags & { data: unknown, json?: boolean }) => {
      result(await rpcClient(flags).call<NoticeView>('POST', path(id, 'edit'), { data: flags.data }), flags.json)
    })

  const ls = sub('ls')
    .description('list notices, newest first, with how many target nodes applied the current revision')
    .option('--json', 'print {"notices": [...]}')
    .action(async (flags: RpcFlags & { json?: boolean }) => {
      const doc = await rpcClient(flags).call<{ notices: NoticeView[] }>('GET', '/v1/notices')
      if (flags.json === true) io.stdout(JSON.stringify(doc) + '\n')
      else if (doc.notices.length === 0) io.stdout('no notices (publish one: astrad notice publish --kind KIND --data JSON)\n')
      else io.stdout(renderNotices(doc.notices.map(toSummary)))
    })

  const show = sub('show')
    .description('show one notice: state, audience, rollout, data, times')
    .argument('<ID>', 'notice id or its first 4+ hex digits')
    .option('--json', 'print the notice as JSON')
    .action(async (id: string, flags: RpcFlags & { json?: boolean }) => {
      const v = await rpcClient(flags).call<NoticeView>('GET', `/v1/notices/${encodeURIComponent(checkId(id))}`)
      io.stdout(flags.json === true ? JSON.stringify(v) + '\n' : renderNotice(v))
    })

  return new Command('notice')
    .description('tell the fleet something: publish, canary, promote, stop, recall, edit, list and show notices')
    .addCommand(publish)
    .addCommand(canary)
    .addCommand(transition('promote', 'send a canary notice to its whole audience'))
    .addCommand(transition('stop', 'stop delivering a notice (nodes that applied it keep its effect)'))
    .addCommand(transition('recall', 'retract a notice: nodes undo its effect where it has one'))
    .addCommand(edit)
    .addCommand(ls)
    .addCommand(show)
}
