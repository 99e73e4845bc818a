/**
 * adaLN on {@linkcode GpuTensor}s, with the signatures of `src/nn/adaln.ts` (the context first):
 * the modulation `out = inp * (1 + scale) + shift` and the gated residual `out = x + gate * y`,
 * forward and backward, where `shift`, `scale` and `gate` are chunks of a modulation buffer
 * `(B,K*C)` read per sequence. Also SiLU, forward and backward,
 * for the noise-level MLP.
 *
 * The backward passes split in two dispatches: the per-element gradients (one invocation per
 * element), then the modulation's gradients, summed over the `T` positions of a sequence by one
 * invocation per `(b, c)` in the reference's order (`t` ascending, added into the value already
 * there), so they are the reference's float32 sums exactly.
 *
 * @module
 */

import type { ModShape } from "../../nn/adaln.ts";
import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

const WG = 256;

/** WGSL: the opening of a kernel over `p.n` items, `i` the item. */
const OPEN = `${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }`;

function checkShape(name: string, mod: GpuTensor, shape: ModShape, chunks: number[]): void {
  const { K, B, T, C } = shape;
  checkDims(name, { K, B, T, C });
  checkTensor(`${name} mod (B,K*C)`, mod, B * K * C);
  for (const j of chunks) {
    if (!Number.isInteger(j) || j < 0 || j >= K) {
      throw new RangeError(`${name} chunk: expected an integer in [0, ${K}), got ${j}`);
    }
  }
}

function checkActs(name: string, shape: ModShape, named: Record<string, GpuTensor | null>) {
  const n = shape.B * shape.T * shape.C;
  for (const [what, t] of Object.entries(named)) {
    if (t) checkTensor(`${name} ${what} (B,T,C)`, t, n);
  }
}

/** Uniform words every kernel here takes: items, then `T`, `C`, `K` and two chunk indices. */
function words(n: number, { K, T, C }: ModShape, a: number, b: number): number[] {
  return [n, T, C, K, a, b];
}

const PARAMS = `struct Params { n: u32, T: u32, C: u32, K: u32, a: u32, b: u32 }`;

/** Elements of a `(B,T,C)` activation. */
function elements({ B, T, C }: ModShape): number {
  return B * T * C;
}

/**
 * Compiles (once per `key`) and records a kernel over `params[0]` items: storage arrays `names`
 * bound to `tensors` in order (the first `writes` of them read-write), then the uniform block
 * {@linkcode PARAMS} (the words past `params` are 0), then `body`, with `i` the
 * item.
 */
function kernel(
  ctx: GpuContext,
  key: string,
  names: string[],
  body: string,
  tensors: GpuTensor[],
  params: number[],
  writes = 1,
): void {
  const pipeline = ctx.pipeline(key, () =>
    [
      PARAMS,
      ...names.map((name, k) =>
        `@group(0) @binding(${k}) var<storage, ${
          k < writes ? "read_write" : "read"
        }> ${name}: array<f32>;`
      ),
      `@group(0) @binding(${names.length}) var<uniform> p: Params;`,
      OPEN,
      body,
      "}",
    ].join("\n"));
  const padded = Array.from({ length: 6 }, (_, k) => params[k] ?? 0); // the whole PARAMS block
  ctx.dispatch(pipeline, tensors, padded, grid(Math.ceil(params[0] / WG)));
}

/**
 * `out[b,t] = inp[b,t] * (1 + scale[b]) + shift[b]`, `shift` and `scale` chunks of `mod`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(B,T,C)` (distinct from `inp`).
 * @param inp Input, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param shiftChunk Index of the shift chunk.
 * @param scaleChunk Index of the scale chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function gpuModulateForward(
  ctx: GpuContext,
  out: GpuTensor,
  inp: GpuTensor,
  mod: GpuTensor,
  shiftChunk: number,
  scaleChunk: number,
  shape: ModShape,
): void {
  const name = "gpuModulateForward";
  checkShape(name, mod, shape, [shiftChunk, scaleChunk]);
  checkActs(name, shape, { out, inp });
  if (out === inp) throw new RangeError(`${name}: expected out distinct from inp, got the same`);
  kernel(
    ctx,
    "modulateForward",
    ["out", "inp", "md"],
    `  let row = (i / (p.T * p.C)) * p.K * p.C;
  let c = i % p.C;
  out[i] = inp[i] * (1.0 + md[row + p.b * p.C + c]) + md[row + p.a * p.C + c];`,
    [out, inp, mod],
    words(elements(shape), shape, shiftChunk, scaleChunk),
  );
}

/**
 * Backward of {@linkcode gpuModulateForward}. ADDS into `dinp` (`dout * (1 + scale)`) and into
 * the shift and scale chunks of `dmod` (`sum_t dout`, `sum_t dout * inp`).
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(B,T,C)`.
 * @param dmod Gradient of the modulation rows, `(B,K*C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param inp The forward input, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param shiftChunk Index of the shift chunk.
 * @param scaleChunk Index of the scale chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function gpuModulateBackward(
  ctx: GpuContext,
  dinp: GpuTensor,
  dmod: GpuTensor,
  dout: GpuTensor,
  inp: GpuTensor,
  mod: GpuTensor,
  shiftChunk: number,
  scaleChunk: number,
  shape: ModShape,
): void {
  const name = "gpuModulateBackward";
  checkShape(name, mod, shape, [shiftChunk, scaleChunk]);
  checkTensor(`${name} dmod (B,K*C)`, dmod, shape.B * shape.K * shape.C);
  checkActs(name, shape, { dinp, dout, inp });
  kernel(
    ctx,
    "modulateBackwardInput",
    ["dinp", "dout", "md"],
    `  let row = (i / (p.T * p.C)) * p.K * p.C;
  dinp[i] = dinp[i] + dout[i] * (1.0 + md[row + p.b * p.C + i % p.C]);`,
    [dinp, dout, mod],
    words(elements(shape), shape, shiftChunk, scaleChunk),
  );
  kernel(
    ctx,
    "modulateBackwardMod",
    ["dmod", "dout", "inp"],
    `  let b = i / p.C;
  let c = i % p.C;
  let sh = b * p.K * p.C + p.a * p.C + c;
  let sc = b * p.K * p.C + p.b * p.C + c;
  var dsh = dmod[sh];
  var dsc = dmod[sc];
  for (var t = 0u; t < p.T; t++) {
    let o = (b * p.T + t) * p.C + c;
    let d = dout[o];
    dsh += d;
    dsc += d * inp[o];
  }
  dmod[sh] = dsh;
  dmod[sc] = dsc;`,
    [dmod, dout, inp],
    words(shape.B * shape.C, shape, shiftChunk, scaleChunk),
  );
}

/**
 * Gated residual: `out[b,t] = x[b,t] + gate[b] * y[b,t]`, `gate` a chunk of `mod`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(B,T,C)` (distinct from `x` and `y`).
 * @param x Residual stream, `(B,T,C)`.
 * @param y Branch output, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param gateChunk Index of the gate chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function gpuGatedResidualForward(
  ctx: GpuContext,
  out: GpuTensor,
  x: GpuTensor,
  y: GpuTensor,
  mod: GpuTensor,
  gateChunk: number,
  shape: ModShape,
): void {
  const name = "gpuGatedResidualForward";
  checkShape(name, mod, shape, [gateChunk]);
  checkActs(name, shape, { out, x, y });
  if (out === x || out === y) {
    throw new RangeError(`${name}: expected out distinct from x and y, got the same`);
  }
  kernel(
    ctx,
    "gatedResidualForward",
    ["out", "x", "y", "md"],
    `  let row = (i / (p.T * p.C)) * p.K * p.C;
  out[i] = x[i] + md[row + p.a * p.C + i % p.C] * y[i];`,
    [out, x, y, mod],
    words(elements(shape), shape, gateChunk, 0),
  );
}

/**
 * Backward of {@linkcode gpuGatedResidualForward}. ADDS into `dx` (`dout`), `dy`
 * (`gate * dout`) and the gate chunk of `dmod` (`sum_t dout * y`).
 *
 * @param ctx The context of every tensor.
 * @param dx Gradient of the stream, `(B,T,C)`, or `null` when the caller routes it itself.
 * @param dy Gradient of the branch, `(B,T,C)`.
 * @param dmod Gradient of the modulation rows, `(B,K*C)`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param y The forward branch output, `(B,T,C)`.
 * @param mod Modulation rows, `(B,K*C)`.
 * @param gateChunk Index of the gate chunk.
 * @param shape `K`, `B`, `T`, `C`.
 */
export function gpuGatedResidualBackward(
  ctx: GpuContext,
  dx: GpuTensor | null,
  dy: GpuTensor,
  dmod: GpuTensor,
  dout: GpuTensor,
  y: GpuTensor,
  mod: GpuTensor,
  gateChunk: number,
  shape: ModShape,
): void {
  const name = "gpuGatedResidualBackward";
  checkShape(name, mod, shape, [gateChunk]);
  checkTensor(`${name} dmod (B,K*C)`, dmod, shape.B * shape.K * shape.C);
  checkActs(name, shape, { dx, dy, dout, y });
  kernel(
    ctx,
    "gatedResidualBackwardBranch",
    ["dy", "dx", "dout", "md"],
    `  let row = (i / (p.T * p.C)) * p.K * p.C;
  let d = dout[i];
  dy[i] = dy[i] + md[row + p.a * p.C + i % p.C] * d;
  if (p.b != 0u) { dx[i] = dx[i] + d; }`,
    [dy, dx ?? ctx.dummy, dout, mod],
    words(elements(shape), shape, gateChunk, dx ? 1 : 0),
    2,
  );
  kernel(
    ctx,
    "gatedResidualBackwardGate",
    ["dmod", "dout", "y"],
    `  let b = i / p.C;
  let g = b * p.K * p.C + p.a * p.C + i % p.C;
  var dg = dmod[g];
  for (var t = 0u; t < p.T; t++) {
    let o = (b * p.T + t) * p.C + i % p.C;
    dg += dout[o] * y[o];
  }
  dmod[g] = dg;`,
    [dmod, dout, y],
    words(shape.B * shape.C, shape, gateChunk, 0),
  );
}

/**
 * `out = x * sigmoid(x)`, as `siluForward`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N)` (distinct from `inp`).
 * @param inp Input, `(N)`.
 * @param N Elements.
 */
export function gpuSiluForward(ctx: GpuContext, out: GpuTensor, inp: GpuTensor, N: number): void {
  checkDims("gpuSiluForward", { N });
  checkTensor("gpuSiluForward out (N)", out, N);
  checkTensor("gpuSiluForward inp (N)", inp, N);
  kernel(
    ctx,
    "siluForward",
    ["out", "inp"],
    `  let x = inp[i];
  out[i] = x / (1.0 + exp(-x));`,
    [out, inp],
    [N],
  );
}

/**
 * Backward of {@linkcode gpuSiluForward}. ADDS into `dinp`:
 * `dinp += dout * s * (1 + x * (1 - s))`, `s = sigmoid(x)`.
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param inp The forward input, `(N)`.
 * @param N Elements.
 */
export function gpuSiluBackward(
  ctx: GpuContext,
  dinp: GpuTensor,
  dout: GpuTensor,
  inp: GpuTensor,
  N: number,
): void {
  checkDims("gpuSiluBackward", { N });
  checkTensor("gpuSiluBackward dinp (N)", dinp, N);
  checkTensor("gpuSiluBackward dout (N)", dout, N);
  checkTensor("gpuSiluBackward inp (N)", inp, N);
  kernel(
    ctx,
    "siluBackward",
    ["dinp", "dout", "inp"],
    `  let x = inp[i];
  let s = 1.0 / (1.0 + exp(-x));
  dinp[i] = dinp[i] + dout[i] * s * (1.0 + x * (1.0 - s));`,
    [dinp, dout, inp],
    [N],
  );
}
