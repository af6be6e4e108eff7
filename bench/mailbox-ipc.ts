// Calls between bench:mailbox (bench/mailbox.ts) and its child processes over the IPC channel
// of fork(): the parent calls `call(proc, cmd, args)`, the child answers with `serveIpc`.
// One answer per call, matched by a number; a child that exits fails every call it owes.

import type { Managed } from './lib/procs.ts'

interface IpcCall {
  rpc: number
  cmd: string
  args: unknown
}

interface IpcAnswer {
  rpc: number
  ok: boolean
  result?: unknown
  error?: string
}

export type IpcHandler = (args: unknown) => Promise<unknown> | unknown

let nextRpc = 1

function isAnswer (msg: unknown): msg is IpcAnswer {
  return typeof msg === 'object' && msg != null && typeof (msg as IpcAnswer).rpc === 'number' && typeof (msg as IpcAnswer).ok === 'boolean'
}

/** Calls `cmd` in a child; rejects on its error, its exit, or after timeoutMs. */
export async function call<T> (m: Managed, cmd: string, args: unknown, timeoutMs: number): Promise<T> {
  const rpc = nextRpc++
  return await new Promise<T>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer)
      m.child.off('message', onMessage)
      m.child.off('exit', onExit)
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error(`${m.name}: '${cmd}' not answered within ${timeoutMs} ms\n${m.tail.slice(-10).join('\n')}`))
    }, timeoutMs)
    const onMessage = (msg: unknown): void => {
      if (!isAnswer(msg) || msg.rpc !== rpc) return
      done()
      if (msg.ok) resolve(msg.result as T)
      else reject(new Error(`${m.name}: '${cmd}' failed: ${msg.error ?? 'unknown error'}`))
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      done()
      reject(new Error(`${m.name} exited (${code ?? signal ?? '?'}) during '${cmd}'\n${m.tail.slice(-10).join('\n')}`))
    }
    m.child.on('message', onMessage)
    m.child.on('exit', onExit)
    try {
      if (!m.child.connected) throw new Error('IPC channel closed')
      m.child.send({ rpc, cmd, args } satisfies IpcCall)
    } catch (err) {
      done()
      reject(new Error(`${m.name}: cannot send '${cmd}': ${err instanceof Error ? err.message : String(err)}`))
    }
  })
}

/**
 * Child side: answers calls with the named handlers. The process exits when the parent goes
 * away (its IPC channel closes), so a killed bench leaves no orphan behind.
 */
export function serveIpc (handlers: Record<string, IpcHandler>): void {
  process.on('message', (msg: unknown) => {
    const c = msg as IpcCall
    if (typeof c !== 'object' || c == null || typeof c.rpc !== 'number' || typeof c.cmd !== 'string') return
    const handler = handlers[c.cmd]
    const answer = (a: IpcAnswer): void => { process.send?.(a) }
    if (handler == null) {
      answer({ rpc: c.rpc, ok: false, error: `unknown command ${c.cmd}` })
      return
    }
    Promise.resolve()
      .then(async () => await handler(c.args))
      .then(
        result => { answer({ rpc: c.rpc, ok: true, result }) },
        (err: unknown) => { answer({ rpc: c.rpc, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }) }
      )
  })
  process.on('disconnect', () => { process.exit(0) })
}

/** Milliseconds on the wall clock with sub-millisecond resolution: comparable across processes. */
export function wallNow (): number {
  return performance.timeOrigin + performance.now()
}

/** Nearest-rank percentile of an ascending array (q in 0..1); NaN when empty. */
export function percentile (sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i] as number
}
