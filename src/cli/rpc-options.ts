import { Command } from 'commander'
import { ConfigError, errorMessage } from '../util/errors.ts'
import { parseHostPort } from '../config/host-port.ts'
import { DEFAULT_RPC_PORT } from '../config/defaults.ts'
import { RpcClient } from '../rpc/client.ts'
import { operatorSigner } from './operator.ts'

/** Adds `--rpc`, `--rpc-token` and `--credential` to a client command. */
export function withRpcOptions (cmd: Command): Command {
  return cmd
    .option('--rpc <host:port>', `daemon RPC port (default: ASTRAD_RPC or 127.0.0.1:${DEFAULT_RPC_PORT})`)
    .option('--rpc-token <token>', 'bearer token (default: ASTRAD_RPC_TOKEN)')
    .option('--credential <file>', 'operator credential that signs changes to the cluster (default: ASTRAD_CREDENTIAL, else operator.cred in ASTRAD_DATA_DIR or ~/.astrad; create one with: astrad cluster operator NAME)')
}

/** A client of the daemon at --rpc; the cluster writes it sends are signed (src/cli/operator.ts). */
export function rpcClient (flags: { rpc?: string, rpcToken?: string, credential?: string }): RpcClient {
  const raw = flags.rpc ?? process.env.ASTRAD_RPC ?? `127.0.0.1:${DEFAULT_RPC_PORT}`
  let hp
  try {
    hp = parseHostPort(raw)
  } catch (err) {
    throw new ConfigError(flags.rpc != null ? '--rpc' : 'ASTRAD_RPC', errorMessage(err))
  }
  return new RpcClient(hp, flags.rpcToken ?? process.env.ASTRAD_RPC_TOKEN, { sign: operatorSigner({ credential: flags.credential }) })
}
