import { z } from 'zod'
import type { Message, TopicValidatorFn } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Host } from '../p2p/index.ts'
import type { Logger } from '../util/logger.ts'
import type { Clock } from '../util/time.ts'
import { errorMessage } from '../util/errors.ts'
import { Trust } from '../trust/index.ts'
import { APP_NAME_PATTERN, MAX_REPLICAS } from '../placement/constants.ts'
import { LOAD_INTERVAL_MS, LOAD_TOPIC, MAX_LOAD_APPS, MAX_LOAD_MESSAGE_BYTES, MAX_REASON_CHARS } from './constants.ts'
import { topLoads, type AppLoadMeter, type Decision, type LoadBoard } from './load.ts'

/**
 * `astra/load/1`: every second each scheduler samples the load its router carries per app and
 * publishes it with the decisions of the apps it owns; every scheduler keeps the latest of each
 * (LoadBoard), so an app's owner sums the whole cluster's load and every scheduler can show the
 * owner's decision. Resources relay. A message is JSON:
 * `{"v":1,"apps":[[app, load]…],"decisions":[[app, desired, load, reason, decidedAt]…]}`.
 */
const appName = z.string().regex(APP_NAME_PATTERN)
const messageSchema = z.object({
  v: z.literal(1),
  apps: z.array(z.tuple([appName, z.number().min(0).max(1e9)])).max(MAX_LOAD_APPS),
  decisions: z.array(z.tuple([appName, z.number().int().min(0).max(MAX_REPLICAS), z.number().min(0).max(1e9), z.string().max(MAX_REASON_CHARS), z.number().int().min(0)])).max(MAX_LOAD_APPS)
}).strict()

export interface LoadMessage {
  apps: Map<string, number>
  decisions: Map<string, Decision>
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeLoad (apps: Map<string, number>, decisions: Map<string, Decision>): Uint8Array {
  const doc: z.infer<typeof messageSchema> = {
    v: 1,
    apps: topLoads(apps).map(([a, l]) => [a, Math.round(l * 1000) / 1000]),
    decisions: [...decisions].slice(0, MAX_LOAD_APPS).map(([a, d]) => [a, d.desired, Math.round(d.load * 1000) / 1000, d.reason.slice(0, MAX_REASON_CHARS), d.decidedAt])
  }
  return encoder.encode(JSON.stringify(doc))
}

/** Throws on anything malformed or oversized. */
export function decodeLoad (bytes: Uint8Array): LoadMessage {
  if (bytes.length > MAX_LOAD_MESSAGE_BYTES) throw new RangeError(`load message of ${bytes.length} bytes exceeds ${MAX_LOAD_MESSAGE_BYTES}`)
  const doc = messageSchema.parse(JSON.parse(decoder.decode(bytes)))
  return {
    apps: new Map(doc.apps),
    decisions: new Map(doc.decisions.map(([a, desired, load, reason, decidedAt]) => [a, { desired, load, reason, decidedAt }]))
  }
}

/** The topic's validator: well formed, and authored by a scheduler (anyone with --insecure). */
export function loadValidator (libp2p: Host): TopicValidatorFn {
  return async (source: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    try {
      decodeLoad(msg.data)
    } catch {
      return TopicValidatorResult.Reject
    }
    return await Trust.of(libp2p).checkAuthor(msg, 'scheduler', LOAD_TOPIC, source) ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
  }
}

/** Resources: subscribe to relay schedulers' load to each other (validated, not read). */
export function relayLoad (libp2p: Host): () => void {
  const pubsub = libp2p.services.pubsub
  const validate = loadValidator(libp2p)
  if (!pubsub.topicValidators.has(LOAD_TOPIC)) pubsub.topicValidators.set(LOAD_TOPIC, validate)
  pubsub.subscribe(LOAD_TOPIC)
  return () => {
    if (pubsub.topicValidators.get(LOAD_TOPIC) === validate) pubsub.topicValidators.delete(LOAD_TOPIC)
  }
}

export interface LoadExchangeComponents {
  libp2p: Host
  meter: AppLoadMeter
  board: LoadBoard
  /** The decisions of the apps this scheduler owns, to publish. */
  decisions: () => Map<string, Decision>
  /** Called after each sample (the placer reconciles with the fresh load). */
  onSample?: () => void
  logger: Logger
  clock: Clock
  self: string
}

/** A scheduler's side of `astra/load/1`. */
export class LoadExchange {
  private readonly components: LoadExchangeComponents
  private timer?: NodeJS.Timeout
  private validate?: TopicValidatorFn
  private quiet = true

  constructor (components: LoadExchangeComponents) {
    this.components = components
  }

  start (): void {
    if (this.timer != null) return
    const pubsub = this.components.libp2p.services.pubsub
    this.validate = loadValidator(this.components.libp2p)
    if (!pubsub.topicValidators.has(LOAD_TOPIC)) pubsub.topicValidators.set(LOAD_TOPIC, this.validate)
    pubsub.subscribe(LOAD_TOPIC)
    pubsub.addEventListener('message', this.onMessage)
    this.timer = setInterval(() => { this.tick() }, LOAD_INTERVAL_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    if (this.validate != null && pubsub.topicValidators.get(LOAD_TOPIC) === this.validate) pubsub.topicValidators.delete(LOAD_TOPIC)
  }

  /** Samples this scheduler's load, records it and publishes it (nothing while all is quiet). */
  tick (): void {
    const { meter, board, clock, self } = this.components
    const apps = meter.sample()
    const decisions = this.components.decisions()
    board.set(self, clock.now(), apps, decisions)
    this.components.onSample?.()
    const quiet = apps.size === 0 && decisions.size === 0
    // One empty message after the last load, so the others drop it at once rather than when it goes stale.
    if (quiet && this.quiet) return
    this.quiet = quiet
    this.components.libp2p.services.pubsub.publish(LOAD_TOPIC, encodeLoad(apps, decisions)).catch((err: unknown) => {
      // No other scheduler (or relay) subscribed: this one's own board has it.
      this.components.logger.debug({ err: errorMessage(err) }, 'load not published')
    })
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== LOAD_TOPIC || msg.type !== 'signed') return
    const from = msg.from.toString()
    if (from === this.components.self) return
    try {
      const m = decodeLoad(msg.data)
      this.components.board.set(from, this.components.clock.now(), m.apps, m.decisions)
    } catch {}
  }
}
