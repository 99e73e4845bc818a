// Shared by the backend tests: how far one computed buffer is from another.

import assert from "node:assert/strict";
import type { Rng } from "../../src/rng.ts";

/** max |got - want| / max |want|, failing on NaN or Inf in `got`. */
export function maxRelErr(got: Float32Array, want: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `non-finite ${got[i]} at ${i}`);
    d = Math.max(d, Math.abs(got[i] - want[i]));
    s = Math.max(s, Math.abs(want[i]));
  }
  return d / s;
}

/** Fills `a` with uniform draws in [lo, hi) and returns it. */
export function fillUniform(a: Float32Array, rng: Rng, lo = -1, hi = 1): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = lo + (hi - lo) * rng.uniform();
  return a;
}
