export { RpcServer, HttpError, type RouteHandler, type RpcRequest, type RpcResponse } from './server.ts'
export { RpcClient } from './client.ts'
