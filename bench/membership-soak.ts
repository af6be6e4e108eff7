/**
 * npm run bench:soak [-- --minutes 10 | --quick] [--burners N] [--out FILE]   (--quick: 2 minutes)
 *
 * False-positive soak: 1 resource+scheduler and 3 node daemons (real dist/astrad processes) on
 * a machine whose every core is kept busy by CPU burners, for --minutes (default 10). Counts
 * every time a healthy node is seen as anything but `alive`, and the largest heartbeat age seen.
 * Baseline in the same run, under the same load: 4 Serf agents (Debian `serf`, LAN defaults),
 * counting members seen as anything but `alive`. Loopback only; everything is killed at the end.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { clusterKeyFor } from './lib/astrad.ts'

const exec = promisify(execFile)
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BIN = path.join(ROOT, 'dist', 'astrad')
const NODE = process.execPath

function arg (name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 && process.argv[i + 1] != null ? process.argv[i + 1] as string : def
}
const minutes = process.argv.includes('--quick') ? 2 : Number(arg('minutes', '10'))
const burnersN = Number(arg('burners', String(os.availableParallelism() * 2)))
if (!(minutes > 0) || !Number.isInteger(burnersN) || burnersN < 0) {
  console.error('bench:soak: --minutes must be a number > 0 and --burners a whole number ≥ 0')
  process.exit(2)
}
const out = arg('out', path.join(ROOT, 'bench', 'results', 'membership-soak.json'))
if (!fs.existsSync(BIN)) { console.error('dist/astrad missing: run npm run build'); process.exit(1) }

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-soak-'))
const children: ChildProcess[] = []
function cleanup (): void {
  for (const c of children) if (c.exitCode == null) c.kill('SIGKILL')
  fs.rmSync(tmp, { recursive: true, force: true })
}
process.on('SIGINT', () => { cleanup(); process.exit(130) })
process.on('exit', cleanup)

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
let nextPort = 17_400 + Math.floor(Math.random() * 500) * 4

function startAstrad (name: string, args: string[]): { rpc: string } {
  const rpc = `127.0.0.1:${nextPort++}`
  const child = spawn(BIN, ['start', '--name', name, '--data-dir', path.join(tmp, name), '--rpc', rpc, '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn', ...args], { stdio: 'ignore' })
  children.push(child)
  return { rpc }
}

async function status (rpc: string): Promise<any> {
  const res = await fetch(`http://${rpc}/v1/status`, { signal: AbortSignal.timeout(5000) })
  return await res.json()
}

async function waitUntil (what: string, fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    try { if (await fn()) return } catch {}
    await sleep(100)
  }
  throw new Error(`timed out: ${what}`)
}

async function main (): Promise<void> {
  // astrad cluster
  const secret = ['--cluster-key', await clusterKeyFor(tmp)]
  const res = startAstrad('res', ['--role', 'resource,scheduler', ...secret])
  await waitUntil('resource up', async () => (await status(res.rpc)).self != null)
  const boot = (await status(res.rpc)).self.addrs[0] as string
  for (let i = 1; i <= 3; i++) startAstrad(`n${i}`, ['--role', 'node', '--bootstrap', boot, ...secret])
  await waitUntil('4 daemons alive', async () => (await status(res.rpc)).nodes.filter((n: any) => n.state === 'alive').length === 4)

  // Serf baseline
  let serf: { rpcs: string[] } | undefined
  try {
    await exec('serf', ['version'])
    const rpcs: string[] = []
    const bind0 = nextPort++
    for (let i = 0; i < 4; i++) {
      const bind = i === 0 ? bind0 : nextPort++
      const rpcAddr = `127.0.0.1:${nextPort++}`
      rpcs.push(rpcAddr)
      const a = ['agent', `-node=s${i}`, `-bind=127.0.0.1:${bind}`, `-rpc-addr=${rpcAddr}`, ...(i > 0 ? [`-join=127.0.0.1:${bind0}`] : [])]
      children.push(spawn('serf', a, { stdio: 'ignore' }))
    }
    serf = { rpcs }
    await waitUntil('serf joined', async () => {
      const { stdout } = await exec('serf', ['members', `-rpc-addr=${rpcs[0]}`, '-format=json'])
      return JSON.parse(stdout).members.filter((m: any) => m.status === 'alive').length === 4
    })
  } catch (err) {
    console.error(`serf baseline skipped: ${(err as Error).message} (apt-get install serf)`)
  }

  // Load: busy loops on every core, at the same priority as the daemons.
  for (let i = 0; i < burnersN; i++) children.push(spawn(NODE, ['-e', 'for(;;){}'], { stdio: 'ignore' }))
  const end = Date.now() + minutes * 60_000
  const astrad = { polls: 0, notAlive: 0, events: [] as string[], maxAgeMs: 0, failedPolls: 0 }
  const serfStats = { polls: 0, notAlive: 0, events: [] as string[], failedPolls: 0 }
  const serfLoop = (async () => {
    while (serf != null && Date.now() < end) {
      try {
        const { stdout } = await exec('serf', ['members', `-rpc-addr=${serf.rpcs[0]}`, '-format=json'])
        serfStats.polls++
        for (const m of JSON.parse(stdout).members) {
          if (m.status !== 'alive') { serfStats.notAlive++; serfStats.events.push(`${new Date().toISOString()} ${m.name} ${m.status}`) }
        }
      } catch { serfStats.failedPolls++ }
      await sleep(1000)
    }
  })()
  while (Date.now() < end) {
    try {
      const s = await status(res.rpc)
      astrad.polls++
      for (const n of s.nodes) {
        astrad.maxAgeMs = Math.max(astrad.maxAgeMs, n.lastSeenMs)
        if (n.state !== 'alive') { astrad.notAlive++; astrad.events.push(`${new Date().toISOString()} ${n.name} ${n.state} age=${n.lastSeenMs}`) }
      }
    } catch { astrad.failedPolls++ }
    await sleep(250)
  }
  await serfLoop
  const result = {
    minutes,
    burners: burnersN,
    cores: os.availableParallelism(),
    astrad: { ...astrad, events: astrad.events.slice(0, 50) },
    serf: serf != null ? { ...serfStats, events: serfStats.events.slice(0, 50) } : null
  }
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify(result, null, 2))
  console.log(`\nfalse-positive soak: ${minutes} min, ${burnersN} CPU burners on ${result.cores} cores\n`)
  console.log('system  polls  not-alive observations  max heartbeat age  failed polls')
  console.log(`astrad  ${String(astrad.polls).padEnd(5)}  ${String(astrad.notAlive).padEnd(22)}  ${String(astrad.maxAgeMs + ' ms').padEnd(17)}  ${astrad.failedPolls}`)
  if (serf != null) console.log(`serf    ${String(serfStats.polls).padEnd(5)}  ${String(serfStats.notAlive).padEnd(22)}  ${'-'.padEnd(17)}  ${serfStats.failedPolls}`)
  console.log(`\nwrote ${out}`)
  // The goal: no healthy node ever seen as anything but alive under CPU load (0 false positives).
  const met = astrad.notAlive === 0 && astrad.polls > 0
  if (!met) console.log(`goals missed or not measured: zeroFalsePositives (${astrad.notAlive} not-alive observations in ${astrad.polls} polls)`)
  console.log(`goals: ${met ? 1 : 0} met, ${met ? 0 : 1} missed`)
}

main().then(() => { cleanup(); process.exit(0) }, (err: unknown) => { console.error(err); cleanup(); process.exit(1) })
