import { Command, InvalidArgumentError } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { RequestError } from '../../util/errors.ts'

function positiveSeconds (value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds.')
  return n
}

/**
 * `astrad drain`: the Kubernetes preStop hook. Asks the daemon to drain and waits until it
 * has left (its RPC port closes), so Kubernetes sends SIGTERM only after in-flight work ended.
 */
export function drainCommand (io: CliIo): Command {
  return withRpcOptions(new Command('drain'))
    .description('drain the daemon at --rpc: leave routing at once, finish in-flight requests, exit')
    .option('--timeout <seconds>', 'give up waiting after this many seconds', positiveSeconds, 30)
    .action(async (flags: { rpc?: string, rpcToken?: string, timeout: number }) => {
      const client = rpcClient(flags)
      const timeoutS = flags.timeout
      await client.call('POST', '/v1/drain')
      const deadline = Date.now() + timeoutS * 1000
      while (Date.now() < deadline) {
        try {
          await client.call('GET', '/v2/health/live', undefined, 1000)
        } catch (err) {
          if (err instanceof RequestError && err.code === 'ERR_UNREACHABLE') {
            io.stdout('drained\n')
            return
          }
        }
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      throw new RequestError(`daemon at ${client.base} still running after ${timeoutS}s`, 'ERR_TIMEOUT')
    })
}
