import type { RateSetting } from '../config/defaults.ts'
import type { RelayBudget } from '../p2p/index.ts'
import { TokenBucket, RateMeter, type TransferLimits } from './limiter.ts'
import { linkSpeedBps } from './probe.ts'
import { AUTO_SHARE, RATE_WINDOW_MS } from './constants.ts'

/**
 * The budget of what a resource relays (docs/nat.md, `--relay-limit`): relayed bytes are
 * uploads of this daemon, so they are drawn from its upload bucket and counted in its upload
 * rate like any piece it serves; on top, the relay's own cap:
 * - a rate: that rate;
 * - `auto`: on a resource without the node role (whose upload limit is unlimited: it serves no
 *   pieces), AUTO_SHARE of the default-route NIC's link speed, as an `auto` upload limit falls
 *   back to; unlimited where the speed is unknown. With the node role, the node's upload limit
 *   alone (relayed bytes and pieces share it);
 * - `unlimited`: the upload limit alone.
 */

export interface RelayLimitInfo {
  /** The relay's own cap in bytes/s (null = none), and where it came from. */
  limit: number | null
  source: 'flag' | 'auto' | 'unlimited'
  /** Relayed bytes/s over the last RATE_WINDOW_MS (both directions: each byte is sent once). */
  rateBps: number
}

export class RelayLimit implements RelayBudget {
  readonly bucket: TokenBucket
  private readonly meter = new RateMeter(RATE_WINDOW_MS)
  private readonly source: RelayLimitInfo['source']
  private readonly uploads: TransferLimits

  constructor (init: { setting: RateSetting, node: boolean, linkSpeed?: () => number | undefined }, uploads: TransferLimits) {
    this.uploads = uploads
    let rate = Infinity
    if (typeof init.setting === 'number') {
      rate = init.setting
      this.source = 'flag'
    } else if (init.setting === 'auto' && !init.node) {
      const link = (init.linkSpeed ?? linkSpeedBps)()
      rate = link != null ? link * AUTO_SHARE : Infinity
      this.source = 'auto'
    } else {
      this.source = init.setting === 'auto' ? 'auto' : 'unlimited'
    }
    this.bucket = new TokenBucket({ rate })
  }

  limited (): boolean {
    return this.bucket.rate !== Infinity || this.uploads.upload.rate !== Infinity
  }

  /** Counts `n` relayed bytes in the relay's rate and the daemon's upload rate (limited or not). */
  record (n: number): void {
    this.meter.add(n)
    this.uploads.uploaded.add(n)
  }

  async take (n: number, signal: AbortSignal): Promise<void> {
    await this.bucket.take(n, signal)
    await this.uploads.upload.take(n, signal)
  }

  info (): RelayLimitInfo {
    return { limit: this.bucket.rate === Infinity ? null : this.bucket.rate, source: this.source, rateBps: this.meter.rate() }
  }
}
