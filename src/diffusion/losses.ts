/**
 * Diffusion losses: each a forward/backward pair from the network's logits (B,T,V) to a scalar.
 *
 * Dimensions: `B` sequences, `T` positions, `V` vocabulary including the mask, whose id is
 * V - 1 (the tokenizer adds `<|mask|>` last; SEDD and MDLM use the same convention). For the
 * uniform graph the N = V - 1 real tokens are the states and the mask column is unused.
 *
 * Every forward returns `scale * sum` of per-position terms, accumulated in float64; every
 * backward ADDS `scale * d(sum)/d(logits)` into `dlogits` (the trainer zeroes it once per step).
 * `scale` is how the trainer normalises by the WHOLE batch while each worker sees only its shard:
 * each worker passes the same whole-batch scale, so the shards' losses and gradients simply add
 * up to the whole batch's. See {@linkcode lossScale} for each loss's whole-batch scale.
 *
 * Per-sequence noise arrives as `sigma` (B) and `dsigma` (B), from a schedule at the sequence's t.
 *
 * - `seed` (the notebook): cross-entropy over all V logits at masked positions (xt = MASK);
 *   scale 1 / (maskedCount + 1e-6).
 * - `elbo` (MDLM, absorb): SUBS parameterisation, `dsigma / expm1(sigma) * (-log p(x0 | xt))`
 *   at masked positions with the mask logit at -inf; scale 1 / (B T).
 * - `score-entropy` (SEDD's DWDSE), `absorb` or `uniform` graph; scale 1 / (B T).
 *
 * @example The SEDD absorb loss at zero logits
 * ```ts
 * import { scoreEntropyAbsorbForward } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * // One masked position (V = 4, MASK = 3), sigma = ln 2 so e = expm1(sigma) = 1 = r.
 * // Scaled log-scores s_y = 0 - ln 1 - ln 3, so sum_y exp(s_y) = 1 = 1/e, and
 * // L = 1 - 1 * (-ln 3) + 1 * (ln 1 - 1) = ln 3; dsigma = 2 doubles it.
 * const loss = scoreEntropyAbsorbForward(
 *   new Float32Array(4), new Int32Array([0]), new Int32Array([3]),
 *   [Math.LN2], [2], 1, 1, 4, 1,
 * );
 * assert.ok(Math.abs(loss - 2 * Math.log(3)) < 1e-12);
 * ```
 *
 * @module
 */

import type { GraphName } from "./corrupt.ts";
import { crossEntropyRowBackward, logSumExp } from "../nn/cross_entropy.ts";
import { seddShift } from "./shift.ts";

/** The loss names the trainer accepts. */
export type LossName = "seed" | "elbo" | "score-entropy";

/** Every {@linkcode LossName}, in the order messages and help text list them. */
export const LOSS_NAMES: readonly LossName[] = ["seed", "elbo", "score-entropy"];

/**
 * The one check of a loss name: returns `loss` when it is one of `allowed`, else throws
 * `Unknown <label>: expected one of ..., got ...`.
 *
 * @param loss The name to check.
 * @param allowed The names accepted here. Default {@linkcode LOSS_NAMES}.
 * @param label What the message calls it. Default `"loss"`.
 * @returns The name.
 * @throws RangeError naming what was expected and what was got.
 *
 * @example
 * ```ts
 * import { checkLossName } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkLossName("elbo"), "elbo");
 * assert.throws(() => checkLossName("mse"), /Unknown loss: expected one of seed, elbo, score-entropy, got "mse"/);
 * assert.throws(() => checkLossName("seed", ["elbo"]), /expected one of elbo, got "seed"/);
 * ```
 */
export function checkLossName(
  loss: unknown,
  allowed: readonly LossName[] = LOSS_NAMES,
  label = "loss",
): LossName {
  if (!allowed.includes(loss as LossName)) {
    throw new RangeError(
      `Unknown ${label}: expected one of ${allowed.join(", ")}, got ${JSON.stringify(loss)}`,
    );
  }
  return loss as LossName;
}

/** Per-sequence numbers (sigma, dsigma): any array-like of numbers, float32 or float64. */
export type Num = ArrayLike<number>;

function checkLossArgs(fn: string, kernel: LossKernel, args: LossArgs): void {
  const { logits, x0, xt, sigma, dsigma, B, T, V, scale, maskId } = args;
  const minV = kernel.minV;
  if (![B, T, V].every((n) => Number.isInteger(n) && n >= 1) || V < minV) {
    throw new RangeError(
      `${fn}: expected integers B >= 1, T >= 1, V >= ${minV}, got B ${B}, T ${T}, V ${V}`,
    );
  }
  if (logits.length !== B * T * V) {
    throw new RangeError(
      `${fn}: expected logits of length B*T*V = ${B * T * V}, got ${logits.length}`,
    );
  }
  if (x0.length !== B * T || xt.length !== B * T) {
    throw new RangeError(
      `${fn}: expected x0 and xt of length B*T = ${B * T}, got ${x0.length} and ${xt.length}`,
    );
  }
  if (!Number.isFinite(scale)) {
    throw new RangeError(`${fn}: expected a finite scale, got ${scale}`);
  }
  for (let i = 0; i < B * T; i++) {
    if (!(x0[i] >= 0 && x0[i] < V) || x0[i] === maskId) {
      throw new RangeError(
        `${fn}: expected clean ids 0 <= x0 < ${V} other than the mask ${maskId}, got ${
          x0[i]
        } at position ${i}`,
      );
    }
    if (!(xt[i] >= 0 && xt[i] < V)) {
      throw new RangeError(
        `${fn}: expected noisy ids 0 <= xt < ${V}, got ${xt[i]} at position ${i}`,
      );
    }
  }
  if (kernel.noMaskInXt) checkNoMask(fn, xt, V);
  if (sigma === null || dsigma === null) return;
  if (sigma.length !== B || dsigma.length !== B) {
    throw new RangeError(
      `${fn}: expected sigma and dsigma of length B = ${B}, got ${sigma.length} and ${dsigma.length}`,
    );
  }
  for (let b = 0; b < B; b++) {
    if (!(sigma[b] > 0 && sigma[b] < Infinity) || !(dsigma[b] >= 0 && dsigma[b] < Infinity)) {
      throw new RangeError(
        `${fn}: expected finite sigma > 0 and dsigma >= 0, got sigma ${sigma[b]}, dsigma ${
          dsigma[b]
        } for sequence ${b}`,
      );
    }
  }
}

/**
 * The forward of a loss that reads noise levels (`elbo`, both `score-entropy` graphs):
 * `scale * sum_b dsigma_b * sum_t L(b, t)`, accumulated in float64.
 *
 * @param logits Network output (B,T,V).
 * @param x0 Clean ids (B,T).
 * @param xt Corrupted ids (B,T).
 * @param sigma Per-sequence total noise (B).
 * @param dsigma Per-sequence noise rate (B).
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size including the mask.
 * @param scale Whole-batch normaliser, see {@linkcode lossScale}.
 * @returns The scaled loss.
 */
export type NoisyLossForward = (
  logits: Float32Array, // (B,T,V)
  x0: Int32Array, // (B,T)
  xt: Int32Array, // (B,T)
  sigma: Num, // (B)
  dsigma: Num, // (B)
  B: number,
  T: number,
  V: number,
  scale: number,
) => number;

/**
 * The backward of a {@linkcode NoisyLossForward}: the gradient `dlogits` (B,T,V), ADDED into,
 * then the forward's arguments (`scale` is the upstream gradient of the loss).
 */
export type NoisyLossBackward = (
  dlogits: Float32Array,
  ...args: Parameters<NoisyLossForward>
) => void;

/**
 * The forward of the `seed` loss: `(logits, x0, xt, B, T, V, scale, maskId = V - 1)`, the
 * arguments of a {@linkcode NoisyLossForward} without the noise levels, plus the mask id
 * (the notebook's tokenizer may put it anywhere).
 */
export type SeedLossForward = (
  logits: Float32Array, // (B,T,V)
  x0: Int32Array, // (B,T)
  xt: Int32Array, // (B,T)
  B: number,
  T: number,
  V: number,
  scale: number,
  maskId?: number,
) => number;

/** The backward of the `seed` loss: `dlogits` (B,T,V), ADDED into, then the forward's arguments. */
export type SeedLossBackward = (
  dlogits: Float32Array,
  ...args: Parameters<SeedLossForward>
) => void;

/** The row math of one sequence: a position's loss term and its gradient. */
interface SequenceTerms {
  /** The term of the position whose logits start at `o`. */
  term(logits: Float32Array, o: number, x0: number, xt: number): number;
  /** ADDS `g` times the term's gradient into `dlogits[o .. o+V)`. */
  grad(
    dlogits: Float32Array,
    logits: Float32Array,
    o: number,
    x0: number,
    xt: number,
    g: number,
  ): void;
}

/** One loss as {@linkcode lossSum} and {@linkcode lossGrad} run it. */
interface LossKernel {
  /** Least vocabulary size. */
  minV: number;
  /** Only masked positions (xt = mask) contribute; else every position does. */
  maskedOnly: boolean;
  /** The graph forbids the mask in xt (uniform). */
  noMaskInXt: boolean;
  /** The terms of a sequence at total noise `sigma` (0 for seed, which has none). */
  sequence(sigma: number, V: number): SequenceTerms;
}

/** The arguments of one loss call (no noise levels for `seed`). */
interface LossArgs {
  logits: Float32Array; // (B,T,V)
  x0: Int32Array; // (B,T)
  xt: Int32Array; // (B,T)
  sigma: Num | null; // (B)
  dsigma: Num | null; // (B)
  B: number;
  T: number;
  V: number;
  scale: number;
  maskId: number;
}

/**
 * `scale * sum_b weight_b * sum_t term(b, t)` with `weight_b = dsigma_b` (1 without noise), from
 * the loss's per-position {@linkcode SequenceTerms}, after the argument checks.
 */
function lossSum(kernel: LossKernel, fn: string, a: LossArgs): number {
  checkLossArgs(fn, kernel, a);
  const { logits, x0, xt, sigma, dsigma, B, T, V, scale, maskId } = a;
  let sum = 0;
  for (let b = 0; b < B; b++) {
    const terms = kernel.sequence(sigma ? sigma[b] : 0, V);
    let seq = 0;
    for (let i = b * T; i < (b + 1) * T; i++) {
      if (kernel.maskedOnly && xt[i] !== maskId) continue;
      seq += terms.term(logits, i * V, x0[i], xt[i]);
    }
    sum += (dsigma ? dsigma[b] : 1) * seq;
  }
  return scale * sum;
}

/** The gradient of {@linkcode lossSum}, ADDED into `dlogits`. */
function lossGrad(kernel: LossKernel, fn: string, dlogits: Float32Array, a: LossArgs): void {
  checkLossArgs(fn, kernel, a);
  const { logits, x0, xt, sigma, dsigma, B, T, V, scale, maskId } = a;
  if (dlogits.length !== logits.length) {
    throw new RangeError(
      `${fn}: expected dlogits of length ${logits.length}, got ${dlogits.length}`,
    );
  }
  for (let b = 0; b < B; b++) {
    const terms = kernel.sequence(sigma ? sigma[b] : 0, V);
    const g = scale * (dsigma ? dsigma[b] : 1);
    for (let i = b * T; i < (b + 1) * T; i++) {
      if (kernel.maskedOnly && xt[i] !== maskId) continue;
      terms.grad(dlogits, logits, i * V, x0[i], xt[i], g);
    }
  }
}

/** The public forward/backward pair of a loss with noise levels. */
function noisyPair(kernel: LossKernel, name: string) {
  const forward: NoisyLossForward = (...args) => lossSum(kernel, `${name}Forward`, noisyArgs(args));
  const backward: NoisyLossBackward = (dlogits, ...args) =>
    lossGrad(kernel, `${name}Backward`, dlogits, noisyArgs(args));
  return { forward, backward };
}

function noisyArgs(
  [logits, x0, xt, sigma, dsigma, B, T, V, scale]: Parameters<NoisyLossForward>,
): LossArgs {
  return { logits, x0, xt, sigma, dsigma, B, T, V, scale, maskId: V - 1 };
}

function seedArgs(
  [logits, x0, xt, B, T, V, scale, maskId = V - 1]: Parameters<SeedLossForward>,
): LossArgs {
  return { logits, x0, xt, sigma: null, dsigma: null, B, T, V, scale, maskId };
}

/** Throws at the first mask in `xt`: the uniform graph's states are the real tokens only. */
function checkNoMask(fn: string, xt: Int32Array, V: number): void {
  const i = xt.indexOf(V - 1);
  if (i >= 0) {
    throw new RangeError(
      `${fn}: expected real tokens in xt under the uniform graph (< ${V - 1}), got the mask ${
        V - 1
      } at position ${i}`,
    );
  }
}

/**
 * Cross-entropy of the row's first `n` logits at `x0`, divided by `e`, through the
 * cross-entropy of `src/nn`: the terms of `seed` (n = V, e = 1) and `elbo` (n = V - 1).
 */
function crossEntropyTerms(n: number, e: number): SequenceTerms {
  return {
    term: (logits, o, x0) => (logSumExp(logits, o, n) - logits[o + x0]) / e,
    grad: (dlogits, logits, o, x0, _xt, g) =>
      crossEntropyRowBackward(dlogits, logits, o, n, logSumExp(logits, o, n), x0, g / e),
  };
}

// ---------------------------------------------------------------------------------------------
// seed: the notebook's masked cross-entropy
// ---------------------------------------------------------------------------------------------

const SEED: LossKernel = {
  minV: 2,
  maskedOnly: true,
  noMaskInXt: false,
  sequence: (_sigma, V) => crossEntropyTerms(V, 1),
};

/**
 * The notebook's loss: `scale * sum_{i: xt_i = MASK} -log softmax(logits_i)[x0_i]`, softmax
 * over all V logits (as `F.cross_entropy`). With `scale = 1 / (maskedCount + 1e-6)` over the
 * whole batch this is the notebook's `masked_loss`. Arguments: see {@linkcode SeedLossForward}.
 *
 * @example Uniform logits cost ln V at each masked position
 * ```ts
 * import { seedForward } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * const loss = seedForward(new Float32Array(8), new Int32Array([0, 1]), new Int32Array([3, 1]), 1, 2, 4, 1);
 * assert.ok(Math.abs(loss - Math.log(4)) < 1e-12);
 * ```
 */
export const seedForward: SeedLossForward = (...args): number =>
  lossSum(SEED, "seedForward", seedArgs(args));

/**
 * Backward of {@linkcode seedForward}: ADDS `scale * (softmax(logits_i) - onehot(x0_i))` into
 * `dlogits` at masked positions.
 */
export const seedBackward: SeedLossBackward = (dlogits, ...args): void =>
  lossGrad(SEED, "seedBackward", dlogits, seedArgs(args));

// ---------------------------------------------------------------------------------------------
// elbo: MDLM's continuous-time bound with the SUBS parameterisation (absorb graph)
// ---------------------------------------------------------------------------------------------

const ELBO = noisyPair({
  minV: 2,
  maskedOnly: true,
  noMaskInXt: false,
  // w_b = dsigma_b / expm1(sigma_b): the driver multiplies by dsigma_b
  sequence: (sigma, V) => crossEntropyTerms(V - 1, Math.expm1(sigma)),
}, "elbo");

/**
 * MDLM's loss: at masked positions (xt = V - 1), `w_b * -log p(x0 | xt)` where
 * `p = softmax` over the V - 1 real tokens (SUBS: the mask logit is -inf) and
 * `w_b = dsigma_b / expm1(sigma_b)` (exactly 1/t for loglinear). Unmasked positions are carried
 * over (p(x0 | xt) = 1): loss 0 and gradient 0. With `scale = 1 / (B T)` over the whole batch
 * the value is a Monte-Carlo upper bound on the negative log-likelihood in nats per token.
 * Arguments: see {@linkcode NoisyLossForward}.
 *
 * @example One masked position at loglinear t = 1/2 weighs its cross-entropy by 2
 * ```ts
 * import { elboForward } from "./losses.ts";
 * import { createSchedule } from "./schedule.ts";
 * import assert from "node:assert/strict";
 *
 * const s = createSchedule("loglinear");
 * // Zero logits: p(x0) = 1/3 over the 3 real tokens; weight 1/t = 2.
 * const loss = elboForward(new Float32Array(4), new Int32Array([1]), new Int32Array([3]),
 *   [s.sigma(0.5)], [s.dsigma(0.5)], 1, 1, 4, 1);
 * assert.ok(Math.abs(loss - 2 * Math.log(3)) < 1e-12);
 * ```
 */
export const elboForward: NoisyLossForward = ELBO.forward;

/**
 * Backward of {@linkcode elboForward}: ADDS `scale * w_b * (softmax_{y<V-1}(logits_i) -
 * onehot(x0_i))` into `dlogits` at masked positions; the mask column and unmasked positions get
 * nothing.
 */
export const elboBackward: NoisyLossBackward = ELBO.backward;

// ---------------------------------------------------------------------------------------------
// score entropy, absorb: SEDD's DWDSE with scale-by-sigma
// ---------------------------------------------------------------------------------------------

const ABSORB = noisyPair({
  minV: 2,
  maskedOnly: true,
  noMaskInXt: false,
  sequence(sigma, V): SequenceTerms {
    const M = V - 1;
    const e = Math.expm1(sigma);
    const shift = seddShift(sigma, V); // scale-by-sigma
    const r = 1 / e;
    const konst = r * (-Math.log(e) - 1); // r (log r - 1)
    return {
      term(logits, o, x0) {
        let pos = 0;
        for (let y = 0; y < M; y++) pos += Math.exp(logits[o + y] - shift);
        return pos - r * (logits[o + x0] - shift) + konst;
      },
      grad(dlogits, logits, o, x0, _xt, g) {
        // term = sum_{y<M} exp(l_y - shift) - r (l_{x0} - shift) + const
        for (let y = 0; y < M; y++) dlogits[o + y] += g * Math.exp(logits[o + y] - shift);
        dlogits[o + x0] -= g * r;
      },
    };
  },
}, "scoreEntropyAbsorb");

/**
 * SEDD's denoising score entropy for the absorbing graph. The logits are log-scores, scaled by
 * sigma as SEDD's model does: `s_y = l_y - log(expm1(sigma)) - log(V - 1)` and `s[xt] = 0`
 * (at masked positions that is the mask column, which the loss does not read). At a masked
 * position, with `r = 1 / expm1(sigma)` = p_t(x0 | x0) / p_t(MASK | x0), the concentration
 * ratio the score should learn:
 *
 *     L_i = sum_{y != MASK} exp(s_y) - r s_{x0} + r (log r - 1)      (>= 0, = 0 iff s = log r at x0
 *                                                                      and exp(s_y) -> 0 elsewhere)
 *
 * times `dsigma_b`; unmasked positions contribute 0 (no rate leads into an unmasked token).
 * At zero logits `sum_y exp(s_y) = 1 / expm1(sigma)`, the true total. Arguments: see
 * {@linkcode NoisyLossForward}; `scale = 1 / (B T)` gives nats per token.
 */
export const scoreEntropyAbsorbForward: NoisyLossForward = ABSORB.forward;

/**
 * Backward of {@linkcode scoreEntropyAbsorbForward}: at masked positions ADDS
 * `scale * dsigma_b * (exp(s_y) - r [y = x0])` into `dlogits[y]` for y != MASK.
 */
export const scoreEntropyAbsorbBackward: NoisyLossBackward = ABSORB.backward;

// ---------------------------------------------------------------------------------------------
// score entropy, uniform graph
// ---------------------------------------------------------------------------------------------

const UNIFORM = noisyPair({
  minV: 3,
  maskedOnly: false,
  noMaskInXt: true,
  sequence(sigma, V): SequenceTerms {
    const N = V - 1;
    const e = Math.expm1(sigma);
    const rho = e / (e + N);
    const logRho = Math.log(e) - Math.log(e + N);
    const constSame = (N - 1) / N * rho * (logRho - 1);
    const constMoved = ((-logRho - 1) / rho - (N - 2)) / N;
    return {
      term(logits, o, x0, a) {
        let sumExp = 0;
        let sumS = 0;
        for (let y = 0; y < N; y++) {
          const s = logits[o + y];
          sumExp += Math.exp(s);
          sumS += s;
        }
        const sa = logits[o + a];
        const pos = (sumExp - Math.exp(sa)) / N;
        const base = (sumS - sa) / N;
        if (a === x0) return pos - rho * base + constSame;
        return pos - (logits[o + x0] / e + base) + constMoved;
      },
      grad(dlogits, logits, o, x0, a, g) {
        // term = pos - neg, pos = sum_{y != a} exp(s_y)/N, neg = c * sum_{y != a} s_y (+ s_x0/e)
        const same = a === x0;
        const c = same ? rho / N : 1 / N;
        for (let y = 0; y < N; y++) {
          if (y === a) continue;
          dlogits[o + y] += g * (Math.exp(logits[o + y]) / N - c);
        }
        if (!same) dlogits[o + x0] -= g / e;
      },
    };
  },
}, "scoreEntropyUniform");

/**
 * SEDD's denoising score entropy for the uniform graph over the N = V - 1 real tokens (the mask
 * column of the logits is unused). The logits are the log-scores s_y (no scale-by-sigma).
 *
 * Derivation. The uniform rate matrix has Q(x, y) = 1/N for y != x, so the transition is
 * `p_t(y | x0) = exp(-sigma) [y = x0] + (1 - exp(-sigma)) / N`. The DWDSE at a position is
 *
 *     L = sum_{y != xt} (1/N) [exp(s_y) - R_y s_y + K(R_y)],   R_y = p_t(y|x0) / p_t(xt|x0),
 *     K(a) = a (log a - 1),
 *
 * times dsigma. With e = expm1(sigma) and rho = e / (e + N):
 *
 * - if xt = x0, every R_y (y != xt) is ((1 - e^-sigma)/N) / (e^-sigma + (1 - e^-sigma)/N) = rho;
 * - if xt != x0, R_{x0} = (e^-sigma + (1 - e^-sigma)/N) / ((1 - e^-sigma)/N) = 1 + N/e = 1/rho,
 *   and R_y = 1 for the N - 2 other y (K(1) = -1).
 *
 * Writing mean_y over all N tokens, the terms become
 *
 *     pos   = mean_y exp(s_y) - exp(s_xt) / N
 *     neg   = rho (mean_y s_y - s_xt / N)                    if xt = x0
 *           = s_x0 / e + (mean_y s_y - s_xt / N)            otherwise  ((1 + N/e)/N = 1/N + 1/e)
 *     const = (N - 1)/N rho (log rho - 1)                    if xt = x0
 *           = ((-log rho - 1) / rho - (N - 2)) / N           otherwise
 *     L     = pos - neg + const  (>= 0, each bracket is)
 *
 * s_xt never enters (its terms cancel), matching SEDD's model which sets it to 0. Arguments:
 * see {@linkcode NoisyLossForward}; xt holds real tokens only (< V - 1), and the mask column of
 * the logits is unused.
 */
export const scoreEntropyUniformForward: NoisyLossForward = UNIFORM.forward;

/**
 * Backward of {@linkcode scoreEntropyUniformForward}: ADDS into `dlogits[y]`, for y != xt and
 * y < V - 1, `scale * dsigma_b * (exp(s_y)/N - c_y)` with `c_y = rho/N` if xt = x0, else
 * `1/N + [y = x0]/e`. Column xt and the mask column get nothing.
 */
export const scoreEntropyUniformBackward: NoisyLossBackward = UNIFORM.backward;

/**
 * SEDD's absorb log-scores from the logits, as its model returns them with scale-by-sigma:
 * `s_y = l_y - log(expm1(sigma_b)) - log(V - 1)`, then `s[xt] = 0`. This is the `s` that
 * {@linkcode scoreEntropyAbsorbForward} scores; a sampler takes `exp(s)` as the concrete score.
 *
 * @param out Log-scores, written (B,T,V); may be `logits` itself.
 * @param logits Network output (B,T,V).
 * @param xt Current ids (B,T).
 * @param sigma Per-sequence total noise (B), > 0.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size including the mask.
 * @returns `out`.
 *
 * @example Zero logits at a masked position score every real token 1/((V-1) expm1(sigma))
 * ```ts
 * import { absorbLogScore } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * const s = absorbLogScore(new Float32Array(4), new Float32Array(4), new Int32Array([3]), [Math.LN2], 1, 1, 4);
 * assert.ok(Math.abs(s[0] + Math.log(3)) < 1e-6); // expm1(ln 2) = 1
 * assert.equal(s[3], 0);
 * ```
 */
export function absorbLogScore(
  out: Float32Array, // (B,T,V)
  logits: Float32Array, // (B,T,V)
  xt: Int32Array, // (B,T)
  sigma: Num, // (B)
  B: number,
  T: number,
  V: number,
): Float32Array {
  if (out.length !== B * T * V || logits.length !== B * T * V || xt.length !== B * T) {
    throw new RangeError(
      `absorbLogScore: expected out and logits of length ${B * T * V} and xt of length ${
        B * T
      }, got ${out.length}, ${logits.length} and ${xt.length}`,
    );
  }
  if (sigma.length !== B) {
    throw new RangeError(`absorbLogScore: expected ${B} sigmas, got ${sigma.length}`);
  }
  for (let b = 0; b < B; b++) {
    if (!(sigma[b] > 0)) {
      throw new RangeError(`absorbLogScore: expected sigma > 0, got ${sigma[b]} for sequence ${b}`);
    }
    const shift = seddShift(sigma[b], V);
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      const o = i * V;
      if (!(xt[i] >= 0 && xt[i] < V)) {
        throw new RangeError(`absorbLogScore: expected 0 <= xt < ${V}, got ${xt[i]} at ${i}`);
      }
      for (let y = 0; y < V; y++) out[o + y] = logits[o + y] - shift;
      out[o + xt[i]] = 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// dispatcher
// ---------------------------------------------------------------------------------------------

/** Everything a loss needs besides the logits; one object serves forward and backward. */
export interface LossInputs {
  /** Which loss. */
  loss: LossName;
  /** The graph, for `score-entropy` (default `"absorb"`); `seed` and `elbo` are absorb only. */
  graph?: GraphName;
  /** Clean ids (B,T). */
  x0: Int32Array;
  /** Corrupted ids (B,T). */
  xt: Int32Array;
  /** Per-sequence total noise (B); not read by `seed`. */
  sigma?: ArrayLike<number>;
  /** Per-sequence noise rate (B); not read by `seed`. */
  dsigma?: ArrayLike<number>;
  /** Batch size of this shard. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Vocabulary size including the mask (id V - 1). */
  V: number;
  /** Whole-batch normaliser, see {@linkcode lossScale}. */
  scale: number;
  /**
   * The mask id. Default V - 1. Only `seed` accepts another value (the notebook's tokenizer
   * may put it elsewhere); SEDD's and MDLM's losses need the mask last.
   */
  maskId?: number;
}

function noise(inputs: LossInputs): [ArrayLike<number>, ArrayLike<number>] {
  if (!inputs.sigma || !inputs.dsigma) {
    throw new TypeError(
      `Missing noise levels: expected sigma and dsigma arrays for the "${inputs.loss}" loss, got ${
        inputs.sigma ? "sigma only" : inputs.dsigma ? "dsigma only" : "neither"
      }`,
    );
  }
  return [inputs.sigma, inputs.dsigma];
}

function pick(inputs: LossInputs): "seed" | "elbo" | "absorb" | "uniform" {
  const loss = checkLossName(inputs.loss);
  const graph = inputs.graph ?? "absorb";
  const maskId = inputs.maskId ?? inputs.V - 1;
  if (inputs.loss !== "seed" && maskId !== inputs.V - 1) {
    throw new RangeError(
      `Unsupported mask id for the "${inputs.loss}" loss: expected V - 1 = ${
        inputs.V - 1
      }, got ${maskId}`,
    );
  }
  if (graph !== "absorb" && graph !== "uniform") {
    throw new RangeError(
      `Unknown graph: expected "absorb" or "uniform", got ${JSON.stringify(graph)}`,
    );
  }
  if (loss === "score-entropy") return graph;
  if (graph !== "absorb") {
    throw new RangeError(
      `Unsupported graph for the "${loss}" loss: expected "absorb", got "${graph}"`,
    );
  }
  return loss;
}

/**
 * The scale that normalises a loss over the WHOLE batch: `1 / (maskedCount + 1e-6)` for `seed`
 * (the notebook's masked mean), `1 / (B T)` for `elbo` and `score-entropy` (per token; SEDD's
 * own code sums score entropy over tokens and averages over sequences, i.e. T times this).
 *
 * @param loss The loss name.
 * @param batch The WHOLE batch's `B` and `T`, and for `seed` its masked count.
 * @returns The scale to pass to every shard.
 *
 * @example
 * ```ts
 * import { lossScale } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(lossScale("elbo", { B: 4, T: 8 }), 1 / 32);
 * assert.equal(lossScale("seed", { B: 4, T: 8, maskedCount: 5 }), 1 / (5 + 1e-6));
 * ```
 */
export function lossScale(
  loss: LossName,
  batch: { B: number; T: number; maskedCount?: number },
): number {
  if (checkLossName(loss) === "seed") {
    const n = batch.maskedCount;
    if (n === undefined || !Number.isInteger(n) || n < 0) {
      throw new RangeError(
        `lossScale: expected a masked count (integer >= 0) for the "seed" loss, got ${n}`,
      );
    }
    return 1 / (n + 1e-6);
  }
  return 1 / (batch.B * batch.T);
}

/**
 * Evaluates the chosen loss: `seedForward`, `elboForward`, `scoreEntropyAbsorbForward` or
 * `scoreEntropyUniformForward`.
 *
 * @param logits Network output (B,T,V).
 * @param inputs The loss, graph, ids, noise, shape and scale.
 * @returns The scaled loss of this shard.
 *
 * @example The dispatcher agrees with the loss it picks
 * ```ts
 * import { elboForward, lossForward } from "./losses.ts";
 * import assert from "node:assert/strict";
 *
 * const logits = new Float32Array([0.5, -1, 2, 0]);
 * const x0 = new Int32Array([0]), xt = new Int32Array([3]);
 * const got = lossForward(logits, { loss: "elbo", x0, xt, sigma: [1], dsigma: [1], B: 1, T: 1, V: 4, scale: 1 });
 * assert.equal(got, elboForward(logits, x0, xt, [1], [1], 1, 1, 4, 1));
 * ```
 */
export function lossForward(logits: Float32Array, inputs: LossInputs): number {
  const { x0, xt, B, T, V, scale } = inputs;
  const which = pick(inputs);
  if (which === "seed") return seedForward(logits, x0, xt, B, T, V, scale, inputs.maskId);
  const [sigma, dsigma] = noise(inputs);
  if (which === "elbo") return elboForward(logits, x0, xt, sigma, dsigma, B, T, V, scale);
  if (which === "absorb") {
    return scoreEntropyAbsorbForward(logits, x0, xt, sigma, dsigma, B, T, V, scale);
  }
  return scoreEntropyUniformForward(logits, x0, xt, sigma, dsigma, B, T, V, scale);
}

/**
 * Backward of {@linkcode lossForward}: ADDS the chosen loss's gradient into `dlogits`.
 *
 * @param dlogits Gradient, accumulated (B,T,V).
 * @param logits Network output (B,T,V).
 * @param inputs The same inputs as the forward call.
 */
export function lossBackward(
  dlogits: Float32Array, // (B,T,V)
  logits: Float32Array, // (B,T,V)
  inputs: LossInputs,
): void {
  const { x0, xt, B, T, V, scale } = inputs;
  const which = pick(inputs);
  if (which === "seed") {
    return seedBackward(dlogits, logits, x0, xt, B, T, V, scale, inputs.maskId);
  }
  const [sigma, dsigma] = noise(inputs);
  if (which === "elbo") {
    return elboBackward(dlogits, logits, x0, xt, sigma, dsigma, B, T, V, scale);
  }
  if (which === "absorb") {
    return scoreEntropyAbsorbBackward(dlogits, logits, x0, xt, sigma, dsigma, B, T, V, scale);
  }
  return scoreEntropyUniformBackward(dlogits, logits, x0, xt, sigma, dsigma, B, T, V, scale);
}
