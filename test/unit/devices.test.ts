import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseAppSpec, providersOf, needsRoll } from '../../src/placement/index.ts'
import { BusySampler, Devices, NOT_OFFERED, detectDevices, explain, nvidiaModel, probesWithWebgpuHeld, usableOn, wantsGpu } from '../../src/devices/index.ts'
import { resolveConfig } from '../../src/config/index.ts'
import { ConfigError } from '../../src/util/errors.ts'
import { renderDevices } from '../../src/cli/commands/status.ts'
import type { StatusDocument } from '../../src/daemon/status.ts'

const MODEL = 'a'.repeat(64)
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-devices-'))
after(() => { fs.rmSync(tmp, { recursive: true, force: true }) })

function spec (extra: Record<string, unknown>): Record<string, unknown> {
  return { name: 'g', model: MODEL, replicas: 1, ...extra }
}

function refused (input: unknown, code: string, includes: string): void {
  assert.throws(() => parseAppSpec(input), (err: any) => {
    assert.equal(err.code, code)
    assert.ok(String(err.message).includes(includes), `message names ${includes}: ${err.message}`)
    return true
  })
}

test('app spec: executionProviders is kept in order; without it, cpu (or webgpu then cpu when cards are reserved)', () => {
  const s = parseAppSpec(spec({ resources: { gpu: 1 }, executionProviders: ['cuda', 'webgpu', 'cpu'] }))
  assert.deepEqual(s.executionProviders, ['cuda', 'webgpu', 'cpu'])
  assert.deepEqual(providersOf(s), ['cuda', 'webgpu', 'cpu'])
  assert.deepEqual(providersOf(parseAppSpec(spec({}))), ['cpu'])
  assert.deepEqual(providersOf(parseAppSpec(spec({ resources: { gpu: 2 } }))), ['webgpu', 'cpu'])
  assert.deepEqual(parseAppSpec(spec({ executionProviders: ['cpu'] })).executionProviders, ['cpu'])
})

test('app spec: bad executionProviders are refused with the field named', () => {
  refused(spec({ resources: { gpu: 1 }, executionProviders: ['webgpu', 'cudaa'] }), 'ERR_INVALID_APP', 'executionProviders[1]')
  refused(spec({ resources: { gpu: 1 }, executionProviders: ['cuda', 'cuda'] }), 'ERR_INVALID_APP', "executionProviders[1]: 'cuda' is listed twice")
  refused(spec({ executionProviders: ['webgpu'] }), 'ERR_INVALID_APP', 'resources.gpu is 0')
  refused(spec({ resources: { gpu: 1 }, executionProviders: ['cpu'] }), 'ERR_INVALID_APP', 'names no GPU provider')
  refused(spec({ executionProviders: [] }), 'ERR_INVALID_APP', 'executionProviders')
  refused(spec({ executionProviders: 'webgpu' }), 'ERR_INVALID_APP', 'executionProviders')
})

test('a change of provider list rolls the app', () => {
  const a = parseAppSpec(spec({ resources: { gpu: 1 }, executionProviders: ['webgpu'] }))
  const b = parseAppSpec(spec({ resources: { gpu: 1 }, executionProviders: ['webgpu', 'cpu'] }))
  assert.equal(needsRoll(a, b), true)
  assert.equal(needsRoll(a, a), false)
})

test('usableOn: a working GPU provider, a cpu fallback, still probing, or no with every reason', () => {
  const probes = { webgpu: { state: 'ok' as const }, cuda: { state: 'failed' as const, reason: 'no lib' }, cpu: { state: 'ok' as const } }
  assert.equal(usableOn(['cuda', 'webgpu'], probes).use, 'gpu')
  assert.deepEqual(usableOn(['cuda'], probes), { use: 'no', why: 'cuda: no lib' })
  assert.equal(usableOn(['cuda', 'cpu'], probes).use, 'fallback')
  assert.equal(usableOn(['webgpu'], { webgpu: { state: 'probing' } }).use, 'unknown')
  assert.equal(usableOn(['webgpu'], undefined).use, 'no', 'a node that reports no devices (older astrad) gets no GPU replica')
  assert.equal(wantsGpu(['cpu']), false)
  assert.equal(wantsGpu(['tensorrt', 'cpu']), true)
})

test('placement sees a node\'s webgpu as held while a replica there runs on it or loads with it (one session per node)', () => {
  const probes = { webgpu: { state: 'ok' as const }, cpu: { state: 'ok' as const } }
  assert.equal(probesWithWebgpuHeld(probes, []), probes, 'no replica: as probed')
  assert.equal(probesWithWebgpuHeld(probes, [{ app: 'c', state: 'ready' }]), probes, 'a cpu replica holds nothing')
  assert.equal(probesWithWebgpuHeld(probes, [{ app: 'f', state: 'failed', executionProviders: ['webgpu'] }]), probes, 'a failed replica holds nothing')
  assert.equal(probesWithWebgpuHeld(probes, [{ app: 'fb', state: 'ready', provider: 'cpu', executionProviders: ['webgpu', 'cpu'] }]), probes, 'one that fell back to cpu holds nothing')
  for (const holder of [{ app: 'gw', state: 'ready', provider: 'webgpu' }, { app: 'gw', state: 'loading', executionProviders: ['cuda', 'webgpu'] }]) {
    const seen = probesWithWebgpuHeld(probes, [holder])
    assert.equal(seen?.webgpu?.state, 'failed')
    assert.match(seen?.webgpu?.reason ?? '', /held by a replica of gw: this node already runs a webgpu session/)
    assert.equal(usableOn(['webgpu'], seen).use, 'no', 'a webgpu-only app goes elsewhere')
    assert.equal(usableOn(['webgpu', 'cpu'], seen).use, 'fallback', 'one that allows cpu may still come, on cpu')
  }
  assert.deepEqual(probes.webgpu, { state: 'ok' }, 'the node\'s own probes are not changed')
  const failed = { webgpu: { state: 'failed' as const, reason: 'no Vulkan device' } }
  assert.equal(probesWithWebgpuHeld(failed, [{ app: 'gw', state: 'ready', provider: 'webgpu' }]), failed, 'a webgpu that never worked keeps its own reason')
})

test('detectDevices: NVIDIA cards from /proc with their model, else /dev/nvidiaN; other GPUs by DRM vendor', async () => {
  const root = path.join(tmp, 'tree1')
  const proc = path.join(root, 'proc')
  fs.mkdirSync(path.join(proc, '0000:01:00.0'), { recursive: true })
  fs.writeFileSync(path.join(proc, '0000:01:00.0', 'information'), 'Model: \t\tNVIDIA H200\nIRQ: 1\n')
  fs.mkdirSync(path.join(proc, '0000:02:00.0'))
  const dev = path.join(root, 'dev')
  fs.mkdirSync(dev)
  for (const n of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm']) fs.writeFileSync(path.join(dev, n), '')
  const drm = path.join(root, 'drm')
  for (const [node, vendor] of [['renderD128', '0x10de'], ['renderD129', '0x1002'], ['card0', '0x8086']] as const) {
    fs.mkdirSync(path.join(drm, node, 'device'), { recursive: true })
    fs.writeFileSync(path.join(drm, node, 'device', 'vendor'), `${vendor}\n`)
  }
  const found = await detectDevices({ nvidiaProc: proc, dev, drm })
  assert.deepEqual(found.map(d => [d.kind, d.name]), [['nvidia', 'NVIDIA H200'], ['nvidia', 'NVIDIA GPU 0000:02:00.0'], ['amd', 'renderD129']])
  // Without /proc entries, the device nodes count (nvidiactl and nvidia-uvm are not cards).
  const fromDev = await detectDevices({ nvidiaProc: path.join(root, 'none'), dev, drm: path.join(root, 'none') })
  assert.deepEqual(fromDev.map(d => d.name), ['NVIDIA GPU 0', 'NVIDIA GPU 1'])
  assert.deepEqual(await detectDevices({ nvidiaProc: path.join(root, 'none'), dev: path.join(root, 'none'), drm: path.join(root, 'none') }), [])
  assert.equal(nvidiaModel('IRQ: 5\n'), undefined)
})

test('BusySampler: busy time per card over wall time, clamped to 0..1', () => {
  let busy = 0
  let cards = 2
  const s = new BusySampler(() => busy, () => cards)
  assert.equal(s.sample(1_000), 0, 'first sample has no interval')
  busy = 1_000
  assert.equal(s.sample(2_000), 0.5, '1 s busy over 1 s on 2 cards')
  busy = 5_000
  assert.equal(s.sample(3_000), 1, 'clamped')
  busy = 0
  assert.equal(s.sample(4_000), 0, 'a replica that went away takes its busy time with it: not negative')
  cards = 0
  busy = 500
  assert.equal(s.sample(5_000), 0.5, 'no cards offered counts as one')
})

test('--gpu-perf: a number from 0.01 to 100, errors name the flag', () => {
  assert.equal(resolveConfig({ flags: { gpuPerf: '2.5', gpus: '2' }, env: {} }).gpuPerf, 2.5)
  assert.equal(resolveConfig({ flags: {}, env: { ASTRAD_GPU_PERF: '0.5' } }).gpuPerf, 0.5)
  assert.equal(resolveConfig({ flags: {}, env: {} }).gpuPerf, 1)
  for (const bad of ['0', '-1', 'fast', '101', '']) {
    assert.throws(() => resolveConfig({ flags: { gpuPerf: bad }, env: {} }), (err: unknown) => err instanceof ConfigError && err.key.startsWith('--gpu-perf'), `--gpu-perf ${bad}`)
  }
})

test('explain: a missing CUDA library and a missing Vulkan adapter say what to do', () => {
  assert.match(explain('cuda', 'no execution provider could start: cuda: OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library'), /^libonnxruntime_providers_cuda\.so could not be loaded/)
  assert.match(explain('webgpu', 'Failed to get a WebGPU adapter: No supported adapters'), /^no Vulkan device Dawn accepts/)
  assert.equal(
    explain('webgpu', 'no execution provider could start: webgpu: /onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters'),
    'no Vulkan device Dawn accepts (a GPU driver, or Mesa ≥ 25 for a software one; see docs/gpus.md): Failed to get a WebGPU adapter: No supported adapters')
  assert.equal(explain('cpu', 'x'), 'x')
})

test('status text: a devices table and each GPU replica with the provider it runs on', () => {
  const node = (name: string, devices: any): any => ({ name, gpuUtil: 0.25, devices })
  const s = {
    nodes: [
      node('g1', { kind: 'nvidia', count: 2, perf: 2, detected: [{ kind: 'nvidia', name: 'NVIDIA H200', source: '/dev/nvidia0' }], providers: { cuda: { state: 'failed', reason: 'no lib' }, webgpu: { state: 'ok' }, cpu: { state: 'ok' } } }),
      node('g2', { kind: 'gpu', count: 1, perf: 1, detected: [], providers: { webgpu: { state: 'failed', reason: 'no adapter' }, cpu: { state: 'probing' } } }),
      node('c1', { kind: 'none', count: 0, perf: 1, detected: [], providers: {} })
    ],
    apps: [{ name: 'fb', executionProviders: ['webgpu', 'cpu'], replicas: [{ node: 'g2', state: 'ready', provider: 'cpu', fallback: 'running on cpu: webgpu did not start (no adapter)' }] }]
  } as unknown as StatusDocument
  const out = renderDevices(s)
  assert.match(out, /g1 +nvidia +2 +2 +25% +cuda✗ webgpu cpu *\n/, out)
  assert.match(out, /g2 +gpu +1 +1 +25% +webgpu✗ cpu\? +webgpu: no adapter/, out)
  assert.ok(!out.includes('c1'), 'a node without cards or detected devices is not listed')
  assert.match(out, /fb +webgpu,cpu +g2 +ready +cpu +running on cpu: webgpu did not start \(no adapter\)/, out)
})

test('provider libraries: linked beside libonnxruntime.so.1 (replacing a stale link, never a real file); an unreadable directory names the variable', async () => {
  const { linkProviderLibraries } = await import('../../src/inference/native-cache.ts')
  const from = path.join(tmp, 'gpu-libs')
  const dir = path.join(tmp, 'native')
  fs.mkdirSync(from)
  fs.mkdirSync(dir)
  for (const n of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libcudart.so.12', 'README']) fs.writeFileSync(path.join(from, n), 'x')
  fs.symlinkSync('/nowhere/old.so', path.join(dir, 'libonnxruntime_providers_shared.so'))
  fs.writeFileSync(path.join(dir, 'libonnxruntime_providers_tensorrt.so'), 'mine')
  fs.writeFileSync(path.join(from, 'libonnxruntime_providers_tensorrt.so'), 'theirs')
  assert.deepEqual(await linkProviderLibraries(dir, from), ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'])
  assert.equal(fs.readlinkSync(path.join(dir, 'libonnxruntime_providers_cuda.so')), path.join(from, 'libonnxruntime_providers_cuda.so'))
  assert.equal(fs.readlinkSync(path.join(dir, 'libonnxruntime_providers_shared.so')), path.join(from, 'libonnxruntime_providers_shared.so'), 'a stale link is replaced')
  assert.equal(fs.readFileSync(path.join(dir, 'libonnxruntime_providers_tensorrt.so'), 'utf8'), 'mine', 'a real file is left alone')
  assert.ok(!fs.existsSync(path.join(dir, 'libcudart.so.12')), 'only onnxruntime provider libraries')
  assert.deepEqual(await linkProviderLibraries(dir, from), ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'], 'idempotent')
  await assert.rejects(linkProviderLibraries(dir, path.join(tmp, 'missing')), (err: any) => err.name === 'NativeRuntimeError' && err.message.startsWith(`ASTRAD_ORT_PROVIDERS_DIR=${path.join(tmp, 'missing')} cannot be read`))
})

test('Devices: a node offering no cards probes nothing; one offering cards probes every provider once, in order, and reports each result', async () => {
  const { silentLogger } = await import('../../src/util/logger.ts')
  const none = path.join(tmp, 'none')
  const paths = { nvidiaProc: none, dev: none, drm: none }
  const asked: string[] = []
  const createPool = async (_c: unknown, init: any): Promise<never> => {
    asked.push(init.executionProviders.join())
    throw new Error(`${init.executionProviders[0]} refused`)
  }
  const cpuOnly = new Devices({ logger: silentLogger(), createPool }, { gpus: 0, gpuPerf: 1, probeDir: path.join(tmp, 'p0'), paths })
  cpuOnly.start()
  await cpuOnly.settled()
  assert.deepEqual(asked, [])
  const r0 = cpuOnly.report()
  assert.equal(r0.kind, 'none')
  assert.deepEqual(r0.providers.cpu, { state: 'ok' })
  assert.deepEqual(r0.providers.webgpu, { state: 'failed', reason: NOT_OFFERED })

  const gpu = new Devices({ logger: silentLogger(), createPool }, { gpus: 2, gpuPerf: 1.5, probeDir: path.join(tmp, 'p1'), paths })
  assert.equal(gpu.report().providers.webgpu?.state, 'probing')
  let changes = 0
  gpu.onChange(() => { changes++ })
  gpu.start()
  await gpu.settled()
  assert.deepEqual(asked, ['cuda', 'tensorrt', 'webgpu', 'cpu'])
  const r1 = gpu.report()
  assert.equal(r1.kind, 'gpu', 'declared, none detected')
  assert.equal(r1.count, 2)
  assert.equal(r1.perf, 1.5)
  assert.equal(r1.software, undefined)
  for (const p of ['cuda', 'tensorrt', 'webgpu', 'cpu']) {
    assert.equal(r1.providers[p]?.state, 'failed', p)
    assert.match(r1.providers[p]?.reason ?? '', new RegExp(`${p} refused`))
  }
  assert.ok(changes >= 4, `a change per probe (and one after detection): ${changes}`)
  await gpu.stop()
})
