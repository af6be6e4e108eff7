import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'

/** What `POST /v1/cordon` and `/v1/uncordon` answer. */
interface CordonResult {
  name: string
  cordoned: boolean
  replicas: number
}

/**
 * `astrad cordon` / `astrad uncordon` (Kubernetes' words): the node at --rpc takes no new
 * replicas, and the ones it holds stay placed and keep serving; it survives a restart.
 * `astrad drain` is what leaves.
 */
export function cordonCommands (io: CliIo): Command[] {
  const make = (cordoned: boolean): Command => withRpcOptions(new Command(cordoned ? 'cordon' : 'uncordon'))
    .description(cordoned
      ? 'mark the node at --rpc unschedulable: no new replicas there; the ones it holds keep serving (kept across restarts; drain is what leaves)'
      : 'let schedulers place replicas on the node at --rpc again')
    .option('--json', 'print {"name","cordoned","replicas"}')
    .action(async (flags: { rpc?: string, rpcToken?: string, json?: boolean }) => {
      const r = await rpcClient(flags).call<CordonResult>('POST', cordoned ? '/v1/cordon' : '/v1/uncordon')
      if (flags.json === true) io.stdout(JSON.stringify(r) + '\n')
      else io.stdout(`${r.name} ${r.cordoned ? `cordoned (${r.replicas} replica(s) held keep serving)` : 'uncordoned'}\n`)
    })
  return [make(true), make(false)]
}
