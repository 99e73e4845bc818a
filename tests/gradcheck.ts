/**
 * Finite-difference gradient checks shared by the op and model tests.
 *
 * The kernels only index their typed arrays, so a check runs them on `Float64Array`s (cast
 * with {@linkcode f32}) and compares the analytic gradient with central differences of
 * `loss = sum(out * dout)` for a random upstream gradient `dout`, in double precision.
 */

import { Rng } from "../src/rng.ts";

/** Views a `Float64Array` as the `Float32Array` the kernels are typed with (same indexing). */
export function f32(a: Float64Array): Float32Array {
  return a as unknown as Float32Array;
}

/** A `Float64Array` of standard normal draws times `scale`. */
export function randn(rng: Rng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** A zeroed `Float64Array` for every entry of `inputs`, of the same length: gradient buffers. */
export function zerosLike<K extends string>(
  inputs: Record<K, Float64Array>,
): Record<K, Float64Array> {
  const out = {} as Record<K, Float64Array>;
  for (const k in inputs) out[k] = new Float64Array(inputs[k].length);
  return out;
}

/** What {@linkcode gradcheck} compares. */
export interface GradcheckCase {
  /** Tensors to perturb, by name (mutated during the check and restored). */
  inputs: Record<string, Float64Array>;
  /** Runs the forward pass from the current `inputs` and returns its output. */
  forward: () => Float64Array;
  /** Given `dout`, returns the analytic gradient of `sum(out * dout)` for every input name. */
  backward: (dout: Float64Array) => Record<string, Float64Array>;
  /** Seed for `dout` and the sampled indices. Default 1. */
  seed?: number;
  /** Finite-difference step. Default 1e-6. */
  eps?: number;
  /** Relative tolerance. Default 1e-5. */
  rtol?: number;
  /** Absolute tolerance. Default 1e-8. */
  atol?: number;
  /** Check at most this many entries per input (sampled without replacement). Default all. */
  maxPerInput?: number;
}

/**
 * Throws with the worst mismatches when an analytic gradient differs from central differences
 * by more than `atol + rtol * max(|numeric|, |analytic|)`, or when anything is not finite.
 * Returns the number of entries checked and the largest scaled error.
 */
export function gradcheck(c: GradcheckCase): { checked: number; worst: number } {
  const rng = new Rng(c.seed ?? 1, 7);
  const eps = c.eps ?? 1e-6;
  const rtol = c.rtol ?? 1e-5;
  const atol = c.atol ?? 1e-8;
  const out0 = c.forward();
  const dout = randn(rng, out0.length);
  const lossOf = (out: Float64Array) => {
    let s = 0;
    for (let i = 0; i < out.length; i++) s += out[i] * dout[i];
    return s;
  };
  const analytic = c.backward(dout);
  const failures: string[] = [];
  let checked = 0;
  let worst = 0;
  for (const [name, x] of Object.entries(c.inputs)) {
    const g = analytic[name];
    if (!g || g.length !== x.length) {
      throw new Error(`gradcheck: no analytic gradient of length ${x.length} for "${name}"`);
    }
    let idx = Array.from({ length: x.length }, (_, i) => i);
    if (c.maxPerInput !== undefined && idx.length > c.maxPerInput) {
      for (let i = idx.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [idx[i], idx[j]] = [idx[j], idx[i]];
      }
      idx = idx.slice(0, c.maxPerInput);
    }
    for (const i of idx) {
      const keep = x[i];
      x[i] = keep + eps;
      const lp = lossOf(c.forward());
      x[i] = keep - eps;
      const lm = lossOf(c.forward());
      x[i] = keep;
      const num = (lp - lm) / (2 * eps);
      const ana = g[i];
      checked++;
      const tol = atol + rtol * Math.max(Math.abs(num), Math.abs(ana));
      const err = Math.abs(num - ana);
      if (!Number.isFinite(num) || !Number.isFinite(ana) || err > tol) {
        failures.push(`${name}[${i}]: numeric ${num}, analytic ${ana}, |diff| ${err}`);
      }
      if (tol > 0) worst = Math.max(worst, err / tol);
    }
  }
  c.forward(); // leave the saved activations as at the unperturbed point
  if (failures.length > 0) {
    throw new Error(
      `Gradient mismatch at ${failures.length} of ${checked} entries; first:\n` +
        failures.slice(0, 8).join("\n"),
    );
  }
  return { checked, worst };
}
