import assert from 'node:assert/strict'
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { NativeRuntimeError } from '../../src/inference/errors.ts'
import { cacheBases, contentHash, installNativeFiles, mountOptions, nativeDirName, type NativeFile } from '../../src/inference/native-cache.ts'

// Where the single executable writes onnxruntime's native files, and how (the executable
// itself is exercised in test/integration/inference-sea.test.ts).

const FILES: NativeFile[] = [
  { name: 'onnxruntime_binding.node', bytes: new TextEncoder().encode('binding bytes') },
  { name: 'libonnxruntime.so.1', bytes: new Uint8Array(100_000).fill(7) }
]
const NAME = nativeDirName(contentHash(FILES))

let dir: string
before(async () => { dir = await mkdtemp(join(tmpdir(), 'astrad-native-')) })
after(async () => { await rm(dir, { recursive: true, force: true }) })

describe('native file cache', () => {
  test('the directory name carries a content hash of names and bytes', () => {
    assert.match(NAME, /^onnxruntime-[0-9a-f]{16}$/)
    assert.equal(nativeDirName(contentHash(FILES)), NAME)
    const changed = [FILES[0]!, { ...FILES[1]!, bytes: new Uint8Array(100_000).fill(8) }]
    assert.notEqual(nativeDirName(contentHash(changed)), NAME)
    const renamed = [FILES[0]!, { ...FILES[1]!, name: 'libonnxruntime.so.2' }]
    assert.notEqual(nativeDirName(contentHash(renamed)), NAME)
  })

  test('candidate directories: ASTRAD_NATIVE_DIR alone, else XDG cache, ~/.cache, then tmp', () => {
    assert.deepEqual(cacheBases({ ASTRAD_NATIVE_DIR: '/opt/native', XDG_CACHE_HOME: '/x' }, '/home/u', '/tmp', 1000), [{ dir: '/opt/native', explicit: true }])
    assert.deepEqual(cacheBases({ XDG_CACHE_HOME: '/x' }, '/home/u', '/tmp', 1000).map(b => b.dir), ['/x/astrad', '/home/u/.cache/astrad', '/tmp/astrad-1000'])
    // A relative XDG_CACHE_HOME is invalid per the XDG spec; no home at all is fine.
    assert.deepEqual(cacheBases({ XDG_CACHE_HOME: 'rel' }, undefined, '/tmp', 0).map(b => b.dir), ['/tmp/astrad-0'])
    assert.ok(cacheBases({}, '/home/u', '/tmp', 1).every(b => !b.explicit))
  })

  test('mount options: the longest mount point holding the path, the last mount over a point wins', () => {
    const mountinfo = [
      '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
      '30 22 0:26 / /tmp rw,nosuid,nodev,noexec shared:5 - tmpfs tmpfs rw',
      '31 22 0:27 / /home/me/my\\040cache rw,noexec - tmpfs tmpfs rw',
      '32 30 0:28 / /tmp rw,nosuid - tmpfs tmpfs rw',
      '33 22 0:29 / /tmpfoo rw,noexec - tmpfs tmpfs rw'
    ].join('\n')
    assert.deepEqual(mountOptions('/home/me/.cache/astrad', mountinfo), ['rw', 'relatime'])
    assert.ok(mountOptions('/home/me/my cache/astrad', mountinfo)!.includes('noexec'))
    assert.ok(!mountOptions('/tmp/astrad-0', mountinfo)!.includes('noexec'), 'the later /tmp mount hides the noexec one')
    assert.ok(!mountOptions('/tmpx', mountinfo)!.includes('noexec'), '/tmpfoo does not hold /tmpx')
    assert.equal(mountOptions('/x', ''), undefined)
  })

  test('written once into <base>/onnxruntime-<hash>/, then reused as it is', async () => {
    const base = join(dir, 'once')
    const target = await installNativeFiles(FILES, NAME, [{ dir: base, explicit: false }])
    assert.equal(target, join(base, NAME))
    for (const f of FILES) assert.deepEqual(new Uint8Array(await readFile(join(target, f.name))), f.bytes)
    assert.equal((await stat(base)).mode & 0o777, 0o700)
    const before = (await stat(join(target, FILES[1]!.name))).mtimeMs
    assert.equal(await installNativeFiles(FILES, NAME, [{ dir: base, explicit: false }]), target)
    assert.equal((await stat(join(target, FILES[1]!.name))).mtimeMs, before)
    assert.deepEqual(await readdir(base), [NAME], 'no temporary directory left')
  })

  test('a broken directory (a crash, a truncated file) is replaced', async () => {
    const base = join(dir, 'broken')
    await mkdir(join(base, NAME), { recursive: true, mode: 0o700 })
    await chmod(base, 0o700)
    await writeFile(join(base, NAME, FILES[1]!.name), 'truncated')
    const target = await installNativeFiles(FILES, NAME, [{ dir: base, explicit: false }])
    assert.equal((await stat(join(target, FILES[1]!.name))).size, FILES[1]!.bytes.byteLength)
    assert.deepEqual(await readdir(base), [NAME])
  })

  test('several processes installing at once all end with the same complete directory', async () => {
    const base = join(dir, 'race')
    const targets = await Promise.all(Array.from({ length: 6 }, async () => installNativeFiles(FILES, NAME, [{ dir: base, explicit: false }])))
    assert.ok(targets.every(t => t === join(base, NAME)))
    assert.deepEqual(await readdir(base), [NAME])
    assert.equal((await stat(join(base, NAME, FILES[1]!.name))).size, FILES[1]!.bytes.byteLength)
  })

  test('a base others can write, or one that cannot be created, is skipped for the next', async () => {
    const open = join(dir, 'open')
    await mkdir(open)
    await chmod(open, 0o777)
    const blocked = join(dir, 'a-file')
    await writeFile(blocked, '')
    const good = join(dir, 'good')
    const target = await installNativeFiles(FILES, NAME, [
      { dir: open, explicit: false },
      { dir: join(blocked, 'cache'), explicit: false },
      { dir: good, explicit: false }
    ])
    assert.equal(target, join(good, NAME))
    assert.deepEqual(await readdir(open), [], 'nothing written where others could tamper with it')
  })

  test('an unusable ASTRAD_NATIVE_DIR, or no usable base at all, is a NativeRuntimeError', async () => {
    const open = join(dir, 'open-explicit')
    await mkdir(open)
    await chmod(open, 0o777)
    await assert.rejects(installNativeFiles(FILES, NAME, [{ dir: open, explicit: true }]), (err: unknown) => {
      assert.ok(err instanceof NativeRuntimeError)
      assert.equal(err.code, 'ERR_NATIVE_RUNTIME')
      return true
    })
    const blocked = join(dir, 'another-file')
    await writeFile(blocked, '')
    await assert.rejects(installNativeFiles(FILES, NAME, [{ dir: join(blocked, 'x'), explicit: false }]), NativeRuntimeError)
  })
})
