/**
 * SEDD's denoising score entropy in WGSL, as `src/diffusion/losses.ts` computes it, on
 * {@linkcode GpuTensor}s: per-position weighted terms (their sum, by `gpuSum`, is the loss) and
 * the gradient of the logits, for both graphs.
 *
 * Absorbing graph (`scoreEntropyAbsorbForward`): with `M = V - 1` the mask id, per sequence b
 * `e = expm1(sigma_b)`, `shift = log e + log(V - 1)` (scale-by-sigma), `r = 1 / e` and
 * `konst = r (log r - 1)`; at a masked position (`xt = M`) with logits `l`:
 *
 *     L = sum_{y < M} exp(l_y - shift) - r (l_{x0} - shift) + konst
 *
 * weighted by `scale * dsigma_b`; unmasked positions contribute 0. Uniform graph
 * (`scoreEntropyUniformForward`): see {@linkcode gpuScoreEntropyUniformForward}.
 *
 * The per-sequence constants are computed in float64 on the host
 * ({@linkcode scoreEntropyAbsorbConstants}, {@linkcode scoreEntropyUniformConstants}: the host
 * draws the noise levels anyway) and uploaded as one small tensor. One workgroup per position
 * for the forward pass, element-wise for the backward pass.
 *
 * Ids must already be validated: the kernels do not check them.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry, reductions } from "./wgsl.ts";
import { seddShift } from "../../diffusion/shift.ts";

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
  checkNoise("scoreEntropyAbsorbConstants", sigma, dsigma, B);
  const out = new Float32Array(4 * B);
  for (let b = 0; b < B; b++) {
    const e = Math.expm1(sigma[b]);
    const r = 1 / e;
    out[4 * b] = seddShift(sigma[b], V);
    out[4 * b + 1] = r;
    out[4 * b + 2] = r * (-Math.log(e) - 1);
    out[4 * b + 3] = scale * dsigma[b];
  }
  return out;
}

function checkNoise(
  name: string,
  sigma: ArrayLike<number>,
  dsigma: ArrayLike<number>,
  B: number,
): void {
  if (sigma.length < B || dsigma.length < B) {
    throw new RangeError(
      `${name}: expected sigma and dsigma of length B = ${B}, got ${sigma.length} and ${dsigma.length}`,
    );
  }
  for (let b = 0; b < B; b++) {
    const s = sigma[b], ds = dsigma[b];
    if (!(s > 0 && s < Infinity) || !(ds >= 0 && ds < Infinity)) {
      throw new RangeError(
        `${name}: expected finite sigma > 0 and dsigma >= 0, got sigma ${s}, dsigma ${ds} for sequence ${b}`,
      );
    }
  }
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
  stride = 4,
): void {
  checkDims(name, { B, T, V });
  const minV = stride === 4 ? 2 : 3;
  if (V < minV) throw new RangeError(`${name} V: expected >= ${minV}, got ${V}`);
  checkTensor(`${name} logits (B,T,V)`, logits, B * T * V);
  checkTensor(`${name} x0 (B,T)`, x0, B * T, "i32");
  checkTensor(`${name} xt (B,T)`, xt, B * T, "i32");
  checkTensor(`${name} constants (B,${stride})`, consts, stride * B);
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
 * A score-entropy kernel: the per-position weighted terms (forward, into `(B,T)`) or the gradient
 * of the logits (backward, ADDED into `(B,T,V)`).
 *
 * @param ctx The context of every tensor.
 * @param out Forward: weighted term per position, `(B,T)`. Backward: `dlogits`, `(B,T,V)`.
 * @param logits Network output, `(B,T,V)`.
 * @param x0 Clean ids, `(B,T)` i32.
 * @param xt Corrupted ids, `(B,T)` i32.
 * @param consts The graph's per-sequence constants (`scoreEntropyAbsorbConstants`, `(B,4)`, or
 *   `scoreEntropyUniformConstants`, `(B,5)`).
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size including the mask column.
 */
export type GpuScoreEntropyKernel = (
  ctx: GpuContext,
  out: GpuTensor,
  logits: GpuTensor,
  x0: GpuTensor,
  xt: GpuTensor,
  consts: GpuTensor,
  B: number,
  T: number,
  V: number,
) => void;

/**
 * One kernel from its WGSL body. Forward bodies run one workgroup per position `n` (the
 * reductions available); backward bodies one invocation per logit `i` of position `n`, column
 * `y`.
 */
function scoreEntropyKernel(
  name: string,
  stride: number,
  forward: boolean,
  body: string,
): GpuScoreEntropyKernel {
  return (ctx, out, logits, x0, xt, consts, B, T, V) => {
    checkArgs(name, logits, x0, xt, consts, B, T, V, stride);
    if (forward) checkTensor(`${name} losses (B,T)`, out, B * T);
    else checkTensor(`${name} dlogits (B,T,V)`, out, B * T * V);
    const pipeline = ctx.pipeline(name, () =>
      forward
        ? `${BINDINGS("losses")}
${reductions(WG)}
${entry(WG)}
  let n = group;
  if (n >= p.rows) { return; }
${body}}`
        : `${BINDINGS("dlogits")}
${entry(EW)}
  let i = group * ${EW}u + l;
  if (i >= p.rows * p.V) { return; }
  let n = i / p.V;
  let y = i - n * p.V;
${body}}`);
    ctx.dispatch(
      pipeline,
      [out, logits, x0, xt, consts],
      [B * T, T, V],
      grid(forward ? B * T : Math.ceil(B * T * V / EW)),
    );
  };
}

/**
 * Writes each position's weighted term, `scale dsigma_b L` (0 where `xt` is not the mask); the
 * loss is {@linkcode gpuSum} of `losses`.
 */
export const gpuScoreEntropyAbsorbForward: GpuScoreEntropyKernel = scoreEntropyKernel(
  "scoreEntropyAbsorbForward",
  4,
  true,
  `  let M = p.V - 1u;
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
`,
);

/**
 * Backward of {@linkcode gpuScoreEntropyAbsorbForward}. ADDS into `dlogits`: at masked
 * positions, `g exp(l_y - shift)` for `y < M`, then `- g r` at `y = x0`, with
 * `g = scale dsigma_b` (the upstream gradient is folded into `scale`, as in the reference).
 */
export const gpuScoreEntropyAbsorbBackward: GpuScoreEntropyKernel = scoreEntropyKernel(
  "scoreEntropyAbsorbBackward",
  4,
  false,
  `  let M = p.V - 1u;
  if (u32(xt[n]) != M || y == M) { return; }
  let b = n / p.T;
  let g = consts[4u * b + 3u];
  var d = dlogits[i] + g * exp(logits[i] - consts[4u * b]);
  if (y == u32(x0[n])) { d -= g * consts[4u * b + 1u]; }
  dlogits[i] = d;
`,
);

/**
 * The per-sequence constants of the uniform graph's score entropy, five floats per sequence:
 * `[e, rho, constSame, constMoved, scale * dsigma_b]` with `e = expm1(sigma_b)`,
 * `rho = e / (e + N)`, `constSame = (N - 1)/N rho (log rho - 1)` and
 * `constMoved = ((-log rho - 1) / rho - (N - 2)) / N`, `N = V - 1` real tokens, in float64.
 *
 * @param sigma Per-sequence total noise, `(B)`, each finite and > 0.
 * @param dsigma Per-sequence noise rate, `(B)`, each finite and >= 0.
 * @param B Batch size.
 * @param V Vocabulary size including the (unused) mask column (>= 3).
 * @param scale Whole-batch normaliser (as `lossScale` gives it).
 * @returns `(B,5)`, to upload.
 */
export function scoreEntropyUniformConstants(
  sigma: ArrayLike<number>,
  dsigma: ArrayLike<number>,
  B: number,
  V: number,
  scale: number,
): Float32Array {
  checkDims("scoreEntropyUniformConstants", { B, V });
  if (V < 3) throw new RangeError(`scoreEntropyUniformConstants V: expected >= 3, got ${V}`);
  checkNoise("scoreEntropyUniformConstants", sigma, dsigma, B);
  const N = V - 1;
  const out = new Float32Array(5 * B);
  for (let b = 0; b < B; b++) {
    const e = Math.expm1(sigma[b]);
    const rho = e / (e + N);
    const logRho = Math.log(e) - Math.log(e + N);
    out.set([
      e,
      rho,
      (N - 1) / N * rho * (logRho - 1),
      ((-logRho - 1) / rho - (N - 2)) / N,
      scale * dsigma[b],
    ], 5 * b);
  }
  return out;
}

/**
 * The uniform graph's score entropy per position, `scale dsigma_b L` with (s the logits over the
 * N = V - 1 real tokens, `a = xt`):
 * `pos = (sum_y exp(s_y) - exp(s_a)) / N`, `base = (sum_y s_y - s_a) / N`, and
 * `L = pos - rho base + constSame` where `a = x0`, else `L = pos - (s_x0 / e + base) + constMoved`,
 * as `scoreEntropyUniformForward` computes it. The loss is {@linkcode gpuSum} of `losses`.
 *
 * Ids must already be validated (`0 <= x0, xt < V - 1`): the kernels do not check them.
 */
export const gpuScoreEntropyUniformForward: GpuScoreEntropyKernel = scoreEntropyKernel(
  "scoreEntropyUniformForward",
  5,
  true,
  `  let R = p.V - 1u; // real tokens
  let c = 5u * (n / p.T);
  let o = n * p.V;
  var se = 0.0;
  var ss = 0.0;
  for (var y = l; y < R; y += ${WG}u) {
    let s = logits[o + y];
    se += exp(s);
    ss += s;
  }
  let sumExp = wgSum(se, l);
  let sumS = wgSum(ss, l);
  if (l == 0u) {
    let a = u32(xt[n]);
    let sa = logits[o + a];
    let pos = (sumExp - exp(sa)) / f32(R);
    let base = (sumS - sa) / f32(R);
    var term: f32;
    if (a == u32(x0[n])) {
      term = pos - consts[c + 1u] * base + consts[c + 2u];
    } else {
      term = pos - (logits[o + u32(x0[n])] / consts[c] + base) + consts[c + 3u];
    }
    losses[n] = consts[c + 4u] * term;
  }
`,
);

/**
 * Backward of {@linkcode gpuScoreEntropyUniformForward}. ADDS into `dlogits`, for `y != xt`,
 * `y < V - 1`: `g (exp(s_y)/N - c_y)` with `c_y = rho/N` where `xt = x0`, else `1/N`; then
 * `- g / e` at `y = x0` where `xt != x0`; `g = scale dsigma_b`.
 */
export const gpuScoreEntropyUniformBackward: GpuScoreEntropyKernel = scoreEntropyKernel(
  "scoreEntropyUniformBackward",
  5,
  false,
  `  let R = p.V - 1u;
  let a = u32(xt[n]);
  if (y == a || y == R) { return; }
  let c = 5u * (n / p.T);
  let g = consts[c + 4u];
  let same = a == u32(x0[n]);
  var cy = 1.0 / f32(R);
  if (same) { cy = consts[c + 1u] / f32(R); }
  var d = dlogits[i] + g * (exp(logits[i]) / f32(R) - cy);
  if (!same && y == u32(x0[n])) { d -= g / consts[c]; }
  dlogits[i] = d;
`,
);
