import type { Logger, LogLevel } from '../util/logger.ts'
import { setLogLevel } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import type { Clock } from '../util/time.ts'
import type { TransferService } from '../transfer/index.ts'
import type { MailboxAction, MailboxState, NoticeData } from '../mailbox/index.ts'
import type { ActiveMessage } from './status.ts'

export interface NoticeEffectsInit {
  /** The daemon's root logger (a `config` notice's logLevel applies to all of it). */
  rootLogger: Logger
  logger: Logger
  clock: Clock
  /** Settings from flags/config, in force when no notice overrides them. */
  defaults: { logLevel: LogLevel, cacheSize?: number }
  transfer: () => TransferService
  /** Drain as on SIGTERM. */
  drain: () => void
  /** A preload ended (done or failed): not resumed after a restart. */
  settle: (id: string) => void
}

/**
 * What notices do on a node (docs/mailbox.md): `bandwidth` sets the cluster-wide P2P cap,
 * `config` the runtime settings, `message` is logged and shown in status — these hold while
 * the notice is in force; `drain` drains the node as SIGTERM does; `preload` fetches a model,
 * and its recall frees the copy unless a replica uses it.
 */
export class NoticeEffects {
  private readonly init: NoticeEffectsInit
  private messageList: ActiveMessage[] = []

  constructor (init: NoticeEffectsInit) {
    this.init = init
  }

  /** `message` notices in force, newest first. */
  get messages (): ActiveMessage[] { return this.messageList }

  readonly onActions = (actions: MailboxAction[], state: MailboxState): void => {
    const { logger } = this.init
    for (const action of actions) {
      try {
        switch (action.type) {
          case 'standing':
            this.applyStanding(state)
            break
          case 'message': {
            const m = action.notice.data as NoticeData['message']
            const line = { notice: action.notice.id, revision: action.notice.revision }
            if (m.level === 'warn') logger.warn(line, m.text)
            else logger.info(line, m.text)
            break
          }
          case 'drain':
            logger.warn({ notice: action.notice.id, reason: (action.notice.data as NoticeData['drain']).reason }, 'draining on a drain notice')
            // After the state is saved (the caller runs actions after saving), so a restart
            // does not drain again.
            setImmediate(() => { this.init.drain() })
            break
          case 'preload':
            this.preload(action.id, action.model)
            break
          case 'unpreload':
            this.unpreload(action.id, action.model)
            break
        }
      } catch (err) {
        logger.error({ action: action.type, err: errorMessage(err) }, 'notice effect failed')
      }
    }
  }

  private applyStanding (state: MailboxState): void {
    const { transfer, defaults, rootLogger } = this.init
    const now = this.init.clock.now()
    const eff = state.standing(now)
    transfer().limits.setCluster(eff.bandwidth)
    const level = eff.config.logLevel ?? defaults.logLevel
    if (rootLogger.level !== level) {
      rootLogger.info({ level }, 'log level changed')
      setLogLevel(rootLogger, level)
    }
    transfer().setCacheSize(eff.config.cacheSize ?? defaults.cacheSize)
    this.messageList = eff.messages
  }

  private preload (id: string, model: string): void {
    const { logger, transfer } = this.init
    logger.info({ notice: id, model }, 'preloading a model on a preload notice')
    transfer().pull(model).then(
      info => { logger.info({ notice: id, model, state: info.state }, 'preload started or done') },
      (err: unknown) => { logger.warn({ notice: id, model, err: errorMessage(err) }, 'preload failed') }
    ).finally(() => { this.init.settle(id) })
  }

  private unpreload (id: string, model: string): void {
    const { logger, transfer } = this.init
    transfer().remove(model, false).then(
      () => { logger.info({ notice: id, model }, 'preloaded model freed (notice recalled)') },
      (err: unknown) => { logger.info({ notice: id, model, err: errorMessage(err) }, 'preloaded model kept') }
    )
  }
}
