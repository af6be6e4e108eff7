export { Trust, type Need, type TrustInit } from './trust.ts'
export { TrustError } from './errors.ts'
export { verifyMemberCert, issueMemberCert, issueMemberCertFromGrant, type MemberCert, type Role } from './certs.ts'
export {
  newClusterSecret, encodeClusterSecret, readClusterSecret, createJoinToken, parseJoinToken,
  createOperatorCredential, readOperatorCredential, writeSecretFile, type ClusterSecret, type JoinToken, type OperatorCredential
} from './files.ts'
export { signOperatorRequest, verifyOperatorRequest, writeScope, inScope, bodyHash, type VerifiedOperator, type WriteScope } from './operator.ts'
export { pskBytes } from './keys.ts'
export * as trustConstants from './constants.ts'
export { loadSecurity, type Security, type SecurityInput } from './setup.ts'
