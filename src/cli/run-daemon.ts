import { resolveConfig } from '../config/index.ts'
import { chooseLogFormat, createLogger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import { Daemon } from '../daemon/index.ts'
import type { CliIo } from './index.ts'

/**
 * `astrad start`: runs until drained. First SIGTERM/SIGINT drains (the Kubernetes preStop
 * path); a second one forces exit.
 */
export async function runDaemon (flags: Record<string, unknown>, io: CliIo, options: { demo?: boolean } = {}): Promise<void> {
  const config = resolveConfig({ flags, env: process.env })
  const logger = createLogger({ level: config.logLevel, base: { name: config.name }, format: chooseLogFormat(config.logFormat, process.stdout.isTTY) })
  const daemon = new Daemon({ config, logger, processMetrics: true })

  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++
    if (signals === 1) {
      logger.info({ signal: sig }, 'signal received: draining (send again to force exit)')
      void daemon.drain()
    } else {
      logger.warn({ signal: sig }, 'second signal: forcing exit')
      process.exit(1)
    }
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  // A stray rejection from a network library must not take the daemon down; it is logged.
  process.on('unhandledRejection', (err) => {
    logger.error({ err: errorMessage(err) }, 'unhandled rejection')
  })

  await daemon.start()
  const rpc = daemon.rpcAddress
  if (rpc != null && process.stdout.isTTY) {
    io.stderr(`astrad ${daemon.host.peerId.toString()} running; try: astrad status --rpc ${rpc.host}:${rpc.port}\n`)
  }
  if (options.demo === true) {
    try {
      const { deployDemo } = await import('../daemon/demo.ts')
      const demo = await deployDemo(daemon)
      logger.info({ app: demo.deploy.app.spec.name, model: demo.deploy.app.spec.model, ready: demo.ready }, 'demo app deployed')
      io.stderr(`${demo.ready ? 'demo model ready' : 'demo model deployed (not ready yet: see astrad status)'}; try:\n  ${demo.curl}\n`)
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'demo app could not be deployed')
    }
  }
  await daemon.done
  // Stopped in order and logged; library timers (gossipsub, identify-push debounce) would keep
  // the process alive for seconds more, delaying a Kubernetes rollout for nothing.
  process.exit(daemon.state === 'failed' ? 1 : 0)
}
