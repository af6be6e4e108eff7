/**
 * A mean over recent samples where a sample's weight halves every `halfLifeMs`: recent answers
 * count, old ones fade, whatever the rate (a few answers a second or thousands). O(1) per sample.
 */
export class DecayingMean {
  private readonly lambda: number
  private sum = 0
  private count = 0
  private at = 0

  constructor (halfLifeMs: number) {
    this.lambda = Math.LN2 / halfLifeMs
  }

  add (value: number, now: number): void {
    this.decay(now)
    this.sum += value
    this.count += 1
  }

  /** Samples still counted (the effective sample size): decays towards 0 without new ones. */
  weight (now: number): number {
    this.decay(now)
    return this.count
  }

  /** The mean, or NaN with no samples. */
  mean (now: number): number {
    this.decay(now)
    return this.count > 0 ? this.sum / this.count : NaN
  }

  private decay (now: number): void {
    if (now > this.at) {
      const f = Math.exp(-this.lambda * (now - this.at))
      this.sum *= f
      this.count *= f
      this.at = now
    } else if (now < this.at) {
      // A clock that went back: keep the samples, restart the decay from here.
      this.at = now
    }
  }
}
