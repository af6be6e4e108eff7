import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as tick } from 'node:timers/promises'
import { fakePeerId } from '../helpers/heartbeat.ts'
import { NoticeEffects } from '../../src/daemon/notices.ts'
import { MailboxState } from '../../src/mailbox/state.ts'
import { TransferLimits } from '../../src/transfer/limiter.ts'
import type { TransferService } from '../../src/transfer/index.ts'
import { formatVersion } from '../../src/clusterlog/hlc.ts'
import { componentLogger, createLogger, silentLogger } from '../../src/util/logger.ts'
import type { MailboxItem, Notice, NoticeKind } from '../../src/mailbox/index.ts'

/**
 * What notices do on a node, through the daemon's effect handler with a real MailboxState, real
 * transfer limits and a real logger tree: bandwidth and config hold while in force and revert on
 * recall; message, drain and preload act once.
 */

const ME = { peerId: fakePeerId(1), cell: 'a' }
const ORIGIN = `${'A'.repeat(46)}:0badc0de`
let counter = 0
const now = 1_700_000_000_000

function item (id: string, kind: NoticeKind, data: unknown, state: Notice['state'] = 'published'): MailboxItem {
  const notice: Notice = { id, kind, data, audience: { cells: null, canary: null, node: null }, state, revision: ++counter, createdAt: now, updatedAt: now, expiresAt: null, by: 't' }
  return { key: id, version: formatVersion({ wall: now, counter, origin: ORIGIN }), notice }
}

test('bandwidth and config are in force until recalled; then the flag values return', async () => {
  const root = createLogger({ level: 'silent', fd: 2 })
  const child = componentLogger(root, 'mailbox')
  const grandchild = child.child({ x: 1 })
  const limits = new TransferLimits({ upload: 'unlimited', download: 50_000_000 })
  const cacheSizes: Array<number | undefined> = []
  const transfer = { limits, setCacheSize: (n: number | undefined) => { cacheSizes.push(n) } } as unknown as TransferService
  const effects = new NoticeEffects({
    rootLogger: root, logger: silentLogger(), clock: { now: () => now }, defaults: { logLevel: 'silent', cacheSize: undefined },
    transfer: () => transfer, drain: () => { throw new Error('no drain here') }, settle: () => {}
  })
  const state = new MailboxState(ME)
  const apply = (items: MailboxItem[]): void => {
    effects.onActions(state.receive({ mode: 'delta', source: ORIGIN, rev: counter, more: false, items }, now), state)
  }
  apply([item('00000000000b', 'bandwidth', { upload: 2_000_000, download: 1_000_000 }), item('00000000000c', 'config', { logLevel: 'error', cacheSize: 4096 })])
  assert.equal(limits.state().upload.limit, 2_000_000)
  assert.equal(limits.state().download.limit, 1_000_000)
  assert.equal(limits.state().download.source, 'cluster')
  assert.deepEqual([root.level, child.level, grandchild.level], ['error', 'error', 'error'])
  assert.equal(cacheSizes.at(-1), 4096)

  apply([item('00000000000b', 'bandwidth', null, 'recalled'), item('00000000000c', 'config', null, 'recalled')])
  assert.equal(limits.state().upload.limit, null)
  assert.equal(limits.state().download.limit, 50_000_000, 'the node\'s own limit is back')
  assert.deepEqual([root.level, child.level, grandchild.level], ['silent', 'silent', 'silent'])
  assert.equal(cacheSizes.at(-1), undefined)
})

test('message is listed while in force; drain and preload act once, the preload settles', async () => {
  const pulled: string[] = []
  const settled: string[] = []
  let drains = 0
  const transfer = {
    limits: new TransferLimits({ upload: 'unlimited', download: 'unlimited' }),
    setCacheSize: () => {},
    pull: async (id: string) => { pulled.push(id); return { state: 'complete' } }
  } as unknown as TransferService
  const effects = new NoticeEffects({
    rootLogger: silentLogger(), logger: silentLogger(), clock: { now: () => now }, defaults: { logLevel: 'info' },
    transfer: () => transfer, drain: () => { drains++ }, settle: id => { settled.push(id) }
  })
  const state = new MailboxState(ME)
  const model = 'ab'.repeat(32)
  const items = [item('00000000001a', 'message', { text: 'hello', level: 'warn' }), item('00000000001b', 'drain', {}), item('00000000001c', 'preload', { model })]
  effects.onActions(state.receive({ mode: 'delta', source: ORIGIN, rev: 1, more: false, items }, now), state)
  effects.onActions(state.receive({ mode: 'snapshot', source: ORIGIN, rev: 2, more: false, items }, now), state)
  await tick()
  await tick()
  assert.deepEqual(effects.messages.map(m => m.text), ['hello'])
  assert.equal(drains, 1)
  assert.deepEqual(pulled, [model])
  assert.deepEqual(settled, ['00000000001c'])
})
