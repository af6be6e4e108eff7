/**
 * Limits and names of the trust layer (docs/security.md), each with its reason. Every signed
 * object is a JWT (JWS compact, EdDSA over Ed25519) with its own `typ`, so one kind can never be
 * passed off as another.
 */

/** Certificate exchange: ask a peer for its own certificate (or one it holds for another peer). */
export const CERT_PROTOCOL = '/astra/cert/1.0.0'

/** JWT `typ` of a member certificate: "this peer id holds these roles". */
export const MEMBER_TYP = 'astrad-member+jwt'
/** JWT `typ` of a grant signed by the cluster key: a join token's or an operator's key and rights. */
export const GRANT_TYP = 'astrad-grant+jwt'
/** JWT `typ` of one signed operator request (a write on the RPC port, forwarded to resources). */
export const OPERATOR_REQUEST_TYP = 'astrad-op+jwt'

/** Prefix of a join token string (then base64url JSON). */
export const JOIN_TOKEN_PREFIX = 'astrad-join-v1.'

/** In the data dir: the cluster key a one-host `astrad start` creates (mode 0600). */
export const CLUSTER_KEY_FILE = 'cluster.key'
/** In the data dir: this daemon's membership (private-network key, cluster public key, certificate). */
export const MEMBERSHIP_FILE = 'membership.json'
/** In the data dir of a daemon holding the cluster key: the local operator's credential (0600). */
export const OPERATOR_CREDENTIAL_FILE = 'operator.cred'
/** Name of the operator credential a daemon with the cluster key writes for its host. */
export const LOCAL_OPERATOR_NAME = 'local-admin'

/** Clock skew tolerated between hosts on every expiry and issue time. */
export const CLOCK_SKEW_S = 300
/** An operator request is good for this long after it was signed (plus the skew). */
export const OPERATOR_REQUEST_TTL_S = 120
/** Header carrying a signed operator request on the RPC port. */
export const OPERATOR_HEADER = 'astrad-operator'

/** A certificate or signed request longer than this is refused before it is parsed. */
export const MAX_JWT_BYTES = 8 * 1024
/** Roles a certificate may name. */
export const ROLE_NAMES = ['node', 'resource', 'scheduler'] as const

/** Fetching an unknown peer's certificate gives up after this long (the message is dropped). */
export const CERT_FETCH_TIMEOUT_MS = 3_000
/** Certificates cached per daemon; the oldest are evicted beyond this (a cluster's members). */
export const MAX_CACHED_CERTS = 50_000
/** A peer that failed to show a certificate is not asked again for this long. */
export const CERT_NEGATIVE_TTL_MS = 2_000

/** Refusal logs: at most one line per (protocol, reason) in this window, with the count since. */
export const REFUSAL_LOG_INTERVAL_MS = 10_000
