/**
 * Request routing: smooth weighted round-robin in nginx's exact order with O(log n) picks,
 * dynamic weights from heartbeats (the article's formula and alternatives), passive ejection
 * and slow start. Pure logic: no network, no timers. docs/routing.md has the construction,
 * the proof sketch and the measurements.
 */
export { Swrr } from './swrr.ts'
export { NaiveSwrr } from './naive-swrr.ts'
export { scaleWeight, type Skip } from './quantize.ts'
export { DecayingMean } from './decaying-mean.ts'
export { Balancer, type BalancerOptions, type Endpoint, type EndpointState } from './balancer.ts'
export {
  articleWeight, staticWeight, measuredWeight, capacityOf, slotsOf, utilizationOf, inflightOf, headroomOf,
  type NodeLoad, type WeightFunction
} from './weight.ts'
export * as routingConstants from './constants.ts'
