import type { Logger } from '../util/logger.ts'
import { componentLogger } from '../util/logger.ts'
import { systemClock, type Clock } from '../util/time.ts'
import { LifecycleError, errorMessage } from '../util/errors.ts'
import type { DaemonConfig } from '../config/index.ts'
import { Counter } from 'prom-client'
import { createMetrics, gaugeFn, labelledGaugeFn, type Metrics } from '../metrics/index.ts'
import { createHost, loadOrCreateIdentity, Bootstrapper, ProtocolPeers, PeerLookup, servePeerLookup, p2pConstants, RelayTraffic, HOLEPUNCH_RESULTS, type Host } from '../p2p/index.ts'
import { Trust, loadSecurity, type Security } from '../trust/index.ts'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  Heartbeater, ResourceMembership, SchedulerMembership, CpuSampler, InflightCounter, pullOnlineList,
  membershipConstants, type MembershipView, type Thresholds, type WireRecord
} from '../membership/index.ts'
import { RpcServer } from '../rpc/index.ts'
import { clusterLog, clusterLogClient, localAccess, type ClusterLog, type ClusterLogAccess, type ClusterLogClient } from '../clusterlog/index.ts'
import { TransferService, registerTransferRoutes, RelayLimit } from '../transfer/index.ts'
import { Ledger, LedgerView, Placer, ReserveClient, serveReservations, registerAppRoutes } from '../placement/index.ts'
import { ReplicaHost, Router, serveInference, UnavailableError } from '../serving/index.ts'
import { registerKServeRoutes } from '../serving/kserve/index.ts'
import { PipelineBackend } from '../pipeline/index.ts'
import { AppLoadMeter, Autoscaler, LoadBoard, LoadExchange, relayLoad, autoscaleConstants } from '../autoscale/index.ts'
import { createPool } from '../inference/index.ts'
import { BusySampler, Devices, type DeviceReport } from '../devices/index.ts'
import path from 'node:path'
import { MailboxServer, MailboxPuller } from '../mailbox/index.ts'
import { NoticeAdmin, memberOf } from '../mailbox/admin.ts'
import { registerNoticeRoutes } from '../mailbox/routes.ts'
import { NoticeEffects } from './notices.ts'
import type { ActiveMessage } from './status.ts'
import { lockDataDir } from './lock.ts'
import { readCordon, saveCordon } from './cordon.ts'
import { registerRoutes } from './routes.ts'
import { DRAIN_TIMEOUT_MS, DRAIN_POLL_MS, DRAIN_GRACE_MS, LEAVE_FLUSH_MS } from './constants.ts'

export type DaemonState = 'created' | 'starting' | 'running' | 'draining' | 'stopping' | 'stopped' | 'failed'

export interface DaemonOptions {
  config: DaemonConfig
  logger: Logger
  clock?: Clock
  /** Membership thresholds (tests shorten them). */
  thresholds?: Partial<Thresholds>
  /** Export Node's process metrics on /metrics (on for real daemons). */
  processMetrics?: boolean
  /** How long a drain waits for in-flight requests. */
  drainTimeoutMs?: number
}

/**
 * The composition root: builds the roles that were asked for and runs them in order.
 * Stop order: stop accepting RPC → drain in-flight → announce leave → stop membership →
 * stop libp2p → release the data dir.
 */
export class Daemon {
  state: DaemonState = 'created'
  readonly config: DaemonConfig
  readonly inflight = new InflightCounter()
  private readonly options: DaemonOptions
  private readonly logger: Logger
  private readonly clock: Clock
  private readonly stopped = Promise.withResolvers<void>()
  private stopping?: Promise<void>
  private releaseLock?: () => void
  private libp2p?: Host
  private metricsValue?: Metrics
  private securityValue?: Security
  private trustValue?: Trust
  private heartbeater?: Heartbeater
  private resource?: ResourceMembership
  private scheduler?: SchedulerMembership
  private resourcePeers?: ProtocolPeers
  private bootstrapper?: Bootstrapper
  private rpc?: RpcServer
  private log?: ClusterLog
  private logClient?: ClusterLogClient
  private transferService?: TransferService
  /** What this resource relays for peers behind NAT, and its budget (resource role). */
  private relayTrafficValue?: RelayTraffic
  private relayLimitValue?: RelayLimit
  private ledgerValue?: Ledger
  private devicesValue?: Devices
  private replicaHost?: ReplicaHost
  private ledgerView?: LedgerView
  private placerValue?: Placer
  private routerValue?: Router
  private pipelinesValue?: PipelineBackend
  private loadExchange?: LoadExchange
  private unrelayLoad?: () => void
  private mailboxServer?: MailboxServer
  private puller?: MailboxPuller
  private noticeEffects?: NoticeEffects
  private noticeAdminValue?: NoticeAdmin
  /** A drain notice applied before the daemon was running: drained once it is. */
  private drainWhenRunning = false

  constructor (options: DaemonOptions) {
    this.options = options
    this.config = options.config
    this.logger = options.logger
    this.clock = options.clock ?? systemClock
  }

  /** Resolves once the daemon has stopped (after a drain, `astrad drain`, or stop()). */
  get done (): Promise<void> { return this.stopped.promise }

  get host (): Host {
    if (this.libp2p == null) throw new LifecycleError('daemon not started')
    return this.libp2p
  }

  /** How this daemon holds its cluster secret and certificate (status, docs/security.md). */
  get security (): Security | undefined { return this.securityValue }

  /** Who holds which role; checked by every control protocol. */
  get trust (): Trust {
    if (this.trustValue == null) throw new LifecycleError('daemon not started')
    return this.trustValue
  }

  get metrics (): Metrics {
    if (this.metricsValue == null) throw new LifecycleError('daemon not started')
    return this.metricsValue
  }

  /** The membership view held in this process: the resource's own list, else the scheduler's. */
  get view (): MembershipView | undefined {
    return this.resource ?? this.scheduler
  }

  /** The cluster log: the resource's own, or a client of the connected resources. */
  get clusterLog (): ClusterLogAccess {
    if (this.log != null) return localAccess(this.log)
    if (this.logClient != null) return this.logClient
    throw new LifecycleError('daemon not started')
  }

  /** Model distribution (store, downloads, tracker, limits). */
  /** What this resource relayed and its limit; undefined without the resource role. */
  relayStatus (): { traffic: ReturnType<RelayTraffic['stats']>, limit: ReturnType<RelayLimit['info']>, reservations: number } | undefined {
    if (this.relayTrafficValue == null || this.relayLimitValue == null) return undefined
    return { traffic: this.relayTrafficValue.stats(), limit: this.relayLimitValue.info(), reservations: this.libp2p?.services.relay?.reservations.size ?? 0 }
  }

  get transfer (): TransferService {
    if (this.transferService == null) throw new LifecycleError('daemon not started')
    return this.transferService
  }

  /** The node role's accelerators and working execution providers. */
  get devices (): Devices | undefined { return this.devicesValue }
  /**
   * A node's device report: this node's own, or as its ledger last reached this scheduler
   * (undefined for a daemon holding neither).
   */
  nodeDevices (peerId: string): DeviceReport | undefined {
    if (this.devicesValue != null && this.libp2p?.peerId.toString() === peerId) return this.devicesValue.report()
    return this.ledgerView?.get(peerId)?.devices
  }

  /** The node role's capacity ledger. */
  get ledger (): Ledger | undefined { return this.ledgerValue }
  /** The scheduler role's placement. */
  get placer (): Placer | undefined { return this.placerValue }
  /** The scheduler role's request router. */
  get router (): Router | undefined { return this.routerValue }
  /** The scheduler role's KServe backend: its router's apps and the pipelines on top of them. */
  get pipelines (): PipelineBackend | undefined { return this.pipelinesValue }

  /** The node role's mailbox (where it is, what it applied). */
  get mailbox (): MailboxPuller | undefined { return this.puller }
  /** `astrad notice …`: publish and manage notices (every role). */
  get noticeAdmin (): NoticeAdmin | undefined { return this.noticeAdminValue }
  /** `message` notices in force on this node. */
  get messages (): ActiveMessage[] { return this.noticeEffects?.messages ?? [] }

  /** The local log's revision (resource role only). */
  get clusterLogStats (): { revision: number } | undefined {
    return this.log != null && this.state === 'running' ? { revision: this.log.revision } : undefined
  }

  get rpcAddress (): { host: string, port: number } | undefined {
    return this.rpc?.address
  }

  get ready (): boolean {
    return this.state === 'running' && (this.bootstrapper?.connected ?? true)
  }

  async start (): Promise<void> {
    if (this.state !== 'created') throw new LifecycleError(`cannot start a daemon that is ${this.state}`)
    this.state = 'starting'
    const { config } = this
    try {
      this.releaseLock = lockDataDir(config.dataDir)
      const privateKey = await loadOrCreateIdentity(config.dataDir)
      const security = this.securityValue = await loadSecurity({
        dataDir: config.dataDir,
        roles: config.roles,
        bootstrap: config.bootstrap,
        insecure: config.insecure,
        clusterKey: config.clusterKey,
        joinToken: config.joinToken
      }, peerIdFromPrivateKey(privateKey).toString())
      const metrics = this.metricsValue = createMetrics({ processMetrics: this.options.processMetrics })
      const trust = this.trustValue = new Trust({
        clusterPublic: security.clusterPublic, selfCert: security.cert, logger: componentLogger(this.logger, 'trust'), registry: metrics.registry
      })
      const peerLookup = new PeerLookup()
      // Counted from the first relayed byte; limited once the transfer service's upload bucket exists (below).
      const relayTraffic = config.roles.includes('resource') ? this.relayTrafficValue = new RelayTraffic() : undefined
      const libp2p = this.libp2p = await createHost({
        privateKey,
        peerLookup,
        listen: config.listen,
        announce: config.announce,
        swarmKey: security.psk,
        onHandshakeFailure: (direction, reason) => { trust.handshakeFailed(direction, reason) },
        relay: {
          // Resources relay for members behind NAT, without data or time limits but within a
          // byte-rate budget shared with their uploads (docs/nat.md).
          server: config.roles.includes('resource'),
          traffic: relayTraffic,
          // Members: peers with a valid certificate whose heartbeats this resource holds and
          // who have not left or died.
          isMember: peer => {
            const state = this.resource?.list.get(peer.toString())?.state
            return trust.isMember(peer.toString()) && state != null && state !== 'dead' && state !== 'left'
          }
        }
      })
      await trust.attach(libp2p)
      // A member this daemon never met (a scheduler-only daemon and the nodes it places on) is
      // dialled at the addresses a resource knows; resources answer members.
      peerLookup.attach(libp2p, async peer => await trust.check(peer, 'resource', p2pConstants.PEER_LOOKUP_PROTOCOL))
      if (config.roles.includes('resource')) await servePeerLookup(libp2p, Trust.guard(libp2p, 'member', p2pConstants.PEER_LOOKUP_PROTOCOL))
      const base = { libp2p, metrics, clock: this.clock }
      const roles = new Set(config.roles)

      if (roles.has('resource')) {
        this.resource = new ResourceMembership({ ...base, logger: componentLogger(this.logger, 'membership') }, { thresholds: this.options.thresholds })
      } else if (roles.has('scheduler')) {
        this.scheduler = new SchedulerMembership({ ...base, logger: componentLogger(this.logger, 'membership') })
      }
      const logComponents = { libp2p, logger: componentLogger(this.logger, 'clusterlog'), registry: metrics.registry }
      if (roles.has('resource')) this.log = clusterLog({ dataDir: config.dataDir })(logComponents)
      else this.logClient = clusterLogClient()(logComponents)
      if (this.view == null) this.resourcePeers = new ProtocolPeers(libp2p, membershipConstants.ONLINE_PROTOCOL)
      const membership = this.resource
      const transfer = this.transferService = new TransferService({
        libp2p,
        logger: this.logger,
        registry: metrics.registry,
        clusterLog: () => this.clusterLog,
        // Trackers offer only holders the membership still considers up.
        isLive: membership != null ? peer => { const s = membership.list.get(peer)?.state; return s == null || s === 'alive' || s === 'suspect' || s === 'draining' } : undefined
      }, {
        dataDir: config.dataDir,
        node: roles.has('node'),
        resource: roles.has('resource'),
        uploadLimit: config.uploadLimit,
        downloadLimit: config.downloadLimit,
        cacheSize: config.cacheSize,
        scrubRate: config.scrubRate,
        scrubIntervalMs: config.scrubInterval
      })

      if (relayTraffic != null) {
        const relayLimit = this.relayLimitValue = new RelayLimit({ setting: config.relayLimit, node: roles.has('node') }, transfer.limits)
        relayTraffic.setBudget(relayLimit)
        const relayed = new Counter({ name: 'astrad_relay_bytes_total', help: 'Bytes this resource relayed for peers behind NAT, by direction (to_destination: from the dialling peer to the one holding the slot)', labelNames: ['direction'], registers: [metrics.registry] })
        relayTraffic.onBytes((direction, n) => { relayed.inc({ direction }, n); relayLimit.record(n) })
        gaugeFn(metrics.registry, 'astrad_relay_connections', 'Relayed connections open through this resource', () => relayTraffic.stats().connections)
        gaugeFn(metrics.registry, 'astrad_relay_connections_opened', 'Relayed connections opened through this resource since start', () => relayTraffic.stats().connectionsTotal)
        gaugeFn(metrics.registry, 'astrad_relay_reservations', 'Relay slots this resource holds for peers behind NAT', () => libp2p.services.relay?.reservations.size ?? 0)
        gaugeFn(metrics.registry, 'astrad_relay_limit_bytes_per_second', 'The relay\'s own byte-rate cap (0 = none; relayed bytes also draw from the upload limit)', () => relayLimit.info().limit ?? 0)
      }
      const holePunches = new Counter({ name: 'astrad_holepunch_total', help: 'DCUtR hole punches this daemon started on relayed connections, by outcome', labelNames: ['result'], registers: [metrics.registry] })
      for (const result of HOLEPUNCH_RESULTS) holePunches.inc({ result }, 0)
      libp2p.services.holePunch.onOutcome(outcome => { holePunches.inc({ result: outcome.result }) })

      const selfId = libp2p.peerId.toString()
      const servingLogger = componentLogger(this.logger, 'serving')
      if (roles.has('node')) {
        const ledger = this.ledgerValue = new Ledger({ cpu: config.cores, gpu: config.gpus })
        if (readCordon(config.dataDir)) ledger.setCordoned(true)
        const devices = this.devicesValue = new Devices({ logger: componentLogger(this.logger, 'devices'), createPool }, {
          gpus: config.gpus, gpuPerf: config.gpuPerf, probeDir: path.join(config.dataDir, 'devices')
        })
        ledger.setDevices(devices.report())
        devices.onChange(() => { ledger.setDevices(devices.report()) })
        this.replicaHost = new ReplicaHost({ ledger, transfer, logger: servingLogger, createPool, registry: metrics.registry }, { dataDir: config.dataDir })
      }
      const view = this.view
      if (roles.has('scheduler') && view != null) {
        const client = new ReserveClient(libp2p)
        const local = this.ledgerValue != null ? { peerId: selfId, ledger: this.ledgerValue } : undefined
        const ledgers = this.ledgerView = new LedgerView({
          view, client, logger: componentLogger(this.logger, 'placement'),
          local
        })
        // Autoscaling: the load each scheduler routes, shared on astra/load/1; owners decide.
        const meter = new AppLoadMeter()
        const board = new LoadBoard(autoscaleConstants.LOAD_STALE_MS)
        const autoscaleLogger = componentLogger(this.logger, 'autoscale')
        const scaler = new Autoscaler({ board, clock: this.clock, logger: autoscaleLogger, registry: metrics.registry })
        const placer = this.placerValue = new Placer({
          view, ledgers, client, clusterLog: () => this.clusterLog, logger: componentLogger(this.logger, 'placement'),
          clock: this.clock, registry: metrics.registry, local,
          autoscale: { scaler, board, held: app => this.routerValue?.heldCount(app) ?? 0 }
        }, { self: selfId })
        this.routerValue = new Router({
          libp2p, view, ledgers, placer, logger: servingLogger, registry: metrics.registry,
          local: this.replicaHost != null ? { peerId: selfId, host: this.replicaHost, inflight: this.inflight } : undefined,
          ready: () => this.state === 'running' || this.state === 'draining',
          meter,
          onHold: () => { placer.soon() }
        })
        this.loadExchange = new LoadExchange({
          libp2p, meter, board, decisions: () => scaler.decisions(), onSample: () => { placer.soon() }, logger: autoscaleLogger, clock: this.clock, self: selfId
        })
        this.pipelinesValue = new PipelineBackend({ router: this.routerValue, placer: this.placerValue, logger: servingLogger, registry: metrics.registry })
      }

      const cpu = new CpuSampler()
      const gpu = new BusySampler(() => this.replicaHost?.gpuBusyMs() ?? 0, () => config.gpus)
      const resource = this.resource
      this.heartbeater = new Heartbeater({
        ...base,
        logger: componentLogger(this.logger, 'heartbeat'),
        local: resource != null ? hb => { resource.ingestLocal(hb) } : undefined
      }, {
        report: {
          roles: config.roles,
          name: config.name,
          cell: config.cell,
          cores: config.cores,
          gpus: config.gpus,
          gpuPerf: config.gpuPerf,
          cpuUtil: () => cpu.sample(),
          gpuUtil: () => gpu.sample(),
          inflight: () => this.inflight.value,
          ledgerVersion: () => this.ledgerValue?.version ?? 0,
          cordoned: () => this.ledgerValue?.cordoned ?? false,
          readyReplicas: () => this.ledgerValue?.readyCount() ?? 0,
          modelsDigest: () => transfer.modelsDigest(),
          mailboxCursor: () => this.puller?.revision ?? 0,
          // The bucket rates are the limits in force (Infinity = none, sent as 0).
          uploadLimit: () => finiteOrZero(transfer.limits.upload.rate),
          downloadLimit: () => finiteOrZero(transfer.limits.download.rate),
          uploadRate: () => transfer.limits.uploaded.rate(),
          downloadRate: () => transfer.limits.downloaded.rate(),
          transfers: () => transfer.activeTransfers()
        }
      })
      this.bootstrapper = new Bootstrapper({ libp2p, logger: componentLogger(this.logger, 'bootstrap') }, config.bootstrap)

      gaugeFn(metrics.registry, 'astrad_p2p_connections', 'Open libp2p connections', () => libp2p.getConnections().length)
      gaugeFn(metrics.registry, 'astrad_p2p_gossip_peers', 'Peers speaking gossipsub with us', () => libp2p.services.pubsub.getPeers().length)
      if (view != null) {
        labelledGaugeFn(metrics.registry, 'astrad_membership_nodes', 'Daemons in this view, by state', 'state', () => view.list.countByState())
      }

      this.rpc = new RpcServer({ logger: componentLogger(this.logger, 'rpc'), metrics, operators: trust }, { host: config.rpc.host, port: config.rpc.port, token: config.rpcToken })
      registerRoutes(this.rpc, this)
      registerTransferRoutes(this.rpc, () => this.state === 'running' || this.state === 'draining' ? this.transferService : undefined)
      this.noticeAdminValue = new NoticeAdmin({
        clusterLog: () => this.clusterLog,
        members: async signal => (await this.onlineList(signal)).records.map(memberOf),
        self: () => config.name,
        clock: this.clock
      })
      registerNoticeRoutes(this.rpc, () => this.state === 'running' || this.state === 'draining' ? this.noticeAdminValue : undefined)
      registerAppRoutes(this.rpc, { clusterLog: () => this.clusterLog, placer: () => this.placerValue, self: () => selfId, pipelineStatus: () => this.pipelinesValue?.status() })
      registerKServeRoutes(this.rpc, () => this.state === 'running' || this.state === 'draining' ? this.pipelinesValue : undefined, {
        registry: metrics.registry,
        logger: servingLogger,
        // KServe readiness: the daemon is up and joined, and (on a scheduler) can route.
        ready: () => this.ready && (this.routerValue?.serverReady() ?? true),
        pending: () => this.replicaHost?.pending() ?? [],
        scheduler: roles.has('scheduler')
      })

      await libp2p.start()
      await this.log?.start()
      if (this.log != null) {
        this.mailboxServer = new MailboxServer({ libp2p, log: this.log, logger: componentLogger(this.logger, 'mailbox'), registry: metrics.registry, clock: this.clock })
        await this.mailboxServer.start()
      }
      await this.logClient?.start()
      await this.resource?.start()
      await this.scheduler?.start()
      await this.resourcePeers?.start()
      await transfer.start()
      if (roles.has('node')) {
        const mailboxLogger = componentLogger(this.logger, 'mailbox')
        const effects = this.noticeEffects = new NoticeEffects({
          rootLogger: this.logger,
          logger: mailboxLogger,
          clock: this.clock,
          defaults: { logLevel: config.logLevel, cacheSize: config.cacheSize },
          transfer: () => transfer,
          drain: () => { this.drainOnNotice() },
          settle: id => { this.puller?.settle(id) }
        })
        this.puller = new MailboxPuller({
          libp2p, logger: mailboxLogger, registry: metrics.registry, clock: this.clock, local: () => this.mailboxServer
        }, { dataDir: config.dataDir, self: { peerId: selfId, cell: config.cell }, onActions: effects.onActions })
        await this.puller.start()
      }
      const ledger = this.ledgerValue
      const replicaHost = this.replicaHost
      if (ledger != null && replicaHost != null) {
        replicaHost.start()
        // In the background: CPU replicas load and serve meanwhile (docs/gpus.md).
        this.devicesValue?.start()
        const refused = new Counter({ name: 'astrad_serving_refused_requests_total', help: 'Malformed or oversized requests refused by this node, by protocol', labelNames: ['protocol'], registers: [metrics.registry] })
        await serveReservations(libp2p, ledger, { onBadRequest: () => { refused.inc({ protocol: 'reserve' }) } })
        await serveInference(libp2p, async (app, req, signal) => {
          // Requests that reach a draining node are still served (routers drop it within a
          // second); once stopping, they are refused unsent so the router retries elsewhere.
          if (this.state !== 'running' && this.state !== 'draining') throw new UnavailableError('node is stopping', 'ERR_DRAINING')
          const end = this.inflight.begin()
          try {
            return await replicaHost.infer(app, req, signal)
          } finally {
            end()
          }
        }, { onBadRequest: () => { refused.inc({ protocol: 'infer' }) } })
      }
      this.ledgerView?.start()
      this.placerValue?.start()
      this.routerValue?.start()
      this.loadExchange?.start()
      // Resources relay schedulers' load to each other (schedulers subscribe themselves).
      if (roles.has('resource') && this.loadExchange == null) this.unrelayLoad = relayLoad(libp2p)
      await this.rpc.listen()
      this.heartbeater.start()
      this.bootstrapper.start()
      this.state = 'running'
      if (this.drainWhenRunning) void this.drain()
      if (security.mode === 'insecure') {
        this.logger.warn({ listen: libp2p.getMultiaddrs().map(String) }, 'INSECURE: running without a cluster secret (--insecure); anyone who reaches the P2P port can join, drain and rewrite this cluster')
      }
      this.logger.info({
        peerId: libp2p.peerId.toString(),
        roles: config.roles,
        security: security.mode === 'secure' ? `${security.source} (certificate for ${security.roles.join(',')})` : 'INSECURE',
        addrs: libp2p.getMultiaddrs().map(String),
        rpc: this.rpc.address
      }, 'astrad running')
    } catch (err) {
      this.state = 'failed'
      await this.teardown()
      this.stopped.resolve()
      throw err
    }
  }

  /**
   * Graceful leave (SIGTERM, `astrad drain`, the Kubernetes preStop hook): announce
   * `draining` at once so routers drop this node, finish in-flight requests, leave.
   */
  async drain (): Promise<void> {
    if (this.state !== 'running') return await (this.stopping ?? Promise.resolve())
    this.state = 'draining'
    this.logger.info({ inflight: this.inflight.value }, 'draining')
    this.ledgerValue?.setAccepting(false)
    await this.heartbeater?.announce('draining')
    const started = Date.now()
    const deadline = started + (this.options.drainTimeoutMs ?? DRAIN_TIMEOUT_MS)
    // A node serving replicas waits until every router has seen `draining` (≤ 1 s) before it
    // trusts an in-flight count of zero: requests routed before that still arrive.
    const grace = (this.ledgerValue?.readyCount() ?? 0) > 0 ? started + Math.min(DRAIN_GRACE_MS, this.options.drainTimeoutMs ?? DRAIN_TIMEOUT_MS) : started
    while ((this.inflight.value > 0 || Date.now() < grace) && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, DRAIN_POLL_MS))
    }
    if (this.inflight.value > 0) this.logger.warn({ inflight: this.inflight.value }, 'drain timed out; leaving with requests in flight')
    await this.stop()
  }

  /**
   * `astrad cordon` / `uncordon` (node role): no new replicas here, the ones held keep serving.
   * Saved in the data dir first, so a restart keeps it; the ledger's answer and the next
   * heartbeat tell the schedulers.
   */
  setCordoned (cordoned: boolean): void {
    const ledger = this.ledgerValue
    if (ledger == null) throw new LifecycleError('this daemon has no node role')
    if (ledger.cordoned === cordoned) return
    saveCordon(this.config.dataDir, cordoned, this.clock.now())
    ledger.setCordoned(cordoned)
    this.logger.info({ replicas: ledger.all().length }, cordoned ? 'cordoned: no new replicas; the ones held keep serving' : 'uncordoned')
  }

  /** A drain notice: drain now, or as soon as the daemon runs. */
  private drainOnNotice (): void {
    if (this.state === 'running') void this.drain()
    else if (this.state === 'starting') this.drainWhenRunning = true
  }

  /** Stops everything in order; safe to call more than once and before start. */
  async stop (): Promise<void> {
    if (this.state === 'created') {
      this.state = 'stopped'
      this.stopped.resolve()
      return
    }
    this.stopping ??= this.doStop()
    await this.stopping
  }

  private async doStop (): Promise<void> {
    if (this.state === 'stopped' || this.state === 'failed') return
    this.state = 'stopping'
    await this.teardown()
    this.state = 'stopped'
    this.logger.info('astrad stopped')
    this.stopped.resolve()
  }

  private async teardown (): Promise<void> {
    const step = async (what: string, fn: () => unknown): Promise<void> => {
      try { await fn() } catch (err) { this.logger.warn({ err: errorMessage(err) }, `stop: ${what} failed`) }
    }
    await step('rpc', async () => { await this.rpc?.close() })
    if (this.libp2p?.status === 'started' && this.heartbeater != null) {
      await step('leave', async () => {
        await this.heartbeater?.announce('left')
        await new Promise(resolve => setTimeout(resolve, LEAVE_FLUSH_MS))
      })
    }
    this.heartbeater?.stop()
    this.bootstrapper?.stop()
    await step('placement', async () => {
      this.loadExchange?.stop()
      this.unrelayLoad?.()
      this.routerValue?.stop()
      await this.placerValue?.stop()
      this.ledgerView?.stop()
    })
    await step('membership', async () => {
      await this.resource?.stop()
      await this.scheduler?.stop()
      this.resourcePeers?.stop()
    })
    await step('mailbox', async () => {
      await this.puller?.stop()
      await this.mailboxServer?.stop()
    })
    await step('transfers', async () => { await this.transferService?.stop() })
    await step('cluster log', async () => {
      await this.logClient?.stop()
      await this.log?.stop()
    })
    await step('trust', async () => { await this.trustValue?.detach() })
    await step('libp2p', async () => { await this.libp2p?.stop() })
    await step('devices', async () => { await this.devicesValue?.stop() })
    await step('replicas', async () => { await this.replicaHost?.stop() })
    this.releaseLock?.()
    this.releaseLock = undefined
  }

  /** The online list as this daemon can see it: its own view, or pulled from a resource. */
  async onlineList (signal?: AbortSignal): Promise<{ records: WireRecord[], source: string, stalenessMs: number }> {
    const now = this.clock.now()
    const view = this.view
    if (view != null) {
      const staleness = view.stalenessMs()
      return {
        records: view.list.all().map(r => ({ hb: r.hb, state: r.state, ageMs: Math.max(0, now - r.lastSeen) })),
        source: this.resource != null ? 'resource' : 'scheduler',
        // A scheduler that has not yet pulled once has an infinite staleness: shown as -1.
        stalenessMs: Number.isFinite(staleness) ? staleness : -1
      }
    }
    const records = await pullOnlineList(this.host, this.resourcePeers?.shuffled() ?? [], signal)
    return { records, source: 'pulled', stalenessMs: 0 }
  }
}

function finiteOrZero (n: number): number {
  return Number.isFinite(n) ? n : 0
}
