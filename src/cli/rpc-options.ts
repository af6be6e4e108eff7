import { Command } from 'commander'
import { ConfigError, errorMessage } from '../util/errors.ts'
import { parseHostPort } from '../config/host-port.ts'
import { DEFAULT_RPC_PORT } from '../config/defaults.ts'
import { RpcClient } from '../rpc/client.ts'

/** Adds `--rpc` and `--rpc-token` to a client command. */
export function withRpcOptions (cmd: Command): Command {
  return cmd
    .option('--rpc <host:port>', `daemon RPC port (default: ASTRAD_RPC or 127.0.0.1:${DEFAULT_RPC_PORT})`)
    .option('--rpc-token <token>', 'bearer token (default: ASTRAD_RPC_TOKEN)')
}

export function rpcClient (flags: { rpc?: string, rpcToken?: string }): RpcClient {
  const raw = flags.rpc ?? process.env.ASTRAD_RPC ?? `127.0.0.1:${DEFAULT_RPC_PORT}`
  let hp
  try {
    hp = parseHostPort(raw)
  } catch (err) {
    throw new ConfigError(flags.rpc != null ? '--rpc' : 'ASTRAD_RPC', errorMessage(err))
  }
  return new RpcClient(hp, flags.rpcToken ?? process.env.ASTRAD_RPC_TOKEN)
}
