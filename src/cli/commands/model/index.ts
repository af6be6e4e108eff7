import { Command } from 'commander'
import type { CliIo } from '../../index.ts'
import { withRpcOptions, rpcClient } from '../../rpc-options.ts'
import { renderModels } from '../../format.ts'
import { formatBytes, formatRate } from '../../../config/units.ts'
import { MIN_ID_PREFIX, checkIdArgument, parseNameArgument, resolveModel, type RpcFlags } from './shared.ts'
import type { ModelInfo } from '../../../transfer/index.ts'
import { defaultProgressStream, type ProgressStream } from './progress.ts'

export { ModelNotFoundError, AmbiguousModelIdError } from './shared.ts'
export type { AddedModel } from './add.ts'
export type { ProgressStream } from './progress.ts'

export interface ModelCommandOptions {
  /** Where progress bars are drawn; default: stderr when it is a terminal, else none. */
  progressStream?: ProgressStream | null
  /** Poll period of `model pull` (default 250 ms). */
  pollIntervalMs?: number
}

/** Ctrl-C as an AbortSignal for the duration of `fn`, so bars stop and temporary files go. */
async function interruptible<T> (fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController()
  const onInt = (): void => { ac.abort() }
  process.once('SIGINT', onInt)
  try {
    return await fn(ac.signal)
  } finally {
    process.removeListener('SIGINT', onInt)
  }
}

/**
 * `astrad model add|ls|pull|rm`: the model store of the cluster, through the daemon at --rpc.
 * add and pull (hashing, files, progress) are loaded when run, so other commands start without them.
 */
export function modelCommand (io: CliIo, opts: ModelCommandOptions = {}): Command {
  const progressStream = (): ProgressStream | null => opts.progressStream !== undefined ? opts.progressStream : defaultProgressStream()
  // Subcommands are built here, after createCli() has configured only this command: each gets
  // the same output and exit handling itself.
  const sub = (name: string): Command => withRpcOptions(new Command(name))
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })

  const add = sub('add')
    .description('add a model file to the cluster: the daemon splits, hashes and stores it; prints the model id')
    .argument('<FILE>', 'the model file (streamed to the daemon)')
    .option('--name <name>', 'human name (default: the file name)', parseNameArgument)
    .option('--json', 'print {"id","name","size","pieceSize","pieces"}')
    .action(async (file: string, flags: RpcFlags & { name?: string, json?: boolean }) => {
      const { addModel } = await import('./add.ts')
      const client = rpcClient(flags)
      const m = await interruptible(async signal => await addModel(client, file, { name: flags.name, progressStream: progressStream(), signal }))
      if (flags.json === true) io.stdout(JSON.stringify({ id: m.id, name: m.name, size: m.size, pieceSize: m.pieceSize, pieces: m.pieces }) + '\n')
      else io.stdout(`${m.id}\n`)
    })

  const ls = sub('ls')
    .description('list the models of the cluster and on how many nodes each is complete')
    .option('--json', 'print {"models": [...]}')
    .action(async (flags: RpcFlags & { json?: boolean }) => {
      const client = rpcClient(flags)
      const doc = await client.call<{ models: ModelInfo[] }>('GET', '/v1/models')
      if (flags.json === true) io.stdout(JSON.stringify(doc) + '\n')
      else if (doc.models.length === 0) io.stdout('no models (add one: astrad model add FILE)\n')
      else io.stdout(renderModels(doc.models))
    })

  const pull = sub('pull')
    .description('make the daemon fetch a model from its peers; with --output, also write the verified bytes to FILE')
    .argument('<ID>', `model id, or its first ${MIN_ID_PREFIX}+ hex characters`)
    .option('--output <file>', 'write the model here (temporary file beside it, SHA-256 checked, then renamed)')
    .option('--json', 'print the final transfer as JSON')
    .action(async (rawId: string, flags: RpcFlags & { output?: string, json?: boolean }) => {
      checkIdArgument(rawId)
      const { checkOutput, pullModel, saveModel } = await import('./pull.ts')
      const output = flags.output != null ? await checkOutput(flags.output) : undefined
      const client = rpcClient(flags)
      const model = await resolveModel(client, rawId)
      await interruptible(async signal => {
        const r = await pullModel(client, model, { progressStream: progressStream(), pollIntervalMs: opts.pollIntervalMs, signal })
        const what = `${model.id.slice(0, 12)} ${model.name}`
        if (flags.json !== true) {
          io.stdout(r.alreadyHeld
            ? `${what}: complete (${formatBytes(model.size)}, already held)\n`
            : `${what}: complete (${formatBytes(r.fetchedBytes)} in ${(r.elapsedMs / 1000).toFixed(1)}s, ${formatRate(r.fetchedBytes / Math.max(r.elapsedMs / 1000, 0.001))})\n`)
        }
        const saved = output != null ? await saveModel(client, model, output, { progressStream: progressStream(), signal }) : undefined
        if (flags.json === true) io.stdout(JSON.stringify({ ...r.transfer, ...(saved != null ? { output: saved } : {}) }) + '\n')
        else if (saved != null) io.stdout(`wrote ${flags.output ?? saved.path} (${formatBytes(saved.size)}, sha256 ${saved.sha256} verified)\n`)
      })
    })

  const rm = sub('rm')
    .description("free this daemon's copy of a model (refused while a running replica uses it)")
    .argument('<ID>', `model id, or its first ${MIN_ID_PREFIX}+ hex characters`)
    .option('--forget', 'also delete the model from the cluster log (cluster-wide; other copies are freed as nodes evict them)')
    .action(async (rawId: string, flags: RpcFlags & { forget?: boolean }) => {
      checkIdArgument(rawId)
      const client = rpcClient(flags)
      const model = await resolveModel(client, rawId)
      await client.call('DELETE', `/v1/models/${model.id}${flags.forget === true ? '?forget=1' : ''}`)
      io.stdout(`removed ${model.id.slice(0, 12)} ${model.name}${flags.forget === true ? ' and forgot it cluster-wide' : ''}\n`)
    })

  return new Command('model')
    .description('add, list, pull and remove models (peer-to-peer distribution); cap P2P rates cluster-wide with a bandwidth notice (astrad notice publish --kind bandwidth)')
    .addCommand(add)
    .addCommand(ls)
    .addCommand(pull)
    .addCommand(rm)
}
