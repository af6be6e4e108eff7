/** Sizes of the bench:scale parts, each with its reason. */

/** Goal 5 (bench/scale/placement.ts). */
export const PLACEMENT = {
  /** The figure: 8 schedulers placing ≥ 2,000 replicas/s into 1,000 node ledgers. */
  goalPerSec: 2_000,
  schedulers: 8,
  /**
   * Cores per simulated node, replicas of 1 core: a 10 s window at the goal's rate places
   * 20,000 replicas, which 1,000 nodes of 32 cores hold (8 cores each would be full in 4 s).
   */
  cores: 32,
  /** Deployed at once: 75 % of the cluster's cores, so the last placements meet full nodes. */
  demand: 0.75,
  /** Replicas per app (the placer spreads an app's replicas over nodes: that pick is measured too). */
  replicasPerApp: 50,
  /** Seconds connected and idle before each window: the CPU libp2p's upkeep costs, apart from placing. */
  idleS: 2,
  /** 1,000 simulated nodes, each a libp2p host, in 4 processes (250 each). */
  full: { nodes: 1_000, nodeProcesses: 4, windowS: 10 },
  /**
   * --quick: 100 nodes in 2 processes, 5 s windows. Connecting 8 schedulers to every node
   * (Noise, identify, certificates both ways) is most of the part's time: ~0.1 s a connection
   * on this loaded machine, 800 here.
   */
  quick: { nodes: 100, nodeProcesses: 2, windowS: 5 }
} as const

/** Goal 4 (bench/scale/mailbox.ts): pulls per second one resource answers on long-lived streams. */
export const MAILBOX = {
  goalPerSec: 20_000
} as const
