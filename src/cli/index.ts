import { Command, CommanderError } from 'commander'
import { VERSION } from '../version.ts'
import { AstradError, ConfigError } from '../util/errors.ts'
import { startCommand } from './commands/start.ts'
import { statusCommand } from './commands/status.ts'
import { drainCommand } from './commands/drain.ts'
import { cordonCommands } from './commands/cordon.ts'
import { clusterCommand } from './commands/cluster.ts'
import { modelCommand } from './commands/model/index.ts'
import { appCommand } from './commands/app.ts'
import { inferCommand } from './commands/infer.ts'
import { noticeCommand } from './commands/notice.ts'

/** Exit codes of every command: ok / failed / usage. */
export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2

export interface CliIo {
  stdout: (s: string) => void
  stderr: (s: string) => void
}

const defaultIo: CliIo = {
  stdout: s => { process.stdout.write(s) },
  stderr: s => { process.stderr.write(s) }
}

/** Builds the command tree; tests call this to check commands and options exist. */
export function createCli (io: CliIo = defaultIo): Command {
  const program = new Command('astrad')
    .description('AI inference on fleets of cheap, unreliable, mixed machines')
    .version(VERSION, '-V, --version')
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride()
    .showSuggestionAfterError()
  for (const cmd of [startCommand(io), statusCommand(io), drainCommand(io), ...cordonCommands(io), modelCommand(io), appCommand(io), noticeCommand(io), inferCommand(io), clusterCommand(io)]) {
    program.addCommand(cmd.exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr }))
  }
  return program
}

/** Parses argv, runs the command, maps errors to exit codes and one-line messages. */
export async function runCli (argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = createCli(io)
  try {
    await program.parseAsync(argv)
    return EXIT_OK
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT_OK
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE
    }
    if (err instanceof ConfigError) {
      io.stderr(`astrad: ${err.message}\n`)
      return EXIT_USAGE
    }
    if (err instanceof AstradError) {
      io.stderr(`astrad: ${err.message}\n`)
      return EXIT_FAILED
    }
    throw err
  }
}
