import { workerData } from 'node:worker_threads'
import type { WorkerInit } from './messages.ts'

/**
 * Single executable only: stands in for onnxruntime-node's
 * `require(`../bin/napi-v6/${process.platform}/${process.arch}/onnxruntime_binding.node`)`,
 * which esbuild cannot bundle and which would find nothing beside the executable anyway.
 * scripts/build.ts rewrites that require in onnxruntime-node/dist/binding.js to a call of this
 * function when it bundles the worker. The pool has written the native files to the cache
 * directory and passes the binding's path in workerData; libonnxruntime.so.1 sits beside it
 * (the binding's RUNPATH is $ORIGIN).
 */
export function loadOrtBinding (): unknown {
  const path = (workerData as Partial<WorkerInit> | null)?.nativeBindingPath
  if (typeof path !== 'string') throw new Error('onnxruntime binding path missing from workerData (single executable worker started without it)')
  const module = { exports: {} }
  process.dlopen(module, path)
  return module.exports
}
