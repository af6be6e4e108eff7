import { Readable } from 'node:stream'
import { Command, InvalidArgumentError } from 'commander'
import type { CliIo } from '../index.ts'
import { withRpcOptions, rpcClient } from '../rpc-options.ts'
import { AstradError, ConfigError, errorMessage } from '../../util/errors.ts'
import type { DataType, TensorSpec } from '../../serving/types.ts'
import { decodeInferResponse, jsonElements, parseJsonExact, tensorOfValue, type DecodedOutput, type ModelMetadata } from '../../serving/kserve/client.ts'
import { DEFAULT_TIMEOUT_MS, HEADER_LENGTH_HEADER } from '../../serving/kserve/constants.ts'
import { toHalfBits } from '../../serving/kserve/fp16.ts'

/** Values printed per output before "… (N more)": a glance, not a dump (use --json for that). */
const MAX_PRINTED_VALUES = 16
/** BYTES elements longer than this are cut when printed. */
const MAX_PRINTED_CHARS = 60
/** The client waits this much beyond the request's deadline for the server's 504 to arrive. */
const CLIENT_GRACE_MS = 5_000

/** The app's signature is not known yet: no replica has loaded the model. */
export class NoSignatureError extends AstradError {
  constructor (app: string) {
    super(`app '${app}' has no known inputs yet (no replica has loaded its model); see: astrad app ls`, 'ERR_NO_SIGNATURE')
    this.name = 'NoSignatureError'
  }
}

interface InputArg {
  name: string
  shape: number[]
  data: unknown[]
}

interface InferFlags {
  rpc?: string
  rpcToken?: string
  /** Absent when none is given: commander would print a `[]` default in the help. */
  input?: InputArg[]
  output?: string[]
  json?: boolean
  timeout?: number
}

/** `--input NAME=JSON`, parsed at once so a typo is a usage error naming the flag. */
function parseInput (raw: string, previous: InputArg[] = []): InputArg[] {
  const eq = raw.indexOf('=')
  if (eq <= 0) throw new InvalidArgumentError('expected NAME=JSON, e.g. --input x=[[1,2,3]]')
  const name = raw.slice(0, eq)
  if (previous.some(p => p.name === name)) throw new InvalidArgumentError(`input '${name}' is given twice`)
  let value: unknown
  try {
    value = parseJsonExact(raw.slice(eq + 1))
  } catch (err) {
    throw new InvalidArgumentError(`the value of '${name}' is not JSON: ${errorMessage(err)}`)
  }
  try {
    return [...previous, { name, ...tensorOfValue(value) }]
  } catch (err) {
    throw new InvalidArgumentError(`the value of '${name}' is not a tensor: ${errorMessage(err)}`)
  }
}

function collect (raw: string, previous: string[] = []): string[] {
  if (previous.includes(raw)) throw new InvalidArgumentError(`output '${raw}' is given twice`)
  return [...previous, raw]
}

function positiveMs (raw: string): number {
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number of milliseconds.')
  return n
}

const fmtShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`
const fmtSpec = (s: TensorSpec): string => `'${s.name}' (${s.datatype} ${fmtShape(s.shape)})`

/**
 * The fewest digits that read back to the same FP32/FP16 value (0.1 rather than
 * 0.10000000149011612, which is the same float32), as numpy prints them.
 */
function shortestFloat (v: number, datatype: 'FP32' | 'FP16'): string {
  // Whole numbers stay whole (65504, not 65500, though both are the same half).
  if (Number.isInteger(v)) return String(v)
  const same = datatype === 'FP32' ? (x: number) => Math.fround(x) === v : (x: number) => toHalfBits(x) === toHalfBits(v)
  for (let p = 1; p < 17; p++) {
    const x = Number(v.toPrecision(p))
    if (same(x)) return String(x)
  }
  return String(v)
}

/** One element for humans: floats to the precision their type carries, bytes as text or hex. */
function formatValue (v: unknown, datatype: DataType): string {
  if (typeof v === 'number' && Number.isFinite(v) && (datatype === 'FP32' || datatype === 'FP16')) return shortestFloat(v, datatype)
  if (v instanceof Uint8Array) {
    let text: string
    try {
      text = JSON.stringify(new TextDecoder('utf-8', { fatal: true }).decode(v))
    } catch {
      text = '0x' + Buffer.from(v).toString('hex')
    }
    return text.length > MAX_PRINTED_CHARS ? text.slice(0, MAX_PRINTED_CHARS) + '…' : text
  }
  return typeof v === 'string' ? JSON.stringify(v) : String(v)
}

export function renderOutputs (outputs: readonly DecodedOutput[]): string {
  return outputs.map(o => {
    const shown = o.values.slice(0, MAX_PRINTED_VALUES).map(v => formatValue(v, o.datatype)).join(', ')
    const more = o.values.length > MAX_PRINTED_VALUES ? `, … (${o.values.length - MAX_PRINTED_VALUES} more)` : ''
    return `${o.name}  ${o.datatype}  ${fmtShape(o.shape)}\n  [${shown}${more}]\n`
  }).join('')
}

/**
 * `astrad infer APP --input NAME=JSON ...`: one inference through the daemon's Open Inference
 * Protocol port, for humans. Datatypes come from the app's signature (`GET /v2/models/APP`),
 * shapes from the nesting of each value. Outputs travel back as binary tensors, so 64-bit
 * integers and FP16 print exactly; --json asks for JSON outputs and prints the answer as sent.
 */
export function inferCommand (io: CliIo): Command {
  return withRpcOptions(new Command('infer'))
    .description('run one inference on an app through the daemon at --rpc (Open Inference Protocol)')
    .argument('<APP>', 'the app (model) name')
    .option('--input <NAME=JSON>', 'an input: a JSON scalar or nested array (shape from the nesting); once per input', parseInput)
    .option('--output <NAME>', 'return this output only; repeat for several (default: all)', collect)
    .option('--json', 'print the server\'s JSON response as is')
    .option('--timeout <ms>', `deadline of the request in milliseconds (default: the server's, ${DEFAULT_TIMEOUT_MS / 1000} s)`, positiveMs)
    .addHelpText('after', '\nExample:\n  astrad infer demo --input \'x=[[5.1, 3.5, 1.4, 0.2]]\'\n')
    .action(async (app: string, { input = [], output = [], ...flags }: InferFlags) => {
      if (input.length === 0) throw new ConfigError('--input', 'give each input of the model as --input NAME=JSON')
      const client = rpcClient(flags)
      const path = `/v2/models/${encodeURIComponent(app)}`
      const meta = await client.call<ModelMetadata>('GET', path)
      if (meta.inputs == null || meta.outputs == null) throw new NoSignatureError(app)
      const specs = new Map(meta.inputs.map(s => [s.name, s]))
      for (const given of input) {
        if (!specs.has(given.name)) throw new ConfigError('--input', `app '${app}' has no input '${given.name}' (its inputs: ${meta.inputs.map(fmtSpec).join(', ')})`)
      }
      const missing = meta.inputs.filter(s => !input.some(i => i.name === s.name))
      if (missing.length > 0) throw new ConfigError('--input', `missing ${missing.map(fmtSpec).join(', ')}`)
      const outputNames = new Set(meta.outputs.map(s => s.name))
      for (const name of output) {
        if (!outputNames.has(name)) throw new ConfigError('--output', `app '${app}' has no output '${name}' (its outputs: ${meta.outputs.map(fmtSpec).join(', ')})`)
      }

      const request = {
        inputs: input.map(i => {
          const datatype = (specs.get(i.name) as TensorSpec).datatype
          return { name: i.name, shape: i.shape, datatype, data: jsonElements(i.data, datatype) }
        }),
        ...(output.length > 0 ? { outputs: output.map(name => ({ name })) } : {}),
        parameters: {
          binary_data_output: flags.json !== true,
          ...(flags.timeout != null ? { timeout: flags.timeout * 1000 } : {})
        }
      }
      const body = Buffer.from(JSON.stringify(request))
      const res = await client.stream('POST', `${path}/infer`, {
        body: Readable.from([body]),
        headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
        idleTimeoutMs: (flags.timeout ?? DEFAULT_TIMEOUT_MS) + CLIENT_GRACE_MS
      })
      const chunks: Buffer[] = []
      for await (const chunk of res) chunks.push(chunk as Buffer)
      const answer = Buffer.concat(chunks)
      if (flags.json === true) {
        io.stdout(answer.toString('utf8') + '\n')
        return
      }
      const header = res.headers[HEADER_LENGTH_HEADER]
      io.stdout(renderOutputs(decodeInferResponse(answer, typeof header === 'string' ? header : undefined).outputs))
    })
}
