import type { Logger } from '../util/logger.ts'
import { errorMessage } from '../util/errors.ts'
import type { MembershipView, NodeRecord } from '../membership/index.ts'
import type { Ledger, LedgerSnapshot } from './ledger.ts'
import type { ReserveApi } from './protocol.ts'
import { LEDGER_PULL_CONCURRENCY } from './constants.ts'

/** A node's ledger as a scheduler last read it. */
interface KnownLedger {
  peerId: string
  incarnation: number
  ledger: LedgerSnapshot
}

export interface LedgerViewComponents {
  view: MembershipView
  client: ReserveApi
  logger: Logger
  /** The node role in this process, read directly (always fresh, no network). */
  local?: { peerId: string, ledger: Ledger }
}

/** How often the view checks heartbeats for newer ledger versions. */
const SYNC_INTERVAL_MS = 250

/**
 * Every scheduler's copy of the nodes' ledgers (Starlink's shared state). A node's heartbeat
 * carries its ledger version; when it moves past the copy held here, the ledger is pulled over
 * `/astra/reserve/1.0.0`. Answers to our own reserves and releases update the copy at once.
 */
export class LedgerView {
  private readonly components: LedgerViewComponents
  private readonly ledgers = new Map<string, KnownLedger>()
  private readonly pulling = new Set<string>()
  private readonly listeners = new Set<(peerId: string) => void>()
  private timer?: NodeJS.Timeout
  private unsubscribe?: () => void

  constructor (components: LedgerViewComponents) {
    this.components = components
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { this.sync() }, SYNC_INTERVAL_MS)
    this.unsubscribe = this.components.view.onChange(() => { this.sync() })
    this.components.local?.ledger.onChange(() => { this.emit(this.components.local!.peerId) })
    this.sync()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.unsubscribe?.()
  }

  /** The ledger of a node, if known and of its current incarnation. */
  get (peerId: string): LedgerSnapshot | undefined {
    const local = this.components.local
    if (local != null && local.peerId === peerId) return local.ledger.snapshot()
    const rec = this.components.view.list.get(peerId)
    const known = this.ledgers.get(peerId)
    if (known == null || rec == null || known.incarnation !== rec.hb.incarnation) return undefined
    return known.ledger
  }

  /** Stores an answer of a reserve/release we made (newer than any pulled copy). */
  update (peerId: string, incarnation: number, ledger: LedgerSnapshot): void {
    const known = this.ledgers.get(peerId)
    if (known != null && known.incarnation === incarnation && known.ledger.version >= ledger.version) return
    this.ledgers.set(peerId, { peerId, incarnation, ledger })
    this.emit(peerId)
  }

  /** Called when a node's ledger copy changed (placement and routing react). */
  onChange (listener: (peerId: string) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private emit (peerId: string): void {
    for (const l of this.listeners) {
      try { l(peerId) } catch {}
    }
  }

  /** Pulls the ledgers whose heartbeat shows a newer version; drops those of gone nodes. */
  sync (): void {
    const { view, local } = this.components
    const wanted: NodeRecord[] = []
    for (const rec of view.list.all()) {
      const id = rec.hb.peerId
      if (!rec.hb.roles.includes('node')) continue
      if (rec.state === 'dead' || rec.state === 'left') {
        if (this.ledgers.delete(id)) this.emit(id)
        continue
      }
      if (local != null && id === local.peerId) continue
      const known = this.ledgers.get(id)
      if (known == null || known.incarnation !== rec.hb.incarnation || known.ledger.version < rec.hb.ledgerVersion) wanted.push(rec)
    }
    for (const id of this.ledgers.keys()) {
      if (view.list.get(id) == null) { this.ledgers.delete(id); this.emit(id) }
    }
    for (const rec of wanted) {
      if (this.pulling.size >= LEDGER_PULL_CONCURRENCY) break
      if (this.pulling.has(rec.hb.peerId)) continue
      void this.pull(rec)
    }
  }

  private async pull (rec: NodeRecord): Promise<void> {
    const id = rec.hb.peerId
    this.pulling.add(id)
    try {
      const ledger = await this.components.client.ledger(id)
      this.update(id, rec.hb.incarnation, ledger)
    } catch (err) {
      this.components.logger.debug({ node: id, err: errorMessage(err) }, 'ledger pull failed')
    } finally {
      this.pulling.delete(id)
    }
  }
}
