import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../helpers/process.ts'

/**
 * The executable's main script is the CLI only: the daemon (libp2p, the cluster log, zod, pino,
 * prom-client) is a bundle of its own that only `astrad start` compiles (src/cli/daemon-asset.ts),
 * so `--version` and `status` start without it. Checked on the bundles scripts/build.ts writes.
 * zod is the one exception: the trust code (src/trust: reading an operator credential to sign a
 * write, `astrad cluster …`) validates files with it, and the CLI imports that code lazily, only
 * for a write to a secure daemon or a `cluster` command (cli-notice.test.ts checks that reads,
 * and writes that never reach a daemon, do not load it).
 */

test('the CLI bundle holds no daemon code; the daemon bundle takes the error classes from the CLI', (t) => {
  const name = `split-check-${process.pid}`
  const files = ['.cjs', '.daemon.cjs', '.worker.cjs'].map(ext => path.join(ROOT, 'build', name + ext))
  t.after(() => { for (const f of files) fs.rmSync(f, { force: true }) })
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/build.ts'), '--bundle-only', '--out', path.join(ROOT, 'build', name)], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 })
  assert.equal(r.status, 0, `bundle: ${r.stdout}${r.stderr}`)
  const [cli, daemon] = files.map(f => fs.readFileSync(f!, 'utf8')) as [string, string]
  const sources = (code: string): string[] => [...code.matchAll(/^\/\/ ((?:src|node_modules)\/\S+)$/gm)].map(m => m[1]!)
  const inCli = sources(cli)
  for (const heavy of ['node_modules/libp2p/', 'node_modules/@libp2p/', 'node_modules/pino/', 'node_modules/prom-client/', 'src/daemon/', 'src/cli/run-daemon.ts']) {
    assert.deepEqual(inCli.filter(s => s.startsWith(heavy)), [], `${heavy} in the CLI bundle`)
  }
  assert.ok(inCli.includes('src/cli/daemon-asset.ts'), 'start runs the daemon from its asset')
  const inDaemon = sources(daemon)
  assert.ok(inDaemon.includes('src/cli/run-daemon.ts') && inDaemon.includes('src/daemon/index.ts'), 'the daemon bundle holds the daemon')
  assert.ok(!inDaemon.includes('src/util/errors.ts'), 'one copy of the error classes')
  assert.match(daemon, /require\("astrad:util\/errors"\)/)
})
