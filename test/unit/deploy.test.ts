/**
 * Checks the ops files in deploy/ against each other and against the real CLI:
 * - every Kubernetes manifest parses and is a well-formed object; kustomization.yaml lists them all;
 * - the node DaemonSet leaves through a preStop `astrad drain`;
 * - every `astrad …` command line (container command/args, lifecycle hooks, probes, the systemd
 *   unit's Exec lines) names a real subcommand and only options that subcommand has, with values
 *   the config parsers accept;
 * - the RPC and P2P ports, the bootstrap address and file paths agree across the manifests.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { parseAllDocuments } from 'yaml'
import type { Command, Option } from 'commander'
import { createCli } from '../../src/cli/index.ts'
import { DEFAULT_RPC_PORT } from '../../src/config/index.ts'
import {
  parseRoles, parseName, parseMultiaddr, parseBootstrap, parseHostPort, parseLogLevel, parseToken,
  isLoopbackHost
} from '../../src/config/parse.ts'

const ROOT = path.resolve(import.meta.dirname, '../..')
const K8S_DIR = path.join(ROOT, 'deploy/k8s')
const UNIT_FILE = path.join(ROOT, 'deploy/systemd/astrad.service')
const KUSTOMIZATION = 'kustomization.yaml'

/** The ASTRAD_* variables of the CLI contract (ARCHITECTURE.md §3 and src/config). */
const ASTRAD_ENV = new Set([
  'ASTRAD_ROLE', 'ASTRAD_NAME', 'ASTRAD_DATA_DIR', 'ASTRAD_LISTEN', 'ASTRAD_BOOTSTRAP', 'ASTRAD_RPC',
  'ASTRAD_RPC_TOKEN', 'ASTRAD_CELL', 'ASTRAD_CORES', 'ASTRAD_GPUS', 'ASTRAD_CONFIG', 'ASTRAD_JOIN_TOKEN',
  'ASTRAD_CLUSTER_KEY', 'ASTRAD_INSECURE', 'ASTRAD_LOG_LEVEL'
])

/** Value checks for options whose values can be checked without the daemon (from src/config). */
const VALUE_PARSERS: Record<string, (v: string) => unknown> = {
  '--role': parseRoles,
  '--name': parseName,
  '--cell': parseName,
  '--listen': parseMultiaddr,
  '--bootstrap': parseBootstrap,
  '--rpc': parseHostPort,
  '--rpc-token': parseToken,
  '--log-level': parseLogLevel
}

// ---------------------------------------------------------------------------------------------
// Untyped YAML access

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return v != null && typeof v === 'object' && !Array.isArray(v)
}
function obj (v: unknown): Obj {
  return isObj(v) ? v : {}
}
function arr (v: unknown): unknown[] {
  return Array.isArray(v) ? v : []
}
function str (v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined
}
function strings (v: unknown): string[] {
  return arr(v).map(x => String(x))
}
function basename (p: string | undefined): string {
  return p == null ? '' : p.slice(p.lastIndexOf('/') + 1)
}

// ---------------------------------------------------------------------------------------------
// Loading

interface Manifest {
  file: string
  index: number
  doc: Obj
}

function manifestFiles (): string[] {
  return fs.readdirSync(K8S_DIR).filter(f => /\.ya?ml$/.test(f)).sort()
}

function loadYaml (file: string): Obj[] {
  const text = fs.readFileSync(path.join(K8S_DIR, file), 'utf8')
  const out: Obj[] = []
  for (const d of parseAllDocuments(text)) {
    assert.deepEqual(d.errors.map(e => e.message), [], `${file}: YAML errors`)
    assert.deepEqual(d.warnings.map(e => e.message), [], `${file}: YAML warnings`)
    const value: unknown = d.toJS()
    if (value == null) continue // an empty document between two ---
    assert.ok(isObj(value), `${file}: every document must be a mapping`)
    out.push(value)
  }
  return out
}

function loadManifests (): Manifest[] {
  const out: Manifest[] = []
  for (const file of manifestFiles()) {
    if (file === KUSTOMIZATION) continue
    loadYaml(file).forEach((doc, index) => out.push({ file, index, doc }))
  }
  return out
}

function label (m: Manifest): string {
  return `deploy/k8s/${m.file} ${String(m.doc.kind)}/${String(obj(m.doc.metadata).name)}`
}

function defaultNamespace (): string | undefined {
  const [k] = loadYaml(KUSTOMIZATION)
  return str(obj(k).namespace)
}

// ---------------------------------------------------------------------------------------------
// Pods, containers and astrad command lines in them

interface Pod {
  where: string
  kind: string
  namespace: string | undefined
  labels: Obj
  spec: Obj
}

function podOf (m: Manifest): Pod | undefined {
  const { doc } = m
  const kind = String(doc.kind)
  let template: Obj | undefined
  if (kind === 'Pod') template = doc
  else if (['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job'].includes(kind)) template = obj(obj(doc.spec).template)
  else if (kind === 'CronJob') template = obj(obj(obj(obj(doc.spec).jobTemplate).spec).template)
  if (template == null) return undefined
  return {
    where: label(m),
    kind,
    namespace: str(obj(doc.metadata).namespace),
    labels: obj(obj(template.metadata).labels),
    spec: obj(template.spec)
  }
}

function containersOf (pod: Pod): Obj[] {
  return [...arr(pod.spec.initContainers), ...arr(pod.spec.containers)].map(obj)
}

/** One `astrad …` command line; argv[0] is the binary. */
interface Invocation {
  where: string
  argv: string[]
  /** The Kubernetes container it runs in, and how: its main process, a hook or a probe. */
  container?: Obj
  source?: 'main' | 'hook' | 'probe'
}

/** Splits a shell command line into words (quotes, backslashes); enough for `sh -c` in hooks. */
function shellWords (line: string): string[] {
  const words: string[] = []
  let cur: string | undefined
  let quote: '"' | "'" | undefined
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string
    if (quote != null) {
      if (c === quote) quote = undefined
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i] as string
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      cur ??= ''
    } else if (c === '\\' && i + 1 < line.length) {
      cur = (cur ?? '') + (line[++i] as string)
    } else if (/\s/.test(c)) {
      if (cur != null) words.push(cur)
      cur = undefined
    } else if (';&|'.includes(c)) {
      if (cur != null) words.push(cur)
      cur = undefined
      words.push(c)
    } else {
      cur = (cur ?? '') + c
    }
  }
  assert.equal(quote, undefined, `unterminated quote in: ${line}`)
  if (cur != null) words.push(cur)
  return words
}

/** The astrad command lines in one exec argv: direct, or inside `sh -c '…'`. */
function astradCalls (argv: string[]): string[][] {
  if (argv.length === 0) return []
  if (basename(argv[0]) === 'astrad') return [argv]
  if (['sh', 'bash', 'dash', 'ash'].includes(basename(argv[0])) && argv[1] === '-c' && argv[2] != null) {
    const out: string[][] = []
    let segment: string[] = []
    for (const w of [...shellWords(argv[2]), ';']) {
      if (w === ';' || w === '&' || w === '|') {
        const words = segment[0] === 'exec' ? segment.slice(1) : segment
        if (basename(words[0]) === 'astrad') out.push(words)
        segment = []
      } else {
        segment.push(w)
      }
    }
    return out
  }
  return []
}

const PROBES = ['startupProbe', 'livenessProbe', 'readinessProbe'] as const
const HOOKS = ['postStart', 'preStop'] as const

function k8sInvocations (manifests: Manifest[]): Invocation[] {
  const out: Invocation[] = []
  for (const m of manifests) {
    const pod = podOf(m)
    if (pod == null) continue
    for (const c of containersOf(pod)) {
      const where = `${pod.where} container ${String(c.name)}`
      let main = [...strings(c.command), ...strings(c.args)]
      // No command: the image's entrypoint runs; for the astrad image that is astrad itself.
      if (c.command == null && String(c.image).includes('astrad')) main = ['astrad', ...main]
      for (const argv of astradCalls(main)) out.push({ where, argv, container: c, source: 'main' })
      for (const h of HOOKS) {
        const cmd = strings(obj(obj(obj(c.lifecycle)[h]).exec).command)
        for (const argv of astradCalls(cmd)) out.push({ where: `${where} ${h}`, argv, container: c, source: 'hook' })
      }
      for (const p of PROBES) {
        const cmd = strings(obj(obj(c[p]).exec).command)
        for (const argv of astradCalls(cmd)) out.push({ where: `${where} ${p}`, argv, container: c, source: 'probe' })
      }
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

interface UnitEntry { section: string, key: string, value: string, line: number }

function parseUnit (text: string): UnitEntry[] {
  const entries: UnitEntry[] = []
  let section = ''
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let line = lines[i] as string
    // Continuation lines (comment lines inside them are skipped, as systemd does).
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++
      const next = lines[i] as string
      if (/^\s*[#;]/.test(next)) continue
      line = line.slice(0, -1) + ' ' + next
    }
    const t = line.trim()
    if (t === '' || t.startsWith('#') || t.startsWith(';')) continue
    const s = /^\[(.+)\]$/.exec(t)
    if (s != null) {
      section = s[1] as string
      continue
    }
    const eq = t.indexOf('=')
    assert.ok(eq > 0, `astrad.service line ${start + 1} is neither a section nor Key=Value: ${t}`)
    entries.push({ section, key: t.slice(0, eq).trim(), value: t.slice(eq + 1).trim(), line: start + 1 })
  }
  return entries
}

/** ExecStart=-@/bin/x a b ; /bin/y → [['/bin/x','a','b'], ['/bin/y']] (prefixes stripped). */
function unitCommands (value: string): string[][] {
  const out: string[][] = []
  let cur: string[] = []
  for (const w of shellWords(value.replace(/(^|\s);(\s|$)/g, '$1\u0000$2'))) {
    if (w === '\u0000') {
      out.push(cur)
      cur = []
    } else {
      cur.push(w)
    }
  }
  out.push(cur)
  return out.filter(c => c.length > 0).map(c => {
    const first = (c[0] as string).replace(/^[-@:+!]+/, '')
    return [first, ...c.slice(1)]
  })
}

const EXEC_KEYS = new Set(['ExecCondition', 'ExecStartPre', 'ExecStart', 'ExecStartPost', 'ExecReload', 'ExecStop', 'ExecStopPost'])

function unitInvocations (entries: UnitEntry[]): Invocation[] {
  const out: Invocation[] = []
  for (const e of entries) {
    if (e.section !== 'Service' || !EXEC_KEYS.has(e.key)) continue
    for (const argv of unitCommands(e.value)) {
      if (basename(argv[0]) === 'astrad') out.push({ where: `deploy/systemd/astrad.service:${e.line} ${e.key}`, argv })
    }
  }
  return out
}

function unitValue (entries: UnitEntry[], section: string, key: string): string | undefined {
  return entries.filter(e => e.section === section && e.key === key).at(-1)?.value
}

/** systemd time span (35, 35s, 1min 30s, 500ms) in seconds. */
function timeSpanSeconds (v: string): number {
  const units: Record<string, number> = { '': 1, s: 1, sec: 1, second: 1, seconds: 1, ms: 0.001, m: 60, min: 60, minute: 60, minutes: 60, h: 3600, hr: 3600, hour: 3600, hours: 3600 }
  let total = 0
  for (const part of v.trim().split(/\s+/)) {
    const m = /^(\d+(?:\.\d+)?)([a-z]*)$/.exec(part)
    assert.ok(m != null && units[m[2] as string] != null, `not a time span: ${v}`)
    total += Number(m[1]) * (units[m[2] as string] as number)
  }
  return total
}

// ---------------------------------------------------------------------------------------------
// Command lines against options

interface Parsed {
  sub: string
  /** Values per long option, in order; a flag without a value records ''. */
  opts: Map<string, string[]>
  operands: string[]
}

type Arity = 'none' | 'one' | 'optional' | 'many'

/**
 * Splits argv (argv[0] = binary, argv[1] = subcommand) into options and operands. `arity` says
 * how many values a flag takes; undefined = unknown flag (reported through `problems`).
 */
function scanArgs (argv: string[], arity: (flag: string) => Arity | undefined, problems: string[] = []): Parsed {
  const opts = new Map<string, string[]>()
  const operands: string[] = []
  const add = (flag: string, v: string): void => { opts.set(flag, [...(opts.get(flag) ?? []), v]) }
  for (let i = 2; i < argv.length; i++) {
    const tok = argv[i] as string
    if (tok === '--') {
      operands.push(...argv.slice(i + 1))
      break
    }
    if (!tok.startsWith('-') || tok === '-') {
      operands.push(tok)
      continue
    }
    const eq = tok.startsWith('--') ? tok.indexOf('=') : -1
    const flag = eq > 0 ? tok.slice(0, eq) : tok
    const inline = eq > 0 ? tok.slice(eq + 1) : undefined
    const a = arity(flag)
    if (a === undefined) {
      problems.push(`unknown option ${flag}`)
      continue
    }
    const next = argv[i + 1]
    if (a === 'none') {
      if (inline !== undefined) problems.push(`${flag} takes no value, got ${tok}`)
      add(flag, '')
    } else if (inline !== undefined) {
      add(flag, inline)
    } else if (a === 'one') {
      if (next === undefined) problems.push(`${flag} needs a value`)
      else { add(flag, next); i++ }
    } else if (a === 'optional') {
      if (next !== undefined && !next.startsWith('-')) { add(flag, next); i++ } else add(flag, '')
    } else {
      let n = 0
      while (argv[i + 1] !== undefined && !(argv[i + 1] as string).startsWith('-')) { add(flag, argv[i + 1] as string); i++; n++ }
      if (n === 0) problems.push(`${flag} needs a value`)
    }
  }
  return { sub: argv[1] ?? '', opts, operands }
}

/** Without the CLI: a flag followed by a non-flag token takes it as its value. */
function scanLoosely (argv: string[]): Parsed {
  const flagsWithValue = new Set<string>()
  for (let i = 2; i < argv.length; i++) {
    const tok = argv[i] as string
    const next = argv[i + 1]
    if (tok.startsWith('-') && !tok.includes('=') && next !== undefined && !next.startsWith('-')) flagsWithValue.add(tok)
  }
  return scanArgs(argv, f => flagsWithValue.has(f) ? 'one' : 'none')
}

function optionArity (o: Option): Arity {
  if (o.variadic) return 'many'
  if (o.required) return 'one'
  if (o.optional) return 'optional'
  return 'none'
}

/** Everything wrong with one command line according to the real CLI; [] if it is fine. */
function checkAgainstCli (program: Command, inv: Invocation): string[] {
  const at = `${inv.where}: \`${inv.argv.join(' ')}\``
  const name = inv.argv[1]
  if (name == null) return [`${at}: no subcommand`]
  const sub = program.commands.find(c => c.name() === name || c.aliases().includes(name))
  if (sub == null) {
    return [`${at}: astrad has no '${name}' subcommand (it has: ${program.commands.map(c => c.name()).join(', ') || 'none'})`]
  }
  const byFlag = new Map<string, Option>()
  for (const o of sub.options) {
    if (o.long != null) byFlag.set(o.long, o)
    if (o.short != null) byFlag.set(o.short, o)
  }
  const problems: string[] = []
  const parsed = scanArgs(inv.argv, f => {
    const o = byFlag.get(f)
    return o == null ? undefined : optionArity(o)
  }, problems)
  const known = sub.options.map(o => o.long).filter(l => l != null).join(' ')
  const out = problems.map(p => `${at}: ${p} (astrad ${name} has: ${known})`)
  if (sub.registeredArguments.length === 0 && parsed.operands.length > 0) {
    out.push(`${at}: astrad ${name} takes no arguments, got ${parsed.operands.join(' ')}`)
  }
  out.push(...checkValues(at, parsed))
  return out
}

/** Values the config parsers reject; placeholders ($(VAR), ${VAR}, %S) are left to the runtime. */
function checkValues (at: string, parsed: Parsed): string[] {
  const out: string[] = []
  for (const [flag, values] of parsed.opts) {
    const parse = VALUE_PARSERS[flag]
    if (parse == null) continue
    for (const v of values) {
      if (/\$\(|\$\{|\$[A-Za-z_]|%[a-zA-Z%]/.test(v)) continue
      try {
        parse(v)
      } catch (err) {
        out.push(`${at}: ${flag} ${v}: ${(err as Error).message}`)
      }
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Helpers for the consistency checks

function envNames (c: Obj): Set<string> {
  return new Set(arr(c.env).map(e => String(obj(e).name)))
}
function envEntry (c: Obj, name: string): Obj | undefined {
  return arr(c.env).map(obj).find(x => x.name === name)
}

/** host:port the daemon or a client uses: --rpc, else a literal ASTRAD_RPC, else the default. */
function rpcOf (parsed: Parsed, c: Obj | undefined): { host: string, port: number } {
  const flag = parsed.opts.get('--rpc')?.at(-1)
  const env = c == null ? undefined : str(envEntry(c, 'ASTRAD_RPC')?.value)
  return parseHostPort(flag ?? env ?? `127.0.0.1:${DEFAULT_RPC_PORT}`)
}

function tcpPort (multiaddr: string): number | undefined {
  const m = /\/tcp\/(\d+)/.exec(multiaddr)
  return m == null ? undefined : Number(m[1])
}

function containerPort (c: Obj, port: unknown): number | undefined {
  if (typeof port === 'number') return port
  const p = arr(c.ports).map(obj).find(x => x.name === port)
  return typeof p?.containerPort === 'number' ? p.containerPort : undefined
}

function selects (selector: Obj, labels: Obj): boolean {
  const entries = Object.entries(selector)
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v)
}

/** The `astrad start` of a pod (the containers are the parsed documents' own objects). */
function startOf (pod: Pod, invocations: Invocation[]): { inv: Invocation, parsed: Parsed } | undefined {
  const containers = containersOf(pod)
  const inv = invocations.find(i => i.source === 'main' && i.container != null && containers.includes(i.container) && i.argv[1] === 'start')
  return inv == null ? undefined : { inv, parsed: scanLoosely(inv.argv) }
}

function rolesOf (parsed: Parsed, c: Obj | undefined): string[] {
  const flag = parsed.opts.get('--role')?.at(-1) ?? (c == null ? undefined : str(envEntry(c, 'ASTRAD_ROLE')?.value))
  return flag == null ? ['node', 'resource', 'scheduler'] : parseRoles(flag)
}

// ---------------------------------------------------------------------------------------------
// Tests

test('every Kubernetes manifest parses and is a named object', () => {
  const manifests = loadManifests()
  assert.ok(manifests.length > 0, 'deploy/k8s holds no manifests')
  const ns = defaultNamespace()
  const seen = new Set<string>()
  for (const m of manifests) {
    const meta = obj(m.doc.metadata)
    assert.ok(typeof m.doc.apiVersion === 'string' && m.doc.apiVersion !== '', `${m.file} document ${m.index}: apiVersion missing`)
    assert.ok(typeof m.doc.kind === 'string' && m.doc.kind !== '', `${m.file} document ${m.index}: kind missing`)
    assert.ok(typeof meta.name === 'string' && meta.name !== '', `${m.file} document ${m.index}: metadata.name missing`)
    if (m.doc.kind !== 'Namespace' && meta.namespace != null && ns != null) {
      assert.equal(meta.namespace, ns, `${label(m)}: namespace differs from kustomization.yaml's`)
    }
    const key = `${String(m.doc.kind)}/${String(meta.namespace ?? ns)}/${String(meta.name)}`
    assert.ok(!seen.has(key), `${label(m)} is defined twice`)
    seen.add(key)
  }
})

test('kustomization.yaml lists exactly the manifests in deploy/k8s', () => {
  const [k, ...rest] = loadYaml(KUSTOMIZATION)
  assert.equal(rest.length, 0, 'kustomization.yaml must be one document')
  assert.equal(obj(k).kind, 'Kustomization')
  const listed = strings(obj(k).resources)
  assert.equal(new Set(listed).size, listed.length, 'kustomization.yaml lists a file twice')
  const present = manifestFiles().filter(f => f !== KUSTOMIZATION)
  assert.deepEqual([...listed].sort(), present, 'kustomization.yaml resources vs files in deploy/k8s')
  const ns = str(obj(k).namespace)
  if (ns != null) {
    const namespaces = loadManifests().filter(m => m.doc.kind === 'Namespace').map(m => obj(m.doc.metadata).name)
    assert.ok(namespaces.includes(ns), `kustomization.yaml namespace ${ns} is not created by any manifest`)
  }
})

test('each role runs as documented: node DaemonSet, resource StatefulSet, scheduler Deployment', () => {
  const manifests = loadManifests()
  const invocations = k8sInvocations(manifests)
  const kindsByRole = new Map<string, string[]>()
  for (const m of manifests) {
    const pod = podOf(m)
    if (pod == null) continue
    const start = startOf(pod, invocations)
    if (start == null) continue
    for (const r of rolesOf(start.parsed, start.inv.container)) kindsByRole.set(r, [...(kindsByRole.get(r) ?? []), pod.kind])
  }
  assert.deepEqual(kindsByRole.get('node'), ['DaemonSet'])
  assert.deepEqual(kindsByRole.get('resource'), ['StatefulSet'])
  assert.deepEqual(kindsByRole.get('scheduler'), ['Deployment'])
})

test('the node DaemonSet drains in preStop and is probed', () => {
  const manifests = loadManifests()
  const daemonSets = manifests.filter(m => m.doc.kind === 'DaemonSet')
  assert.equal(daemonSets.length, 1, 'expected one DaemonSet (the node role)')
  const pod = podOf(daemonSets[0] as Manifest) as Pod
  assert.notEqual(pod.spec.hostNetwork, true, 'the node DaemonSet must stay on the pod network')
  const grace = pod.spec.terminationGracePeriodSeconds
  assert.ok(typeof grace === 'number' && grace >= 20 && grace <= 300, `terminationGracePeriodSeconds must leave time to drain (~30 s), got ${String(grace)}`)
  const astrads = containersOf(pod).filter(c => astradCalls([...strings(c.command), ...strings(c.args)]).length > 0)
  assert.equal(astrads.length, 1, 'expected one astrad container in the DaemonSet')
  const c = astrads[0] as Obj
  const preStop = strings(obj(obj(obj(c.lifecycle).preStop).exec).command)
  assert.equal(basename(preStop[0]), 'astrad', `preStop must exec astrad, got ${JSON.stringify(preStop)}`)
  assert.ok(preStop[0]?.startsWith('/'), 'preStop must name astrad by absolute path (exec form, no shell)')
  assert.equal(preStop[1], 'drain', `preStop must run \`astrad drain\`, got ${JSON.stringify(preStop)}`)
  for (const p of ['livenessProbe', 'readinessProbe']) assert.ok(isObj(c[p]), `the node container has no ${p}`)
})

test('every astrad command line in deploy/ uses real subcommands and options', () => {
  const program = createCli({ stdout: () => {}, stderr: () => {} })
  const invocations = [
    ...k8sInvocations(loadManifests()),
    ...unitInvocations(parseUnit(fs.readFileSync(UNIT_FILE, 'utf8')))
  ]
  // The manifests must contain the command lines this test is about.
  const subs = new Set(invocations.map(i => i.argv[1]))
  for (const s of ['start', 'status', 'drain']) assert.ok(subs.has(s), `no \`astrad ${s}\` found in deploy/`)
  assert.ok(invocations.some(i => i.where.includes('astrad.service')), 'no astrad command in the systemd unit')
  const problems = invocations.flatMap(inv => checkAgainstCli(program, inv))
  assert.deepEqual(problems, [])
})

test('Kubernetes env: $(VAR) references resolve and ASTRAD_* names exist', () => {
  const problems: string[] = []
  for (const m of loadManifests()) {
    const pod = podOf(m)
    if (pod == null) continue
    for (const c of containersOf(pod)) {
      const where = `${pod.where} container ${String(c.name)}`
      const names = envNames(c)
      const texts = [...strings(c.command), ...strings(c.args)]
      for (const t of texts) {
        for (const ref of t.replaceAll('$$', '').matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          if (!names.has(ref[1] as string)) problems.push(`${where}: $(${ref[1] as string}) is not in env, Kubernetes would pass it literally`)
        }
      }
      for (const n of names) {
        if (n.startsWith('ASTRAD_') && !ASTRAD_ENV.has(n)) problems.push(`${where}: ${n} is not an astrad setting`)
      }
      const token = envEntry(c, 'ASTRAD_RPC_TOKEN')
      if (token != null && token.value != null) problems.push(`${where}: ASTRAD_RPC_TOKEN must come from a Secret, not a literal`)
    }
  }
  assert.deepEqual(problems, [])
})

test('Kubernetes manifests agree on the RPC port, the P2P port, the bootstrap service and paths', () => {
  const manifests = loadManifests()
  const invocations = k8sInvocations(manifests)
  const ns = defaultNamespace()
  const problems: string[] = []
  const rpcPorts = new Set<number>()
  const p2pPorts = new Map<number, string[]>()
  const joinSecrets = new Set<string>()
  const p2p = (port: number | undefined, where: string): void => {
    if (port == null) { problems.push(`${where}: no TCP port`); return }
    p2pPorts.set(port, [...(p2pPorts.get(port) ?? []), where])
  }
  const services = manifests.filter(m => m.doc.kind === 'Service')
  const pods = manifests.map(podOf).filter(p => p != null)
  let starts = 0

  for (const pod of pods) {
    const start = startOf(pod, invocations)
    if (start == null) continue
    starts++
    const c = start.inv.container as Obj
    const where = `${pod.where} container ${String(c.name)}`
    const rpc = rpcOf(start.parsed, c)
    rpcPorts.add(rpc.port)

    // A non-loopback RPC port needs a token, and that token must not be written in the manifest.
    if (!isLoopbackHost(rpc.host)) {
      const tokenFlag = start.parsed.opts.get('--rpc-token')?.at(-1)
      const tokenEnv = envEntry(c, 'ASTRAD_RPC_TOKEN')
      if (tokenFlag == null && tokenEnv == null) problems.push(`${where}: RPC on ${rpc.host} needs --rpc-token or ASTRAD_RPC_TOKEN`)
      if (tokenFlag != null && !tokenFlag.startsWith('$(')) problems.push(`${where}: --rpc-token is written in the manifest; take it from a Secret`)
    }

    // Probes and hooks in the same container talk to the daemon's RPC port.
    for (const inv of invocations.filter(i => i.container === c && i !== start.inv)) {
      const target = rpcOf(scanLoosely(inv.argv), c)
      if (target.port !== rpc.port) problems.push(`${inv.where}: talks to RPC port ${target.port}, the daemon listens on ${rpc.port}`)
      if (!isLoopbackHost(target.host) && target.host !== rpc.host) problems.push(`${inv.where}: talks to ${target.host}, the daemon binds ${rpc.host}`)
    }
    for (const p of PROBES) {
      const probe = obj(c[p])
      for (const kind of ['httpGet', 'tcpSocket', 'grpc']) {
        if (!isObj(probe[kind])) continue
        const port = containerPort(c, obj(probe[kind]).port)
        if (port !== rpc.port) problems.push(`${where} ${p}: ${kind} on port ${String(port)}, the RPC port is ${rpc.port}`)
        if (isLoopbackHost(rpc.host)) problems.push(`${where} ${p}: ${kind} cannot reach an RPC port bound to ${rpc.host}; use an exec probe`)
      }
    }

    // P2P: listen addresses and their declared container ports.
    const listen = start.parsed.opts.get('--listen') ?? (str(envEntry(c, 'ASTRAD_LISTEN')?.value)?.split(',') ?? [])
    if (listen.length === 0) problems.push(`${where}: no --listen; the P2P port is not pinned`)
    const declared = arr(c.ports).map(obj).filter(p => (p.protocol ?? 'TCP') === 'TCP').map(p => Number(p.containerPort))
    for (const l of listen) {
      const port = tcpPort(parseMultiaddr(l))
      p2p(port, `${where} --listen`)
      if (port != null && !declared.includes(port)) problems.push(`${where}: listens on ${port} but declares no containerPort for it`)
      if (port === rpc.port) problems.push(`${where}: P2P and RPC share port ${port}`)
    }
    for (const p of arr(c.ports).map(obj).filter(p => p.name === 'p2p')) p2p(Number(p.containerPort), `${where} containerPort p2p`)

    // Bootstrap: a Service defined here (SERVICE[.NAMESPACE[.svc…]]) or a StatefulSet pod behind
    // its governing Service (POD.SERVICE.NAMESPACE.svc…), reaching resource pods on the P2P port.
    const ordinals = new Map<Manifest, Set<number>>()
    for (const b of start.parsed.opts.get('--bootstrap') ?? []) {
      const ma = parseBootstrap(b)
      const m = /^\/(?:dns|dns4|dns6|ip4|ip6)\/([^/]+)\/tcp\/(\d+)/.exec(ma)
      if (m == null) { problems.push(`${where}: --bootstrap ${b} has no host/TCP port`); continue }
      p2p(Number(m[2]), `${where} --bootstrap`)
      const labels = (m[1] as string).split('.')
      if (/^[\d:]/.test(m[1] as string) || labels.includes('')) continue // an IP literal: nothing to match
      const podLevel = labels[3] === 'svc'
      const [podName, svcName, svcNs] = podLevel
        ? [labels[0], labels[1], labels[2]]
        : [undefined, labels[0], labels[2] === 'svc' || labels.length === 2 ? labels[1] : pod.namespace ?? ns]
      const inNs = (x: Manifest): boolean => (str(obj(x.doc.metadata).namespace) ?? ns) === svcNs
      const svc = services.find(s => obj(s.doc.metadata).name === svcName && inNs(s))
      if (svc == null) { problems.push(`${where}: --bootstrap ${b}: no Service ${String(svcName)} in namespace ${String(svcNs)}`); continue }
      const spec = obj(svc.doc.spec)
      const resources = pods.filter(p => selects(obj(spec.selector), p.labels))
        .filter(p => { const s = startOf(p, invocations); return s != null && rolesOf(s.parsed, s.inv.container).includes('resource') })
      if (resources.length === 0) problems.push(`${where}: --bootstrap ${b}: Service ${String(svcName)} selects no resource pods`)
      if (!arr(spec.ports).map(obj).some(p => p.port === Number(m[2]))) problems.push(`${where}: --bootstrap ${b}: Service ${String(svcName)} has no port ${m[2] as string}`)
      if (podLevel) {
        // Per-pod names exist only for StatefulSet pods, NAME-ORDINAL with ORDINAL < replicas.
        const sts = manifests.find(x => x.doc.kind === 'StatefulSet' && obj(x.doc.spec).serviceName === svcName && inNs(x) &&
          String(podName).startsWith(`${String(obj(x.doc.metadata).name)}-`))
        const ordinal = sts == null ? NaN : Number(String(podName).slice(String(obj(sts.doc.metadata).name).length + 1))
        const replicas = Number(obj(sts?.doc.spec).replicas ?? 1)
        if (sts == null || !Number.isInteger(ordinal) || ordinal < 0 || ordinal >= replicas) {
          problems.push(`${where}: --bootstrap ${b}: ${String(podName)} is not a pod of a StatefulSet governed by ${String(svcName)}`)
        } else {
          ordinals.set(sts, (ordinals.get(sts) ?? new Set()).add(ordinal))
        }
      }
    }
    // Bootstrapping by pod names must name every replica, or scaling silently leaves some out.
    for (const [sts, seen] of ordinals) {
      const replicas = Number(obj(sts.doc.spec).replicas ?? 1)
      const missing = Array.from({ length: replicas }, (_, i) => i).filter(i => !seen.has(i))
      if (missing.length > 0) problems.push(`${where}: --bootstrap names ${label(sts)} pods but not ordinals ${missing.join(', ')} (replicas: ${replicas})`)
    }

    // Paths: the data dir is a mounted volume (the root file system is read-only).
    const mounts = arr(c.volumeMounts).map(obj)
    const volumes = arr(pod.spec.volumes).map(obj)
    const mountFor = (file: string): Obj | undefined => mounts
      .filter(mt => file === mt.mountPath || file.startsWith(`${String(mt.mountPath)}/`))
      .sort((a, b) => String(b.mountPath).length - String(a.mountPath).length)[0]
    const dataDir = start.parsed.opts.get('--data-dir')?.at(-1)
    if (dataDir == null) problems.push(`${where}: no --data-dir; the default under ~ is not a volume`)
    else {
      const mt = mountFor(dataDir)
      if (mt == null) problems.push(`${where}: --data-dir ${dataDir} is not on a mounted volume`)
      else if (mt.readOnly === true) problems.push(`${where}: --data-dir ${dataDir} is mounted read-only`)
    }

    // Secure by default (docs/security.md): each pod joins with a join token from a Secret of
    // its role group (astrad-join-<roles>), as env or as a file in a Secret volume. The cluster
    // key stays on the admin machine, and nothing runs --insecure.
    const roles = start.parsed.opts.get('--role')?.at(-1) ?? str(envEntry(c, 'ASTRAD_ROLE')?.value) ?? 'node,resource,scheduler'
    const wantSecret = `astrad-join-${roles.split(',').join('-')}`
    if (start.parsed.opts.has('--insecure') || envEntry(c, 'ASTRAD_INSECURE') != null) problems.push(`${where}: runs --insecure; anyone reaching port 7071 could join`)
    if (start.parsed.opts.has('--cluster-key') || envEntry(c, 'ASTRAD_CLUSTER_KEY') != null) problems.push(`${where}: holds the cluster key; pods join with a token, the key stays with the operators`)
    const tokenFlag = start.parsed.opts.get('--join-token')?.at(-1)
    const tokenEnv = envEntry(c, 'ASTRAD_JOIN_TOKEN')
    const secretRefs: string[] = []
    if (tokenFlag != null) {
      const file = tokenFlag.startsWith('@') ? tokenFlag.slice(1) : undefined
      const mt = file == null ? undefined : mountFor(file)
      const vol = volumes.find(v => v.name === mt?.name)
      if (file == null) problems.push(`${where}: --join-token is written in the manifest; take it from a Secret (--join-token @FILE or env ASTRAD_JOIN_TOKEN)`)
      else if (mt == null || vol == null || !isObj(vol.secret)) problems.push(`${where}: --join-token ${tokenFlag} is not in a Secret volume`)
      else {
        const secret = obj(vol.secret)
        const rel = path.posix.relative(String(mt.mountPath), file)
        const items = arr(secret.items).map(obj)
        if (items.length > 0 && !items.some(i => i.path === rel)) problems.push(`${where}: Secret volume ${String(vol.name)} has no item ${rel}`)
        if (secret.optional === true) problems.push(`${where}: the join token's Secret volume is optional; a pod without it must not start`)
        secretRefs.push(String(secret.secretName))
      }
    } else if (tokenEnv != null) {
      const ref = obj(obj(tokenEnv.valueFrom).secretKeyRef)
      if (tokenEnv.value != null || ref.name == null) problems.push(`${where}: ASTRAD_JOIN_TOKEN must come from a Secret (valueFrom.secretKeyRef), not a literal`)
      else {
        if (ref.optional === true) problems.push(`${where}: ASTRAD_JOIN_TOKEN's secretKeyRef is optional; a pod without it must not start`)
        secretRefs.push(String(ref.name))
      }
    } else problems.push(`${where}: no join token (env ASTRAD_JOIN_TOKEN from a Secret, or --join-token @FILE); with --bootstrap the daemon refuses to start without one`)
    for (const name of secretRefs) {
      if (name !== wantSecret) problems.push(`${where}: --role ${roles} takes its join token from Secret ${name}; expected ${wantSecret} (one Secret per role group)`)
      joinSecrets.add(name)
    }
  }

  // Every join-token Secret the pods read is created by a documented command.
  const docs = fs.readdirSync(K8S_DIR).map(f => fs.readFileSync(path.join(K8S_DIR, f), 'utf8')).join('\n')
  for (const name of joinSecrets) {
    const role = name.slice('astrad-join-'.length)
    const made = docs.includes(`create secret generic ${name} `) || (docs.includes('create secret generic astrad-join-$role') && new RegExp(`for role in [^;]*\\b${role}\\b`).test(docs))
    if (!made) problems.push(`Secret ${name}: no \`kubectl create secret generic ${name}\` in deploy/k8s says how to make it`)
  }
  if (!/astrad cluster token --cluster-key \S+ --roles/.test(docs)) problems.push('deploy/k8s does not show `astrad cluster token` making the tokens')

  assert.ok(starts >= 3, `expected an astrad start in at least 3 workloads, found ${starts}`)
  assert.equal(rpcPorts.size, 1, `RPC ports differ between workloads: ${[...rpcPorts].join(', ')}`)

  // Services in front of astrad pods expose the P2P port (or the RPC port, if it is not loopback).
  for (const svc of services) {
    const spec = obj(svc.doc.spec)
    const selected = pods.filter(p => selects(obj(spec.selector), p.labels))
    for (const sp of arr(spec.ports).map(obj)) {
      for (const p of selected) {
        const start = startOf(p, invocations)
        if (start == null) continue
        const c = start.inv.container as Obj
        const rpc = rpcOf(start.parsed, c)
        const target = containerPort(c, sp.targetPort ?? sp.port)
        if (target == null) {
          problems.push(`${label(svc)}: targetPort ${String(sp.targetPort ?? sp.port)} is not a port of ${p.where}`)
        } else if (target === rpc.port) {
          if (isLoopbackHost(rpc.host)) problems.push(`${label(svc)}: exposes the RPC port of ${p.where}, which binds ${rpc.host}`)
        } else {
          p2p(Number(sp.port), `${label(svc)} port`)
          p2p(target, `${label(svc)} targetPort`)
        }
      }
    }
    if (obj(svc.doc.metadata).name != null) {
      for (const m of manifests.filter(x => x.doc.kind === 'StatefulSet' && obj(x.doc.spec).serviceName === obj(svc.doc.metadata).name)) {
        if (spec.clusterIP !== 'None') problems.push(`${label(svc)}: governs ${label(m)} but is not headless`)
      }
    }
  }
  for (const m of manifests.filter(x => x.doc.kind === 'StatefulSet')) {
    const name = obj(m.doc.spec).serviceName
    if (!services.some(s => obj(s.doc.metadata).name === name)) problems.push(`${label(m)}: serviceName ${String(name)} is not defined`)
  }

  if (p2pPorts.size !== 1) problems.push(`P2P ports differ: ${[...p2pPorts].map(([p, w]) => `${p} (${w.join('; ')})`).join(' vs ')}`)
  assert.deepEqual(problems, [])
})

test('the systemd unit runs `astrad start` as a hardened, gracefully stopping service', () => {
  const entries = parseUnit(fs.readFileSync(UNIT_FILE, 'utf8'))
  const starts = entries.filter(e => e.section === 'Service' && e.key === 'ExecStart')
  assert.equal(starts.length, 1, 'exactly one ExecStart=')
  const [argv] = unitCommands((starts[0] as UnitEntry).value)
  assert.deepEqual(argv?.slice(0, 2), ['/usr/local/bin/astrad', 'start'])
  const v = (key: string, section = 'Service'): string | undefined => unitValue(entries, section, key)

  assert.equal(v('KillSignal'), 'SIGTERM', 'SIGTERM is what drains the daemon')
  const stop = v('TimeoutStopSec')
  assert.ok(stop != null && timeSpanSeconds(stop) >= 30, `TimeoutStopSec must leave ~30 s to drain, got ${String(stop)}`)
  assert.equal(v('Restart'), 'on-failure')
  assert.equal(v('EnvironmentFile'), '-/etc/astrad/astrad.env')
  assert.equal(v('StateDirectory'), 'astrad')
  assert.ok(v('DynamicUser') === 'yes' || v('User') === 'astrad', 'runs as a dedicated user')
  const hardening: Array<[string, string]> = [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes']]
  for (const [k, want] of hardening) assert.equal(v(k), want, `${k}=${want}`)
  const nofile = v('LimitNOFILE')
  assert.ok(nofile != null && (nofile === 'infinity' || Number(nofile.split(':').at(-1)) >= 65536), `LimitNOFILE must be high, got ${String(nofile)}`)
  // V8 compiles code at run time; W^X enforcement kills Node.
  assert.notEqual(v('MemoryDenyWriteExecute'), 'yes', 'MemoryDenyWriteExecute breaks the V8 JIT')
  // The data dir must be the StateDirectory: ProtectSystem=strict makes everything else read-only.
  const dataDir = scanLoosely(argv as string[]).opts.get('--data-dir')?.at(-1)
  if (dataDir != null) assert.ok(['%S/astrad', '/var/lib/astrad', '${STATE_DIRECTORY}', '$STATE_DIRECTORY'].includes(dataDir), `--data-dir ${dataDir} is not the StateDirectory`)
  for (const e of entries.filter(e => e.key === 'Environment')) {
    for (const w of shellWords(e.value)) {
      const name = w.slice(0, w.indexOf('='))
      if (name.startsWith('ASTRAD_')) assert.ok(ASTRAD_ENV.has(name), `astrad.service:${e.line}: ${name} is not an astrad setting`)
    }
  }
})
