import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import ort from 'onnxruntime-node'
import { ProcessCluster, requireBinary, type DaemonProcess } from '../helpers/process.ts'
import { waitFor } from '../helpers/cluster.ts'
import { LoadSet } from '../helpers/load.ts'
import { postJson } from '../helpers/http.ts'
import { VAD_MODEL, gateModel, vadInputs } from '../helpers/pipeline-models.ts'

/**
 * A pipeline app (docs/pipelines.md) end to end with real `dist/astrad` processes: Silero VAD
 * then a gate on its output, each stage an app with its own replicas on three nodes. It answers
 * with onnxruntime's own numbers; one stage is scaled and then rolled under load with no request
 * failed and the other stage untouched; a node holding a replica is killed with SIGKILL under
 * load and every request still answers 200; `app rm` takes the stage apps with it.
 */

const cluster = new ProcessCluster()
const loads = new LoadSet()
before(() => { requireBinary() })
// Loads first: a load left running against killed daemons would spin until its maxMs.
after(async () => { await loads.stopAll(); await cluster.cleanup() })

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
after(() => { agent.destroy() })

const post = async (rpc: string, urlPath: string, body: unknown, signal?: AbortSignal): Promise<{ status: number, json: any }> => await postJson(agent, rpc, urlPath, body, signal)

let res: DaemonProcess
const nodes: DaemonProcess[] = []
const ids: Record<string, string> = {}
let gateBytes: Uint8Array

/** The pipeline as deployed; tests change one stage at a time and redeploy it. */
const spec = {
  name: 'vg',
  stages: {
    vad: { model: '', replicas: 2, resources: { cpu: 1, gpu: 0 }, threads: 1 },
    gate: { model: '', replicas: 1, resources: { cpu: 1, gpu: 0 }, threads: 1, maxQueue: 64 }
  },
  steps: [
    { name: 'vad', stage: 'vad', inputs: { input: '$request.input', state: '$request.state', sr: '$request.sr' } },
    { name: 'gate', stage: 'gate', inputs: { x: 'vad.output' } }
  ],
  outputs: { speech: 'gate.y', prob: 'vad.output' }
}

async function cli (args: string[], what: string): Promise<string> {
  const r = await cluster.cli([...args, '--rpc', res.rpc])
  assert.equal(r.code, 0, `${what}: astrad ${args.join(' ')} exited ${String(r.code)}: ${r.stderr}`)
  return r.stdout
}

async function deploy (what: string): Promise<any> {
  const file = path.join(cluster.root, 'vg.json')
  fs.writeFileSync(file, JSON.stringify(spec))
  return JSON.parse(await cli(['app', 'deploy', file, '--json'], what))
}

async function appLs (): Promise<{ apps: any[], pipelines: any[] }> {
  return JSON.parse(await cli(['app', 'ls', '--json'], 'app ls'))
}

/** The pipeline's entry of `app ls`, once every stage has `want` (stage → ready count) ready and desired. */
async function waitStages (want: Record<string, number>, what: string): Promise<any> {
  return await waitFor(what, async () => {
    const p = (await appLs()).pipelines.find(x => x.name === 'vg')
    const ok = p?.status?.ready === true && Object.entries(want).every(([s, n]) => {
      const st = p.status.stages?.[s]
      return st?.desired === n && st?.placed === n && st?.ready === n
    })
    if (!ok) throw new Error(`app ls lists vg as ${JSON.stringify(p ?? null)}`)
    return p
  }, 60_000)
}

/** `GET /v1/status` of the scheduler: the stage app's entry (placement and weights by node). */
async function stageStatus (s: string): Promise<any> {
  return (await res.status()).apps.find((a: any) => a.name === `vg.${s}`)
}

/** Names of the nodes holding the stage's replicas (from the scheduler's weights). */
async function stageNodes (s: string): Promise<string[]> {
  return ((await stageStatus(s))?.weights ?? []).filter((w: any) => w.ejected !== true).map((w: any) => w.name as string).sort()
}

/** The first answers other than 200 of the loads (status, error and when), for failure messages. */
const refusals: string[] = []
/** The stages' placement and routing weights and the nodes as the scheduler sees them, for failure messages. */
async function placement (): Promise<string> {
  const st = await res.status()
  const apps = st.apps.filter((a: any) => a.name.startsWith('vg.')).map((a: any) => ({ name: a.name, generation: a.generation, desired: a.desired, placed: a.placed, ready: a.ready, old: a.old, lastError: a.lastError, weights: a.weights.map((w: any) => `${w.name}:${w.weight}${w.ejected === true ? ' ejected' : ''}`) }))
  return JSON.stringify({ apps, nodes: st.nodes.map((n: any) => `${n.name} ${n.state} replicas ${n.replicas}`) })
}

/** Waits until the scheduler lists a killed node as dead (it then stops counting its replicas). */
async function waitDead (p: DaemonProcess): Promise<void> {
  await waitFor(`the scheduler to find ${p.name} dead`, async () => {
    const n = (await res.status()).nodes.find((x: any) => x.name === p.name)
    if (n != null && n.state !== 'dead' && n.state !== 'left') throw new Error(`${p.name} is ${String(n.state)}`)
    return true
  }, 60_000)
}

function load (concurrency: number): ReturnType<LoadSet['start']> {
  return loads.start(async (i, w, signal) => {
    const r = await post(res.rpc, '/v2/models/vg/infer', { inputs: vadInputs(1, w * 1000 + i) }, signal)
    if (r.status !== 200 && refusals.length < 5) refusals.push(`${new Date().toISOString()} ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`)
    return r.status
  }, { concurrency })
}
const seen = (): string => refusals.length > 0 ? `; first refusals:\n  ${refusals.join('\n  ')}` : ''

async function metric (p: DaemonProcess, series: string): Promise<number> {
  const text = await (await fetch(`http://${p.rpc}/metrics`)).text()
  return Number(text.split('\n').find(l => l.startsWith(series + ' '))?.slice(series.length + 1) ?? 0)
}

/** Requests of vg the scheduler ran as one chained call on a node (docs/pipelines.md, "Fusion"), by result. */
async function fusedCalls (result = 'ok'): Promise<number> {
  return await metric(res, `astrad_pipeline_fused_calls_total{pipeline="vg",result="${result}"}`)
}

/** Stage calls the scheduler sent to another node after one failed them, for `apps`, whatever the reason. */
async function retriesOf (...apps: string[]): Promise<number> {
  const text = await (await fetch(`http://${res.rpc}/metrics`)).text()
  return text.split('\n').filter(l => apps.some(a => l.startsWith(`astrad_routing_retries_total{app="${a}",`))).reduce((n, l) => n + Number(l.split(' ').pop()), 0)
}

test('a VAD→gate pipeline over three nodes answers onnxruntime\'s own numbers; app ls shows each stage', async () => {
  res = await cluster.start('res', ['--role', 'resource,scheduler'])
  const boot = await cluster.addr(res)
  for (const name of ['n1', 'n2', 'n3']) nodes.push(await cluster.start(name, ['--role', 'node', '--bootstrap', boot, '--cores', '2']))
  // Placement spreads a stage's replicas over the nodes the scheduler knows: let it know all three.
  await waitFor('the scheduler lists the three nodes alive', async () => {
    const alive = (await res.status()).nodes.filter((n: any) => n.state === 'alive' && n.cores === 2).map((n: any) => n.name)
    if (alive.length !== 3) throw new Error(`nodes alive: ${alive.join(', ')}`)
    return true
  })
  // The gate's threshold lies between the probabilities of the rows of vadInputs(3, 1).
  const session = await ort.InferenceSession.create(VAD_MODEL, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
  const inputs = vadInputs(3, 1)
  const direct = await session.run({
    input: new ort.Tensor('float32', Float32Array.from(inputs[0]!.data), [3, 512]),
    state: new ort.Tensor('float32', new Float32Array(2 * 3 * 128), [2, 3, 128]),
    sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), [])
  })
  await session.release()
  const probs = [...direct.output!.data as Float32Array]
  gateBytes = gateModel((Math.min(...probs) + Math.max(...probs)) / 2)
  const gateFile = path.join(cluster.root, 'gate.onnx')
  fs.writeFileSync(gateFile, gateBytes)
  for (const [name, file] of [['vad', VAD_MODEL], ['gate', gateFile]] as const) {
    const added = await cluster.cli(['model', 'add', file, '--json', '--rpc', nodes[0]!.rpc])
    assert.equal(added.code, 0, `model add ${name}: ${added.stderr}`)
    ids[name] = JSON.parse(added.stdout).id
  }
  // A model id prefix works in a stage as in an app (the CLI resolves it).
  spec.stages.vad.model = ids.vad!.slice(0, 12)
  spec.stages.gate.model = ids.gate!
  const dep = await deploy('deploying vg')
  assert.equal(dep.change, 'created', JSON.stringify(dep))
  assert.deepEqual(dep.stages, { vad: 'created', gate: 'created' })
  assert.equal(dep.pipeline.spec.stages.vad.model, ids.vad, 'the prefix resolved to the full id')

  const listed = await waitStages({ vad: 2, gate: 1 }, 'vg ready with 2 VAD replicas and 1 gate')
  assert.deepEqual(listed.status.stages.vad.app, 'vg.vad')
  const apps = (await appLs()).apps.filter(a => a.pipeline?.name === 'vg')
  assert.deepEqual(apps.map(a => [a.spec.name, a.pipeline.stage]).sort(), [['vg.gate', 'gate'], ['vg.vad', 'vad']])
  await waitFor('the two VAD replicas on two nodes', async () => {
    const on = await stageNodes('vad')
    if (new Set(on).size !== 2) throw new Error(`VAD replicas on ${on.join(', ')}`)
    return true
  })
  const st = JSON.parse(await cli(['status', '--json'], 'status'))
  // status --json: name, generation, ready, stages (docs/pipelines.md).
  assert.equal(st.pipelines?.find((p: any) => p.name === 'vg')?.ready, true, `status --json pipelines: ${JSON.stringify(st.pipelines)}`)

  // A bad spec through the CLI: exit 1, one line on stderr naming the stage and the field.
  const badFile = path.join(cluster.root, 'bad.json')
  fs.writeFileSync(badFile, JSON.stringify({ ...spec, name: 'bad', stages: { ...spec.stages, gate: { ...spec.stages.gate, model: 'f'.repeat(64) } } }))
  const bad = await cluster.cli(['app', 'deploy', badFile, '--rpc', res.rpc])
  assert.equal(bad.code, 1, `app deploy of a stage with an unknown model: ${bad.stdout}${bad.stderr}`)
  assert.match(bad.stderr, /stages\.gate\.model/, 'stderr names the stage and field')
  assert.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr}`)

  const gate = await ort.InferenceSession.create(gateBytes, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
  const speech = [...(await gate.run({ x: direct.output! })).y!.data as Float32Array]
  await gate.release()
  assert.deepEqual([...new Set(speech)].sort(), [0, 1], `the gate opens for some rows only: ${speech.join(', ')}`)
  const fusedBefore = await fusedCalls()
  for (let i = 0; i < 4; i++) {
    const r = await post(res.rpc, '/v2/models/vg/infer', { inputs })
    assert.equal(r.status, 200, `request ${i}: ${JSON.stringify(r.json)}`)
    const out = Object.fromEntries((r.json.outputs as any[]).map(o => [o.name, o]))
    assert.deepEqual(out.prob, { name: 'prob', datatype: 'FP32', shape: [3, 1], data: probs }, `prob, request ${i}`)
    assert.deepEqual(out.speech, { name: 'speech', datatype: 'FP32', shape: [3, 1], data: speech }, `speech, request ${i}`)
  }
  // Two VAD replicas and one gate: some VAD node has no gate, so the stages were called one by
  // one (not fused into a chained call) — the numbers above crossed the scheduler between stages.
  assert.equal(await fusedCalls() - fusedBefore, 0, `fused calls with uneven placement: ${await placement()}`)
})

test('under load, the gate stage is scaled 1→2 and then rolled: no request fails; the VAD stage keeps its generation and its replicas', async () => {
  const vadBefore = (await appLs()).pipelines.find(p => p.name === 'vg').stages.vad
  const vadNodes = await stageNodes('vad')
  const accepted = async (): Promise<number> => await metric(res, 'astrad_placement_reservations_total{result="accepted"}')
  const acceptedBefore = await accepted()
  // The VAD stage app watched all along: never an old-generation replica, never short of 2 ready.
  const vadSeen: string[] = []
  let watching = true
  const watcher = (async () => {
    while (watching) {
      const s = await stageStatus('vad').catch(() => undefined)
      if (s != null) vadSeen.push(`g${s.generation} placed ${s.placed} ready ${s.ready} old ${s.old}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  })()
  const l = load(4)
  try {
    await waitFor('load running', async () => l.done() > 30)

    spec.stages.gate.replicas = 2
    const scaled = await deploy('scaling the gate')
    assert.deepEqual(scaled.stages, { vad: 'unchanged', gate: 'scaled' }, JSON.stringify(scaled))
    assert.equal(scaled.pipeline.stages.gate.generation, 1)
    await waitStages({ vad: 2, gate: 2 }, 'two gate replicas ready')

    spec.stages.gate.maxQueue = 65
    const rolled = await deploy('rolling the gate')
    assert.equal(rolled.change, 'rolled', JSON.stringify(rolled))
    assert.deepEqual(rolled.stages, { vad: 'unchanged', gate: 'rolled' }, JSON.stringify(rolled))
    assert.equal(rolled.pipeline.stages.gate.generation, 2)
    await waitFor('the gate rolled: 2 ready of generation 2, no old one left', async () => {
      const s = await stageStatus('gate')
      if (!(s?.generation === 2 && s.ready === 2 && s.old === 0)) throw new Error(`vg.gate: ${JSON.stringify(s)}`)
      return true
    }, 60_000)
    const at = l.done()
    await waitFor('load continues after the roll', async () => l.done() > at + 30)
  } finally {
    watching = false
    await watcher
  }
  const statuses = await l.stop()
  assert.deepEqual([...statuses.keys()], [200], `statuses during the scale and roll: ${JSON.stringify([...statuses])}${seen()}`)

  const vadAfter = (await appLs()).pipelines.find(p => p.name === 'vg').stages.vad
  assert.deepEqual(vadAfter, vadBefore, 'the VAD stage\'s generation and changedAt')
  assert.deepEqual(await stageNodes('vad'), vadNodes, `the VAD replicas on the same nodes; VAD stage seen: ${[...new Set(vadSeen)].join(', ')}; placement now: ${await placement()}`)
  assert.ok(vadSeen.length > 0, 'the VAD stage was watched')
  const off = vadSeen.filter(s => s !== 'g1 placed 2 ready 2 old 0')
  assert.deepEqual(off, [], `the VAD stage during the scale and roll (${vadSeen.length} looks)`)
  // One reservation for the scale, two for the roll, none for the VAD stage.
  assert.equal(await accepted() - acceptedBefore, 3, 'reservations accepted during the scale and roll')
})

test('kill -9 of a node holding a VAD replica under load: every request answers 200; the stage recovers; then of a gate holder: still 200', async () => {
  const l = load(4)
  await waitFor('load running', async () => l.done() > 30)
  const holders = await stageNodes('vad')
  assert.equal(new Set(holders).size, 2, `the two VAD replicas on two nodes: ${holders.join(', ')}`)
  const victim = nodes.find(n => holders.includes(n.name) && n.child.exitCode == null)
  assert.ok(victim != null, `a live node among the VAD holders ${holders.join(', ')}`)
  const before = await placement()
  // (Placement after the roll is uneven, so the stages are called one by one; were it even, a cut
  // chained call would be run again stage by stage and counted as a fused fallback instead.)
  const cutOff = async (): Promise<number> => await retriesOf('vg.vad') + await fusedCalls('fallback')
  const retriesBefore = await cutOff()
  const killedAt = new Date().toISOString()
  victim.child.kill('SIGKILL')
  await victim.exited
  // Requests in flight on the killed node are retried, stage by stage, on the other replica
  // (inference is idempotent): none fails, none disappears.
  const at = l.done()
  await waitFor('the survivors carry the load', async () => l.done() > at + 100)
  const statuses = await l.stop()
  assert.deepEqual([...statuses.keys()], [200], `statuses around the kill of ${victim.name} at ${killedAt}: ${JSON.stringify([...statuses])}${seen()}\nbefore the kill: ${before}\nnow: ${await placement()}`)
  // Two nodes of two cores are left: room for 2 VAD and 2 gate replicas, spread again. (Until
  // the scheduler finds the node dead it still counts its replicas: wait for that first.)
  await waitDead(victim)
  await waitStages({ vad: 2, gate: 2 }, `vg ready again after ${victim.name} was killed`)
  await waitFor('the VAD replicas on the two nodes left', async () => {
    const on = await stageNodes('vad')
    if (new Set(on).size !== 2 || on.includes(victim.name)) throw new Error(`VAD replicas routed to ${on.join(', ')}: ${await placement()}`)
    return true
  })
  const retries = await cutOff()
  assert.ok(retries > retriesBefore, `the kill cut VAD requests off and they were retried (retries ${retriesBefore} → ${retries})`)

  // Again, now that the two nodes left each hold a VAD and a gate replica: the sequence runs
  // fused, one chained call per request on one node. That node is killed under load; a chain
  // cut off before its answer came back is run again, stage by stage, on the last node (nothing
  // of it was received, so nothing runs twice); every request answers 200.
  const fusedBefore2 = await fusedCalls()
  const l2 = load(4)
  await waitFor('load running', async () => l2.done() > 30)
  assert.ok(await fusedCalls() > fusedBefore2, `requests run as chained calls with both stages on both nodes: ${await placement()}`)
  const gateHolders = await stageNodes('gate')
  const second = nodes.find(n => gateHolders.includes(n.name) && n.child.exitCode == null && n.child.signalCode == null)
  assert.ok(second != null, `a live node among the gate holders ${gateHolders.join(', ')}`)
  const before2 = await placement()
  const killedAt2 = new Date().toISOString()
  second.child.kill('SIGKILL')
  await second.exited
  const at2 = l2.done()
  await waitFor('the last node carries the load', async () => l2.done() > at2 + 100)
  const statuses2 = await l2.stop()
  assert.deepEqual([...statuses2.keys()], [200], `statuses around the kill of ${second.name} at ${killedAt2}: ${JSON.stringify([...statuses2])}${seen()}\nbefore the kill: ${before2}\nnow: ${await placement()}`)
  // (Not asserted: that the kill cut a chain off. In about 1 run of 4 here none was in flight on
  // that node when it died and none was sent to it after: no fallback or retry was counted, and
  // every request answered 200 all the same.)
  // One node of two cores is left: one replica of each stage, the pipeline still ready.
  await waitDead(second)
  await waitFor('app ls: one ready replica per stage, the pipeline ready, the shortfall said', async () => {
    const p = (await appLs()).pipelines.find(x => x.name === 'vg')
    const st = p?.status
    if (!(st?.ready === true && st.stages?.vad?.ready === 1 && st.stages?.vad?.desired === 2 && st.stages?.gate?.ready === 1)) throw new Error(`app ls lists vg as ${JSON.stringify(p ?? null)}`)
    return true
  })
})

test('app rm: a stage app is refused; the pipeline goes with its stage apps and their replicas', async () => {
  const stageRm = await cluster.cli(['app', 'rm', 'vg.vad', '--rpc', res.rpc])
  assert.notEqual(stageRm.code, 0, `app rm vg.vad: ${stageRm.stdout}`)
  assert.match(stageRm.stderr, /vg/, 'the refusal names the pipeline')
  await cli(['app', 'rm', 'vg'], 'removing vg')
  await waitFor('the stage apps and their replicas gone', async () => {
    const ls = await appLs()
    const st = await res.status()
    const replicas = st.nodes.reduce((n: number, x: any) => n + x.replicas, 0)
    const left = ls.apps.map(a => a.spec.name)
    if (left.length > 0 || ls.pipelines.length > 0 || replicas > 0) throw new Error(`apps ${left.join(', ')}; pipelines ${ls.pipelines.map(p => p.name).join(', ')}; ready replicas on nodes ${replicas}`)
    return true
  })
  assert.equal((await post(res.rpc, '/v2/models/vg/infer', { inputs: vadInputs(1, 0) })).status, 404)
})
