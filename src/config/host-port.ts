import net from 'node:net'

// Kept apart from parse.ts (which loads multiaddr) so client commands (`status`, `drain`)
// start without loading the libp2p address stack.

/** `host:port` or `[v6]:port`. */
export function parseHostPort (v: unknown): { host: string, port: number } {
  const s = String(v).trim()
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s)
  if (m == null) throw new Error(`expected HOST:PORT, got '${s}'`)
  const host = (m[1] ?? m[2]) as string
  const port = Number(m[3])
  if (port > 65535) throw new Error(`port ${port} out of range`)
  return { host, port }
}

export function isLoopbackHost (host: string): boolean {
  if (host === 'localhost') return true
  if (net.isIPv4(host)) return host.startsWith('127.')
  if (net.isIPv6(host)) return host === '::1'
  return false
}
