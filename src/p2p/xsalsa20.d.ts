// xsalsa20 (a dependency of @libp2p/pnet) ships no types; only what xsalsa20-fix.ts uses.
declare module 'xsalsa20' {
  export interface XSalsa20Cipher {
    update (input: Uint8Array, output?: Uint8Array): Uint8Array
    finalize (): void
  }
  export default function xsalsa20 (nonce: Uint8Array, key: Uint8Array): XSalsa20Cipher
}
