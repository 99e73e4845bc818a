/**
 * Token and position embedding in WGSL with the signatures of `src/nn/embedding.ts`, on
 * {@linkcode GpuTensor}s: the gather `out[b,t] = wte[inp[b,t]] + wpe[t]` and its scatter-add
 * backward.
 *
 * The backward pass is deterministic and adds in the reference's order: one invocation per
 * channel of `dwte` walks the tokens in order (several tokens may share a row, so rows cannot be
 * split among invocations without atomics), and one invocation per `(t, c)` of `dwpe` walks the
 * batch. Each float32 addition is correctly rounded, so the results equal the reference's bit
 * for bit.
 *
 * Token ids must already be validated (`0 <= id < V`): the kernels do not check them.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

const WG = 256;

function checkEmbedding(
  name: string,
  table: GpuTensor,
  pos: GpuTensor | null,
  rows: GpuTensor,
  inp: GpuTensor,
  B: number,
  T: number,
  C: number,
): void {
  checkDims(name, { B, T, C });
  checkTensor(`${name} token table (V,C)`, table, 0);
  if (C > 0 && table.length % C !== 0) {
    throw new RangeError(
      `${name} token table: expected a multiple of C = ${C} elements, got ${table.length}`,
    );
  }
  if (pos) checkTensor(`${name} position table (>=T,C)`, pos, T * C);
  checkTensor(`${name} rows (B,T,C)`, rows, B * T * C);
  checkTensor(`${name} inp (B,T)`, inp, B * T, "i32");
}

/**
 * `out[b,t] = wte[inp[b,t]] + wpe[t]` (no position term where `wpe` is null).
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(B,T,C)`.
 * @param inp Token ids, `(B,T)` i32.
 * @param wte Token table, `(V,C)`.
 * @param wpe Position table, `(>=T,C)`, or `null`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 */
export function gpuEmbeddingForward(
  ctx: GpuContext,
  out: GpuTensor,
  inp: GpuTensor,
  wte: GpuTensor,
  wpe: GpuTensor | null,
  B: number,
  T: number,
  C: number,
): void {
  checkEmbedding("gpuEmbeddingForward", wte, wpe, out, inp, B, T, C);
  const pipeline = ctx.pipeline(
    "embeddingForward",
    () =>
      `struct Params { total: u32, T: u32, C: u32, hasWpe: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<i32>;
@group(0) @binding(2) var<storage, read> wte: array<f32>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.total) { return; }
  let row = i / p.C;
  let c = i - row * p.C;
  var v = wte[u32(inp[row]) * p.C + c];
  if (p.hasWpe != 0u) { v += wpe[(row % p.T) * p.C + c]; }
  out[i] = v;
}`,
  );
  const total = B * T * C;
  ctx.dispatch(
    pipeline,
    [out, inp, wte, wpe ?? ctx.dummy],
    [total, T, C, wpe ? 1 : 0],
    grid(Math.ceil(total / WG)),
  );
}

/**
 * Backward of {@linkcode gpuEmbeddingForward}. ADDS into `dwte` (and `dwpe`): for every token,
 * `dwte[inp[b,t]] += dout[b,t]` and `dwpe[t] += dout[b,t]`, in the reference's order.
 *
 * @param ctx The context of every tensor.
 * @param dwte Gradient of the token table, `(V,C)`.
 * @param dwpe Gradient of the position table, `(>=T,C)`, or `null`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param inp Token ids, `(B,T)` i32.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 */
export function gpuEmbeddingBackward(
  ctx: GpuContext,
  dwte: GpuTensor,
  dwpe: GpuTensor | null,
  dout: GpuTensor,
  inp: GpuTensor,
  B: number,
  T: number,
  C: number,
): void {
  checkEmbedding("gpuEmbeddingBackward", dwte, dwpe, dout, inp, B, T, C);
  if (C === 0) return;
  const tokens = ctx.pipeline("embeddingBackwardTokens", () =>
    `struct Params { rows: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  for (var r = 0u; r < p.rows; r++) {
    let ix = u32(inp[r]) * p.C + c;
    dwte[ix] = dwte[ix] + dout[r * p.C + c];
  }
}`);
  ctx.dispatch(tokens, [dwte, dout, inp], [B * T, C], [Math.ceil(C / 64), 1]);
  if (!dwpe) return;
  const positions = ctx.pipeline(
    "embeddingBackwardPositions",
    () =>
      `struct Params { B: u32, T: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${entry(WG)}
  let i = group * ${WG}u + l; // (t, c)
  if (i >= p.T * p.C) { return; }
  var v = dwpe[i];
  for (var b = 0u; b < p.B; b++) { v += dout[b * p.T * p.C + i]; }
  dwpe[i] = v;
}`,
  );
  ctx.dispatch(positions, [dwpe, dout], [B, T, C], grid(Math.ceil(T * C / WG)));
}
