export { clusterLog, type ClusterLog, type ClusterLogComponents, type ClusterLogInit } from './cluster-log.ts'
export {
  clusterLogClient, localAccess, withAuth, type ClusterLogAccess, type ClusterLogClient, type ClusterLogClientComponents, type ClusterLogClientInit
} from './client.ts'
export { defineKind, InvalidEntryError, type Entry, type Kind, type WriteOptions, type Written } from './kind.ts'
export { ClockSkewError, compareVersions } from './hlc.ts'
export { LogStoreError } from './store.ts'
export * as clusterLogConstants from './constants.ts'
