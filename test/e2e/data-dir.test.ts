import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BINARY, freePort, requireBinary } from '../helpers/process.ts'

/**
 * `astrad start` with a data dir it cannot use exits at once with one line naming the directory
 * and the reason, exit 2 like any other bad flag: no mkdir loop at 100 % CPU (/proc), no stack
 * trace (/sys), no daemon on a regular file (issue 16).
 */

/** Generous: the binary answers in well under a second when the fix is in; SIGKILL after. */
const RUN_LIMIT_MS = 60_000

let tmp = ''
before(() => {
  requireBinary()
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-data-dir-'))
})
after(() => { fs.rmSync(tmp, { recursive: true, force: true }) })

/** Runs `astrad start`; a process that ignores SIGTERM (the spinning one did) is SIGKILLed. */
async function start (dataDir: string): Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string }> {
  const rpc = `127.0.0.1:${await freePort()}`
  return await new Promise((resolve, reject) => {
    const child = spawn(BINARY, ['start', '--data-dir', dataDir, '--rpc', rpc, '--listen', '/ip4/127.0.0.1/tcp/0'], {
      env: { PATH: '/usr/bin:/bin', HOME: tmp }, stdio: ['ignore', 'pipe', 'pipe'], timeout: RUN_LIMIT_MS, killSignal: 'SIGKILL'
    })
    let stderr = ''
    child.stdout.resume()
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('close', (code, signal) => { resolve({ code, signal, stderr }) })
  })
}

function assertOneLineError (step: string, res: { code: number | null, signal: NodeJS.Signals | null, stderr: string }, dir: string): void {
  assert.equal(res.signal, null, `${step}: killed after ${RUN_LIMIT_MS} ms instead of exiting; stderr: ${res.stderr.slice(-500)}`)
  assert.equal(res.code, 2, `${step}: exit code; stderr: ${res.stderr.slice(-500)}`)
  const lines = res.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `${step}: one line, got: ${res.stderr.slice(-1000)}`)
  assert.match(lines[0]!, /^astrad: --data-dir: /, `${step}: names the flag`)
  assert.ok(lines[0]!.includes(dir), `${step}: names the directory: ${lines[0]}`)
  assert.doesNotMatch(res.stderr, /\n\s+at /, `${step}: no stack trace`)
}

test('start: a data dir under /proc exits with one line, no mkdir loop', { skip: !fs.existsSync('/proc/1') && 'no /proc here' }, async () => {
  assertOneLineError('/proc/1/nonexist', await start('/proc/1/nonexist/astrad'), '/proc/1/nonexist/astrad')
})

test('start: a data dir under /sys exits with one line, no stack trace', { skip: !fs.existsSync('/sys/kernel') && 'no /sys here' }, async () => {
  assertOneLineError('/sys/x', await start('/sys/x'), '/sys/x')
})

test('start: a data dir that is a regular file exits with one line, the file untouched', async () => {
  const file = path.join(tmp, 'a-file')
  fs.writeFileSync(file, 'keep me')
  assertOneLineError('regular file', await start(file), file)
  assert.equal(fs.readFileSync(file, 'utf8'), 'keep me', 'regular file: not changed')
  const res = await start(path.join(file, 'below'))
  assertOneLineError('below a regular file', res, path.join(file, 'below'))
})

test('start: a data dir without write permission exits with one line', async (t) => {
  const dir = path.join(tmp, 'read-only')
  fs.mkdirSync(dir, { mode: 0o500 })
  if (process.getuid?.() === 0) {
    // Root bypasses permission bits: a read-only mount refuses it too (EROFS).
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir], { stdio: 'pipe' })
    } catch (err) {
      t.skip(`running as root (permission bits bypassed) and cannot mount a read-only tmpfs: ${(err as Error).message.split('\n')[0]}`)
      return
    }
    try {
      assertOneLineError('read-only mount', await start(dir), dir)
    } finally {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' })
    }
    return
  }
  assertOneLineError('read-only dir', await start(dir), dir)
})
