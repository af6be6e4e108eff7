import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import fs from 'node:fs'

/**
 * A NAT lab in Linux network namespaces (test/e2e/nat.test.ts, docs/nat.md):
 *
 *   ns a  192.168.1.2 ─ lan [ns r1] wan NET.11 ─┐
 *                          MASQUERADE           ├─ br0 NET.1 [ns pub] (the resource)
 *   ns b  192.168.2.2 ─ lan [ns r2] wan NET.12 ─┤
 *                          MASQUERADE           │
 *   ns c  NET.20 (a host with a public address) ┘
 *
 * Each router masquerades its LAN behind its public address and drops unsolicited inbound
 * traffic, like a home or cloud NAT. The routers have no route to the other LAN: a dial from b
 * to 192.168.1.2 fails at once (with `blackhole`, it is silently dropped instead, as on the
 * internet). Everything is created inside namespaces named `astnat<pid>…`; the host's own
 * interfaces, routes and firewall are never touched.
 */

export const LAB_PREFIX = 'astnat'
const CMD_TIMEOUT_MS = 10_000

export interface NatLabOptions {
  /** First three octets of the shared "public" /24. @default '10.77.0' */
  publicNet?: string
  /** Routers send everything they cannot route to the public net, which drops private destinations silently. */
  blackhole?: boolean
  /**
   * Routers pick a random public port for every connection (`MASQUERADE --random-fully`): the
   * mapping depends on the destination, as behind a symmetric NAT. Default: Linux keeps the
   * source port where it is free (endpoint-independent for a port reused towards several peers).
   */
  randomFully?: boolean
  /**
   * Routers drop unsolicited TCP to their own WAN address instead of answering RST (most
   * home and cloud NATs); a hole punch's first SYN then waits for its retransmission rather
   * than failing at once.
   */
  dropUnsolicited?: boolean
}

export interface RunResult { code: number | null, stdout: string, stderr: string }

class CommandError extends Error {
  readonly code = 'ERR_COMMAND'
  constructor (message: string) {
    super(message)
    this.name = 'CommandError'
  }
}

async function run (file: string, args: string[], input?: string): Promise<RunResult> {
  return await new Promise((resolve) => {
    const child = execFile(file, args, { timeout: CMD_TIMEOUT_MS, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } }, (err, stdout, stderr) => {
      const code = err == null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err != null && code == null ? err.message : '') })
    })
    if (input != null) child.stdin?.end(input)
  })
}

async function must (file: string, args: string[], input?: string): Promise<string> {
  const r = await run(file, args, input)
  if (r.code !== 0) throw new CommandError(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  return r.stdout
}

function onPath (name: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (fs.existsSync(`${dir}/${name}`)) return `${dir}/${name}`
  }
  return undefined
}

function pidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function killNamespaceProcesses (ns: string): Promise<void> {
  const r = await run('ip', ['netns', 'pids', ns])
  const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number).filter(n => Number.isInteger(n) && n > 1)
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL') } catch {}
  }
  // The namespace lingers until its last process is gone; wait briefly for the kills to land.
  const deadline = Date.now() + 2_000
  while (pids.some(pidAlive) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
}

async function deleteNamespace (ns: string): Promise<void> {
  await killNamespaceProcesses(ns)
  await run('ip', ['netns', 'del', ns])
}

/**
 * Deletes namespaces (and the processes in them) left by earlier runs that crashed before
 * their cleanup: `astnat<pid>…` whose pid is gone. Labs of live runs are left alone.
 */
export async function removeStaleLabs (): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'])
  const stale: string[] = []
  for (const line of r.stdout.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const m = new RegExp(`^${LAB_PREFIX}(\\d+)[a-z0-9]+$`).exec(name)
    if (m == null || pidAlive(Number(m[1]))) continue
    await deleteNamespace(name)
    stale.push(name)
  }
  return stale
}

/** Why namespaces cannot be used here (for `t.skip`), or undefined when they can. */
export async function namespaceSupport (): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the NAT test as root, e.g. in CI)'
  if (onPath('ip') == null) return '`ip` (iproute2) is not installed'
  if (onPath('iptables') == null && onPath('nft') == null) return 'neither iptables nor nft is installed (needed for MASQUERADE)'
  const probe = `${LAB_PREFIX}${process.pid}probe`
  const r = await run('ip', ['netns', 'add', probe])
  if (r.code !== 0) return `\`ip netns add\` failed: ${r.stderr.trim() || `exit ${r.code}`}`
  await run('ip', ['netns', 'del', probe])
  return undefined
}

export class NatLab {
  readonly id: string
  readonly ns: { pub: string, r1: string, r2: string, a: string, b: string, c: string }
  readonly ip: { resource: string, r1: string, r2: string, a: string, b: string, c: string }
  private readonly options: Required<NatLabOptions>
  private readonly created: string[] = []
  private readonly children = new Set<ChildProcess>()

  private constructor (options: NatLabOptions) {
    this.options = { publicNet: '10.77.0', blackhole: false, randomFully: false, dropUnsolicited: false, ...options }
    this.id = `${LAB_PREFIX}${process.pid}`
    const id = this.id
    this.ns = { pub: `${id}pub`, r1: `${id}r1`, r2: `${id}r2`, a: `${id}a`, b: `${id}b`, c: `${id}c` }
    const net = this.options.publicNet
    this.ip = { resource: `${net}.1`, r1: `${net}.11`, r2: `${net}.12`, a: '192.168.1.2', b: '192.168.2.2', c: `${net}.20` }
  }

  /** Builds the lab; on failure removes what was made and throws. */
  static async create (options: NatLabOptions = {}): Promise<NatLab> {
    const lab = new NatLab(options)
    try {
      await lab.build()
    } catch (err) {
      await lab.destroy()
      throw err
    }
    return lab
  }

  private async build (): Promise<void> {
    const { ns, ip } = this
    for (const name of Object.values(ns)) {
      await must('ip', ['netns', 'add', name])
      this.created.push(name)
      await must('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
    }
    await must('ip', ['-n', ns.pub, 'link', 'add', 'name', 'br0', 'type', 'bridge'])
    await must('ip', ['-n', ns.pub, 'addr', 'add', `${ip.resource}/24`, 'dev', 'br0'])
    await must('ip', ['-n', ns.pub, 'link', 'set', 'br0', 'up'])
    if (this.options.blackhole) {
      // The "internet": traffic to private addresses is dropped without an answer (the public
      // /24 itself stays reachable: its connected route is more specific).
      for (const net of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']) {
        await must('ip', ['-n', ns.pub, 'route', 'add', 'blackhole', net])
      }
    }
    await this.router(ns.r1, 'up1', ip.r1, ns.a, '192.168.1')
    await this.router(ns.r2, 'up2', ip.r2, ns.b, '192.168.2')
    // c sits on the public net itself.
    await must('ip', ['-n', ns.pub, 'link', 'add', 'name', 'upc', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.c])
    await must('ip', ['-n', ns.pub, 'link', 'set', 'upc', 'master', 'br0'])
    await must('ip', ['-n', ns.pub, 'link', 'set', 'upc', 'up'])
    await must('ip', ['-n', ns.c, 'addr', 'add', `${ip.c}/24`, 'dev', 'eth0'])
    await must('ip', ['-n', ns.c, 'link', 'set', 'eth0', 'up'])
  }

  private async router (router: string, uplink: string, wanIp: string, host: string, lan: string): Promise<void> {
    const { ns } = this
    // Uplink: a veth from the public bridge to the router's WAN side.
    await must('ip', ['-n', ns.pub, 'link', 'add', 'name', uplink, 'type', 'veth', 'peer', 'name', 'wan', 'netns', router])
    await must('ip', ['-n', ns.pub, 'link', 'set', uplink, 'master', 'br0'])
    await must('ip', ['-n', ns.pub, 'link', 'set', uplink, 'up'])
    await must('ip', ['-n', router, 'addr', 'add', `${wanIp}/24`, 'dev', 'wan'])
    await must('ip', ['-n', router, 'link', 'set', 'wan', 'up'])
    if (this.options.blackhole) await must('ip', ['-n', router, 'route', 'add', 'default', 'via', this.ip.resource])
    // LAN: router .1, host .2, the host's default route through the router.
    await must('ip', ['-n', router, 'link', 'add', 'name', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host])
    await must('ip', ['-n', router, 'addr', 'add', `${lan}.1/24`, 'dev', 'lan'])
    await must('ip', ['-n', router, 'link', 'set', 'lan', 'up'])
    await must('ip', ['-n', host, 'addr', 'add', `${lan}.2/24`, 'dev', 'eth0'])
    await must('ip', ['-n', host, 'link', 'set', 'eth0', 'up'])
    await must('ip', ['-n', host, 'route', 'add', 'default', 'via', `${lan}.1`])
    await must('ip', ['netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    if (onPath('iptables') != null) {
      const ipt = async (...args: string[]): Promise<void> => { await must('ip', ['netns', 'exec', router, 'iptables', ...args]) }
      await ipt('-t', 'nat', '-A', 'POSTROUTING', '-s', `${lan}.0/24`, '-o', 'wan', '-j', 'MASQUERADE', ...(this.options.randomFully ? ['--random-fully'] : []))
      await ipt('-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
      await ipt('-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-j', 'DROP')
      if (this.options.dropUnsolicited) await ipt('-A', 'INPUT', '-i', 'wan', '-p', 'tcp', '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP')
    } else {
      await must('ip', ['netns', 'exec', router, 'nft', '-f', '-'], [
        'table ip nat { chain post { type nat hook postrouting priority 100; policy accept;',
        `  ip saddr ${lan}.0/24 oifname "wan" masquerade${this.options.randomFully ? ' random,fully-random' : ''} } }`,
        'table ip filter { chain fwd { type filter hook forward priority 0; policy accept;',
        '  iifname "wan" oifname "lan" ct state established,related accept',
        '  iifname "wan" oifname "lan" drop }',
        ...(this.options.dropUnsolicited ? ['  chain in { type filter hook input priority 0; policy accept; iifname "wan" tcp flags syn ct state new drop }'] : []),
        '}'
      ].join('\n'))
    }
  }

  /** Runs a command inside a namespace to completion. */
  async exec (ns: string, argv: string[], options: { timeoutMs?: number, env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return await new Promise((resolve, reject) => {
      const child = this.spawn(ns, argv, { env: options.env, stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
      child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
      const timer = setTimeout(() => { child.kill('SIGKILL') }, options.timeoutMs ?? 30_000)
      child.on('error', reject)
      child.on('close', code => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr })
      })
    })
  }

  /** Starts a process inside a namespace (`ip netns exec` execs it: the child's pid is the process's). */
  spawn (ns: string, argv: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
      ...options,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...options.env }
    })
    this.children.add(child)
    child.on('exit', () => { this.children.delete(child) })
    return child
  }

  /** Kills what runs in the lab and deletes its namespaces; safe to call twice and after a failed build. */
  async destroy (): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL')
    for (const name of this.created.splice(0).reverse()) await deleteNamespace(name)
  }
}
