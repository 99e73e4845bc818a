/**
 * The tolerance measure the model and backend tests share: the largest absolute difference over
 * the largest reference magnitude, `max |got - want| / max |want|`.
 */

import assert from "node:assert/strict";

/**
 * `max |got - want| / max |want|` (the plain max difference where `want` is all zeros). Fails,
 * naming `what`, on a length mismatch or on a NaN or infinite value in `got`.
 */
export function maxRelErr(got: ArrayLike<number>, want: ArrayLike<number>, what = "got"): number {
  assert.equal(
    got.length,
    want.length,
    `${what}: expected ${want.length} values, got ${got.length}`,
  );
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `${what}: expected finite values, got ${got[i]} at ${i}`);
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return scale > 0 ? diff / scale : diff;
}
