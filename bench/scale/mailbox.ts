// Issue 14 goal 4: mailbox pulls per second at one resource with long-lived pull streams
// (/astra/mailbox-pull/1.1.0), beside today's one-shot pulls (/astra/mailbox/1.0.0, one stream
// per pull) in the same run. The measurement is bench/mailbox.ts's own (pullThroughput).

import { pullThroughput } from '../mailbox.ts'
import type { ScalePartOptions, ScaleRow } from './row.ts'
import { MAILBOX } from './constants.ts'

export async function run (opts: ScalePartOptions): Promise<ScaleRow[]> {
  const r = await pullThroughput(opts.quick ? ['--quick'] : [], opts.log)
  if (r.errors.length > 0) throw new Error(`mailbox pull throughput: ${r.errors.join('; ')}`)
  const s = r.bestStream
  const one = r.bestOneShot
  for (const q of r.streamVsOneShot) opts.log(`stream ÷ one-shot at ${q.inflight} in flight: pulls/s ×${q.pullsPerSec?.toFixed(2) ?? '-'}, resource CPU per pull ×${q.cpuPerPull?.toFixed(2) ?? '-'}`)
  return [{
    goal: '4 mailbox pulls',
    figure: s != null ? `${s.pullsPerSec.toFixed(0)} pulls/s, long-lived streams, ${s.inflight} in flight, ${s.resourceCpuUsPerPull.toFixed(0)} µs resource CPU/pull` : 'not measured',
    target: `≥ ${MAILBOX.goalPerSec.toLocaleString('en-US')} pulls/s per resource`,
    today: one != null ? `one-shot pulls: ${one.pullsPerSec.toFixed(0)}/s at ${one.inflight} in flight, ${one.resourceCpuUsPerPull.toFixed(0)} µs/pull${s != null ? ` (stream ÷ one-shot ×${(s.pullsPerSec / one.pullsPerSec).toFixed(2)})` : ''}` : 'not measured',
    met: s != null ? s.pullsPerSec >= MAILBOX.goalPerSec : null,
    detail: { quick: opts.quick, rows: r.rows, streamVsOneShot: r.streamVsOneShot, simulationNotes: r.notes }
  }]
}
