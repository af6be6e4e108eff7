import { Command, Option } from 'commander'
import type { CliIo } from '../index.ts'
import { LOG_FORMATS, LOG_LEVELS } from '../../config/defaults.ts'

function collect (value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

export function startCommand (io: CliIo): Command {
  return new Command('start')
    .description('run the daemon (all roles by default: a one-host cluster)')
    .option('--role <roles>', 'comma-separated roles: node,resource,scheduler (default: all)')
    .option('--name <name>', 'name shown in status (default: host name)')
    .option('--data-dir <dir>', 'identity key, cluster log and model pieces (default: ~/.astrad)')
    .option('--listen <multiaddr>', 'libp2p listen address, repeatable (default: /ip4/0.0.0.0/tcp/7071)', collect)
    .option('--bootstrap <addr>', 'peer to join through: multiaddr (with or without /p2p/…) or HOST:PORT, repeatable', collect)
    .option('--rpc <host:port>', 'local RPC port (default: 127.0.0.1:7070)')
    .option('--rpc-token <token>', 'bearer token for the RPC port (required to bind a non-loopback address)')
    .option('--cell <name>', 'placement cell label (default: default)')
    .option('--cores <n>', 'CPU cores this node offers (default: all available)')
    .option('--gpus <n>', 'accelerator cards this node offers to GPU apps (default: 0; detected cards are shown in status)')
    .option('--gpu-perf <factor>', 'performance factor per card, 1 = reference card: routing capacity is gpus × factor (default: 1)')
    .option('--config <file>', 'JSON config file (flags > ASTRAD_* env > config file > defaults)')
    .option('--join-token <token>', 'join a cluster: a token from `astrad cluster token` (or @FILE holding it); kept in the data dir after the first start')
    .option('--cluster-key <file>', 'the cluster key (`astrad cluster init`): this daemon signs its own certificate')
    .option('--insecure', 'run WITHOUT a cluster secret: anyone who reaches the P2P port can join, drain and rewrite the cluster')
    .option('--upload-limit <rate>', 'P2P upload limit: a rate (25MB/s, 200Mbit/s), auto (measured at join) or unlimited (default: auto)')
    .option('--download-limit <rate>', 'P2P download limit, as --upload-limit (default: auto)')
    .option('--relay-limit <rate>', 'what a resource relays for peers behind NAT: a rate, auto (half the link speed) or unlimited; relayed bytes also count against --upload-limit (default: auto)')
    .option('--cache-size <bytes>', 'model cache size before least-recently-used models are evicted, e.g. 200GB (default: disk watermarks only)')
    .option('--scrub-rate <rate>', 'rate at which held model pieces are re-hashed in the background to find rot, or off (default: 4MB/s)')
    .option('--scrub-interval <duration>', 'how old a piece\'s last hash may grow before the scrub re-hashes it: 12h, 7d, 30m, or 0 for a continuous scrub (default: 1d)')
    .option('--announce <multiaddr>', 'address to announce instead of the listen addresses (public IP of a NAT or pod), repeatable', collect)
    .option('--demo', 'add the built-in demo model and deploy it as app "demo" (default when start has no arguments)')
    .addOption(new Option('--log-level <level>', 'log level (default: info)').choices(LOG_LEVELS))
    .addOption(new Option('--log-format <format>', 'log lines as json or pretty (default: pretty on a terminal, json otherwise)').choices(LOG_FORMATS))
    .action(async (flags: Record<string, unknown>, cmd: Command) => {
      // `astrad start` alone is the newcomer's one-host cluster: it serves the demo model.
      const demo = flags.demo === true || (Object.keys(flags).length === 0 && cmd.args.length === 0)
      delete flags.demo
      // Loaded here, not at the top: `--version` and `status` stay fast without libp2p. In the
      // executable this import runs the daemon's own bundle (scripts/build.ts, daemon-asset.ts).
      const { runDaemon } = await import('../run-daemon.ts')
      await runDaemon(flags, io, { demo })
    })
}
