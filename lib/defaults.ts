/**
 * Options over defaults, one rule for every module that has a defaults object: each
 * setting is the caller's value when it is given and the default otherwise, where "given"
 * excludes `undefined` (and `null`). A spread (`{ ...DEFAULTS, ...opts }`) would let a
 * caller that passes `maxLineBytes: undefined` switch a bound off.
 *
 * @example
 * ```ts
 * const D = { maxLines: 10, timeoutMs: 500 };
 * withDefaults(D, { maxLines: undefined, timeoutMs: 20 }); // { maxLines: 10, timeoutMs: 20 }
 * ```
 * @module
 */

/** Every key of `defaults`, from `opts` where set there, else from `defaults`. */
export function withDefaults<D extends object>(
  defaults: D,
  opts: Partial<D>,
): D {
  const out = { ...defaults };
  for (const k of Object.keys(defaults) as (keyof D)[]) {
    out[k] = opts[k] ?? defaults[k];
  }
  return out;
}
