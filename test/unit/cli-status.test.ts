import { test } from 'node:test'
import assert from 'node:assert/strict'
import { renderStatus } from '../../src/cli/commands/status.ts'
import { formatLimitState } from '../../src/cli/format.ts'
import { nodeEntry, type StatusDocument } from '../../src/daemon/status.ts'
import type { WireRecord } from '../../src/membership/index.ts'
import { run } from '../helpers/cli.ts'

/** `astrad status` as text: the compact node table, `--wide`, departed nodes, notices, limits. */

const NOW = Date.parse('2026-12-03T10:00:00Z')

function node (name: string, state: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peerId: `12D3KooW${name.padEnd(12, 'X')}`, name, cell: 'pool-a', state, roles: ['node'], cores: 8, gpus: 1, cpuUtil: 0.42, inflight: 3,
    lastSeenMs: 300, startedAt: NOW - 2 * 3_600_000, replicas: 2, weight: 0.5,
    uploadLimit: 25_000_000, downloadLimit: 0, uploadRate: 1_200_000, downloadRate: 3_000_000, transfers: 1, ...extra
  }
}

function doc (nodes: Array<Record<string, unknown>>, notices: unknown[] = [], security?: Record<string, unknown>): StatusDocument {
  return {
    self: { peerId: '12D3KooWSelf', name: 'alpha', roles: ['node'], version: '0.1.0', addrs: [], cell: 'pool-a', state: 'ready', ...(security != null ? { security } : {}) },
    view: { source: 'resource', stalenessMs: 0 },
    nodes,
    apps: [],
    models: [],
    transfers: [],
    notices,
    messages: []
  } as unknown as StatusDocument
}

const header = (text: string): string => text.split('\n').find(l => l.startsWith('NAME')) ?? ''
const row = (text: string, name: string): string => text.split('\n').find(l => l.startsWith(`${name}  `)) ?? ''

test('the node table is compact by default: name, cell, state, roles, load, replicas, age', () => {
  const text = renderStatus(doc([node('alpha', 'alive')]), { now: NOW })
  assert.equal(header(text), 'NAME   CELL    STATE  ROLES  LOAD  REPLICAS  AGE')
  assert.match(row(text, 'alpha'), /^alpha\s+pool-a\s+alive\s+node\s+42%\s+2\s+2h$/)
  assert.ok(Math.max(...text.split('\n').map(l => l.length)) < 100, `no line wider than 100 columns:\n${text}`)
})

test('--wide adds cores, GPUs, in-flight, weight, P2P limits and rates, pulls, last seen and peer', () => {
  const text = renderStatus(doc([node('alpha', 'alive')]), { now: NOW, wide: true })
  assert.match(header(text), /^NAME\s+CELL\s+STATE\s+ROLES\s+LOAD\s+REPLICAS\s+AGE\s+CORES\s+GPUS\s+INFLIGHT\s+WEIGHT\s+UP LIMIT\s+UP RATE\s+DOWN LIMIT\s+DOWN RATE\s+PULLS\s+LAST SEEN\s+PEER$/)
  assert.match(row(text, 'alpha'), /^alpha\s+pool-a\s+alive\s+node\s+42%\s+2\s+2h\s+8\s+1\s+3\s+0\.50\s+25\.0 MB\/s\s+1\.20 MB\/s\s+unlimited\s+3\.00 MB\/s\s+1\s+0\.3s\s+…aXXXXXXX$/)
})

test('a left or dead node shows no load, replicas, in-flight, weight, rates or pulls', () => {
  const nodes = [node('gone', 'left'), node('lost', 'dead'), node('busy', 'draining')]
  for (const wide of [false, true]) {
    const text = renderStatus(doc(nodes), { now: NOW, wide })
    for (const name of ['gone', 'lost']) {
      const line = row(text, name)
      assert.doesNotMatch(line, /42%|MB\/s\s+\S+\s+MB\/s|\b2\b\s+2h/, `${name} (wide ${wide}): ${line}`)
      assert.match(line, wide ? /\s-\s+-\s+2h\s+8\s+1\s+-\s+-\s+25\.0 MB\/s\s+-\s+unlimited\s+-\s+-\s/ : /\s-\s+-\s+2h$/, `${name} (wide ${wide}): ${line}`)
    }
    assert.match(row(text, 'busy'), /42%\s+2\s+2h/, 'a draining node still serves')
  }
})

test('the status document zeroes what a left or dead node no longer does, and carries its start time', () => {
  const hb = {
    peerId: '12D3KooWGone', incarnation: NOW - 60_000, seq: 9, state: 'left', roles: ['node'], name: 'gone', cell: 'a', cores: 4, gpus: 0,
    gpuPerf: 0, cpuUtil: 0.5, gpuUtil: 0, inflight: 2, ledgerVersion: 1, readyReplicas: 3, modelsDigest: 0, mailboxCursor: 4,
    uploadLimit: 10, downloadLimit: 20, uploadRate: 5_000_000, downloadRate: 6_000_000, transfers: 2
  }
  for (const state of ['left', 'dead'] as const) {
    const n = nodeEntry({ hb, state, ageMs: 1_000 } as unknown as WireRecord, 0.7)
    assert.deepEqual([n.replicas, n.inflight, n.uploadRate, n.downloadRate, n.transfers], [0, 0, 0, 0, 0], state)
    assert.deepEqual([n.uploadLimit, n.downloadLimit, n.startedAt, n.weight], [10, 20, NOW - 60_000, 0.7], state)
  }
  const live = nodeEntry({ hb, state: 'alive', ageMs: 1_000 } as unknown as WireRecord, undefined)
  assert.deepEqual([live.replicas, live.inflight, live.uploadRate, live.transfers, 'weight' in live], [3, 2, 5_000_000, 2, false])
})

test('a drain notice applied by a node that then left reads 1/1 (1 left), not 0/0', () => {
  const notices = [
    { id: '0123456789ab', kind: 'drain', state: 'published', audience: 'private: gone', targets: 1, applied: 1, left: 1, expiresAt: null, revision: 6 },
    { id: 'ab12cd34ef56', kind: 'message', state: 'published', audience: 'all', targets: 3, applied: 2, left: 0, expiresAt: null, revision: 7 },
    { id: 'cafe00000000', kind: 'message', state: 'published', audience: 'all', targets: 3, applied: 2, expiresAt: null, revision: 8 }
  ]
  const text = renderStatus(doc([node('gone', 'left')], notices), { now: NOW })
  assert.match(text, /^0123456789ab\s+drain\s+published\s+6\s+private: gone\s+1\/1 \(1 left\)\s+-$/m)
  assert.match(text, /^ab12cd34ef56\s+message\s+published\s+7\s+all\s+2\/3\s+-$/m)
  assert.match(text, /^cafe00000000\s+message\s+published\s+8\s+all\s+2\/3\s+-$/m, 'an older daemon without "left"')
})

test('an auto limit with no peer to measure says so instead of "measuring the link"', () => {
  const state = { limit: null, source: 'no-peer', node: null, cluster: null, measured: null } as const
  assert.equal(formatLimitState(state), 'unlimited (auto: no peer to measure)')
  assert.equal(formatLimitState({ ...state, limit: 12_500_000, source: 'probing' }), '12.5 MB/s (auto: measuring the link)')
})

test('status --help lists --wide', async () => {
  const r = await run('status', '--help')
  assert.equal(r.code, 0, r.err)
  assert.match(r.out, /--wide\s+every node column/)
})

test('status says how the daemon holds its cluster secret, and says --insecure loudly', () => {
  const secure = renderStatus(doc([node('alpha', 'alive')], [], { mode: 'secure', source: 'cluster-key', roles: ['node', 'resource', 'scheduler'] }), { now: NOW })
  assert.match(secure, /^security: secure \(certificate for node,resource,scheduler, from cluster-key\)$/m)
  const joined = renderStatus(doc([node('alpha', 'alive')], [], { mode: 'secure', source: 'join-token', roles: ['node'], certExpiresAt: NOW + 30 * 86_400_000 }), { now: NOW })
  assert.match(joined, /^security: secure \(certificate for node, from join-token, expires in 30d\)$/m)
  const expired = renderStatus(doc([node('alpha', 'alive')], [], { mode: 'secure', source: 'membership', roles: ['node'], certExpiresAt: NOW - 1 }), { now: NOW })
  assert.match(expired, /from join-token, saved in the data dir, EXPIRED\)$/m)
  const insecure = renderStatus(doc([node('alpha', 'alive')], [], { mode: 'insecure', source: 'insecure', roles: ['node'] }), { now: NOW })
  assert.match(insecure, /^INSECURE: no cluster secret \(--insecure\): anyone who reaches the P2P port can join$/m)
  assert.doesNotMatch(renderStatus(doc([node('alpha', 'alive')]), { now: NOW }), /security|INSECURE/, 'a daemon older than issue 16 sends none')
})

test('pipelines: a row per pipeline and per stage; an autoscaled app shows its last decision', () => {
  const d = doc([node('alpha', 'alive')]) as unknown as Record<string, unknown>
  d.pipelines = [{
    name: 'ocr', generation: 3, ready: false, lastError: "stage 'read': replica failed to load on n2: bad model",
    stages: {
      detect: { app: 'ocr.detect', generation: 1, desired: 2, placed: 2, ready: 2 },
      read: { app: 'ocr.read', generation: 2, desired: 1, placed: 1, ready: 0, lastError: 'replica failed to load on n2: bad model' }
    }
  }]
  d.apps = [{ name: 'vad', model: 'm'.repeat(64), generation: 1, desired: 3, placed: 3, ready: 3, old: 0, weights: [], autoscaling: { desired: 3, load: 5.2, reason: 'load 5.2 / target 2 → 3: up after 1000 ms', decidedAt: NOW, target: 2, min: 1, max: 8 } }]
  const text = renderStatus(d as unknown as StatusDocument, { now: NOW })
  assert.match(text, /^pipelines:$/m)
  assert.match(text, /^ocr +3 +not ready +stage 'read': replica failed to load on n2: bad model$/m)
  assert.match(text, /^ {2}detect +1 +2 +2 +2 +ready$/m)
  assert.match(text, /^ {2}read +2 +1 +1 +0 +not ready +replica failed to load on n2: bad model$/m)
  assert.match(text, /^vad .* load 5\.2 \/ target 2 → 3: up after 1000 ms$/m)
})

test('NAT: a resource\'s relay line and how this daemon reaches each peer (direct, relayed, last hole punch)', () => {
  const d = doc([node('alpha', 'alive')]) as unknown as Record<string, unknown>
  d.relay = {
    reservations: 2,
    traffic: { bytes: { to_source: 64_000_000, to_destination: 1_500_000 }, connections: 1, connectionsTotal: 3, paused: 40 },
    limit: { limit: 12_500_000, source: 'auto', rateBps: 11_900_000 }
  }
  d.peers = [
    { peerId: '12D3KooWAAAAAAAAresource', name: 'res', path: 'direct' },
    { peerId: '12D3KooWBBBBBBBBnatnode1', name: 'b', path: 'relayed', holePunch: { result: 'no_addresses', at: NOW } },
    { peerId: '12D3KooWCCCCCCCCpublic01', path: 'direct', holePunch: { result: 'upgraded', at: NOW } }
  ]
  d.holePunch = { attempts: 2, results: { no_addresses: 1, upgraded: 1 } }
  const text = renderStatus(d as unknown as StatusDocument, { now: NOW })
  assert.match(text, /^relay: 2 slots, 1 relayed connections open \(3 since start\), 64\.0 MB to dialers, 1\.50 MB to slot holders, 11\.9 MB\/s now, limit 12\.5 MB\/s \(auto\) and the upload limit$/m, text)
  assert.match(text, /^res\s+direct\s+-$/m, text)
  assert.match(text, /^b\s+relayed\s+no_addresses$/m, text)
  assert.match(text, /^…public01\s+direct\s+upgraded$/m, text)
  assert.match(text, /^hole punches: 2 started; 1 no_addresses, 1 upgraded$/m, text)
  // An older daemon sends none of it: nothing is shown.
  assert.doesNotMatch(renderStatus(doc([node('alpha', 'alive')]), { now: NOW }), /relay:|peers:|hole punches/)
})
