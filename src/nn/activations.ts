/**
 * Feed-forward activations: ReLU and GELU in its exact form, `x * Phi(x)` with
 * `Phi(x) = (1 + erf(x / sqrt(2))) / 2` (PyTorch's `activation="gelu"`), plus the error
 * function it needs, accurate to double precision; the tanh-approximated GELU of the DiT
 * (`nn.GELU(approximate="tanh")`); SiLU.
 *
 * @module
 */

import { expFast } from "./fast_exp.ts";

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);
const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * erf(a) for 0 <= a < 3 by the all-positive series
 * `erf(a) = 2/sqrt(pi) * exp(-a^2) * sum_n 2^n a^(2n+1) / (1*3*...*(2n+1))`,
 * which has no cancellation, so the relative error stays near machine precision.
 */
function erfSeries(a: number): number {
  const a2x2 = 2 * a * a;
  let term = a;
  let sum = a;
  for (let k = 3; k < 400; k += 2) {
    term *= a2x2 / k;
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-a * a) * sum;
}

/**
 * erfc(a) for a >= 3 by the continued fraction
 * `erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))`,
 * evaluated from a fixed depth upwards (at a = 3, 80 levels converge to double precision).
 */
function erfcFraction(a: number): number {
  let f = a;
  for (let k = 80; k >= 1; k--) f = a + (k / 2) / f;
  return (INV_SQRT_PI * Math.exp(-a * a)) / f;
}

/**
 * The error function, `erf(x) = 2/sqrt(pi) * integral_0^x exp(-s^2) ds`, to about 1e-15
 * relative accuracy.
 *
 * @param x Any number.
 * @returns erf(x), in [-1, 1].
 *
 * @example
 * ```ts
 * import { erf } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(erf(0), 0);
 * assert.ok(Math.abs(erf(1) - 0.8427007929497149) < 1e-15);
 * assert.equal(erf(-1), -erf(1));
 * ```
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  let r: number;
  if (a < 3) r = erfSeries(a);
  else if (a < 6) r = 1 - erfcFraction(a);
  else r = 1;
  return x < 0 ? -r : r;
}

/**
 * The complementary error function `1 - erf(x)`, accurate in the far tail too.
 *
 * @param x Any number.
 * @returns erfc(x), in [0, 2].
 *
 * @example
 * ```ts
 * import { erfc } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(Math.abs(erfc(5) / 1.5374597944280349e-12 - 1) < 1e-12);
 * ```
 */
export function erfc(x: number): number {
  if (x < 0) return 2 - erfc(-x);
  if (x < 3) return 1 - erfSeries(x);
  if (x < 27) return erfcFraction(x);
  return 0;
}

/**
 * `out = max(inp, 0)`. `out` may alias `inp`. NaN stays NaN (as in PyTorch).
 *
 * @param out Output, `(N)`.
 * @param inp Input, `(N)`.
 * @param N Elements.
 * @param mask Dropout scales applied after the activation (fused `dropoutForward`), `(N)`, or
 *   `null` (default).
 *
 * @example
 * ```ts
 * import { reluForward } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * reluForward(out, new Float32Array([-1, 2]), 2);
 * assert.deepEqual([...out], [0, 2]);
 * ```
 */
export function reluForward(
  out: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
  mask: Float32Array | null = null, // (N)
): void {
  // (x + |x|) / 2 is exact for float32 values held in doubles, and has no branch on the sign
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = (x + Math.abs(x)) * 0.5 * (mask ? mask[i] : 1);
  }
}

/**
 * Backward of {@linkcode reluForward}. ADDS into `dinp`; the derivative at 0 is 0 (PyTorch's).
 *
 * Differentiates `out = max(inp, 0)`.
 *
 * Arguments as {@linkcode scaleBackward}'s, with the forward input `inp` in place of the saved
 * derivative.
 */
export const reluBackward: typeof scaleBackward = (dinp, dout, inp, N, mask = null): void => {
  // (x + |x|) / (2|x| + 1e-300) is exactly 1 for x > 0 (1e-300 is far below half an ulp of
  // any float32 value doubled) and exactly 0 for x <= 0: a step without a branch. With a mask,
  // the float32 product dout * mask, as a separate dropout op would store it.
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const ax = Math.abs(x);
    const d = mask ? Math.fround(dout[i] * mask[i]) : dout[i];
    dinp[i] += d * ((x + ax) / (ax + ax + 1e-300));
  }
};

// GELU and its derivative for the hot loops: cubic Hermite tables over [-8, 8] at spacing
// h = 1/64, built from the exact functions above. Values of gelu(x) = x Phi(x) with slopes
// g(x) = Phi(x) + x phi(x); values of g with slopes g'(x) = phi(x) (2 - x^2). The error is at
// most h^4/384 times the largest fourth derivative (below 2 for both), i.e. below 1e-9; outside
// [-8, 8], gelu is x or 0 and g is 1 or 0 to within 1e-13.
const GELU_STEPS = 64;
const GELU_END = 8;
const GELU_POINTS = 2 * GELU_END * GELU_STEPS + 2;
// Per cell j, the Hermite cubic in t = u - j as Horner coefficients c0 + t (c1 + t (c2 + t c3)),
// four per cell: one cache line holds two cells.
const geluPoly = new Float64Array(4 * (GELU_POINTS - 1));
const geluDerPoly = new Float64Array(4 * (GELU_POINTS - 1));
{
  const val = new Float64Array(GELU_POINTS), valSlope = new Float64Array(GELU_POINTS);
  const der = new Float64Array(GELU_POINTS), derSlope = new Float64Array(GELU_POINTS);
  for (let i = 0; i < GELU_POINTS; i++) {
    const x = i / GELU_STEPS - GELU_END;
    const cdf = normalCdfExact(x);
    const pdf = INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    val[i] = x * cdf;
    valSlope[i] = (cdf + x * pdf) / GELU_STEPS; // slope times h
    der[i] = cdf + x * pdf;
    derSlope[i] = (pdf * (2 - x * x)) / GELU_STEPS;
  }
  // (2t^3 - 3t^2 + 1) y0 + (t^3 - 2t^2 + t) m0 + (3t^2 - 2t^3) y1 + (t^3 - t^2) m1
  const hermite = (dst: Float64Array, y: Float64Array, m: Float64Array) => {
    for (let j = 0; j + 1 < GELU_POINTS; j++) {
      const y0 = y[j], y1 = y[j + 1], m0 = m[j], m1 = m[j + 1];
      dst[4 * j] = y0;
      dst[4 * j + 1] = m0;
      dst[4 * j + 2] = 3 * (y1 - y0) - 2 * m0 - m1;
      dst[4 * j + 3] = 2 * (y0 - y1) + m0 + m1;
    }
  };
  hermite(geluPoly, val, valSlope);
  hermite(geluDerPoly, der, derSlope);
}

/**
 * @internal The GELU tables of {@linkcode geluForwardKeepGrad}: per cell, the value
 * polynomial's four Horner coefficients (`value`), and the derivative's (`derivative`), both
 * `(4 * 1025)`. Read only: the wasm backend copies them into its memory.
 */
export function geluTables(): { value: Float64Array; derivative: Float64Array } {
  return { value: geluPoly, derivative: geluDerPoly };
}

function normalCdfExact(x: number): number {
  return x >= 0 ? 1 - 0.5 * erfc(x * INV_SQRT2) : 0.5 * erfc(-x * INV_SQRT2);
}

/**
 * The exact (erf) GELU, `out = x * Phi(x)` (times `mask`), that also keeps its derivative for
 * the backward pass IN PLACE of the input: `inp[i] = gelu'(x) = Phi(x) + x phi(x)`, with
 * `phi(x) = exp(-x^2/2) / sqrt(2 pi)`. Both come from the same table cell (within 1e-9 of the
 * exact functions); the backward pass is {@linkcode scaleBackward}.
 *
 * @param out Output, `(N)`; must not alias `inp`.
 * @param inp Input, `(N)`; overwritten with `Phi(x) + x phi(x)`.
 * @param N Elements.
 * @param mask Dropout scales applied after the activation, `(N)`, or `null`.
 *
 * @example
 * ```ts
 * import { geluForwardKeepGrad, scaleBackward } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * const x = new Float64Array([0, 1]) as unknown as Float32Array;
 * const out = new Float64Array(2) as unknown as Float32Array;
 * geluForwardKeepGrad(out, x, 2);
 * assert.ok(Math.abs(out[1] - 0.8413447460685429) < 1e-9);
 * assert.ok(Math.abs(x[0] - 0.5) < 1e-9); // gelu'(0) = Phi(0)
 * const dinp = new Float64Array(2) as unknown as Float32Array;
 * scaleBackward(dinp, new Float32Array([2, 2]), x, 2);
 * assert.ok(Math.abs(dinp[0] - 1) < 1e-9);
 * ```
 */
export function geluForwardKeepGrad(
  out: Float32Array, // (N)
  inp: Float32Array, // (N), becomes gelu'(inp)
  N: number,
  mask: Float32Array | null = null, // (N)
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    let y: number, g: number;
    if (x > -GELU_END && x < GELU_END) {
      const u = (x + GELU_END) * GELU_STEPS;
      const j = u | 0;
      const t = u - j, c = 4 * j;
      y = geluPoly[c] + t * (geluPoly[c + 1] + t * (geluPoly[c + 2] + t * geluPoly[c + 3]));
      g = geluDerPoly[c] +
        t * (geluDerPoly[c + 1] + t * (geluDerPoly[c + 2] + t * geluDerPoly[c + 3]));
    } else {
      const cdf = normalCdfExact(x); // tails, and NaN stays NaN
      y = x * cdf;
      g = cdf + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    }
    out[i] = mask ? Math.fround(y) * mask[i] : y;
    inp[i] = g;
  }
}

/**
 * Backward of an element-wise op whose derivative was kept by the forward pass (for example
 * {@linkcode geluForwardKeepGrad}). ADDS into `dinp`: `dinp += dout * mask * dsaved`.
 *
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param dsaved The derivative at each input, `(N)`.
 * @param N Elements.
 * @param mask Dropout scales of the forward pass, `(N)`, or `null`.
 */
export function scaleBackward(
  dinp: Float32Array, // (N)
  dout: Float32Array, // (N)
  dsaved: Float32Array, // (N)
  N: number,
  mask: Float32Array | null = null, // (N)
): void {
  for (let i = 0; i < N; i++) {
    dinp[i] += (mask ? Math.fround(dout[i] * mask[i]) : dout[i]) * dsaved[i];
  }
}

/**
 * `out = inp * sigmoid(inp)` (SiLU, as `nn.SiLU`). `out` may alias `inp`.
 *
 * @param out Output, `(N)`.
 * @param inp Input, `(N)`.
 * @param N Elements.
 *
 * @example
 * ```ts
 * import { siluForward } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * siluForward(out, new Float32Array([0, 2]), 2);
 * assert.equal(out[0], 0);
 * assert.ok(Math.abs(out[1] - 2 / (1 + Math.exp(-2))) < 1e-6);
 * ```
 */
export function siluForward(out: Float32Array, inp: Float32Array, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = x / (1 + Math.exp(-x));
  }
}

/**
 * Backward of {@linkcode siluForward}. ADDS into `dinp`.
 *
 * Differentiates `out = x * s(x)`, `s` the sigmoid: `dinp += dout * s * (1 + x * (1 - s))`.
 *
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param inp The forward input, `(N)`.
 * @param N Elements.
 */
export function siluBackward(
  dinp: Float32Array, // (N)
  dout: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const s = 1 / (1 + Math.exp(-x));
    dinp[i] += dout[i] * s * (1 + x * (1 - s));
  }
}

const GELU_TANH_K2 = 2 * Math.sqrt(2 / Math.PI);

/**
 * GELU with the tanh approximation, `out = 0.5 x (1 + tanh(u))` with
 * `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as `x * s` with `s = 1 / (1 + exp(-2u))` (the
 * same value; the exponential by `expFast`, within 1e-8 relative). `out` may alias `inp`.
 *
 * @param out Output, `(N)`.
 * @param inp Input, `(N)`.
 * @param N Elements.
 *
 * @example
 * ```ts
 * import { geluTanhForward } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * geluTanhForward(out, new Float32Array([0, 1]), 2);
 * assert.equal(out[0], 0);
 * assert.ok(Math.abs(out[1] - 0.8411919906) < 1e-6);
 * ```
 */
export function geluTanhForward(out: Float32Array, inp: Float32Array, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = x / (1 + expFast(-GELU_TANH_K2 * (x + 0.044715 * x * x * x)));
  }
}

/**
 * Backward of {@linkcode geluTanhForward}. ADDS into `dinp`.
 *
 * With `s = 1 / (1 + exp(-2u))` (so `0.5 (1 + tanh(u)) = s` and `1 - tanh(u)^2 = 4 s (1 - s)`):
 * `d/dx [x s] = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
 *
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param inp The forward input, `(N)`.
 * @param N Elements.
 *
 * @example Against a central difference
 * ```ts
 * import { geluTanhBackward, geluTanhForward } from "./activations.ts";
 * import assert from "node:assert/strict";
 *
 * const x = 0.7, h = 1e-4;
 * const y = new Float64Array(2) as unknown as Float32Array;
 * geluTanhForward(y, new Float64Array([x + h, x - h]) as unknown as Float32Array, 2);
 * const d = new Float32Array(1);
 * geluTanhBackward(d, new Float32Array([1]), new Float32Array([x]), 1);
 * assert.ok(Math.abs(d[0] - (y[0] - y[1]) / (2 * h)) < 1e-5);
 * ```
 */
export function geluTanhBackward(
  dinp: Float32Array, // (N)
  dout: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const s = 1 / (1 + expFast(-GELU_TANH_K2 * (x + 0.044715 * x * x * x)));
    dinp[i] += dout[i] * (s + x * s * (1 - s) * GELU_TANH_K2 * (1 + 3 * 0.044715 * x * x));
  }
}
