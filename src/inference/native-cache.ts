import { createHash, randomBytes } from 'node:crypto'
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { CACHE_SUBDIR, NATIVE_DIR_ENV, NATIVE_HASH_CHARS, PROVIDER_LIBRARY, PROVIDERS_DIR_ENV } from './constants.ts'
import { NativeRuntimeError } from './errors.ts'

/**
 * Single executable support: onnxruntime's two native files ship inside the executable (SEA
 * assets) and must be real files to be dlopen'ed. They are written once per content to
 * `<base>/onnxruntime-<hash>/` and reused by every later start: written into a temporary
 * directory, fsynced, then renamed into place, so a crash or a second astrad starting at the
 * same moment never leaves a half-written library that looks complete. Nothing here loads them.
 */

export interface NativeFile {
  /** File name in the directory (the binding finds the library by its soname beside it). */
  name: string
  bytes: Uint8Array
}

export interface CacheBase {
  dir: string
  /** Chosen by the user (ASTRAD_NATIVE_DIR): a failure there is an error, not a fallback. */
  explicit: boolean
}

/** SHA-256 over every file's name, length and bytes, in order. */
export function contentHash (files: readonly NativeFile[]): string {
  const hash = createHash('sha256')
  for (const f of files) hash.update(`${f.name}\0${f.bytes.byteLength}\0`).update(f.bytes)
  return hash.digest('hex')
}

export function nativeDirName (hash: string): string {
  return `onnxruntime-${hash.slice(0, NATIVE_HASH_CHARS)}`
}

/**
 * Where the files may go, best first: $ASTRAD_NATIVE_DIR alone when set; otherwise
 * $XDG_CACHE_HOME/astrad, ~/.cache/astrad, then <tmpdir>/astrad-<uid> for a missing or
 * read-only home (a container with no HOME, a service user).
 */
export function cacheBases (env: NodeJS.ProcessEnv, home: string | undefined, tmp: string, uid: number): CacheBase[] {
  const explicit = env[NATIVE_DIR_ENV]
  if (explicit !== undefined && explicit !== '') return [{ dir: resolve(explicit), explicit: true }]
  const dirs: string[] = []
  const xdg = env.XDG_CACHE_HOME
  if (xdg !== undefined && isAbsolute(xdg)) dirs.push(join(xdg, CACHE_SUBDIR))
  if (home !== undefined && isAbsolute(home)) dirs.push(join(home, '.cache', CACHE_SUBDIR))
  dirs.push(join(tmp, `${CACHE_SUBDIR}-${uid}`))
  return [...new Set(dirs)].map(dir => ({ dir, explicit: false }))
}

/**
 * Mount options of the mount that holds `path` (an absolute, symlink-free path), from the text of
 * /proc/self/mountinfo: the longest mount point that contains the path; the last listed wins
 * (a later mount over the same point hides the earlier one). Undefined if none matches.
 */
export function mountOptions (path: string, mountinfo: string): string[] | undefined {
  let best: { length: number, options: string[] } | undefined
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    const fields = line.split(' ')
    if (fields.length < 6) continue
    const point = unescapeMountField(fields[4]!)
    const inside = point === '/' || path === point || path.startsWith(`${point}/`)
    if (!inside) continue
    if (best === undefined || point.length >= best.length) best = { length: point.length, options: fields[5]!.split(',') }
  }
  return best?.options
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountField (field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)))
}

async function isNoexec (dir: string): Promise<boolean> {
  let mountinfo: string
  try {
    mountinfo = await readFile('/proc/self/mountinfo', 'utf8')
  } catch {
    return false // not Linux /proc: dlopen will tell
  }
  return mountOptions(dir, mountinfo)?.includes('noexec') ?? false
}

/**
 * A directory whose files get executed must be ours (or root's) and writable by no one else:
 * otherwise another user could plant a library that then runs as us (think /tmp/astrad-1000
 * created in advance by someone else).
 */
async function checkPrivate (dir: string): Promise<void> {
  const st = await lstat(dir)
  if (!st.isDirectory()) throw new Error('not a directory')
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) throw new Error(`owned by uid ${st.uid}, not by this user (${uid}) or root`)
  if ((st.mode & 0o022) !== 0) throw new Error(`writable by group or others (mode ${(st.mode & 0o777).toString(8)})`)
}

async function isComplete (dir: string, files: readonly NativeFile[]): Promise<boolean> {
  for (const f of files) {
    const st = await stat(join(dir, f.name)).catch(() => undefined)
    if (st === undefined || !st.isFile() || st.size !== f.bytes.byteLength) return false
  }
  return true
}

function errorCode (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code
}

/** Writes the files into a fresh temporary directory beside `target`, then renames it into place. */
async function writeAtomically (base: string, target: string, name: string, files: readonly NativeFile[]): Promise<void> {
  const tmp = await mkdtemp(join(base, `.${name}.tmp-`))
  try {
    // flush: fsync each file before the rename publishes it (else a crash could leave a renamed
    // directory of empty files behind).
    for (const f of files) await writeFile(join(tmp, f.name), f.bytes, { mode: 0o755, flush: true })
    for (let attempt = 1; ; attempt++) {
      try {
        await rename(tmp, target)
        return
      } catch (err) {
        if ((errorCode(err) !== 'ENOTEMPTY' && errorCode(err) !== 'EEXIST') || attempt === 3) throw err
      }
      // Another process finished first (fine), or a broken directory from an older crash sits
      // there: move it aside and try again with ours.
      if (await isComplete(target, files)) return
      const trash = join(base, `.${name}.trash-${randomBytes(4).toString('hex')}`)
      await rename(target, trash).catch((err: unknown) => { if (errorCode(err) !== 'ENOENT') throw err })
      await rm(trash, { recursive: true, force: true })
    }
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

/**
 * Makes sure `<base>/<name>/` holds the files, trying each base in turn (skipping ones that are
 * not private, are mounted noexec, or cannot be written), and returns that directory.
 */
export async function installNativeFiles (files: readonly NativeFile[], name: string, bases: readonly CacheBase[]): Promise<string> {
  const reasons: string[] = []
  for (const base of bases) {
    try {
      await mkdir(base.dir, { recursive: true, mode: 0o700 })
      const real = await realpath(base.dir)
      await checkPrivate(real)
      if (await isNoexec(real)) throw new Error('on a filesystem mounted noexec (libraries there cannot be loaded)')
      const target = join(real, name)
      if (!(await isComplete(target, files))) await writeAtomically(real, target, name, files)
      return target
    } catch (err) {
      const reason = `${base.dir}: ${err instanceof Error ? err.message : String(err)}`
      if (base.explicit) throw new NativeRuntimeError(`${NATIVE_DIR_ENV}=${base.dir} cannot hold onnxruntime's native files: ${reason}`, { cause: err })
      reasons.push(reason)
    }
  }
  throw new NativeRuntimeError(`no directory can hold onnxruntime's native files (set ${NATIVE_DIR_ENV} to a private, executable directory): ${reasons.join('; ')}`)
}

/**
 * Links the provider libraries an operator installed in `from` (ASTRAD_ORT_PROVIDERS_DIR) into
 * `dir`, beside libonnxruntime.so.1, where onnxruntime looks for them. A link already there is
 * replaced when it points elsewhere (atomically: a new link renamed over it); a regular file of
 * that name is left alone. Returns the names linked. A `from` that cannot be read is an error
 * naming the variable.
 */
export async function linkProviderLibraries (dir: string, from: string): Promise<string[]> {
  const source = resolve(from)
  let names: string[]
  try {
    names = (await readdir(source)).filter(n => PROVIDER_LIBRARY.test(n)).sort()
  } catch (err) {
    throw new NativeRuntimeError(`${PROVIDERS_DIR_ENV}=${from} cannot be read: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const linked: string[] = []
  for (const name of names) {
    const target = join(source, name)
    const at = join(dir, name)
    const existing = await lstat(at).catch(() => undefined)
    if (existing != null && !existing.isSymbolicLink()) continue
    if (existing != null && await readlink(at) === target) { linked.push(name); continue }
    const tmp = `${at}.${randomBytes(4).toString('hex')}.tmp`
    await symlink(target, tmp)
    await rename(tmp, at)
    linked.push(name)
  }
  return linked
}
