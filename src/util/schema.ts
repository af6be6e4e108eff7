import type { z } from 'zod'

/**
 * zod validation with messages written for people: `resources.cpu must be a number ≥ 0
 * (got "two")` instead of zod's `resources.cpu: Invalid input: expected number, received string`.
 * For what operators type (app specs, notice data); wire decoders keep zod's terse text.
 * A message a schema gives itself (`.regex(re, 'must be …')`) wins over these (zod's precedence).
 */

/** Longest rendering of a value quoted back in `(got …)`. */
const MAX_GOT_CHARS = 40

type Issue = z.core.$ZodRawIssue

/** What a number schema accepts, from its bounds: `an integer from 1 to 64`, `a number ≥ 0`. */
function numberKind (inst: unknown, expected: string): string {
  const n = inst as { minValue?: number | null, maxValue?: number | null, isInt?: boolean } | undefined
  const what = expected === 'int' || n?.isInt === true ? 'an integer' : 'a number'
  const min = Number.isFinite(n?.minValue) ? n!.minValue! : undefined
  const max = Number.isFinite(n?.maxValue) ? n!.maxValue! : undefined
  if (min !== undefined && max !== undefined && Math.abs(max) < Number.MAX_SAFE_INTEGER) return `${what} from ${min} to ${max}`
  if (min !== undefined && Math.abs(min) < Number.MAX_SAFE_INTEGER) return `${what} ≥ ${min}`
  return what
}

const KINDS: Record<string, string> = {
  string: 'a string', boolean: 'true or false', object: 'a JSON object', record: 'a JSON object', array: 'a list'
}

function bound (issue: { origin?: string, inclusive?: boolean }, sign: '≥' | '≤', value: unknown): string {
  const strict = issue.inclusive === false ? sign.replace('≥', '>').replace('≤', '<') : sign
  if (issue.origin === 'string') return `must have ${sign === '≥' ? 'at least' : 'at most'} ${String(value)} character(s)`
  if (issue.origin === 'array' || issue.origin === 'set') return `must have ${sign === '≥' ? 'at least' : 'at most'} ${String(value)} item(s)`
  return `must be ${strict} ${String(value)}`
}

/** A zod error map (`safeParse(x, { error: peopleErrorMap })`): the text after the key's path. */
export function peopleErrorMap (issue: Issue): string | undefined {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'is required'
      const expected = String(issue.expected)
      const kind = expected === 'number' || expected === 'int' ? numberKind(issue.inst, expected) : KINDS[expected] ?? `a ${expected}`
      return `must be ${kind}`
    }
    case 'too_small': return bound(issue, '≥', issue.minimum)
    case 'too_big': return bound(issue, '≤', issue.maximum)
    case 'invalid_value': return `must be one of ${issue.values.map(v => JSON.stringify(v)).join(', ')}`
    case 'invalid_format': return issue.format === 'regex' && issue.pattern != null ? `must match ${String(issue.pattern)}` : `must be a valid ${issue.format}`
    case 'unrecognized_keys': {
      const shape = (issue.inst as { shape?: Record<string, unknown> } | undefined)?.shape
      const known = shape != null ? ` (known: ${Object.keys(shape).join(', ')})` : ''
      return `has unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map(k => JSON.stringify(k)).join(', ')}${known}`
    }
    case 'invalid_union': return 'does not match any allowed form'
    default: return undefined
  }
}

/** The value at `path` inside `input`, if there is one. */
function at (input: unknown, path: readonly PropertyKey[]): { found: boolean, value?: unknown } {
  let v = input
  for (const key of path) {
    if (v == null || typeof v !== 'object' || !Object.hasOwn(v, key)) return { found: false }
    v = (v as Record<PropertyKey, unknown>)[key]
  }
  return { found: true, value: v }
}

function got (value: unknown): string {
  let text = JSON.stringify(value) ?? String(value)
  if (text.length > MAX_GOT_CHARS) text = `${text.slice(0, MAX_GOT_CHARS - 1)}…`
  return ` (got ${text})`
}

/** One line per issue, joined with '; ': `resources.cpu must be a number ≥ 0 (got "two")`. */
export function describeIssues (issues: readonly z.core.$ZodIssue[], input: unknown): string {
  return issues.map(issue => {
    if (issue.code === 'invalid_key') {
      // A record key that breaks the key schema: name the key, say what a key must be.
      const key = issue.path.at(-1)
      const sub = issue.issues[0]
      const why = sub != null ? peopleErrorMap(sub as unknown as Issue) ?? sub.message : issue.message
      return `${issue.path.slice(0, -1).map(String).join('.')} key ${JSON.stringify(String(key))} ${why}`.trimStart()
    }
    const path = issue.path.map(String).join('.')
    const text = path === '' ? issue.message : `${path} ${issue.message}`
    if (issue.code === 'unrecognized_keys' || issue.message === 'is required') return text
    const { found, value } = at(input, issue.path)
    return found && (value == null || typeof value !== 'object') ? text + got(value) : text
  }).join('; ')
}

export type PeopleParse<T> = { success: true, data: T } | { success: false, problems: string }

/** `schema.safeParse(input)` with the failure written for people (see describeIssues). */
export function parseForPeople<S extends z.ZodType> (schema: S, input: unknown): PeopleParse<z.output<S>> {
  const parsed = schema.safeParse(input, { error: peopleErrorMap })
  if (parsed.success) return { success: true, data: parsed.data as z.output<S> }
  return { success: false, problems: describeIssues(parsed.error.issues, input) }
}
