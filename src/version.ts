/** Replaced at bundle time by scripts/build.ts (esbuild `define`); read from package.json in dev. */
declare const ASTRAD_VERSION: string | undefined

export const VERSION: string = typeof ASTRAD_VERSION === 'string' ? ASTRAD_VERSION : '0.1.0-dev'
