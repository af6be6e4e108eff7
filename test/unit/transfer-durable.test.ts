import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { open, rename, writeFile } from 'node:fs/promises'
import { Durable } from '../../src/transfer/durable.ts'

test('fsyncs run at most maxConcurrent at once; every one is done', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-durable-'))
  const handles = []
  try {
    const durable = new Durable(2)
    for (let i = 0; i < 6; i++) {
      const fh = await open(path.join(dir, `f${i}`), 'w')
      handles.push(fh)
      await fh.write(Buffer.alloc(64 * 1024, i))
    }
    await Promise.all(handles.map(async fh => { await durable.syncFile(fh) }))
    assert.equal(durable.stats.files, 6, `files synced; stats ${JSON.stringify(durable.stats)}`)
    assert.ok(durable.stats.maxRunning <= 2, `at most 2 at once; stats ${JSON.stringify(durable.stats)}`)
  } finally {
    for (const fh of handles) await fh.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('renames waiting together share one directory fsync; a rename after it started gets a new one', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-durable-'))
  try {
    const durable = new Durable(2)
    for (let i = 0; i < 8; i++) await writeFile(path.join(dir, `.t${i}`), 'x')
    // Eight commits rename, then ask for the directory fsync in the same tick: one fsync.
    await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      await rename(path.join(dir, `.t${i}`), path.join(dir, String(i)))
    }))
    await Promise.all(Array.from({ length: 8 }, async () => { await durable.syncDir(dir) }))
    assert.equal(durable.stats.dirs, 1, `directory fsyncs for 8 renames; stats ${JSON.stringify(durable.stats)}`)
    // One asked for after that sync began is not folded into it.
    await durable.syncDir(dir)
    assert.equal(durable.stats.dirs, 2, `a later rename gets its own fsync; stats ${JSON.stringify(durable.stats)}`)
    await assert.rejects(durable.syncDir(path.join(dir, 'missing')), { code: 'ENOENT' }, 'a failed fsync rejects its callers')
    assert.deepEqual(fs.readdirSync(dir).sort(), ['0', '1', '2', '3', '4', '5', '6', '7'])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
