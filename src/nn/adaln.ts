/**
 * Time conditioning as SEDD's DiT blocks do it (adaLN-Zero): a sinusoidal embedding of the
 * noise level sigma, and per-sequence shift, scale and gate vectors that modulate LayerNorm
 * outputs and gate residual branches.
 *
 * Dimensions: `B` batch, `T` sequence, `C` channels, `D` embedding size (256), `K` chunks in
 * a modulation row (6 per block: shift, scale, gate for attention, then for the MLP; 2 for
 * the final layer: shift, scale). A modulation buffer `mod` is `(B,K*C)`, chunk `j` of row `b`
 * at `mod[b*K*C + j*C ...]`, as `adaLN_modulation(c).chunk(K, dim=-1)` lays it out.
 *
 * @module
 */

/**
 * SEDD's `TimestepEmbedder.timestep_embedding`: `[cos(sigma f_i), sin(sigma f_i)]` with
 * `f_i = exp(-ln(10000) * i / (D/2))` for `i < D/2` (computed in float64).
 *
 * @param out Embeddings, `(B,D)`.
 * @param sigma Noise levels, `(B)`.
 * @param B Batch size.
 * @param D Embedding size (even).
 *
 * @example sigma = 0 embeds as cosines of 0
 * ```ts
 * import { timestepEmbedding } from "./adaln.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(4);
 * timestepEmbedding(out, new Float32Array([0]), 1, 4);
 * assert.deepEqual([...out], [1, 1, 0, 0]);
 * ```
 */
export function timestepEmbedding(
  out: Float32Array, // (B,D)
  sigma: ArrayLike<number>, // (B)
  B: number,
  D: number,
): void {
  const half = D / 2;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < half; i++) {
      const arg = sigma[b] * Math.exp((-Math.log(10000) * i) / half);
      out[b * D + i] = Math.cos(arg);
      out[b * D + half + i] = Math.sin(arg);
    }
  }
}

/**
 * The geometry of a modulation: `B` sequences of `T` positions of `C` channels, and `K` chunks
 * of `C` per sequence in the modulation rows.
 */
export interface ModShape {
  /** Chunks per modulation row (6 in a block, 2 in the final layer). */
  K: number;
  /** Batch size. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Channels. */
  C: number;
}

/** Calls `f(o, row)` for every position: `o` its offset in `(B,T,C)`, `row` its sequence's in `mod`. */
function eachPosition({ K, B, T, C }: ModShape, f: (o: number, row: number) => void): void {
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) f((b * T + t) * C, b * K * C);
}

/**
 * `out[b,t] = inp[b,t] * (1 + scale[b]) + shift[b]`, with `shift` and `scale` chunks of `mod`.
 *
 * @param out Output, `(B,T,C)`.
 * @param inp Input (a LayerNorm output), `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param shiftChunk Index of the shift chunk.
 * @param scaleChunk Index of the scale chunk.
 * @param shape `K`, `B`, `T`, `C`.
 *
 * @example
 * ```ts
 * import { modulateForward } from "./adaln.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * // C = 1, T = 2, K = 2: shift 10, scale 1 (so x * 2 + 10)
 * const shape = { K: 2, B: 1, T: 2, C: 1 };
 * modulateForward(out, new Float32Array([1, 2]), new Float32Array([10, 1]), 0, 1, shape);
 * assert.deepEqual([...out], [12, 14]);
 * ```
 */
export function modulateForward(
  out: Float32Array,
  inp: Float32Array,
  mod: Float32Array,
  shiftChunk: number,
  scaleChunk: number,
  shape: ModShape,
): void {
  const C = shape.C;
  eachPosition(shape, (o, row) => {
    const sh = row + shiftChunk * C, sc = row + scaleChunk * C;
    for (let c = 0; c < C; c++) out[o + c] = inp[o + c] * (1 + mod[sc + c]) + mod[sh + c];
  });
}

/**
 * Backward of {@linkcode modulateForward}. ADDS into `dinp` and the shift and scale chunks of
 * `dmod`.
 *
 * Differentiates `out = inp * (1 + scale) + shift`: `dinp += dout * (1 + scale)`,
 * `dshift += sum_t dout`, `dscale += sum_t dout * inp`.
 *
 * @param dinp Gradient of the input, `(B,T,C)`.
 * @param dmod Gradient of the modulation rows, `(B,K*C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param inp The forward input, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param shiftChunk Index of the shift chunk.
 * @param scaleChunk Index of the scale chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function modulateBackward(
  dinp: Float32Array,
  dmod: Float32Array,
  dout: Float32Array,
  inp: Float32Array,
  mod: Float32Array,
  shiftChunk: number,
  scaleChunk: number,
  shape: ModShape,
): void {
  const C = shape.C;
  eachPosition(shape, (o, row) => {
    const sh = row + shiftChunk * C, sc = row + scaleChunk * C;
    for (let c = 0; c < C; c++) {
      const d = dout[o + c];
      dinp[o + c] += d * (1 + mod[sc + c]);
      dmod[sh + c] += d;
      dmod[sc + c] += d * inp[o + c];
    }
  });
}

/**
 * Gated residual: `out[b,t] = x[b,t] + gate[b] * y[b,t]`, `gate` a chunk of `mod`. `out` may
 * alias `x`.
 *
 * @param out Output, `(B,T,C)`.
 * @param x Residual stream, `(B,T,C)`.
 * @param y Branch output, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param gateChunk Index of the gate chunk.
 * @param shape `K`, `B`, `T`, `C`.
 *
 * @example A zero gate leaves the stream alone
 * ```ts
 * import { gatedResidualForward } from "./adaln.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(1);
 * const [x, y, gate] = [new Float32Array([3]), new Float32Array([5]), new Float32Array([0])];
 * gatedResidualForward(out, x, y, gate, 0, { K: 1, B: 1, T: 1, C: 1 });
 * assert.equal(out[0], 3);
 * ```
 */
export function gatedResidualForward(
  out: Float32Array,
  x: Float32Array,
  y: Float32Array,
  mod: Float32Array,
  gateChunk: number,
  shape: ModShape,
): void {
  const C = shape.C;
  eachPosition(shape, (o, row) => {
    const g = row + gateChunk * C;
    for (let c = 0; c < C; c++) out[o + c] = x[o + c] + mod[g + c] * y[o + c];
  });
}

/**
 * Backward of {@linkcode gatedResidualForward}. ADDS into `dx`, `dy` and the gate chunk of
 * `dmod`.
 *
 * Differentiates `out = x + gate * y`: `dx += dout`, `dy += gate * dout`,
 * `dgate += sum_t dout * y`.
 *
 * @param dx Gradient of the stream, `(B,T,C)`, or `null` when the caller routes it itself.
 * @param dy Gradient of the branch, `(B,T,C)`.
 * @param dmod Gradient of the modulation rows, `(B,K*C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param y The forward branch output, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param gateChunk Index of the gate chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function gatedResidualBackward(
  dx: Float32Array | null,
  dy: Float32Array,
  dmod: Float32Array,
  dout: Float32Array,
  y: Float32Array,
  mod: Float32Array,
  gateChunk: number,
  shape: ModShape,
): void {
  const C = shape.C;
  eachPosition(shape, (o, row) => {
    const g = row + gateChunk * C;
    for (let c = 0; c < C; c++) {
      const d = dout[o + c];
      if (dx) dx[o + c] += d;
      dy[o + c] += mod[g + c] * d;
      dmod[g + c] += d * y[o + c];
    }
  });
}
