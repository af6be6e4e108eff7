/**
 * `target` with some properties replaced, each override given the target; everything else passes
 * through, methods bound to the target (so private fields keep working). How astrad hands a
 * stock libp2p service a component that behaves differently in one place (AutoNAT's fresh
 * dial-backs, the relay's counted streams, DCUtR's tracked connections) without forking it.
 */
export function withOverrides<T extends object> (target: T, overrides: Record<string, (target: any) => unknown>): T {
  return new Proxy(target, {
    get (t, prop) {
      const override = typeof prop === 'string' && Object.hasOwn(overrides, prop) ? overrides[prop] : undefined
      if (override != null) return override(t)
      const value: unknown = Reflect.get(t, prop)
      return typeof value === 'function' ? value.bind(t) : value
    }
  })
}
