// bench:gpu — onnxruntime's WebGPU execution provider against the CPU provider, side by side in
// one run, for the demo classifier and Silero VAD v5: runs/s of one worker each (alternating
// slices, so a noisy machine weighs on both alike), median latency, and whether the webgpu
// answer is within tolerance of the cpu one. The device is whatever Vulkan device Dawn finds:
// on a machine without a GPU, Mesa's software llvmpipe (said in the output). Usage: --help.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createPool, type InferencePool } from '../src/inference/index.ts'
import { detectDevices, PROBE_TOLERANCE } from '../src/devices/index.ts'
import { DEMO_EXAMPLE_INPUT, demoModel } from '../src/demo/index.ts'
import { silentLogger } from '../src/util/logger.ts'
import type { InferRequest, Tensor } from '../src/serving/types.ts'
import { UsageError, parseFlags, intFlag } from './lib/args.ts'
import { ratio, round, summarize } from './lib/stats.ts'
import { VAD_MODEL, VAD_SAMPLES } from './lib/vad.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const USAGE = `usage: node bench/gpu.ts [--quick] [--seconds N] [--out FILE]
  --quick        2 s per side per model (about 1 minute in all on llvmpipe)
  --seconds N    seconds per side per model (default 10)
  --out FILE     JSON results (default bench/results/gpu.json)`
/** Silero on webgpu vs cpu (its speech probability; see test/integration/inference-providers.test.ts). */
const VAD_TOLERANCE = 5e-3
/** Slices alternate between the providers this long each. */
const SLICE_MS = 1_000

interface Case { name: string, model: string, request: () => InferRequest, output: string, tolerance: number }

function bytes (v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength))
}

function cases (dir: string): Case[] {
  const demoFile = path.join(dir, 'demo.onnx')
  fs.writeFileSync(demoFile, demoModel())
  const signal = new Float32Array(VAD_SAMPLES).map((_, i) => 0.3 * Math.sin(2 * Math.PI * 440 * i / 16000))
  return [
    { name: 'demo classifier', model: demoFile, output: 'probabilities', tolerance: PROBE_TOLERANCE, request: () => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: bytes(new Float32Array(DEMO_EXAMPLE_INPUT)) }], deadline: Date.now() + 120_000 }) },
    {
      name: 'Silero VAD v5',
      model: VAD_MODEL,
      output: 'output',
      tolerance: VAD_TOLERANCE,
      request: () => ({
        inputs: [
          { name: 'input', datatype: 'FP32', shape: [1, VAD_SAMPLES], data: bytes(signal) },
          { name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: bytes(new Float32Array(256)) },
          { name: 'sr', datatype: 'INT64', shape: [], data: bytes(BigInt64Array.of(16000n)) }
        ],
        deadline: Date.now() + 120_000
      })
    }
  ]
}

function floats (t: Tensor): number[] {
  return [...new Float32Array(t.data.slice().buffer)]
}

interface Side { runs: number, busyMs: number, latencies: number[], answer?: number[] }

/** Runs one request after another on `pool` for `ms`; adds to `side`. */
async function slice (pool: InferencePool, c: Case, ms: number, side: Side): Promise<void> {
  const until = performance.now() + ms
  do {
    const t0 = performance.now()
    const out = await pool.infer(c.request())
    const dt = performance.now() - t0
    side.runs++
    side.busyMs += dt
    side.latencies.push(dt)
    side.answer ??= floats(out.outputs.find(o => o.name === c.output)!)
  } while (performance.now() < until)
}

async function main (): Promise<number> {
  let flags
  try {
    flags = parseFlags(process.argv.slice(2), { quick: { type: 'boolean' }, seconds: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' } }, USAGE)
    if (flags.help === true) { console.log(USAGE); return 0 }
  } catch (err) {
    if (err instanceof UsageError) { console.error(err.message); return 2 }
    throw err
  }
  let seconds: number
  try {
    seconds = flags.quick === true ? 2 : flags.seconds !== undefined ? intFlag('--seconds', flags.seconds, 1, 600) : 10
  } catch (err) {
    console.error((err as Error).message)
    return 2
  }
  const out = flags.out ?? path.join(ROOT, 'bench/results/gpu.json')
  process.env.XDG_RUNTIME_DIR ??= fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-xdg-'))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrad-bench-gpu-'))
  const detected = await detectDevices()
  const device = detected.length === 0
    ? 'no GPU detected: webgpu runs on a software Vulkan device (Mesa llvmpipe) — these are not GPU figures'
    : `detected: ${detected.map(d => `${d.kind} ${d.name}`).join(', ')}`
  console.log(`bench:gpu — webgpu vs cpu, one worker each, ${seconds} s per side per model, ${os.cpus().length} cores; ${device}`)
  const rows: Array<Record<string, unknown>> = []
  let met = 0
  let missed = 0
  try {
    for (const c of cases(dir)) {
      const cpu = await createPool({ logger: silentLogger() }, { modelPath: c.model, name: 'cpu', workers: 1, maxQueue: 1, executionProviders: ['cpu'] })
      let gpu: InferencePool | undefined
      let why: string | undefined
      try {
        gpu = await createPool({ logger: silentLogger() }, { modelPath: c.model, name: 'webgpu', workers: 1, maxQueue: 1, executionProviders: ['webgpu'] })
      } catch (err) {
        why = (err as Error).message
      }
      const sides: Record<'cpu' | 'webgpu', Side> = { cpu: { runs: 0, busyMs: 0, latencies: [] }, webgpu: { runs: 0, busyMs: 0, latencies: [] } }
      try {
        for (let t = 0; t < seconds * 1000; t += SLICE_MS) {
          await slice(cpu, c, SLICE_MS, sides.cpu)
          if (gpu !== undefined) await slice(gpu, c, SLICE_MS, sides.webgpu)
        }
      } finally {
        await cpu.close()
        await gpu?.close()
      }
      const rate = (s: Side): number | null => s.runs > 0 ? s.runs / (s.busyMs / 1000) : null
      const diff = sides.webgpu.answer !== undefined && sides.cpu.answer !== undefined
        ? Math.max(...sides.cpu.answer.map((x, i) => Math.abs(x - (sides.webgpu.answer![i] ?? Number.NaN))))
        : null
      const ok = diff !== null && diff <= c.tolerance
      if (ok) met++
      else missed++
      rows.push({
        model: c.name,
        cpuRunsPerS: rate(sides.cpu), webgpuRunsPerS: rate(sides.webgpu),
        ratio: ratio(rate(sides.webgpu) ?? undefined, rate(sides.cpu) ?? undefined),
        cpuMedianMs: summarize(sides.cpu.latencies)?.median ?? null, webgpuMedianMs: summarize(sides.webgpu.latencies)?.median ?? null,
        maxDiff: diff, tolerance: c.tolerance, answersAgree: ok, ...(why !== undefined ? { webgpuError: why } : {})
      })
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const fmt = (v: unknown, d = 1): string => typeof v === 'number' ? String(round(v, d)) : '-'
  console.log('\nMODEL            CPU RUNS/S  WEBGPU RUNS/S  WEBGPU÷CPU  CPU p50 ms  WEBGPU p50 ms  MAX DIFF   AGREE')
  for (const r of rows) {
    console.log(`${String(r.model).padEnd(17)}${fmt(r.cpuRunsPerS).padStart(10)}  ${fmt(r.webgpuRunsPerS).padStart(13)}  ${fmt(r.ratio, 4).padStart(10)}  ${fmt(r.cpuMedianMs, 3).padStart(10)}  ${fmt(r.webgpuMedianMs, 2).padStart(13)}  ${(typeof r.maxDiff === 'number' ? r.maxDiff.toExponential(1) : '-').padStart(8)}   ${r.answersAgree === true ? 'yes' : `NO${r.webgpuError !== undefined ? ` (${String(r.webgpuError).slice(0, 120)})` : ''}`}`)
  }
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify({ bench: 'gpu', at: new Date().toISOString(), seconds, device, detected, rows, goals: { answersAgree: true, met, missed } }, null, 2))
  console.log(`\nresults: ${out}`)
  console.log('goal: webgpu answers within tolerance of cpu (throughput on a software device is recorded, not a goal)')
  console.log(`goals: ${met} met, ${missed} missed`)
  return 0
}

main().then(code => { process.exitCode = code }, (err: unknown) => { console.error(err); process.exitCode = 1 })
