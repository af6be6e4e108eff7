import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { inputsHash, isUpToDate, writeStamp, clearStamp, stampPath } from '../../scripts/build-stamp.ts'

/** npm start rebuilds dist/astrad only when something it is built from changed. */

function tree (): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-stamp-'))
  const put = (file: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true })
    fs.writeFileSync(path.join(root, file), text)
  }
  put('src/cli/main.ts', 'main')
  put('src/util/a.ts', 'a')
  put('scripts/build.ts', 'build')
  put('package.json', '{"version":"0.1.0"}')
  put('package-lock.json', '{}')
  put('pkg.config.json', '{}')
  put('docs/notes.md', 'not an input')
  return root
}

test('the input hash is stable, and changes with any source, script, lock, version, SEA setting or build option', (t) => {
  const root = tree()
  t.after(() => { fs.rmSync(root, { recursive: true, force: true }) })
  const base = inputsHash(root, { strip: true })
  assert.match(base, /^[0-9a-f]{64}$/)
  assert.equal(inputsHash(root, { strip: true }), base, 'same inputs, same hash')
  fs.writeFileSync(path.join(root, 'docs/notes.md'), 'edited')
  assert.equal(inputsHash(root, { strip: true }), base, 'a file that is no input changes nothing')
  assert.notEqual(inputsHash(root, { strip: false }), base, 'another build option')

  const seen = new Set([base])
  for (const [file, text] of [['src/util/a.ts', 'a2'], ['src/util/new.ts', 'new'], ['scripts/build.ts', 'build2'], ['package-lock.json', '{"x":1}'], ['package.json', '{"version":"0.1.1"}'], ['pkg.config.json', '{"useCodeCache":true}']]) {
    fs.writeFileSync(path.join(root, file!), text!)
    const h = inputsHash(root, { strip: true })
    assert.ok(!seen.has(h), `${file} changed: a new hash`)
    seen.add(h)
  }
  // A rename with the same content is a change too (paths are hashed).
  fs.renameSync(path.join(root, 'src/util/new.ts'), path.join(root, 'src/util/renamed.ts'))
  assert.ok(!seen.has(inputsHash(root, { strip: true })), 'a rename')
})

test('up to date only when the executable exists and its stamp matches; a started build clears the stamp', (t) => {
  const root = tree()
  t.after(() => { fs.rmSync(root, { recursive: true, force: true }) })
  const exe = path.join(root, 'dist/astrad')
  const hash = inputsHash(root)
  assert.equal(isUpToDate(exe, hash), false, 'never built')
  fs.mkdirSync(path.dirname(exe))
  fs.writeFileSync(exe, 'binary')
  assert.equal(isUpToDate(exe, hash), false, 'built without a stamp')
  writeStamp(exe, hash)
  assert.equal(fs.readFileSync(stampPath(exe), 'utf8'), `${hash}\n`)
  assert.equal(isUpToDate(exe, hash), true, 'built from these inputs')
  fs.writeFileSync(path.join(root, 'src/util/a.ts'), 'changed')
  assert.equal(isUpToDate(exe, inputsHash(root)), false, 'a source changed')
  clearStamp(exe)
  assert.equal(isUpToDate(exe, hash), false, 'a build started (and maybe failed)')
  writeStamp(exe, hash)
  fs.rmSync(exe)
  assert.equal(isUpToDate(exe, hash), false, 'the executable was deleted')
})
