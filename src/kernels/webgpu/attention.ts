/**
 * Rotary position embedding and the bidirectional softmax-attention forward pass in WGSL, with
 * the signatures of `src/nn/attention.ts` on {@linkcode GpuTensor}s (packed `qkv` rows
 * `[q (C) | k (C) | v (C)]`, `NH` heads of `HS = C / NH`).
 *
 * The attention kernel is the direct one: one workgroup of 64 invocations per query row
 * (sequence b, head h, position t). The invocations split the T scores `q . k[t2] / sqrt(HS)`
 * among them (each a float32 dot product in channel order), the row maximum and the sum of
 * exponentials are reduced pairwise in workgroup memory, the probabilities are stored to `att`,
 * then the invocations split the HS output channels, each summing `att * mask * v` over t2 in
 * order. Its memory traffic is that of the (B,NH,T,T) probabilities the backward pass keeps;
 * it is not a tiled (flash-style) kernel.
 *
 * The backward pass avoids write conflicts (many queries add into one key's and value's
 * gradient) without atomics, in two dispatches: one workgroup per query row forms
 * `ds = att (datt - sum(att datt)) / sqrt(HS)` into a `(B,NH,T,T)` scratch and adds `ds k` into
 * its own `dq`; then one workgroup per key row sums its `dk` and `dv` over all queries.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry, reductions } from "./wgsl.ts";

const WG = 64;

/**
 * WGSL: the start of a kernel with a workgroup per row `(b * NH + h) * T + t` of the attention
 * matrix over packed `qkv` rows `(B,T,3C)` (uniforms `p.rows`, `p.T`, `p.C`, `p.NH`, `p.HS`):
 * returns past `p.rows`, and binds `r` the row, `t`, `h`, `b`, `C3 = 3C` and `head` (the offset
 * of head `h`'s channels in sequence `b`'s first row).
 */
export const ATTENTION_ROW = `  let r = group; // row (b * NH + h) * T + t
  if (r >= p.rows) { return; }
  let t = r % p.T;
  let bh = r / p.T;
  let h = bh % p.NH;
  let b = bh / p.NH;
  let C3 = 3u * p.C;
  let head = b * p.T * C3 + h * p.HS;`;

/**
 * Throws a RangeError unless `NH >= 1` divides `C`; returns the head size `C / NH`.
 *
 * @param name The kernel's name, for the message.
 * @param C Channels.
 * @param NH Heads.
 * @returns `C / NH`.
 */
export function checkHeads(name: string, C: number, NH: number): number {
  if (NH < 1 || C % NH !== 0) {
    throw new RangeError(`${name}: expected NH >= 1 dividing C = ${C}, got NH = ${NH}`);
  }
  return C / NH;
}

/**
 * Rotates q and k of every head IN PLACE (rotate-half convention, as `ropeForward`): with
 * `z1`, `z2` a head's halves, `[z1 cos - z2 sin, z2 cos + z1 sin]`; `inverse` rotates by
 * `-angle` (the backward pass, on the q and k gradients).
 *
 * @param ctx The context of every tensor.
 * @param qkv Packed projections, `(B,T,3C)`, rotated in place.
 * @param cos RoPE table as float32, `(>=T,HS/2)` (from `ropeTables`).
 * @param sin RoPE table as float32, `(>=T,HS/2)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads (HS = C / NH even).
 * @param inverse Rotate by `-angle` instead (default false).
 */
export function gpuRopeForward(
  ctx: GpuContext,
  qkv: GpuTensor,
  cos: GpuTensor,
  sin: GpuTensor,
  B: number,
  T: number,
  C: number,
  NH: number,
  inverse = false,
): void {
  checkDims("gpuRopeForward", { B, T, C, NH });
  const HS = checkHeads("gpuRopeForward", C, NH);
  if (HS % 2 !== 0) throw new RangeError(`gpuRopeForward: expected an even head size, got ${HS}`);
  const half = HS / 2;
  checkTensor("gpuRopeForward qkv (B,T,3C)", qkv, B * T * 3 * C);
  checkTensor("gpuRopeForward cos (T,HS/2)", cos, T * half);
  checkTensor("gpuRopeForward sin (T,HS/2)", sin, T * half);
  const pipeline = ctx.pipeline(
    "ropeForward",
    () =>
      `struct Params { total: u32, T: u32, C: u32, half: u32, sign: f32 }
@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> cosT: array<f32>;
@group(0) @binding(2) var<storage, read> sinT: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${entry(256)}
  // one invocation per (row b*T + t, part q|k, pair index j over the C/2 pairs of the part)
  let id = group * 256u + l;
  if (id >= p.total) { return; }
  let pairs = p.C / 2u;
  let j = id % pairs;
  let part = (id / pairs) % 2u;
  let row = id / (2u * pairs);
  let h = j / p.half;
  let i = j % p.half;
  let t = row % p.T;
  let o = row * 3u * p.C + part * p.C + h * 2u * p.half;
  let z1 = qkv[o + i];
  let z2 = qkv[o + p.half + i];
  let c = cosT[t * p.half + i];
  let s = p.sign * sinT[t * p.half + i];
  qkv[o + i] = z1 * c - z2 * s;
  qkv[o + p.half + i] = z2 * c + z1 * s;
}`,
  );
  const total = B * T * C; // rows x 2 parts x C/2 pairs
  ctx.dispatch(
    pipeline,
    [qkv, cos, sin],
    [total, T, C, half, inverse ? -1 : 1],
    grid(Math.ceil(total / 256)),
    [4],
  );
}

/**
 * Bidirectional attention per head, as `attentionForward`: `att = softmax(q k^T / sqrt(HS))`
 * over all positions (saved, before dropout), `out = (att * mask) v`, heads concatenated along
 * channels.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(B,T,C)`.
 * @param att Saved softmax probabilities, `(B,NH,T,T)`.
 * @param qkv Packed projections, `(B,T,3C)`.
 * @param mask Dropout scales on the attention weights, `(B,NH,T,T)`, or `null`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads.
 */
export function gpuAttentionForward(
  ctx: GpuContext,
  out: GpuTensor,
  att: GpuTensor,
  qkv: GpuTensor,
  mask: GpuTensor | null,
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  checkDims("gpuAttentionForward", { B, T, C, NH });
  const HS = checkHeads("gpuAttentionForward", C, NH);
  checkTensor("gpuAttentionForward out (B,T,C)", out, B * T * C);
  checkTensor("gpuAttentionForward att (B,NH,T,T)", att, B * NH * T * T);
  checkTensor("gpuAttentionForward qkv (B,T,3C)", qkv, B * T * 3 * C);
  if (mask) checkTensor("gpuAttentionForward mask (B,NH,T,T)", mask, B * NH * T * T);
  if (B * T * C === 0) return;
  const pipeline = ctx.pipeline(
    "attentionForward",
    () =>
      `struct Params { rows: u32, T: u32, C: u32, NH: u32, HS: u32, scale: f32, hasMask: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> att: array<f32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${reductions(WG)}
${entry(WG)}
${ATTENTION_ROW}
  let q = head + t * C3; // the query row
  let a = r * p.T;
  var mx = -3.402823466e38;
  for (var t2 = l; t2 < p.T; t2 += ${WG}u) {
    let k = head + p.C + t2 * C3;
    var s = 0.0;
    for (var i = 0u; i < p.HS; i++) { s += qkv[q + i] * qkv[k + i]; }
    s *= p.scale;
    att[a + t2] = s;
    mx = max(mx, s);
  }
  let rowMax = wgMax(mx, l);
  var sum = 0.0;
  for (var t2 = l; t2 < p.T; t2 += ${WG}u) {
    let e = exp(att[a + t2] - rowMax);
    att[a + t2] = e;
    sum += e;
  }
  let inv = 1.0 / wgSum(sum, l);
  for (var t2 = l; t2 < p.T; t2 += ${WG}u) { att[a + t2] = att[a + t2] * inv; }
  storageBarrier();
  workgroupBarrier();
  let y = (b * p.T + t) * p.C + h * p.HS;
  for (var i = l; i < p.HS; i += ${WG}u) {
    var acc = 0.0;
    for (var t2 = 0u; t2 < p.T; t2++) {
      var w = att[a + t2];
      if (p.hasMask != 0u) { w *= mask[a + t2]; }
      acc += w * qkv[head + 2u * p.C + t2 * C3 + i];
    }
    out[y + i] = acc;
  }
}`,
  );
  const rows = B * NH * T;
  ctx.dispatch(
    pipeline,
    [out, att, qkv, mask ?? ctx.dummy],
    [rows, T, C, NH, HS, 1 / Math.sqrt(HS), mask ? 1 : 0],
    grid(rows),
    [5],
  );
}

/**
 * Backward of {@linkcode gpuAttentionForward}. ADDS into `dqkv`: with `w = att * mask`,
 * `dv += w^T dout`, `datt = (dout v^T) * mask`, `ds = att (datt - rowsum(att datt)) / sqrt(HS)`,
 * `dq += ds k`, `dk += ds^T q`, as `attentionBackward` does. Two dispatches.
 *
 * @param ctx The context of every tensor.
 * @param dqkv Gradient of the packed projections, `(B,T,3C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param qkv The forward input (after rotary), `(B,T,3C)`.
 * @param att Saved probabilities, `(B,NH,T,T)`.
 * @param mask Dropout scales, `(B,NH,T,T)`, or `null`.
 * @param scratch `(B,NH,T,T)`: receives `ds` (the reference's is one row; here every row is
 *   kept, so the key-side sums can read them).
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads.
 */
export function gpuAttentionBackward(
  ctx: GpuContext,
  dqkv: GpuTensor,
  dout: GpuTensor,
  qkv: GpuTensor,
  att: GpuTensor,
  mask: GpuTensor | null,
  scratch: GpuTensor,
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  checkDims("gpuAttentionBackward", { B, T, C, NH });
  const HS = checkHeads("gpuAttentionBackward", C, NH);
  checkTensor("gpuAttentionBackward dqkv (B,T,3C)", dqkv, B * T * 3 * C);
  checkTensor("gpuAttentionBackward dout (B,T,C)", dout, B * T * C);
  checkTensor("gpuAttentionBackward qkv (B,T,3C)", qkv, B * T * 3 * C);
  checkTensor("gpuAttentionBackward att (B,NH,T,T)", att, B * NH * T * T);
  if (mask) checkTensor("gpuAttentionBackward mask (B,NH,T,T)", mask, B * NH * T * T);
  checkTensor("gpuAttentionBackward scratch (B,NH,T,T)", scratch, B * NH * T * T);
  if (B * T * C === 0) return;
  const header = `struct Params { rows: u32, T: u32, C: u32, NH: u32, HS: u32, scale: f32,
  hasMask: u32 }
@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> ds: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> att: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${reductions(WG)}
fn maskAt(i: u32) -> f32 {
  if (p.hasMask != 0u) { return mask[i]; }
  return 1.0;
}
${entry(WG)}
${ATTENTION_ROW} // of att: a query, or a key below`;
  const queries = ctx.pipeline("attentionBackwardQueries", () =>
    `${header}
  let q = head + t * C3;
  let y = (b * p.T + t) * p.C + h * p.HS;
  let a = r * p.T;
  var dot = 0.0;
  for (var t2 = l; t2 < p.T; t2 += ${WG}u) {
    let v = head + 2u * p.C + t2 * C3;
    var d = 0.0;
    for (var i = 0u; i < p.HS; i++) { d += dout[y + i] * qkv[v + i]; }
    d *= maskAt(a + t2);
    ds[a + t2] = d;
    dot += att[a + t2] * d;
  }
  let rowDot = wgSum(dot, l);
  for (var t2 = l; t2 < p.T; t2 += ${WG}u) {
    ds[a + t2] = att[a + t2] * (ds[a + t2] - rowDot) * p.scale;
  }
  storageBarrier();
  for (var i = l; i < p.HS; i += ${WG}u) {
    var acc = 0.0;
    for (var t2 = 0u; t2 < p.T; t2++) { acc += ds[a + t2] * qkv[head + p.C + t2 * C3 + i]; }
    dqkv[q + i] = dqkv[q + i] + acc;
  }
}`);
  const keys = ctx.pipeline("attentionBackwardKeys", () =>
    `${header}
  // this workgroup's row r is key (and value) position t; queries t1 = 0 .. T-1
  let k = head + p.C + t * C3;
  let v = head + 2u * p.C + t * C3;
  for (var i = l; i < p.HS; i += ${WG}u) {
    var accK = 0.0;
    var accV = 0.0;
    for (var t1 = 0u; t1 < p.T; t1++) {
      let a = (bh * p.T + t1) * p.T + t;
      accV += att[a] * maskAt(a) * dout[(b * p.T + t1) * p.C + h * p.HS + i];
      accK += ds[a] * qkv[head + t1 * C3 + i];
    }
    dqkv[k + i] = dqkv[k + i] + accK;
    dqkv[v + i] = dqkv[v + i] + accV;
  }
}`);
  const rows = B * NH * T;
  const params = [rows, T, C, NH, HS, 1 / Math.sqrt(HS), mask ? 1 : 0];
  const tensors = [dqkv, scratch, dout, qkv, att, mask ?? ctx.dummy];
  ctx.dispatch(queries, tensors, params, grid(rows), [5]);
  ctx.dispatch(keys, tensors, params, grid(rows), [5]);
}
