// Scale benchmark (npm run bench:scale; docs/bench-scale.md): one row per goal of issue 14,
// each measured by a part under bench/scale/ that exports `run(opts): Promise<ScaleRow[]>`.
// This file only runs the parts and prints their rows; it ends with `goals: N met, M missed`.
//
// Usage: node bench/scale.ts [--quick] [--json FILE] [--only PART[,PART]]

import { UsageError, parseFlags } from './lib/args.ts'
import { runBench, writeResult, logGoals } from './lib/procs.ts'
import type { ScalePart, ScaleRow } from './scale/row.ts'
import { run as model } from './scale/model.ts'

/** The parts, in the order their rows print. */
const PARTS: Record<string, ScalePart> = { model }

const USAGE = `usage: node bench/scale.ts [--quick] [--json FILE] [--only PART[,PART]]
  --quick        reduced counts (each part ≤ 3 min)
  --json FILE    also write the rows (with details) as JSON
  --only PARTS   run only these parts: ${Object.keys(PARTS).join(', ')}
`

async function main (): Promise<void> {
  const v = parseFlags(process.argv.slice(2), {
    quick: { type: 'boolean' },
    json: { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }, USAGE)
  if (v.help === true) { process.stdout.write(USAGE); return }
  const only = v.only === undefined ? Object.keys(PARTS) : v.only.split(',').map(s => s.trim()).filter(s => s !== '')
  for (const name of only) if (PARTS[name] === undefined) throw new UsageError(`--only: unknown part '${name}' (parts: ${Object.keys(PARTS).join(', ')})`)
  if (only.length === 0) throw new UsageError(`--only: give one or more of ${Object.keys(PARTS).join(', ')}`)
  if (v.json !== undefined && v.json.trim() === '') throw new UsageError('--json: give a file name')

  const log = (line: string): void => { process.stdout.write(line + '\n') }
  const quick = v.quick === true
  const rows: Array<ScaleRow & { part: string }> = []
  const failed: string[] = []
  for (const name of only) {
    log(`== part ${name}${quick ? ' (--quick)' : ''}`)
    try {
      for (const row of await PARTS[name]!({ quick, log })) rows.push({ part: name, ...row })
    } catch (err) {
      failed.push(name)
      log(`part ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
      rows.push({ part: name, goal: `${name} (part failed)`, figure: 'not measured', target: '', today: '', met: null })
    }
  }

  const cell = (s: string): string => s.replaceAll('|', '\\|')
  log('')
  log("| goal | figure | target | today's design (where it can run) | met? |")
  log('|---|---|---|---|---|')
  for (const r of rows) log(`| ${cell(r.goal)} | ${cell(r.figure)} | ${cell(r.target)} | ${cell(r.today)} | ${r.met === null ? 'not measured' : r.met ? 'yes' : 'no'} |`)
  if (v.json !== undefined) writeResult(v.json, { quick, failed, rows }, log)
  if (failed.length > 0) process.exitCode = 1
  logGoals(log, Object.fromEntries(rows.map(r => [r.goal, r.met])))
}

runBench('bench:scale', main, err => err instanceof UsageError)
