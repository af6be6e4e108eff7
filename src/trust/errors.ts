import { AstradError } from '../util/errors.ts'

/**
 * Why something signed was refused. `reason` is a short stable word used as a metric label
 * (astrad_trust_refusals_total) and in logs: no-cert, bad-cert, expired, role, bad-key,
 * bad-signature, scope, audience, stale, bad-token, not-operator.
 */
export class TrustError extends AstradError {
  readonly reason: string
  constructor (message: string, reason: string) {
    super(message, 'ERR_FORBIDDEN')
    this.name = 'TrustError'
    this.reason = reason
  }
}
