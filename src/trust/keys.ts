import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose'
import { z } from 'zod'
import { TrustError } from './errors.ts'

/** Ed25519 keys as JWKs (RFC 8037, OKP): how every astrad key is stored and sent. */

export interface KeyPair {
  privateKey: CryptoKey
  publicKey: CryptoKey
  /** Public half as a JWK (kty, crv, x only). */
  publicJwk: JWK
  /** Private half as a JWK (with d): write it only to 0600 files. */
  privateJwk: JWK
}

const b64url = z.string().regex(/^[A-Za-z0-9_-]{43}$/)
export const publicJwkSchema = z.strictObject({ kty: z.literal('OKP'), crv: z.literal('Ed25519'), x: b64url })
export const privateJwkSchema = z.object({ kty: z.literal('OKP'), crv: z.literal('Ed25519'), x: b64url, d: b64url })

export async function newKeyPair (): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  const privateJwk = await exportJWK(privateKey)
  return { privateKey, publicKey, privateJwk, publicJwk: publicOf(privateJwk) }
}

export function publicOf (jwk: JWK): JWK {
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x }
}

export async function importPublic (jwk: unknown, what: string): Promise<CryptoKey> {
  const parsed = publicJwkSchema.safeParse(jwk)
  if (!parsed.success) throw new TrustError(`${what}: not an Ed25519 public key`, 'bad-key')
  return await importJWK(parsed.data, 'EdDSA') as CryptoKey
}

export async function importPair (jwk: unknown, what: string): Promise<KeyPair> {
  const parsed = privateJwkSchema.safeParse(jwk)
  if (!parsed.success) throw new TrustError(`${what}: not an Ed25519 private key`, 'bad-key')
  const privateJwk: JWK = { kty: 'OKP', crv: 'Ed25519', x: parsed.data.x, d: parsed.data.d }
  const privateKey = await importJWK(privateJwk, 'EdDSA') as CryptoKey
  const publicJwk = publicOf(privateJwk)
  const publicKey = await importJWK(publicJwk, 'EdDSA') as CryptoKey
  return { privateKey, publicKey, privateJwk, publicJwk }
}

/** 32 random bytes as hex: a private-network (pnet) key. */
export function newPsk (): string {
  const bytes = new Uint8Array(32)
  crypto.getRandomValues(bytes)
  return Buffer.from(bytes).toString('hex')
}

export const pskSchema = z.string().regex(/^[0-9a-f]{64}$/)

/** The pnet key file format libp2p expects, from 64 hex digits. */
export function pskBytes (hex: string): Uint8Array {
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${hex}`)
}
