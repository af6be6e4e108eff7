import xsalsa20 from 'xsalsa20'

/**
 * A fix for the cipher behind `--swarm-key` (@libp2p/pnet → xsalsa20 1.2.0, WebAssembly).
 *
 * All ciphers share one WebAssembly memory, but each caches its own Uint8Array view of it. When
 * one cipher grows the memory (for a message larger than the memory: ~0.6 MiB at first), every
 * other cached view is detached and reads as length 0, so the next update through any of them
 * "grows" the memory by its whole size again, detaching the others in turn. Measured: after one
 * 1 MiB message, two connections alternating 1 KiB messages crash the process after ~1,000
 * messages with `RangeError: WebAssembly.Memory.grow(): Maximum memory size exceeded` (seen in
 * the NAT lab: the relaying resource died under the first bulk traffic). Each cipher here
 * re-reads a detached view before use, so the memory grows only to the largest message.
 */

interface WasmCipher {
  _memory: Uint8Array
  update: (input: Uint8Array, output: Uint8Array) => void
  finalize: () => void
}

const FIXED = Symbol.for('astrad.xsalsa20-fix')
const NONCE = new Uint8Array(24)
const KEY = new Uint8Array(32)

function wasmOf (cipher: unknown): WasmCipher | undefined {
  const inner = (cipher as { _xor?: Partial<WasmCipher> })._xor
  return inner?._memory instanceof Uint8Array && typeof inner.update === 'function' && typeof inner.finalize === 'function'
    ? inner as WasmCipher
    : undefined
}

/** Applies the fix once; false when this xsalsa20 has no WebAssembly cipher of the known shape (nothing to fix). */
export function fixXsalsa20 (): boolean {
  const sample = xsalsa20(NONCE, KEY)
  const wasm = wasmOf(sample)
  if (wasm == null) {
    sample.finalize()
    return false
  }
  const proto = Object.getPrototypeOf(wasm) as WasmCipher & { [FIXED]?: true }
  if (proto[FIXED] !== true) {
    // A new cipher takes a fresh view of the current memory.
    const currentView = (): Uint8Array => {
      const fresh = xsalsa20(NONCE, KEY)
      const view = (wasmOf(fresh) as WasmCipher)._memory
      fresh.finalize()
      return view
    }
    const refresh = (c: WasmCipher): void => {
      if (c._memory.byteLength === 0) c._memory = currentView()
    }
    const update = proto.update
    const finalize = proto.finalize
    proto.update = function (this: WasmCipher, input: Uint8Array, output: Uint8Array) {
      refresh(this)
      update.call(this, input, output)
    }
    proto.finalize = function (this: WasmCipher) {
      refresh(this)
      finalize.call(this)
    }
    proto[FIXED] = true
  }
  sample.finalize()
  return true
}
