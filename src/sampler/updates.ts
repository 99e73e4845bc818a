/**
 * The update rules of the score-based samplers, one step over a whole batch.
 *
 * Dimensions: `B` batch, `T` sequence, `V` vocabulary including MASK (id `maskId`). The real
 * tokens are the `N = V - 1` ids other than `maskId`.
 *
 * Scores. A score `s_y` is the concentration ratio `p_t(y) / p_t(x)` of the sequence with the
 * current token x at one position replaced by y. `s[x] = 1` always (SEDD's model sets the
 * log-score at the input token to 0; the loss never trains it). The network output is turned
 * into scores by {@linkcode positionScores}:
 *
 * - `output: "logScore"` (SEDD score entropy): `s_y = exp(l_y - shift)`, where under the absorb
 *   graph with scale-by-sigma `shift = log(expm1(sigma)) + log(V - 1)` (exactly what the
 *   score-entropy loss in `src/diffusion/losses.ts` does to the logits) and otherwise 0.
 * - `output: "logits"` (MDLM ELBO, absorb only): p_x0 = softmax over the real tokens (the MASK
 *   logit is -inf, SUBS). At a masked position the absorbing forward process gives
 *   `p_t(y) / p_t(MASK) = p_x0(y) e^-sigma / (1 - e^-sigma)`, so
 *   `s_y = p_x0(y) / expm1(sigma)`.
 *
 * Rules (the formulas of SEDD's `EulerPredictor`, `AnalyticPredictor`, `Denoiser` and MDLM's
 * `_ddpm_caching_update`); each gives unnormalised weights over the next
 * token, sampled by Gumbel-max. Negative weights (a step too large for the Euler rule) count as 0.
 *
 * - euler, absorb (masked x): `w_y = dt dsigma s_y`, `w_MASK = 1 - sum_y w_y`.
 * - euler, uniform: `w_y = dt dsigma s_y / N` (y != x), `w_x = 1 - sum`.
 * - tweedie, absorb (masked x), `D = sigma(t) - sigma(t - dt)`:
 *   `w_y = expm1(D) s_y`, `w_MASK = e^D + (1 - e^D) sum_all(s) = 1 - expm1(D) sum_{y real} s_y`.
 * - tweedie, uniform: staggered score `e^D s_y - expm1(D) sum(s) / N` times the transition
 *   `(1 - e^-D) / N` (y != x) or `1 - (N - 1)(1 - e^-D) / N` (y = x).
 * - denoise (the final step at t = eps): tweedie with `D = sigma(eps)`; under absorb the MASK
 *   column is dropped, so `w_y = s_y`.
 * - ancestral (MDLM, absorb, masked x): `w_y = p_x0(y) (m_t - m_s)`, `w_MASK = m_s`, with
 *   `m = maskProb` of the schedule (`(1 - eps) t` for loglinear, MDLM's `t`).
 *
 * Under the absorb graph an unmasked token never changes (no rate leaves it), so those positions
 * are skipped and draw no random numbers.
 *
 * @module
 */

import type { Rng } from "../rng.ts";
import { argmaxRow, gumbelArgmax } from "./gumbel.ts";
import { seddShift } from "../diffusion/shift.ts";

/** The forward corruption: tokens become MASK (`absorb`) or a uniformly random token (`uniform`). */
export type Graph = "absorb" | "uniform";

/** What the denoiser returns: `logits` of p(x0 | xt) (MDLM, ELBO) or SEDD `logScore`s. */
export type DenoiserOutput = "logits" | "logScore";

/** What every rule needs to read a network output. */
export interface UpdateContext {
  /** V: vocabulary size including MASK. */
  V: number;
  /** Id of MASK. */
  maskId: number;
  /** The forward process. */
  graph: Graph;
  /** How to read the network output. */
  output: DenoiserOutput;
  /** `logScore` under `absorb` only: subtract `log(expm1(sigma)) + log(V - 1)` first (SEDD). */
  scaleBySigma: boolean;
}

/** A score-based rule: `euler` (rate = dt dsigma), `tweedie` (D = sigma(t) - sigma(s)), `denoise`. */
export type SeddRule =
  | { kind: "euler"; rate: number }
  | { kind: "tweedie"; dsig: number }
  | { kind: "denoise"; sigma: number };

/**
 * Softmax over the real tokens (MASK logit taken as -inf): MDLM's SUBS p_x0 at one position.
 *
 * @param p Output probabilities, written at `p[0..V)` (`p[maskId] = 0`).
 * @param out Network output (B,T,V).
 * @param o Offset of the position's row in `out`.
 * @param V Vocabulary size.
 * @param maskId Id of MASK.
 */
export function subsProbs(
  p: Float64Array,
  out: Float32Array, // (B,T,V)
  o: number,
  V: number,
  maskId: number,
): void {
  let max = -Infinity;
  for (let y = 0; y < V; y++) if (y !== maskId && out[o + y] > max) max = out[o + y];
  let sum = 0;
  for (let y = 0; y < V; y++) {
    const e = y === maskId ? 0 : Math.exp(out[o + y] - max);
    p[y] = e;
    sum += e;
  }
  for (let y = 0; y < V; y++) p[y] /= sum;
}

/**
 * The scores at one position with current token `x` (see the module doc): `s[x] = 1`, and
 * under `uniform` `s[maskId] = 0`.
 *
 * @param s Output scores (V).
 * @param out Network output (B,T,V).
 * @param o Offset of the position's row in `out`.
 * @param x The current token at the position.
 * @param sigma Total noise at the current time, > 0.
 * @param ctx Vocabulary, graph and output kind.
 *
 * @example Logits to absorb scores: s_y = p_x0(y) / expm1(sigma)
 * ```ts
 * import { positionScores } from "./updates.ts";
 * import assert from "node:assert/strict";
 *
 * const s = new Float64Array(3);
 * const out = new Float32Array([0, Math.log(3), 5]); // p_x0 = [1/4, 3/4] over the real tokens
 * positionScores(s, out, 0, 2, Math.LN2, { V: 3, maskId: 2, graph: "absorb", output: "logits", scaleBySigma: true });
 * assert.ok(Math.abs(s[0] - 0.25) < 1e-6 && Math.abs(s[1] - 0.75) < 1e-6); // expm1(ln 2) = 1
 * assert.equal(s[2], 1);
 * ```
 */
export function positionScores(
  s: Float64Array,
  out: Float32Array, // (B,T,V)
  o: number,
  x: number,
  sigma: number,
  ctx: UpdateContext,
): void {
  const { V, maskId } = ctx;
  if (ctx.output === "logits") {
    subsProbs(s, out, o, V, maskId);
    const e = Math.expm1(sigma);
    for (let y = 0; y < V; y++) s[y] /= e;
  } else {
    const shift = ctx.graph === "absorb" && ctx.scaleBySigma ? seddShift(sigma, V) : 0;
    for (let y = 0; y < V; y++) s[y] = y === maskId ? 0 : Math.exp(out[o + y] - shift);
  }
  s[x] = 1;
}

/**
 * The unnormalised next-token weights of a SEDD rule at one position with current token `x`.
 *
 * @param w Output weights (V).
 * @param s Scores from {@linkcode positionScores} (V).
 * @param x The current token.
 * @param rule The rule and its step constant.
 * @param ctx Vocabulary and graph.
 */
export function seddWeights(
  w: Float64Array,
  s: Float64Array,
  x: number,
  rule: SeddRule,
  ctx: UpdateContext,
): void {
  const { V, maskId } = ctx;
  const N = V - 1;
  if (ctx.graph === "absorb") {
    // x is MASK here: unmasked positions never move under absorb.
    let sum = 0;
    const a = rule.kind === "euler"
      ? rule.rate
      : rule.kind === "tweedie"
      ? Math.expm1(rule.dsig)
      : 1;
    for (let y = 0; y < V; y++) {
      w[y] = y === maskId ? 0 : a * s[y];
      sum += w[y];
    }
    w[maskId] = rule.kind === "denoise" ? 0 : Math.max(0, 1 - sum);
    return;
  }
  if (rule.kind === "euler") {
    let sum = 0;
    for (let y = 0; y < V; y++) {
      w[y] = y === maskId || y === x ? 0 : (rule.rate * s[y]) / N;
      sum += w[y];
    }
    w[x] = Math.max(0, 1 - sum);
    return;
  }
  const D = rule.kind === "tweedie" ? rule.dsig : rule.sigma;
  let S = 0;
  for (let y = 0; y < V; y++) if (y !== maskId) S += s[y];
  const eD = Math.exp(D);
  const em1 = Math.expm1(D);
  const move = -Math.expm1(-D) / N; // forward transition y -> x, y != x
  const stay = 1 - (N - 1) * move;
  for (let y = 0; y < V; y++) {
    if (y === maskId) {
      w[y] = 0;
      continue;
    }
    const stag = eD * s[y] - (em1 * S) / N;
    w[y] = Math.max(0, stag * (y === x ? stay : move));
  }
}

/** Scratch rows for the update functions, sized V. */
export interface Scratch {
  /** Scores or probabilities (V). */
  s: Float64Array;
  /** Weights (V). */
  w: Float64Array;
}

/**
 * Creates the scratch rows the update functions need.
 *
 * @param V Vocabulary size.
 * @returns Two Float64Arrays of length V.
 */
export function createScratch(V: number): Scratch {
  return { s: new Float64Array(V), w: new Float64Array(V) };
}

/**
 * One SEDD step (Euler, Tweedie or the final denoise) over the batch, in place.
 *
 * @param ids Current ids (B,T), updated in place.
 * @param out Network output for `ids` (B,T,V).
 * @param fixed 1 where a position is fixed (not updated) (T), or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param sigma Total noise at the current time (> 0).
 * @param rule The rule.
 * @param ctx Vocabulary, graph and output kind.
 * @param rng The random number generator.
 * @param scratch Rows from {@linkcode createScratch}.
 * @returns Whether any token changed.
 */
export function seddUpdate(
  ids: Int32Array, // (B,T)
  out: Float32Array, // (B,T,V)
  fixed: Uint8Array | null, // (T)
  B: number,
  T: number,
  sigma: number,
  rule: SeddRule,
  ctx: UpdateContext,
  rng: Rng,
  scratch: Scratch,
): boolean {
  const { V, maskId } = ctx;
  const absorb = ctx.graph === "absorb";
  let changed = false;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      if (fixed !== null && fixed[t] === 1) continue;
      const i = b * T + t;
      const x = ids[i];
      if (absorb && x !== maskId) continue;
      positionScores(scratch.s, out, i * V, x, sigma, ctx);
      seddWeights(scratch.w, scratch.s, x, rule, ctx);
      const y = gumbelArgmax(scratch.w, 0, V, rng, x);
      if (y !== x) {
        ids[i] = y;
        changed = true;
      }
    }
  }
  return changed;
}

/**
 * One MDLM ancestral step from mask probability `mT` down to `mS` over the batch, in place: a masked
 * position becomes y with weight `p_x0(y) (mT - mS)` or stays masked with weight `mS`.
 *
 * @param ids Current ids (B,T), updated in place.
 * @param out Network output for `ids` (B,T,V); p_x0 is read as {@linkcode subsProbs} of it
 *   (for `logScore` output the normalised scores: the scale-by-sigma shift cancels).
 * @param fixed 1 where a position is fixed (T), or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param mT Mask probability at the current time t.
 * @param mS Mask probability at the next time s < t.
 * @param ctx Vocabulary (graph must be absorb).
 * @param rng The random number generator.
 * @param scratch Rows from {@linkcode createScratch}.
 * @returns Whether any token changed.
 */
export function ancestralUpdate(
  ids: Int32Array, // (B,T)
  out: Float32Array, // (B,T,V)
  fixed: Uint8Array | null, // (T)
  B: number,
  T: number,
  mT: number,
  mS: number,
  ctx: UpdateContext,
  rng: Rng,
  scratch: Scratch,
): boolean {
  const { V, maskId } = ctx;
  const { s: p, w } = scratch;
  let changed = false;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      if (fixed !== null && fixed[t] === 1) continue;
      const i = b * T + t;
      if (ids[i] !== maskId) continue; // MDLM's copy flag: unmasked tokens are kept
      subsProbs(p, out, i * V, V, maskId);
      for (let y = 0; y < V; y++) w[y] = p[y] * (mT - mS);
      w[maskId] = mS;
      const y = gumbelArgmax(w, 0, V, rng, maskId);
      if (y !== maskId) {
        ids[i] = y;
        changed = true;
      }
    }
  }
  return changed;
}

/**
 * MDLM's final step: every masked position takes the argmax of p_x0 (the MASK column excluded).
 *
 * @param ids Current ids (B,T), updated in place.
 * @param out Network output for `ids` (B,T,V).
 * @param fixed 1 where a position is fixed (T), or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size.
 * @param maskId Id of MASK.
 * @returns Whether any token changed.
 */
export function argmaxUpdate(
  ids: Int32Array, // (B,T)
  out: Float32Array, // (B,T,V)
  fixed: Uint8Array | null, // (T)
  B: number,
  T: number,
  V: number,
  maskId: number,
): boolean {
  let changed = false;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      if (fixed !== null && fixed[t] === 1) continue;
      const i = b * T + t;
      if (ids[i] !== maskId) continue;
      ids[i] = argmaxRow(out, i * V, V, maskId);
      changed = true;
    }
  }
  return changed;
}
