import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { ProcessCluster, requireBinary, runBinary, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { runtimeDir, webgpuSkipReason } from '../helpers/webgpu.ts'
import { DEMO_EXAMPLE_INPUT, demoModel, demoReference } from '../../src/demo/index.ts'
import { PROBE_TOLERANCE } from '../../src/devices/index.ts'

/**
 * Accelerators end to end with real `dist/astrad` processes (docs/gpus.md): a scheduler, a node
 * with two cards where webgpu works (Mesa llvmpipe here), a node with one card where it cannot
 * (no Vulkan driver: VK_ICD_FILENAMES points nowhere), and a node with no cards. GPU apps go only
 * where a card is free and a listed provider works; a webgpu replica answers as the CPU does
 * through the scheduler's KServe port; cuda (not installed) is refused with its reason, or
 * falls back to cpu when the list allows it, and says so; status shows devices and providers.
 */

const cluster = new ProcessCluster()
before(() => { requireBinary() })
after(async () => { await cluster.cleanup() })

/** Loads and probes take seconds; the machine may be 8× loaded. */
const DEADLINE_MS = 120_000
/**
 * Silero's speech probability on webgpu vs cpu (see test/integration/inference-providers.test.ts:
 * ~1.6e-3 seen on llvmpipe). The demo classifier is held to PROBE_TOLERANCE (1e-3).
 */

async function addModel (p: DaemonProcess, file: string): Promise<string> {
  const added = await cluster.cli(['model', 'add', file, '--json', '--rpc', p.rpc], {}, 120_000)
  assert.equal(added.code, 0, `model add ${file}: ${added.stderr}`)
  return JSON.parse(added.stdout).id
}

async function deploy (p: DaemonProcess, spec: Record<string, unknown>): Promise<void> {
  const file = path.join(cluster.root, `${String(spec.name)}.json`)
  fs.writeFileSync(file, JSON.stringify(spec))
  const dep = await cluster.cli(['app', 'deploy', file, '--rpc', p.rpc])
  assert.equal(dep.code, 0, `app deploy ${JSON.stringify(spec)}: ${dep.stderr}`)
}

async function appOf (p: DaemonProcess, name: string): Promise<any> {
  return (await p.status()).apps.find((a: any) => a.name === name)
}

/** Waits until `check` holds for the app's status entry; the failure names the last entry seen. */
async function waitApp (p: DaemonProcess, name: string, what: string, check: (a: any) => boolean): Promise<any> {
  let seen: any
  await waitFor(`${name}: ${what}`, async () => {
    seen = await appOf(p, name)
    return seen != null && check(seen)
  }, DEADLINE_MS, 250).catch(async (err: Error) => {
    const nodes = await p.status().then(s => s.nodes.map((n: any) => ({ name: n.name, state: n.state, gpus: n.gpus, devices: n.devices })), (e: Error) => e.message)
    throw new Error(`${err.message}; last status of ${name}: ${JSON.stringify(seen)}; nodes: ${JSON.stringify(nodes)}\n--- ${p.name} ---\n${p.log().slice(-3000)}`)
  })
  return seen
}

async function infer (p: DaemonProcess, app: string, inputs: unknown[]): Promise<any> {
  const res = await fetch(`http://${p.rpc}/v2/models/${app}/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs }), signal: AbortSignal.timeout(60_000)
  })
  const body = await res.json() as any
  assert.equal(res.status, 200, `infer ${app}: HTTP ${res.status} ${JSON.stringify(body)}`)
  return body
}

const demoInputs = [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [...DEMO_EXAMPLE_INPUT] }]

function maxDiff (a: number[], b: number[]): number {
  assert.equal(a.length, b.length)
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)))
}

test('GPU apps: placed on nodes with a free card and a working provider only; webgpu answers as cpu; cuda refused or fallen back, with reasons', async (t) => {
  const skip = await webgpuSkipReason()
  // The daemons see the Vulkan devices this process sees (VK_ICD_FILENAMES passed on, if set).
  const env: NodeJS.ProcessEnv = { XDG_RUNTIME_DIR: runtimeDir(), ...(process.env.VK_ICD_FILENAMES != null ? { VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES } : {}) }
  // Debug on the scheduler: its reservations and ledger pulls are in the log a failure prints.
  const res = await cluster.start('res', ['--role', 'resource,scheduler', '--log-level', 'debug'], { env })
  const boot = await cluster.addr(res)
  const g1 = await cluster.start('g1', ['--role', 'node', '--bootstrap', boot, '--cores', '4', '--gpus', '3', '--gpu-perf', '2'], { env })
  const g2 = await cluster.start('g2', ['--role', 'node', '--bootstrap', boot, '--cores', '4', '--gpus', '2'], { env: { ...env, VK_ICD_FILENAMES: path.join(cluster.root, 'no-such-icd.json') } })
  const c1 = await cluster.start('c1', ['--role', 'node', '--bootstrap', boot, '--cores', '4'], { env })
  const logs = (): string => [g1, g2, c1].map(p => `--- ${p.name} ---\n${p.log().slice(-1500)}`).join('\n')

  // Every node alive with its probes done, as the scheduler sees them.
  let nodes: any[] = []
  await waitFor('three nodes alive with their providers probed', async () => {
    nodes = (await res.status()).nodes.filter((n: any) => n.roles.includes('node'))
    return nodes.length === 3 && nodes.every((n: any) => n.state === 'alive' && n.devices != null && Object.values(n.devices.providers).every((p: any) => p.state !== 'probing'))
  }, DEADLINE_MS, 250).catch((err: Error) => { throw new Error(`${err.message}; nodes seen: ${JSON.stringify(nodes)}\n${logs()}`) })
  const node = (name: string): any => nodes.find((n: any) => n.name === name)
  assert.equal(node('g1').gpus, 3)
  assert.equal(node('g1').gpuPerf, 2, '--gpu-perf reaches the heartbeat')
  assert.equal(node('g1').devices.perf, 2)
  assert.equal(node('g1').devices.providers.cpu.state, 'ok')
  assert.equal(node('g1').devices.providers.webgpu.state, skip === undefined ? 'ok' : 'failed')
  assert.match(node('g1').devices.providers.cuda.reason, /libonnxruntime_providers_cuda\.so could not be loaded/)
  assert.equal(node('g2').devices.providers.webgpu.state, 'failed')
  assert.match(node('g2').devices.providers.webgpu.reason, /no Vulkan device Dawn accepts/)
  assert.equal(node('c1').devices.kind, 'none')
  assert.equal(node('c1').devices.count, 0)
  assert.match(node('c1').devices.providers.webgpu.reason, /offers no cards/)
  assert.deepEqual(node('c1').devices.providers.cpu, { state: 'ok' }, 'a node offering no cards probes nothing')

  const demo = path.join(cluster.root, 'demo.onnx')
  fs.writeFileSync(demo, demoModel())
  // Added on a node (the scheduler holds no models); the others fetch them peer-to-peer.
  const demoId = await addModel(c1, demo)

  if (skip !== undefined) {
    t.diagnostic(`webgpu parts skipped: ${skip}`)
  } else {
    // webgpu apps: one card each; only g1 has cards where webgpu works.
    await deploy(res, { name: 'gw', model: demoId, replicas: 1, resources: { gpu: 1 }, executionProviders: ['webgpu'] })
    // The demo model, not Silero: on llvmpipe with the machine loaded 8 deep, a Silero webgpu
    // session took over 120 s to load (Silero on webgpu vs cpu: test/integration/inference-providers.test.ts).
    for (const name of ['gw']) {
      const a = await waitApp(res, name, 'ready on webgpu', a => a.ready === 1 && a.replicas?.[0]?.provider === 'webgpu')
      assert.equal(a.replicas[0].node, 'g1', `${name} runs on the node whose webgpu works`)
      assert.equal(a.replicas[0].fallback, undefined, 'no fallback')
    }
    const want = demoReference([[...DEMO_EXAMPLE_INPUT]])[0]!
    for (const name of ['gw']) {
      const got = (await infer(res, name, demoInputs)).outputs[0].data as number[]
      assert.ok(maxDiff(got, want) <= PROBE_TOLERANCE, `${name}: demo on webgpu ${JSON.stringify(got)} vs the cpu reference ${JSON.stringify(want)} (tolerance ${PROBE_TOLERANCE})`)
    }

    // gpuUtil: g1's cards are busy while its webgpu replicas run.
    let util = 0
    const stop = AbortSignal.timeout(DEADLINE_MS)
    const load = (async () => {
      while (!stop.aborted && util === 0) await infer(res, 'gw', demoInputs).catch(() => {})
    })()
    try {
      await waitFor('g1 reports a GPU utilisation above 0 under load', async () => {
        util = (await res.status()).nodes.find((n: any) => n.name === 'g1')?.gpuUtil ?? 0
        return util > 0
      }, DEADLINE_MS, 250)
    } finally {
      util = util || 1 // ends the load loop either way
      await load
    }

    // One webgpu session per process (two in two threads crash onnxruntime): a second
    // webgpu-only app cannot start on g1 and says why.
    await deploy(res, { name: 'gw2', model: demoId, replicas: 1, resources: { gpu: 1 }, executionProviders: ['webgpu'] })
    await waitApp(res, 'gw2', 'refused: g1 already runs a webgpu session', a => /already runs a webgpu session/.test(a.lastError ?? ''))
    for (const name of ['gw2', 'gw']) assert.equal((await cluster.cli(['app', 'rm', name, '--rpc', res.rpc])).code, 0)

    // Routing capacity is cards × factor: with static weights, g1 (3 cards × 2) draws 3× the
    // share of g2 (2 cards × 1), shown in status. g1's last card and one of g2's are taken.
    await deploy(res, { name: 'share', model: demoId, replicas: 2, resources: { gpu: 1 }, executionProviders: ['webgpu', 'cpu'], routing: 'static' })
    await waitApp(res, 'share', 'ready on g1 (webgpu) and g2 (cpu fallback)', a => a.ready === 2 && a.replicas.map((r: any) => `${r.node}:${r.provider}`).sort().join() === 'g1:webgpu,g2:cpu')
    await infer(res, 'share', demoInputs)
    await waitApp(res, 'share', 'weights g1 = 3 × g2 in status', a => {
      const w = (n: string): number => a.weights.find((x: any) => x.name === n && !x.ejected)?.weight ?? Number.NaN
      return Math.abs(w('g1') / w('g2') - 3) < 0.01
    })
  }

  // cuda alone: no node has it; webgpu alone: g2 has a free card but no Vulkan device (g1's are
  // taken, or its webgpu fails too). Both refused with each node's reason; c1 (no card) is never a candidate.
  await deploy(res, { name: 'cu', model: demoId, replicas: 1, resources: { gpu: 1 }, executionProviders: ['cuda'] })
  await deploy(res, { name: 'wf', model: demoId, replicas: 1, resources: { gpu: 1 }, executionProviders: ['webgpu'] })
  const cu = await waitApp(res, 'cu', 'refused with the cuda reason', a => /g2: cuda: libonnxruntime_providers_cuda\.so could not be loaded/.test(a.lastError ?? ''))
  assert.equal(cu.placed, 0)
  assert.ok(!String(cu.lastError).includes('c1'), `c1 offers no card: ${cu.lastError}`)
  // g1's webgpu is held by 'share' (one session per process): it fails there, and says why.
  const wfWhy = skip === undefined ? /already runs a webgpu session/ : /g2: webgpu: no Vulkan device Dawn accepts/
  const wf = await waitApp(res, 'wf', 'refused with the webgpu reason', a => wfWhy.test(a.lastError ?? ''))
  assert.equal(wf.placed, 0)
  const text = await cluster.cli(['status', '--rpc', res.rpc])
  assert.equal(text.code, 0, text.stderr)
  assert.match(text.stdout, /devices:\n/)
  assert.match(text.stdout, /g2 +gpu +2 +1 +0% +cuda✗ tensorrt✗ webgpu✗ cpu +\w+: /, text.stdout)
  assert.ok(text.stdout.includes('no node with a free card can run cuda'), `status shows the refusal:\n${text.stdout}`)
  for (const name of ['cu', 'wf']) assert.equal((await cluster.cli(['app', 'rm', name, '--rpc', res.rpc])).code, 0)

  // cuda, webgpu, then cpu: where neither GPU provider starts, the replica runs on cpu and says why.
  await deploy(res, { name: 'fb', model: demoId, replicas: 1, resources: { gpu: 1 }, executionProviders: ['cuda', 'webgpu', 'cpu'] })
  const fb = await waitApp(res, 'fb', 'ready on cpu after a fallback', a => a.ready === 1 && a.replicas?.[0]?.provider != null)
  if (skip === undefined) {
    assert.equal(fb.replicas[0].provider, 'cpu')
    // On g2 webgpu finds no Vulkan device; on g1 'share' holds the node's webgpu session.
    assert.match(fb.replicas[0].fallback, /^running on cpu: cuda did not start \(libonnxruntime_providers_cuda\.so could not be loaded.*; webgpu did not start \((no Vulkan device Dawn accepts|this node already runs a webgpu session)/)
  } else {
    assert.equal(fb.replicas[0].provider, 'cpu')
  }
  const fbOut = (await infer(res, 'fb', demoInputs)).outputs[0].data as number[]
  assert.ok(maxDiff(fbOut, demoReference([[...DEMO_EXAMPLE_INPUT]])[0]!) <= 1e-6, 'the fallback serves the cpu answer')
  const st = await res.status()
  for (const a of st.apps) for (const r of a.replicas ?? []) assert.notEqual(r.node, 'c1', `GPU app ${a.name} has a replica on the node with no card`)
  const again = await cluster.cli(['status', '--rpc', res.rpc])
  assert.match(again.stdout, /gpu replicas:\n/)
  assert.match(again.stdout, /fb +cuda,webgpu,cpu +g\d +ready +cpu +running on cpu: cuda did not start/, again.stdout)
})

test('bad device flags and provider lists are refused with the field named', async () => {
  const dir = path.join(cluster.root, 'bad-flags')
  for (const bad of ['0', 'fast', '1000']) {
    const r = await runBinary(['start', '--insecure', '--data-dir', dir, '--rpc', '127.0.0.1:0', '--gpu-perf', bad])
    assert.equal(r.code, 2, `--gpu-perf ${bad}: exit ${String(r.code)} ${r.stderr}`)
    assert.ok(r.stderr.includes('--gpu-perf'), `names the flag: ${r.stderr}`)
  }
  const res = await cluster.start('solo', ['--gpus', '1'], { env: { XDG_RUNTIME_DIR: runtimeDir() } })
  const file = path.join(cluster.root, 'bad-spec.json')
  for (const [providers, says] of [[['webgpu', 'vulkan'], 'executionProviders[1]'], [['cpu', 'cpu'], 'listed twice']] as const) {
    fs.writeFileSync(file, JSON.stringify({ name: 'bad', model: 'a'.repeat(64), replicas: 1, resources: { gpu: 1 }, executionProviders: providers }))
    const r = await cluster.cli(['app', 'deploy', file, '--rpc', res.rpc])
    assert.equal(r.code, 1, `deploy ${JSON.stringify(providers)}: exit ${String(r.code)} ${r.stderr}`)
    assert.ok(r.stderr.includes(says), `names ${says}: ${r.stderr}`)
  }
  assert.equal((await res.status()).self.state, 'running', 'the daemon stays up')

  // Drained while its providers are still being probed: it waits for the probe's worker and exits 0.
  const quick = await cluster.start('quick', ['--gpus', '1'], { env: { XDG_RUNTIME_DIR: runtimeDir() } })
  const drained = await cluster.cli(['drain', '--rpc', quick.rpc])
  assert.equal(drained.code, 0, `drain: ${drained.stderr}`)
  assert.equal(await quick.exited, 0, `exit code after a drain during the probe\n${quick.log().slice(-2000)}`)
})

test('ASTRAD_ORT_PROVIDERS_DIR: the executable links operator-installed provider libraries beside libonnxruntime.so.1 and probes them; an unreadable one is named', async () => {
  const libs = path.join(cluster.root, 'gpu-libs')
  fs.mkdirSync(libs)
  // Stand-ins (no CUDA here): not loadable, but onnxruntime must now find them where it looks.
  for (const n of ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so']) fs.writeFileSync(path.join(libs, n), 'not an ELF file')
  const native = path.join(cluster.root, 'native')
  const d = await cluster.start('cu1', ['--gpus', '1'], { env: { XDG_RUNTIME_DIR: runtimeDir(), ASTRAD_NATIVE_DIR: native, ASTRAD_ORT_PROVIDERS_DIR: libs } })
  let self: any
  await waitFor('cu1 probed every provider', async () => {
    self = (await d.status()).nodes.find((n: any) => n.name === 'cu1')
    const probes = Object.values(self?.devices?.providers ?? { none: { state: 'probing' } })
    return probes.every((p: any) => p.state !== 'probing')
  }, DEADLINE_MS, 250).catch((err: Error) => { throw new Error(`${err.message}; last seen ${JSON.stringify(self)}\n${d.log().slice(-2000)}`) })
  assert.match(self.devices.providers.cuda.reason, /libonnxruntime_providers_cuda\.so could not be loaded/)
  assert.equal(self.devices.providers.cpu.state, 'ok', 'serving is unaffected')
  const [dir] = fs.readdirSync(native).filter(n => n.startsWith('onnxruntime-'))
  assert.ok(dir != null, `a native directory under ${native}: ${fs.readdirSync(native).join(', ')}`)
  assert.equal(fs.readlinkSync(path.join(native, dir, 'libonnxruntime_providers_cuda.so')), path.join(libs, 'libonnxruntime_providers_cuda.so'))
  assert.equal(fs.readlinkSync(path.join(native, dir, 'libonnxruntime_providers_shared.so')), path.join(libs, 'libonnxruntime_providers_shared.so'))

  const bad = await cluster.start('cu2', ['--gpus', '1'], { env: { XDG_RUNTIME_DIR: runtimeDir(), ASTRAD_NATIVE_DIR: native, ASTRAD_ORT_PROVIDERS_DIR: path.join(cluster.root, 'no-such-dir') } })
  await waitFor('cu2 names the unreadable directory', async () => {
    self = (await bad.status()).nodes.find((n: any) => n.name === 'cu2')
    return /ASTRAD_ORT_PROVIDERS_DIR=.*no-such-dir cannot be read/.test(self?.devices?.providers?.cpu?.reason ?? '')
  }, DEADLINE_MS, 250).catch((err: Error) => { throw new Error(`${err.message}; last seen ${JSON.stringify(self)}`) })
  assert.equal((await bad.status()).self.state, 'running', 'the daemon stays up, saying why nothing can run')
})
