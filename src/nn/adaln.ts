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
 * `out[b,t] = inp[b,t] * (1 + scale[b]) + shift[b]`, with `shift` and `scale` chunks of `mod`.
 *
 * @param out Output, `(B,T,C)`.
 * @param inp Input (a LayerNorm output), `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param shiftChunk Index of the shift chunk.
 * @param scaleChunk Index of the scale chunk.
 * @param K Chunks per modulation row.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 *
 * @example
 * ```ts
 * import { modulateForward } from "./adaln.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * // C = 1, T = 2, K = 2: shift 10, scale 1 (so x * 2 + 10)
 * modulateForward(out, new Float32Array([1, 2]), new Float32Array([10, 1]), 0, 1, 2, 1, 2, 1);
 * assert.deepEqual([...out], [12, 14]);
 * ```
 */
export function modulateForward(
  out: Float32Array, // (B,T,C)
  inp: Float32Array, // (B,T,C)
  mod: Float32Array, // (B,K*C)
  shiftChunk: number,
  scaleChunk: number,
  K: number,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    const sh = b * K * C + shiftChunk * C;
    const sc = b * K * C + scaleChunk * C;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      for (let c = 0; c < C; c++) out[o + c] = inp[o + c] * (1 + mod[sc + c]) + mod[sh + c];
    }
  }
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
 * @param K Chunks per modulation row.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 */
export function modulateBackward(
  dinp: Float32Array, // (B,T,C)
  dmod: Float32Array, // (B,K*C)
  dout: Float32Array, // (B,T,C)
  inp: Float32Array, // (B,T,C)
  mod: Float32Array, // (B,K*C)
  shiftChunk: number,
  scaleChunk: number,
  K: number,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    const sh = b * K * C + shiftChunk * C;
    const sc = b * K * C + scaleChunk * C;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      for (let c = 0; c < C; c++) {
        const d = dout[o + c];
        dinp[o + c] += d * (1 + mod[sc + c]);
        dmod[sh + c] += d;
        dmod[sc + c] += d * inp[o + c];
      }
    }
  }
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
 * @param K Chunks per modulation row.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 *
 * @example A zero gate leaves the stream alone
 * ```ts
 * import { gatedResidualForward } from "./adaln.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(1);
 * gatedResidualForward(out, new Float32Array([3]), new Float32Array([5]), new Float32Array([0]), 0, 1, 1, 1, 1);
 * assert.equal(out[0], 3);
 * ```
 */
export function gatedResidualForward(
  out: Float32Array, // (B,T,C)
  x: Float32Array, // (B,T,C)
  y: Float32Array, // (B,T,C)
  mod: Float32Array, // (B,K*C)
  gateChunk: number,
  K: number,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    const g = b * K * C + gateChunk * C;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      for (let c = 0; c < C; c++) out[o + c] = x[o + c] + mod[g + c] * y[o + c];
    }
  }
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
 * @param K Chunks per modulation row.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 */
export function gatedResidualBackward(
  dx: Float32Array | null, // (B,T,C)
  dy: Float32Array, // (B,T,C)
  dmod: Float32Array, // (B,K*C)
  dout: Float32Array, // (B,T,C)
  y: Float32Array, // (B,T,C)
  mod: Float32Array, // (B,K*C)
  gateChunk: number,
  K: number,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    const g = b * K * C + gateChunk * C;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      for (let c = 0; c < C; c++) {
        const d = dout[o + c];
        if (dx) dx[o + c] += d;
        dy[o + c] += mod[g + c] * d;
        dmod[g + c] += d * y[o + c];
      }
    }
  }
}
