export { AppLoadMeter, LoadBoard, type Decision } from './load.ts'
export { Autoscaler } from './autoscaler.ts'
export { LoadExchange, relayLoad, encodeLoad, decodeLoad } from './exchange.ts'
export * as autoscaleConstants from './constants.ts'
