// The central-origin baseline: one nginx (Debian package) serves the model file to N clients at
// once with total egress U, i.e. `limit_rate U/N` per connection, as an origin with an uplink
// of U would share it. Clients are Node HTTP GETs that hash and write to disk (fsync at the end),
// as a node storing a model does.

import crypto from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { start, stop, run, freePort, waitFor, now, type Managed } from './procs.ts'
import { cpuTicks } from './astrad.ts'

export interface NginxClientResult {
  client: number
  /** ms from the common start until this client's file was written and fsynced. */
  ms: number
  bytes: number
  sha256: string
  ok: boolean
}

export interface NginxResult {
  version: string
  clients: number
  limitRatePerConnection: number
  totalEgressLimit: number
  /** ms until the last client was complete. */
  lastMs: number
  firstMs: number
  results: NginxClientResult[]
  /** CPU seconds nginx used during the downloads. */
  nginxCpuSec: number
}

export interface NginxOptions {
  root: string
  file: string
  size: number
  sha256: string
  clients: number
  /** Total egress U in bytes/s; each connection gets floor(U / clients). */
  totalRate: number
  clockTicks: number
  timeoutMs: number
  log: (m: string) => void
}

/** `nginx -v` (prints to stderr), or null when nginx is not installed. */
export async function nginxVersion (): Promise<string | null> {
  try {
    return (await run('nginx', ['-v'], 5_000)).trim().replace(/^nginx version:\s*/, '')
  } catch {
    return null
  }
}

function config (dir: string, docroot: string, port: number, perConnection: number): string {
  // master_process off: one process, so killing it (even with SIGKILL on Ctrl-C) leaves no
  // orphaned worker. `user` only means something when started as root; root can read the
  // 0700 temp dir.
  const asRoot = process.getuid?.() === 0
  return `${asRoot ? 'user root;\n' : ''}daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 0;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${docroot};
    location / {
      limit_rate ${perConnection};
    }
  }
}
`
}

function download (port: number, name: string, dest: string, expectSize: number, t0: number, client: number): Promise<NginxClientResult> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/${encodeURIComponent(name)}`, agent: false }, res => {
      if (res.statusCode !== 200) {
        res.resume()
        reject(new Error(`nginx answered HTTP ${res.statusCode ?? '?'} for client ${client}`))
        return
      }
      const hash = crypto.createHash('sha256')
      const fd = fs.openSync(dest, 'w')
      let bytes = 0
      let failed = false
      // Synchronous writes: at U/N per connection the disk is never the bottleneck, and the
      // data is on disk (fsynced below) when the client counts as complete.
      res.on('data', (chunk: Buffer) => {
        if (failed) return
        try {
          fs.writeSync(fd, chunk)
        } catch (err) {
          failed = true
          res.destroy(err as Error)
          return
        }
        hash.update(chunk)
        bytes += chunk.length
      })
      res.on('end', () => {
        try {
          fs.fsyncSync(fd)
          fs.closeSync(fd)
        } catch (err) {
          reject(err as Error)
          return
        }
        const sha256 = hash.digest('hex')
        resolve({ client, ms: now() - t0, bytes, sha256, ok: bytes === expectSize })
      })
      res.on('error', err => {
        try { fs.closeSync(fd) } catch {}
        reject(err)
      })
    })
    req.on('error', reject)
  })
}

export async function runNginx (o: NginxOptions): Promise<NginxResult> {
  const version = await nginxVersion()
  if (version == null) throw new Error('nginx not found: apt-get update && apt-get install -y nginx')
  const dir = path.join(o.root, 'nginx')
  const docroot = path.join(dir, 'www')
  const out = path.join(dir, 'clients')
  for (const d of [dir, docroot, out, ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(x => path.join(dir, x))]) fs.mkdirSync(d, { recursive: true })
  const name = path.basename(o.file)
  // A hard link (same filesystem) or a copy: nginx serves from its own document root.
  try { fs.linkSync(o.file, path.join(docroot, name)) } catch { fs.copyFileSync(o.file, path.join(docroot, name)) }
  const port = await freePort()
  const perConnection = Math.floor(o.totalRate / o.clients)
  fs.writeFileSync(path.join(dir, 'nginx.conf'), config(dir, docroot, port, perConnection))
  const proc: Managed = start('nginx', 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')])
  try {
    await Promise.race([
      waitFor(`nginx on :${port}`, async () => await new Promise<true | undefined>(resolve => {
        const req = http.request({ host: '127.0.0.1', port, method: 'HEAD', path: `/${encodeURIComponent(name)}`, agent: false }, res => {
          res.resume()
          resolve(res.statusCode === 200 ? true : undefined)
        })
        req.on('error', () => { resolve(undefined) })
        req.end()
      }), 10_000, 50),
      proc.exited.then(({ code, signal }) => { throw new Error(`nginx exited ${code ?? signal} at start: ${proc.tail.join('\n')} ${readSafe(path.join(dir, 'error.log'))}`) })
    ])
    const pid = proc.child.pid as number
    const cpu0 = cpuTicks(pid)
    o.log(`nginx ${version}: ${o.clients} clients, limit_rate ${perConnection} B/s each (total ${o.totalRate} B/s)`)
    const t0 = now()
    const all = Promise.all(Array.from({ length: o.clients }, async (_, i) =>
      await download(port, name, path.join(out, `client-${i}.bin`), o.size, t0, i)))
    let timer: NodeJS.Timeout | undefined
    const results = await Promise.race([
      all,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`nginx downloads not done after ${o.timeoutMs} ms`)) }, o.timeoutMs) })
    ]).finally(() => { clearTimeout(timer) })
    const nginxCpuSec = (cpuTicks(pid) - cpu0) / o.clockTicks
    for (const r of results) {
      r.ok = r.ok && r.sha256 === o.sha256
      if (!r.ok) throw new Error(`nginx client ${r.client} got ${r.bytes} bytes with sha256 ${r.sha256}, expected ${o.size} bytes ${o.sha256}`)
    }
    const times = results.map(r => r.ms)
    return {
      version,
      clients: o.clients,
      limitRatePerConnection: perConnection,
      totalEgressLimit: perConnection * o.clients,
      lastMs: Math.max(...times),
      firstMs: Math.min(...times),
      results,
      nginxCpuSec
    }
  } finally {
    await stop(proc, 'SIGQUIT', 3_000)
    fs.rmSync(out, { recursive: true, force: true })
  }
}

function readSafe (file: string): string {
  try { return fs.readFileSync(file, 'utf8').slice(-1000) } catch { return '' }
}
