/**
 * Bidirectional multi-head self-attention over a packed `qkv` buffer (PyTorch's
 * `nn.MultiheadAttention` with a packed `in_proj`), and rotary position embedding (RoPE) on q
 * and k.
 *
 * Dimensions: `B` batch, `T` sequence, `C` channels, `NH` heads, `HS = C / NH` head size.
 * A `qkv` row holds `[q (C) | k (C) | v (C)]`, each split into `NH` heads of `HS`, as
 * `in_proj_weight` (`[3C, C]`) produces it.
 *
 * @module
 */

/**
 * Fills RoPE tables: `angle(p, i) = p * 10000^(-i / (HS/2))` for `i < HS/2`.
 *
 * @param cos `cos(angle)`, `(T,HS/2)`.
 * @param sin `sin(angle)`, `(T,HS/2)`.
 * @param T Positions.
 * @param HS Head size (even).
 *
 * @example Position 0 does not rotate
 * ```ts
 * import { ropeTables } from "./attention.ts";
 * import assert from "node:assert/strict";
 *
 * const cos = new Float64Array(4), sin = new Float64Array(4);
 * ropeTables(cos, sin, 2, 4);
 * assert.deepEqual([...cos.slice(0, 2)], [1, 1]);
 * assert.equal(sin[2], Math.sin(1)); // p = 1, i = 0
 * ```
 */
export function ropeTables(
  cos: Float64Array, // (T,HS/2)
  sin: Float64Array, // (T,HS/2)
  T: number,
  HS: number,
): void {
  const half = HS / 2;
  for (let p = 0; p < T; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * Math.pow(10000, -i / half);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
}

/**
 * Rotates q and k of every head IN PLACE (rotate-half convention): with `z1`, `z2` the first and
 * second halves of a head, `[z1 cos - z2 sin, z2 cos + z1 sin]`. v is left alone.
 *
 * In place because q and k are slices of the packed `qkv` buffer; the backward pass needs only
 * the rotated values.
 *
 * @param qkv Packed projections, `(B,T,3C)`, rotated in place.
 * @param cos RoPE table, `(>=T,HS/2)`.
 * @param sin RoPE table, `(>=T,HS/2)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads.
 * @param inverse Rotate by `-angle` instead (the transpose: {@linkcode ropeBackward}).
 */
export function ropeForward(
  qkv: Float32Array, // (B,T,3C)
  cos: Float64Array, // (T,HS/2)
  sin: Float64Array, // (T,HS/2)
  B: number,
  T: number,
  C: number,
  NH: number,
  inverse = false,
): void {
  const half = C / NH / 2;
  const sign = inverse ? -1 : 1; // rotate by -angle: the transpose
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * 3 * C;
      const tab = t * half;
      for (let part = 0; part < 2; part++) { // q, then k
        for (let h = 0; h < NH; h++) {
          const o = row + part * C + h * 2 * half;
          for (let i = 0; i < half; i++) {
            const z1 = qkv[o + i], z2 = qkv[o + half + i];
            const c = cos[tab + i], s = sign * sin[tab + i];
            qkv[o + i] = z1 * c - z2 * s;
            qkv[o + half + i] = z2 * c + z1 * s;
          }
        }
      }
    }
  }
}

/**
 * Backward of {@linkcode ropeForward}, IN PLACE on the q and k gradients: the rotation is
 * orthogonal, so its transpose rotates by `-angle`.
 *
 * Differentiates `[y1, y2] = [z1 cos - z2 sin, z2 cos + z1 sin]`:
 * `dz1 = dy1 cos + dy2 sin`, `dz2 = dy2 cos - dy1 sin`. Arguments as {@linkcode ropeForward}'s,
 * with the gradient w.r.t. the rotated `qkv` in place of `qkv` (it becomes the gradient w.r.t.
 * the unrotated one).
 */
export const ropeBackward: typeof ropeForward = (dqkv, cos, sin, B, T, C, NH): void =>
  ropeForward(dqkv, cos, sin, B, T, C, NH, true);

/**
 * Bidirectional attention per head: `att = softmax(q k^T / sqrt(HS))` over all positions, then
 * `out = (att * mask) v`, heads concatenated along channels (the input of `out_proj`).
 *
 * @param out Output, `(B,T,C)`.
 * @param att Saved softmax probabilities (before dropout), `(B,NH,T,T)`.
 * @param qkv Packed projections, `(B,T,3C)`.
 * @param mask Dropout scales on the attention weights, `(B,NH,T,T)`, or `null` for none.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads.
 *
 * @example One head with equal keys averages the values
 * ```ts
 * import { attentionForward } from "./attention.ts";
 * import assert from "node:assert/strict";
 *
 * // B=1, T=2, C=1, NH=1: rows are [q, k, v]
 * const qkv = new Float32Array([1, 5, 2, 1, 5, 4]);
 * const out = new Float32Array(2);
 * attentionForward(out, new Float32Array(4), qkv, null, 1, 2, 1, 1);
 * assert.deepEqual([...out], [3, 3]);
 * ```
 */
export function attentionForward(
  out: Float32Array, // (B,T,C)
  att: Float32Array, // (B,NH,T,T)
  qkv: Float32Array, // (B,T,3C)
  mask: Float32Array | null, // (B,NH,T,T)
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  const HS = C / NH;
  const C3 = 3 * C;
  const scale = 1 / Math.sqrt(HS);
  eachQuery(B, T, C, NH, (q, k0, v0, a, y) => {
    let max = -Infinity;
    for (let t2 = 0, k = k0; t2 < T; t2++, k += C3) {
      let s = 0;
      for (let i = 0; i < HS; i++) s += qkv[q + i] * qkv[k + i];
      s *= scale;
      att[a + t2] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let t2 = 0; t2 < T; t2++) {
      const e = Math.exp(att[a + t2] - max);
      att[a + t2] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let t2 = 0; t2 < T; t2++) att[a + t2] *= inv;
    for (let i = 0; i < HS; i++) out[y + i] = 0;
    for (let t2 = 0, v = v0; t2 < T; t2++, v += C3) {
      const w = mask ? att[a + t2] * mask[a + t2] : att[a + t2];
      if (w === 0) continue;
      for (let i = 0; i < HS; i++) out[y + i] += w * qkv[v + i];
    }
  });
}

/**
 * Calls `visit` for every query row (sequence b, head h, position t) with its offsets: `q` its
 * query in `qkv` `(B,T,3C)`, `k0` and `v0` the head's key and value at position 0 (position t2
 * is `t2 * 3C` further), `a` its row in `att` `(B,NH,T,T)`, `y` its head in `out` `(B,T,C)`.
 */
function eachQuery(
  B: number,
  T: number,
  C: number,
  NH: number,
  visit: (q: number, k0: number, v0: number, a: number, y: number) => void,
): void {
  const HS = C / NH;
  const C3 = 3 * C;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const head = b * T * C3 + h * HS; // (b, t = 0) in qkv
      for (let t = 0; t < T; t++) {
        visit(
          head + t * C3,
          head + C,
          head + 2 * C,
          ((b * NH + h) * T + t) * T,
          (b * T + t) * C + h * HS,
        );
      }
    }
  }
}

/**
 * Backward of {@linkcode attentionForward}. ADDS into `dqkv`.
 *
 * Differentiates `out = (att * mask) v` and `att = softmax(scale * q k^T)`:
 * `dv += (att*mask)^T dout`, `datt = (dout v^T) * mask`,
 * `ds = att * (datt - sum(att * datt))`, `dq += scale * ds k`, `dk += scale * ds^T q`.
 *
 * @param dqkv Gradient of the packed projections, `(B,T,3C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param qkv The forward input, `(B,T,3C)`.
 * @param att Saved probabilities, `(B,NH,T,T)`.
 * @param mask Dropout scales, `(B,NH,T,T)`, or `null`.
 * @param scratch A row of temporaries, `(T)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads.
 */
export function attentionBackward(
  dqkv: Float32Array, // (B,T,3C)
  dout: Float32Array, // (B,T,C)
  qkv: Float32Array, // (B,T,3C)
  att: Float32Array, // (B,NH,T,T)
  mask: Float32Array | null, // (B,NH,T,T)
  scratch: Float32Array, // (T)
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  const HS = C / NH;
  const C3 = 3 * C;
  const scale = 1 / Math.sqrt(HS);
  eachQuery(B, T, C, NH, (q, k0, v0, a, y) => {
    // datt[t2] = (dout . v[t2]) * mask; dv[t2] += att*mask * dout
    let dot = 0;
    for (let t2 = 0, v = v0; t2 < T; t2++, v += C3) {
      const m = mask ? mask[a + t2] : 1;
      const w = att[a + t2] * m;
      let d = 0;
      for (let i = 0; i < HS; i++) {
        d += dout[y + i] * qkv[v + i];
        dqkv[v + i] += w * dout[y + i];
      }
      d *= m;
      scratch[t2] = d;
      dot += att[a + t2] * d;
    }
    for (let t2 = 0, k = k0; t2 < T; t2++, k += C3) {
      const ds = att[a + t2] * (scratch[t2] - dot) * scale;
      if (ds === 0) continue;
      for (let i = 0; i < HS; i++) {
        dqkv[q + i] += ds * qkv[k + i];
        dqkv[k + i] += ds * qkv[q + i];
      }
    }
  });
}
