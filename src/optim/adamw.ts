/**
 * AdamW with PyTorch's semantics (`torch.optim.AdamW`): decoupled weight decay applied to every
 * parameter, bias-corrected moments, one flat loop over the parameter buffer; in TypeScript
 * ({@linkcode adamwStep}) or in the WebAssembly SIMD module ({@linkcode createWasmAdamW}), with
 * the same bits.
 *
 * @module
 */

import { createWasmKernels } from "../kernels/wasm.ts";

/** AdamW hyper-parameters; the defaults are PyTorch's. */
export interface AdamWOptions {
  /** Learning rate. Default 1e-3 (PyTorch). */
  lr?: number;
  /** First-moment decay. Default 0.9 (PyTorch). */
  beta1?: number;
  /** Second-moment decay. Default 0.999 (PyTorch). */
  beta2?: number;
  /** Denominator guard. Default 1e-8 (PyTorch). */
  eps?: number;
  /** Decoupled weight decay. Default 0.01 (PyTorch's AdamW). */
  weightDecay?: number;
}

/** The optimizer's state: moments with the parameters' layout, and the step count. */
export interface AdamWState {
  /** First moments, one per parameter. */
  m: Float32Array;
  /** Second moments, one per parameter. */
  v: Float32Array;
  /** Steps taken so far. */
  step: number;
}

/**
 * Creates a zeroed AdamW state for `n` parameters.
 *
 * @param n The number of parameters.
 * @returns Zero moments and step 0.
 */
export function createAdamW(n: number): AdamWState {
  return { m: new Float32Array(n), v: new Float32Array(n), step: 0 };
}

/**
 * Takes one AdamW step in place: `p -= lr * wd * p`, then the Adam update with bias correction.
 *
 * In float32, as PyTorch's float32 parameters and moments are updated (each operation rounded
 * once, in this order, the step's scalars rounded to float32 first):
 * `m = b1 m + (1 - b1) g`, `v = b2 v + ((1 - b2) g) g`,
 * `p = p (1 - lr wd) - lr (m / ((sqrt(v) r + eps) c))` with `c = 1 - b1^t` and
 * `r = 1 / sqrt(1 - b2^t)` (`lr` multiplies last, so a learning rate near float32's largest
 * value still gives finite steps).
 *
 * @param params Parameters, updated in place.
 * @param grads Gradients with the same layout (read only).
 * @param state Moments and step, updated in place.
 * @param options Hyper-parameters (PyTorch's defaults).
 *
 * @example One step on a single parameter
 * ```ts
 * import { adamwStep, createAdamW } from "./adamw.ts";
 * import assert from "node:assert/strict";
 *
 * const p = new Float32Array([1]);
 * const state = createAdamW(1);
 * adamwStep(p, new Float32Array([0.5]), state, { lr: 0.1, weightDecay: 0 });
 * // The first bias-corrected step moves by lr * g / |g| = 0.1.
 * assert.ok(Math.abs(p[0] - 0.9) < 1e-6);
 * ```
 */
export function adamwStep(
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  options: AdamWOptions = {},
): void {
  const c = adamwCoefficients(params, grads, state, options);
  const { m, v } = state;
  const { beta1, c1, beta2, c2, lr, bc1, invBc, eps, decay } = c;
  const f = Math.fround;
  // Float32 arithmetic, each operation rounded once: an operation (+, -, *, /, sqrt) on float32
  // values done in double and rounded to float32 is the correctly rounded float32 result
  // (double has more than twice float32's precision, so the double rounding is harmless), which
  // is what the wasm lanes compute: the same bits.
  for (let i = 0; i < params.length; i++) {
    const g = grads[i];
    const mi = f(f(beta1 * m[i]) + f(c1 * g));
    const vi = f(f(beta2 * v[i]) + f(f(c2 * g) * g));
    m[i] = mi;
    v[i] = vi;
    const den = f(f(f(Math.sqrt(vi)) * invBc) + eps);
    params[i] = f(params[i] * decay) - f(lr * f(mi / f(den * bc1)));
  }
}

/** The numbers of one AdamW step, as both loops use them, each rounded to float32. */
interface AdamWCoefficients {
  beta1: number;
  /** `1 - beta1`. */
  c1: number;
  beta2: number;
  /** `1 - beta2`. */
  c2: number;
  lr: number;
  /** `1 - beta1^t`. */
  bc1: number;
  /** `1 / sqrt(1 - beta2^t)`. */
  invBc: number;
  eps: number;
  /** `1 - lr * weightDecay`. */
  decay: number;
}

/** Checks the buffers, counts the step and returns its coefficients. */
function adamwCoefficients(
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  options: AdamWOptions,
): AdamWCoefficients {
  const { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 } = options;
  const n = params.length;
  if (grads.length !== n || state.m.length !== n || state.v.length !== n) {
    throw new RangeError(
      `AdamW buffers disagree: expected ${n} values each, got grads ${grads.length}, ` +
        `m ${state.m.length}, v ${state.v.length}`,
    );
  }
  state.step++;
  const f = Math.fround;
  return {
    beta1: f(beta1),
    c1: f(1 - beta1),
    beta2: f(beta2),
    c2: f(1 - beta2),
    lr: f(lr),
    bc1: f(1 - Math.pow(beta1, state.step)),
    invBc: f(1 / Math.sqrt(1 - Math.pow(beta2, state.step))),
    eps: f(eps),
    decay: f(1 - lr * weightDecay),
  };
}

/** Floats of each chunk buffer of {@linkcode createWasmAdamW} (64 KiB each: four stay in L2). */
export const WASM_ADAMW_CHUNK = 16384;

/**
 * An AdamW step in the WebAssembly SIMD module, with {@linkcode adamwStep}'s signature and
 * bits: the same float32 operations in the same order, four lanes at a time. The buffers stay where they are (the parameters may be a `SharedArrayBuffer`
 * the workers read, which a plain wasm memory cannot be): each chunk of
 * {@linkcode WASM_ADAMW_CHUNK} values is copied into the module, updated, and its parameters
 * and moments copied back. With `parts` (lists of `[start, end)` ranges that cover the buffer
 * once; default one part, the whole buffer) the parts are updated in that order and `onPart(j)`
 * is called once part `j` is final, for a caller that hands the parameters on as they are ready
 * (the update is element-wise, so the order changes no bit).
 *
 * @returns The step function (with its own instance of the wasm kernels, which holds the four
 *   chunk buffers).
 * @throws Error when the runtime lacks WebAssembly SIMD (use {@linkcode adamwStep}).
 *
 * @example The same bits as adamwStep
 * ```ts
 * import { adamwStep, createAdamW, createWasmAdamW } from "./adamw.ts";
 * import assert from "node:assert/strict";
 *
 * const p1 = new Float32Array([1, -2, 3]), p2 = p1.slice();
 * const g = new Float32Array([0.5, 0.25, -1]);
 * const s1 = createAdamW(3), s2 = createAdamW(3);
 * adamwStep(p1, g, s1, { lr: 0.1 });
 * createWasmAdamW()(p2, g, s2, { lr: 0.1 });
 * assert.deepEqual(p2, p1);
 * assert.deepEqual(s2.v, s1.v);
 * ```
 */
export function createWasmAdamW(): (
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  options?: AdamWOptions,
  parts?: [number, number][][],
  onPart?: (j: number) => void,
) => void {
  const k = createWasmKernels();
  const n = WASM_ADAMW_CHUNK;
  k.reserve(4 * (n + 16));
  const [P, G, M, V] = [k.alloc(n), k.alloc(n), k.alloc(n), k.alloc(n)];
  return (params, grads, state, options = {}, parts = [[[0, params.length]]], onPart) => {
    checkParts(parts, params.length);
    const c = adamwCoefficients(params, grads, state, options);
    const { m, v } = state;
    for (const [j, part] of parts.entries()) {
      for (const [a, b] of part) chunked(a, b);
      onPart?.(j);
    }
    function chunked(a: number, b: number): void {
      for (let i = a; i < b; i += n) step(i, Math.min(n, b - i));
    }
    function step(i: number, len: number): void {
      const end = i + len;
      P.set(params.subarray(i, end));
      G.set(grads.subarray(i, end));
      M.set(m.subarray(i, end));
      V.set(v.subarray(i, end));
      k.ops.adamw(
        P.byteOffset,
        G.byteOffset,
        M.byteOffset,
        V.byteOffset,
        len,
        c.beta1,
        c.c1,
        c.beta2,
        c.c2,
        c.lr,
        c.bc1,
        c.invBc,
        c.eps,
        c.decay,
      );
      params.set(P.subarray(0, len), i);
      m.set(M.subarray(0, len), i);
      v.set(V.subarray(0, len), i);
    }
  };
}

/** Throws unless the ranges of `parts`, sorted, tile `[0, n)` exactly. */
function checkParts(parts: [number, number][][], n: number): void {
  const ranges = parts.flat().sort((x, y) => x[0] - y[0]);
  let at = 0;
  for (const [a, b] of ranges) {
    if (a !== at || !(b >= a)) break;
    at = b;
  }
  if (at !== n || ranges.some(([a, b]) => !(b >= a))) {
    throw new RangeError(
      `AdamW parts: expected ranges that cover [0, ${n}) once, got ${JSON.stringify(parts)}`,
    );
  }
}
