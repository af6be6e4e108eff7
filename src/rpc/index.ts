export { RpcServer, HttpError, type RouteHandler, type RpcRequest, type RpcResponse } from './server.ts'
export { RpcClient } from './client.ts'
export { readBody, acceptedCoding, encodeBody, BodyAbortedError, type Coding } from './body.ts'
