import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Command, Option } from 'commander'
import type { CliIo } from '../index.ts'
import { ConfigError, errorMessage } from '../../util/errors.ts'
// Not trust/index.ts (it loads libp2p) nor, at start, trust/files.ts (jose, zod): every CLI
// command (status, --version) would pay for them. The actions import files.ts when they run.
import { TrustError } from '../../trust/errors.ts'
import type { ClusterSecret } from '../../trust/files.ts'
import type { Role } from '../../trust/certs.ts'
import * as trustConstants from '../../trust/constants.ts'

const secrets = async (): Promise<typeof import('../../trust/files.ts')> => await import('../../trust/files.ts')

/**
 * `astrad cluster …`: the operator's secrets (docs/security.md). The cluster key signs
 * everything; join tokens let hosts join in the roles they grant; operator credentials let
 * people change the cluster.
 */

const DEFAULT_TTL = '365d'

/** `12h`, `30d`, `90m`, `3600s` or `never` → seconds (undefined = never). */
export function parseTtl (raw: string, flag = '--ttl'): number | undefined {
  if (raw === 'never') return undefined
  const m = /^(\d{1,6})([smhd])$/.exec(raw)
  if (m == null) throw new ConfigError(flag, `expected a duration like 12h, 30d, 90m or never, got '${raw}'`)
  const n = Number(m[1])
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd']
  if (n === 0) throw new ConfigError(flag, 'must be longer than 0')
  return n * unit
}

function parseRoleList (raw: string): Role[] {
  const roles = raw.split(',').map(r => r.trim()).filter(r => r !== '')
  const bad = roles.filter(r => !(trustConstants.ROLE_NAMES as readonly string[]).includes(r))
  if (roles.length === 0 || bad.length > 0) throw new ConfigError('--roles', `expected a comma-separated list of ${trustConstants.ROLE_NAMES.join(', ')}${bad.length > 0 ? `; not: ${bad.join(', ')}` : ''}`)
  return [...new Set(roles)] as Role[]
}

/** The cluster key: --cluster-key, ASTRAD_CLUSTER_KEY, else the one-host cluster's in ~/.astrad. */
function clusterKeyPath (flag: string | undefined): string {
  return path.resolve(flag ?? process.env.ASTRAD_CLUSTER_KEY ?? path.join(process.env.ASTRAD_DATA_DIR ?? path.join(os.homedir(), '.astrad'), trustConstants.CLUSTER_KEY_FILE))
}

async function readKey (flag: string | undefined): Promise<ClusterSecret> {
  const file = clusterKeyPath(flag)
  if (flag == null && !fs.existsSync(file)) {
    throw new ConfigError('--cluster-key', `no cluster key given and none at ${file}: pass --cluster-key FILE (made by \`astrad cluster init FILE\`) or set ASTRAD_CLUSTER_KEY`)
  }
  try {
    return await (await secrets()).readClusterSecret(file)
  } catch (err) {
    if (err instanceof TrustError) throw new ConfigError('--cluster-key', err.message)
    throw err
  }
}

function expiryText (ttlS: number | undefined): string {
  return ttlS == null ? 'never expires' : `expires ${new Date(Date.now() + ttlS * 1000).toISOString()}`
}

/** Writes a new secret file (0600); an existing file is a usage error naming `what`, never replaced. */
async function writeSecret (file: string, text: string, what: string): Promise<void> {
  try {
    (await secrets()).writeSecretFile(file, text)
  } catch (err) {
    throw new ConfigError(what, errorMessage(err))
  }
}

export function clusterCommand (io: CliIo): Command {
  const cluster = new Command('cluster').description('the cluster\'s secrets: create the cluster key, join tokens for hosts, operator credentials (docs/security.md)')
  // Usage errors and --help of a subcommand go through runCli (exit 2, one line), never process.exit.
  const sub = (name: string): Command => cluster.command(name).exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr })

  sub('init')
    .description('create a new cluster key (the private-network key and the key that signs every certificate); keep it like a CA key')
    .argument('<file>', 'file to create, mode 0600 (refuses to overwrite)')
    .action(async (file: string) => {
      const { encodeClusterSecret, newClusterSecret } = await secrets()
      await writeSecret(path.resolve(file), encodeClusterSecret(await newClusterSecret()), 'FILE')
      io.stdout(`${file}\n`)
      io.stderr(`next: 'astrad cluster token --cluster-key ${file} --roles node' for each kind of host, 'astrad cluster operator NAME --cluster-key ${file}' for each operator\n`)
    })

  sub('token')
    .description('print a join token: a host started with --join-token TOKEN joins in the roles it grants (it holds the private-network key: hand it over like a password)')
    .requiredOption('--roles <roles>', 'roles the token grants: node, resource, scheduler, comma-separated')
    .addOption(new Option('--ttl <duration>', 'how long hosts may join (and keep their certificates) with it: 12h, 30d, never').default(DEFAULT_TTL))
    .option('--cluster-key <file>', 'the cluster key (default: $ASTRAD_CLUSTER_KEY, else ~/.astrad/cluster.key of a one-host cluster)')
    .action(async (opts: { roles: string, ttl: string, clusterKey?: string }) => {
      const roles = parseRoleList(opts.roles)
      const ttlS = parseTtl(opts.ttl)
      const secret = await readKey(opts.clusterKey)
      io.stdout(`${await (await secrets()).createJoinToken(secret, roles, ttlS)}\n`)
      io.stderr(`join token for ${roles.join(',')}; ${expiryText(ttlS)}\n`)
    })

  sub('operator')
    .description('create an operator credential: the CLI signs cluster changes (app, model, notice) with it; each change records the name')
    .argument('<name>', 'operator name, recorded with every change they make')
    .option('--out <file>', 'file to create, mode 0600 (default: NAME.cred)')
    .addOption(new Option('--ttl <duration>', 'how long it is valid: 12h, 90d, never').default(DEFAULT_TTL))
    .option('--cluster-key <file>', 'the cluster key (default: $ASTRAD_CLUSTER_KEY, else ~/.astrad/cluster.key of a one-host cluster)')
    .action(async (name: string, opts: { out?: string, ttl: string, clusterKey?: string }) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) throw new ConfigError('NAME', 'expected 1-64 letters, digits, . _ @ - (starting with a letter or digit)')
      const ttlS = parseTtl(opts.ttl)
      const secret = await readKey(opts.clusterKey)
      const file = opts.out ?? `${name}.cred`
      await writeSecret(path.resolve(file), await (await secrets()).createOperatorCredential(secret, name, ttlS), '--out')
      io.stdout(`${file}\n`)
      io.stderr(`operator credential for ${name}; ${expiryText(ttlS)}; use it with --credential ${file} or ASTRAD_CREDENTIAL=${file}\n`)
    })
  return cluster
}
