export { RpcServer, HttpError, type RouteHandler, type RpcRequest, type RpcResponse } from './server.ts'
export { RpcClient } from './client.ts'
export { readBody, acceptedCoding, encodeBody, BodyAbortedError, BodyBudget, type BodyLease, type Coding } from './body.ts'
export { BadPathError, BodyBudgetError, BodyTimeoutError } from './errors.ts'
export {
  OperatorRefusedError, OperatorRequiredError, OPERATOR_SCHEME, verifiedStream, type OperatorCheck, type OperatorRoute, type RequestOperator
} from './operator.ts'
