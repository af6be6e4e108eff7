import fs from 'node:fs'
import { Command } from 'commander'
import type { CliIo } from '../index.ts'
import { newSwarmKey } from '../../p2p/swarm-key.ts'
import { AstradError, errorMessage } from '../../util/errors.ts'

export function swarmKeyCommand (io: CliIo): Command {
  return new Command('swarm-key')
    .description('create a private-network key for --swarm-key (prints it, or writes FILE with mode 0600 and prints its path)')
    .argument('[file]', 'file to create (refuses to overwrite)')
    .action((file: string | undefined) => {
      const key = newSwarmKey()
      if (file == null) {
        io.stdout(key)
        return
      }
      try {
        fs.writeFileSync(file, key, { mode: 0o600, flag: 'wx' })
      } catch (err) {
        throw new AstradError(`cannot create ${file}: ${errorMessage(err)}`, 'ERR_IO')
      }
      // The file is what was created: its path alone on stdout, like every creating command.
      io.stdout(`${file}\n`)
    })
}
