import * as sea from 'node:sea'
import vm from 'node:vm'
import type * as RunDaemon from './run-daemon.ts'
import * as errors from '../util/errors.ts'

/**
 * Inside the single executable, `astrad start` runs the daemon from its own bundle, a SEA asset:
 * scripts/build.ts bundles src/cli/run-daemon.ts (libp2p, the cluster log, zod schemas, pino,
 * prom-client …: 3.7 MB of 3.9) apart, with a V8 code cache made by the same Node binary, and
 * points start.ts's `import('../run-daemon.ts')` at this module. The executable's main script is
 * then the CLI only (0.2 MB), so `--version`, `status` and the other client commands start
 * without compiling the daemon. From sources (bin/astrad, tests) start.ts imports run-daemon.ts.
 */

/** SEA asset key of the daemon bundle and of its V8 code cache (pkg.config.json "assets"). */
export const DAEMON_ASSET = 'cli/daemon.cjs'
export const DAEMON_CACHE_ASSET = 'cli/daemon.cache'
/**
 * The daemon bundle requires src/util/errors.ts by this name (scripts/build.ts) and gets the
 * main script's copy: a ConfigError thrown by the daemon is then a ConfigError to runCli (exit 2).
 */
export const SHARED_ERRORS = 'astrad:util/errors'
/** The parameters of a CommonJS module wrapper, as the daemon bundle expects them. */
export const MODULE_PARAMS = ['exports', 'require', 'module', '__filename', '__dirname']

/** The daemon bundle's code cache, or undefined when absent (a build without it still runs). */
function cachedData (): Buffer | undefined {
  try {
    return Buffer.from(sea.getRawAsset(DAEMON_CACHE_ASSET))
  } catch {
    return undefined
  }
}

function load (): typeof RunDaemon {
  const code = sea.getAsset(DAEMON_ASSET, 'utf8')
  const wrapper = vm.compileFunction(code, MODULE_PARAMS, { filename: DAEMON_ASSET, cachedData: cachedData() })
  const module = { exports: {} as typeof RunDaemon }
  // The main script's own require (built-in modules) and file name (the executable) serve the
  // daemon bundle as they serve the main one.
  const shared = (id: string): unknown => id === SHARED_ERRORS ? errors : require(id)
  wrapper(module.exports, shared, module, __filename, __dirname)
  return module.exports
}

export async function runDaemon (...args: Parameters<typeof RunDaemon.runDaemon>): Promise<void> {
  await load().runDaemon(...args)
}
