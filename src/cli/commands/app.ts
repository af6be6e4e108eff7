import { readFile } from 'node:fs/promises'
import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { table, ago } from '../format.ts'
import { AstradError, ConfigError, errorMessage } from '../../util/errors.ts'
import { resolveModel, type RpcFlags } from './model/shared.ts'
import type { AppListEntry, DeployResult } from '../../placement/index.ts'
import { ROUTING_WEIGHTS } from '../../placement/constants.ts'

/** The spec file cannot be read or is not JSON. */
export class AppSpecFileError extends AstradError {
  constructor (message: string) {
    super(message, 'ERR_APP_SPEC')
    this.name = 'AppSpecFileError'
  }
}

/** Reads a spec file; a model given as an id prefix (≥ 8 hex) is resolved to its full id. */
async function readSpec (file: string, flags: RpcFlags): Promise<Record<string, unknown>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new AppSpecFileError(`cannot read ${file}: ${errorMessage(err)}`)
  }
  let spec: unknown
  try {
    spec = JSON.parse(text)
  } catch (err) {
    throw new AppSpecFileError(`${file} is not JSON: ${errorMessage(err)}`)
  }
  if (spec == null || typeof spec !== 'object' || Array.isArray(spec)) throw new AppSpecFileError(`${file} must hold one JSON object`)
  const s = spec as Record<string, unknown>
  if (typeof s.model === 'string' && /^[0-9a-f]{8,63}$/.test(s.model)) {
    s.model = (await resolveModel(rpcClient(flags), s.model)).id
  }
  return s
}

export function renderApps (apps: AppListEntry[]): string {
  return table(
    ['NAME', 'MODEL', 'GEN', 'DESIRED', 'PLACED', 'READY', 'CPU', 'GPU', 'THREADS', 'CELLS', 'DEPLOYED', 'BY', 'NOTE'],
    apps.map(a => [
      a.spec.name, a.spec.model.slice(0, 12), String(a.generation), String(a.spec.replicas),
      a.status != null ? String(a.status.placed) : '-', a.status != null ? String(a.status.ready) : '-',
      String(a.spec.resources.cpu), String(a.spec.resources.gpu), String(a.spec.threads),
      a.spec.cells != null ? Object.entries(a.spec.cells).map(([c, n]) => `${c}:${n}`).join(',') : '-',
      ago(Math.max(0, Date.now() - a.deployedAt)),
      a.author ?? '-',
      a.status?.old != null && a.status.old > 0 ? `rolling (${a.status.old} old)` : a.status?.lastError != null && (a.status.ready < a.spec.replicas) ? a.status.lastError : ''
    ])
  )
}

/** `astrad app deploy|ls|rm`: apps of the cluster, through the daemon at --rpc. */
export function appCommand (io: CliIo): Command {
  const sub = (name: string): Command => withRpcOptions(new Command(name))
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })

  const deploy = sub('deploy')
    .description(`deploy an app from a JSON spec, or scale/roll it if it exists: {"name","model","replicas","resources"?:{"cpu"?,"gpu"?}, "cells"?, "timeoutMs"?, "maxQueue"?, "threads"?, "routing"?: ${ROUTING_WEIGHTS.join('|')}} (cpu defaults to threads, gpu to 0); prints the app name`)
    .argument('<FILE>', 'the spec (JSON)')
    .option('--json', 'print the stored record and the kind of change')
    .action(async (file: string, flags: RpcFlags & { json?: boolean }) => {
      const spec = await readSpec(file, flags)
      const result = await rpcClient(flags).call<DeployResult>('POST', '/v1/apps', spec)
      if (flags.json === true) io.stdout(JSON.stringify(result) + '\n')
      else {
        // The name alone on stdout (the app's id); what changed goes to stderr for humans.
        io.stdout(`${result.app.spec.name}\n`)
        io.stderr(`${result.app.spec.name}: ${result.change} (generation ${result.app.generation}, ${result.app.spec.replicas} replica(s))\n`)
      }
    })

  const ls = sub('ls')
    .description('list apps with desired, placed and ready replicas')
    .option('--json', 'print {"apps": [...]}')
    .action(async (flags: RpcFlags & { json?: boolean }) => {
      const doc = await rpcClient(flags).call<{ apps: AppListEntry[] }>('GET', '/v1/apps')
      if (flags.json === true) io.stdout(JSON.stringify(doc) + '\n')
      else if (doc.apps.length === 0) io.stdout('no apps (deploy one: astrad app deploy FILE)\n')
      else io.stdout(renderApps(doc.apps))
    })

  const rm = sub('rm')
    .description('remove an app; its replicas are released')
    .argument('<NAME>', 'app name')
    .action(async (name: string, flags: RpcFlags) => {
      if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw new ConfigError('NAME', 'an app name is 1-63 of a-z 0-9 . _ -')
      await rpcClient(flags).call('DELETE', `/v1/apps/${encodeURIComponent(name)}`)
      io.stdout(`${name}: removed\n`)
    })

  return new Command('app')
    .description('deploy, list and remove apps (models served with replicas)')
    .addCommand(deploy)
    .addCommand(ls)
    .addCommand(rm)
}
