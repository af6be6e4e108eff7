import type { NodeRecord, OnlineList } from './online-list.ts'

/** What the rest of the daemon reads: the online list and its changes as they happen. */
export interface MembershipView {
  readonly list: OnlineList
  onChange (listener: (rec: NodeRecord) => void): () => void
  /** ms since this view was last confirmed by a resource; 0 on a resource itself. */
  stalenessMs (): number
}

export class ChangeListeners {
  private readonly listeners = new Set<(rec: NodeRecord) => void>()

  add (listener: (rec: NodeRecord) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  emit (rec: NodeRecord): void {
    for (const l of this.listeners) {
      try { l(rec) } catch {}
    }
  }
}
