/**
 * SEDD's denoising score entropy for the absorbing graph in WGSL, as
 * `scoreEntropyAbsorbForward` / `scoreEntropyAbsorbBackward` of `src/diffusion/losses.ts`
 * compute it, on {@linkcode GpuTensor}s. With `M = V - 1` the mask id, per sequence b
 * `e = expm1(sigma_b)`, `shift = log e + log(V - 1)` (scale-by-sigma), `r = 1 / e` and
 * `konst = r (log r - 1)`; at a masked position (`xt = M`) with logits `l`:
 *
 *     L = sum_{y < M} exp(l_y - shift) - r (l_{x0} - shift) + konst
 *
 * weighted by `scale * dsigma_b`; unmasked positions contribute 0. The per-sequence constants
 * are computed in float64 on the host by {@linkcode scoreEntropyAbsorbConstants} (from the
 * noise levels, which the host draws anyway) and uploaded as one small tensor.
 *
 * Ids must already be validated (`0 <= x0 < M`, `0 <= xt < V`): the kernels do not check them.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry, reductions } from "./wgsl.ts";

const WG = 64;
const EW = 256;

/**
 * The per-sequence constants of the absorb score entropy, four floats per sequence:
 * `[shift, r, konst, scale * dsigma_b]`, computed in float64.
 *
 * @param sigma Per-sequence total noise, `(B)`, each finite and > 0.
 * @param dsigma Per-sequence noise rate, `(B)`, each finite and >= 0.
 * @param B Batch size.
 * @param V Vocabulary size including the mask (>= 2).
 * @param scale Whole-batch normaliser (as `lossScale` gives it).
 * @returns `(B,4)`, to upload.
 */
export function scoreEntropyAbsorbConstants(
  sigma: ArrayLike<number>,
  dsigma: ArrayLike<number>,
  B: number,
  V: number,
  scale: number,
): Float32Array {
  checkDims("scoreEntropyAbsorbConstants", { B, V });
  if (V < 2) throw new RangeError(`scoreEntropyAbsorbConstants V: expected >= 2, got ${V}`);
  if (sigma.length < B || dsigma.length < B) {
    throw new RangeError(
      `scoreEntropyAbsorbConstants: expected sigma and dsigma of length B = ${B}, got ${sigma.length} and ${dsigma.length}`,
    );
  }
  const out = new Float32Array(4 * B);
  for (let b = 0; b < B; b++) {
    const s = sigma[b], ds = dsigma[b];
    if (!(s > 0 && s < Infinity) || !(ds >= 0 && ds < Infinity)) {
      throw new RangeError(
        `scoreEntropyAbsorbConstants: expected finite sigma > 0 and dsigma >= 0, got sigma ${s}, dsigma ${ds} for sequence ${b}`,
      );
    }
    const e = Math.expm1(s);
    const r = 1 / e;
    out[4 * b] = Math.log(e) + Math.log(V - 1);
    out[4 * b + 1] = r;
    out[4 * b + 2] = r * (-Math.log(e) - 1);
    out[4 * b + 3] = scale * ds;
  }
  return out;
}

function checkArgs(
  name: string,
  logits: GpuTensor,
  x0: GpuTensor,
  xt: GpuTensor,
  consts: GpuTensor,
  B: number,
  T: number,
  V: number,
): void {
  checkDims(name, { B, T, V });
  if (V < 2) throw new RangeError(`${name} V: expected >= 2, got ${V}`);
  checkTensor(`${name} logits (B,T,V)`, logits, B * T * V);
  checkTensor(`${name} x0 (B,T)`, x0, B * T, "i32");
  checkTensor(`${name} xt (B,T)`, xt, B * T, "i32");
  checkTensor(`${name} constants (B,4)`, consts, 4 * B);
}

const BINDINGS = (out: string) =>
  `struct Params { rows: u32, T: u32, V: u32 }
@group(0) @binding(0) var<storage, read_write> ${out}: array<f32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> x0: array<i32>;
@group(0) @binding(3) var<storage, read> xt: array<i32>;
@group(0) @binding(4) var<storage, read> consts: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;`;

/**
 * Writes each position's weighted term, `scale dsigma_b L` (0 where `xt` is not the mask); the
 * loss is {@linkcode gpuSum} of `losses`.
 *
 * @param ctx The context of every tensor.
 * @param losses Weighted term per position, `(B,T)`.
 * @param logits Network output, `(B,T,V)`.
 * @param x0 Clean ids, `(B,T)` i32.
 * @param xt Corrupted ids, `(B,T)` i32.
 * @param consts From {@linkcode scoreEntropyAbsorbConstants}, `(B,4)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size including the mask.
 */
export function gpuScoreEntropyAbsorbForward(
  ctx: GpuContext,
  losses: GpuTensor,
  logits: GpuTensor,
  x0: GpuTensor,
  xt: GpuTensor,
  consts: GpuTensor,
  B: number,
  T: number,
  V: number,
): void {
  checkArgs("gpuScoreEntropyAbsorbForward", logits, x0, xt, consts, B, T, V);
  checkTensor("gpuScoreEntropyAbsorbForward losses (B,T)", losses, B * T);
  const pipeline = ctx.pipeline("scoreEntropyAbsorbForward", () =>
    `${BINDINGS("losses")}
${reductions(WG)}
${entry(WG)}
  let n = group;
  if (n >= p.rows) { return; }
  let M = p.V - 1u;
  let b = n / p.T;
  let shift = consts[4u * b];
  let o = n * p.V;
  var e = 0.0;
  for (var y = l; y < M; y += ${WG}u) { e += exp(logits[o + y] - shift); }
  let pos = wgSum(e, l);
  if (l == 0u) {
    if (u32(xt[n]) != M) {
      losses[n] = 0.0;
    } else {
      let r = consts[4u * b + 1u];
      let term = pos - r * (logits[o + u32(x0[n])] - shift) + consts[4u * b + 2u];
      losses[n] = consts[4u * b + 3u] * term;
    }
  }
}`);
  ctx.dispatch(pipeline, [losses, logits, x0, xt, consts], [B * T, T, V], grid(B * T));
}

/**
 * Backward of {@linkcode gpuScoreEntropyAbsorbForward}. ADDS into `dlogits`: at masked
 * positions, `g exp(l_y - shift)` for `y < M`, then `- g r` at `y = x0`, with
 * `g = scale dsigma_b` (the upstream gradient is folded into `scale`, as in the reference).
 *
 * @param ctx The context of every tensor.
 * @param dlogits Gradient of the logits, `(B,T,V)`.
 * @param logits Network output, `(B,T,V)`.
 * @param x0 Clean ids, `(B,T)` i32.
 * @param xt Corrupted ids, `(B,T)` i32.
 * @param consts From {@linkcode scoreEntropyAbsorbConstants}, `(B,4)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size including the mask.
 */
export function gpuScoreEntropyAbsorbBackward(
  ctx: GpuContext,
  dlogits: GpuTensor,
  logits: GpuTensor,
  x0: GpuTensor,
  xt: GpuTensor,
  consts: GpuTensor,
  B: number,
  T: number,
  V: number,
): void {
  checkArgs("gpuScoreEntropyAbsorbBackward", logits, x0, xt, consts, B, T, V);
  checkTensor("gpuScoreEntropyAbsorbBackward dlogits (B,T,V)", dlogits, B * T * V);
  const pipeline = ctx.pipeline("scoreEntropyAbsorbBackward", () =>
    `${BINDINGS("dlogits")}
${entry(EW)}
  let i = group * ${EW}u + l;
  if (i >= p.rows * p.V) { return; }
  let n = i / p.V;
  let y = i - n * p.V;
  let M = p.V - 1u;
  if (u32(xt[n]) != M || y == M) { return; }
  let b = n / p.T;
  let g = consts[4u * b + 3u];
  var d = dlogits[i] + g * exp(logits[i] - consts[4u * b]);
  if (y == u32(x0[n])) { d -= g * consts[4u * b + 1u]; }
  dlogits[i] = d;
}`);
  ctx.dispatch(
    pipeline,
    [dlogits, logits, x0, xt, consts],
    [B * T, T, V],
    grid(Math.ceil(B * T * V / EW)),
  );
}
