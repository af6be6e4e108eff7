import { runCli } from './index.ts'

// Entry point of `astrad` (bin/astrad in a checkout, dist/astrad as a single executable).
// Kept free of top-level await: the single executable is a CommonJS bundle.
runCli(process.argv).then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`astrad: ${err instanceof Error ? err.stack : String(err)}\n`)
  process.exitCode = 1
})
