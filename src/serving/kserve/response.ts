import { InferenceFailedError, InvalidInferRequestError, type InferResult, type Tensor } from '../types.ts'
import { checkShape, checkTensorData, dataToJson, isDataType } from './codec.ts'
import type { DecodedInferRequest } from './request.ts'

/**
 * Encodes an inference result as the KServe v2 response ("Inference Response JSON Object"):
 * JSON tensors, or — for outputs requested with `binary_data` / `binary_data_output` — the JSON
 * header followed by the raw bytes of those outputs, in the order they appear in `outputs`,
 * with `Inference-Header-Content-Length` giving the header's length (binary tensor extension).
 */
export interface EncodedInferResponse {
  body: Uint8Array
  /** content-type, and Inference-Header-Content-Length when binary outputs follow the JSON. */
  headers: Record<string, string>
}

/** An output the backend produced that does not hold together: the model's fault, a 500. */
function checkOutput (t: Tensor): void {
  const what = `the model's output '${String(t.name)}'`
  try {
    if (typeof t.name !== 'string' || !isDataType(t.datatype) || !(t.data instanceof Uint8Array)) throw new InvalidInferRequestError(`${what} has no valid name, datatype or data`)
    checkShape(t.shape, what)
    checkTensorData(t, what)
  } catch (err) {
    throw new InferenceFailedError(err instanceof Error ? err.message : String(err), 'ERR_BAD_OUTPUT')
  }
}

export function encodeInferResponse (result: InferResult, req: DecodedInferRequest, model: string): EncodedInferResponse {
  let selected: Array<{ tensor: Tensor, binary: boolean }>
  if (req.outputs != null) {
    const byName = new Map(result.outputs.map(t => [t.name, t]))
    selected = req.outputs.map(o => {
      const tensor = byName.get(o.name)
      if (tensor == null) throw new InferenceFailedError(`the model returned no output '${o.name}'`, 'ERR_BAD_OUTPUT')
      return { tensor, binary: o.binary ?? req.binaryOutput }
    })
  } else {
    selected = result.outputs.map(tensor => ({ tensor, binary: req.binaryOutput }))
  }
  const outputs: string[] = []
  const blobs: Uint8Array[] = []
  for (const { tensor: t, binary } of selected) {
    checkOutput(t)
    const head = `{"name":${JSON.stringify(t.name)},"datatype":"${t.datatype}","shape":[${t.shape.join(',')}]`
    if (binary) {
      outputs.push(`${head},"parameters":{"binary_data_size":${t.data.length}}}`)
      blobs.push(t.data)
    } else {
      outputs.push(`${head},"data":${dataToJson(t)}}`)
    }
  }
  let json = `{"model_name":${JSON.stringify(result.model !== '' ? result.model : model)}`
  if (result.version != null) json += `,"model_version":${JSON.stringify(result.version)}`
  const id = req.id ?? result.id
  if (id != null) json += `,"id":${JSON.stringify(id)}`
  json += `,"outputs":[${outputs.join(',')}]}`
  const header = Buffer.from(json, 'utf8')
  if (blobs.length === 0) return { body: header, headers: { 'content-type': 'application/json' } }
  return {
    body: Buffer.concat([header, ...blobs]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) }
  }
}
