// `npm run bench:scale`: one row per goal of issue 14, each measured by a part under bench/scale/
// (each exports run(opts) → ScaleRow[]), with today's design beside it where it can still run.
// Flags: --quick (reduced counts, each part ≤ 3 min), --json PATH, --only NAME (one part).
// Ends with exactly one line `goals: N met, M missed` (a row not measured counts as missed);
// exit 0 when it ran, 2 on a usage error.

import path from 'node:path'
import { UsageError, parseFlags } from './lib/args.ts'
import { cleanup, installCleanupHooks, logGoals, now, runBench, writeResult } from './lib/procs.ts'
import type { ScalePart, ScaleRow } from './scale/row.ts'

/** The parts, in the order their rows print; each module is loaded only when it runs. */
const PARTS: Record<string, () => Promise<ScalePart>> = {
  model: async () => (await import('./scale/model.ts')).run,
  placement: async () => (await import('./scale/placement.ts')).run,
  mailbox: async () => (await import('./scale/mailbox.ts')).run
}

const USAGE = `usage: node bench/scale.ts [--quick] [--json PATH] [--only ${Object.keys(PARTS).join('|')}]`

function cell (s: string): string {
  return s.replaceAll('|', '\\|').replaceAll('\n', ' ')
}

async function main (): Promise<void> {
  const v = parseFlags(process.argv.slice(2), {
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', default: false }
  }, USAGE)
  if (v.help === true) { process.stdout.write(`${USAGE}\n`); return }
  if (v.json !== undefined && v.json.trim() === '') throw new UsageError(`--json expects a file path\n${USAGE}`)
  if (v.only !== undefined && PARTS[v.only] == null) throw new UsageError(`--only expects one of ${Object.keys(PARTS).join(', ')}, got ${v.only}\n${USAGE}`)
  installCleanupHooks()
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  const quick = v.quick === true
  const names = v.only !== undefined ? [v.only] : Object.keys(PARTS)
  const rows: Array<ScaleRow & { part: string }> = []
  const errors: string[] = []
  for (const name of names) {
    const t0 = now()
    log(`== ${name}${quick ? ' (quick)' : ''}`)
    try {
      const run = await PARTS[name]!()
      for (const row of await run({ quick, log: line => { log(`  ${line}`) } })) rows.push({ ...row, part: name })
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err)
      errors.push(`${name}: ${msg}`)
      log(`${name} FAILED: ${msg}`)
      rows.push({ part: name, goal: name, figure: 'failed', target: '-', today: '-', met: null })
    }
    log(`== ${name}: ${((now() - t0) / 1000).toFixed(1)} s`)
    await cleanup()
  }
  log('')
  log('| goal | figure | target | today\'s design (where it can run) | met? |')
  log('|---|---|---|---|---|')
  for (const r of rows) log(`| ${cell(r.goal)} | ${cell(r.figure)} | ${cell(r.target)} | ${cell(r.today)} | ${r.met == null ? 'not measured' : r.met ? 'yes' : 'no'} |`)
  log('')
  if (v.json !== undefined) writeResult(path.resolve(v.json), { bench: 'scale', quick, at: new Date().toISOString(), rows, errors }, log)
  logGoals(log, Object.fromEntries(rows.map(r => [r.goal, r.met])))
}

runBench('bench:scale', main, err => err instanceof UsageError)
