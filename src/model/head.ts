/**
 * The model's output side: the final norm (pre-norm; modulated under time conditioning), the
 * output projection to logits, and its compaction to the rows a weighted loss reads. Forward and
 * backward.
 *
 * @module
 */

import type { ModelTensors } from "./layout.ts";
import type { Workspace } from "./workspace.ts";
import { layernormBackward, layernormForward } from "../nn/layernorm.ts";
import { modulateBackward, modulateForward } from "../nn/adaln.ts";

/** Final norm and head, forward: the logits (a view into `ws`). */
export function finalForward(
  ws: Workspace,
  P: ModelTensors,
  B: number,
  T: number,
  rowWeights: Float32Array | undefined,
): Float32Array {
  const cfg = ws.config;
  const { dModel: C, vocabSize: V } = cfg;
  const N = B * T;
  const pre = cfg.normFirst;
  const tm = ws.time;
  let final = ws.resid[cfg.nLayers];
  if (pre) {
    layernormForward(ws.lnf, ws.lnfMean, ws.lnfRstd, final, P.normW!, P.normB!, N, C);
    final = ws.lnf;
    if (tm) {
      modulateForward(tm.mf, ws.lnf, tm.finalMod, 0, 1, 2, B, T, C);
      final = tm.mf;
    }
  }
  return headForward(ws, final, P.headW, P.headB, N, C, V, rowWeights);
}

/**
 * The head, `logits = final W^T + b`. With `rowWeights` (a weighted loss that reads only the
 * rows of non-zero weight: the masked positions) on the wasm and blas backends, from 64 rows of
 * which at most 3/4 count, only those rows are gathered (into the free `g2` scratch, which the
 * backward pass reuses) and multiplied: the logits are then `(n,V)` for the `n` rows listed in
 * `ws.headRowIds`, and `ws.lastHeadRows` is `n`. Otherwise every row, and `lastHeadRows` -1.
 */
function headForward(
  ws: Workspace,
  final: Float32Array, // (N,C)
  W: Float32Array, // (V,C)
  b: Float32Array, // (V)
  N: number,
  C: number,
  V: number,
  rowWeights: Float32Array | undefined, // (N)
): Float32Array {
  ws.lastHeadRows = -1;
  const idx = ws.headRowIds;
  if (rowWeights !== undefined && idx.length >= N && N >= 64) {
    let n2 = 0;
    for (let n = 0; n < N; n++) if (rowWeights[n] !== 0) idx[n2++] = n;
    if (n2 * 4 <= N * 3) {
      const xs = ws.g[2];
      gatherRows(xs, final, idx, n2, C);
      if (n2 > 0) ws.nn.linearForward(ws.logits, xs, W, b, n2, C, V);
      ws.lastHeadRows = n2;
      return ws.logits.subarray(0, n2 * V);
    }
  }
  ws.nn.linearForward(ws.logits, final, W, b, N, C, V);
  return N * V === ws.logits.length ? ws.logits : ws.logits.subarray(0, N * V);
}

/** Head and final norm, backward: `g0` gets d(resid[L]). */
export function finalBackward(
  ws: Workspace,
  P: ModelTensors,
  G: ModelTensors,
  dlogits: Float32Array,
  B: number,
  T: number,
): void {
  const cfg = ws.config;
  const { dModel: C, vocabSize: V, nLayers: L } = cfg;
  const N = B * T;
  const nn = ws.nn;
  const pre = cfg.normFirst;
  const tm = ws.time;
  const NC = N * C;
  const [g0, g1, g2] = ws.g;
  // logits = final head^T + b
  const final = tm ? tm.mf : pre ? ws.lnf : ws.resid[L];
  g1.fill(0, 0, NC);
  headBackward(ws, g1, G.headW, G.headB, dlogits, final, P.headW, N, C, V);
  g0.fill(0, 0, NC);
  if (pre) {
    let dlnf = g1;
    if (tm) {
      // mf = lnf * (1 + scale) + shift; finalMod = c Wf^T + bf
      g2.fill(0, 0, NC);
      tm.dfinalMod.fill(0);
      modulateBackward(g2, tm.dfinalMod, g1, ws.lnf, tm.finalMod, 0, 1, 2, B, T, C);
      nn.linearBackward(
        tm.dcond,
        G.finalAdaW!,
        G.finalAdaB!,
        tm.dfinalMod,
        tm.cond,
        P.finalAdaW!,
        B,
        C,
        2 * C,
      );
      dlnf = g2;
    }
    // lnf = norm(resid[L])
    layernormBackward(
      g0,
      G.normW!,
      G.normB!,
      dlnf,
      ws.resid[L],
      P.normW!,
      ws.lnfMean,
      ws.lnfRstd,
      N,
      C,
    );
  } else {
    g0.set(g1.subarray(0, NC));
  }
}

/**
 * The head's backward pass, `logits = final W^T + b`. Rows of `dlogits` that are all zero
 * (positions the loss ignores: unmasked tokens under the masked losses, about half of them)
 * add nothing to any gradient, so on the wasm backend, with at least 64 rows of which at most 3/4 are
 * non-zero, the two backward products run on the non-zero rows only (gathered into
 * `ws.headRows` and the free `g2`/`g3` scratch) and `dfinal` is scattered back. Same math.
 */
function headBackward(
  ws: Workspace,
  dfinal: Float32Array, // (N,C), zero on entry
  dW: Float32Array, // (V,C)
  db: Float32Array, // (V)
  dlogits: Float32Array, // (N,V)
  final: Float32Array, // (N,C)
  W: Float32Array, // (V,C)
  N: number,
  C: number,
  V: number,
): void {
  const rows = ws.headRows, idx = ws.headRowIds;
  if (ws.lastHeadRows >= 0) {
    // The forward pass computed the listed rows only: dlogits is (n2,V), their inputs are in g2.
    compactHeadBackward(ws, dfinal, dW, db, dlogits, W, ws.lastHeadRows, C, V);
    return;
  }
  // (below 64 rows the products are too small for the gather to pay)
  if (rows.length < N * V || N < 64) {
    ws.nn.linearBackward(dfinal, dW, db, dlogits, final, W, N, C, V);
    return;
  }
  let n2 = 0;
  for (let n = 0; n < N; n++) {
    const o = n * V;
    for (let v = 0; v < V; v++) {
      if (dlogits[o + v] !== 0) {
        idx[n2++] = n;
        break;
      }
    }
  }
  if (n2 * 4 > N * 3) {
    ws.nn.linearBackward(dfinal, dW, db, dlogits, final, W, N, C, V);
    return;
  }
  gatherRows(rows, dlogits, idx, n2, V);
  gatherRows(ws.g[2], final, idx, n2, C); // g2, g3: free until the layers' backward pass
  compactHeadBackward(ws, dfinal, dW, db, rows, W, n2, C, V);
}

/** `dst` row i = `src` row `idx[i]`, for i < n: the rows of `(N,D)` listed in `idx`. */
function gatherRows(
  dst: Float32Array, // (n,D)
  src: Float32Array, // (N,D)
  idx: Int32Array, // (n)
  n: number,
  D: number,
): void {
  for (let i = 0; i < n; i++) {
    const o = idx[i] * D, r = i * D;
    for (let d = 0; d < D; d++) dst[r + d] = src[o + d];
  }
}

/**
 * The head's backward pass on the `n2` rows listed in `ws.headRowIds`: their inputs gathered in
 * `g2`, their logit gradients `drows` `(n2,V)`; `dfinal` gets the input gradient scattered back.
 */
function compactHeadBackward(
  ws: Workspace,
  dfinal: Float32Array, // (N,C)
  dW: Float32Array, // (V,C)
  db: Float32Array, // (V)
  drows: Float32Array, // (n2,V)
  W: Float32Array, // (V,C)
  n2: number,
  C: number,
  V: number,
): void {
  if (n2 === 0) return;
  const [, , xs, dxs] = ws.g;
  const idx = ws.headRowIds;
  dxs.fill(0, 0, n2 * C);
  ws.nn.linearBackward(dxs, dW, db, drows, xs, W, n2, C, V);
  for (let i = 0; i < n2; i++) {
    const o = idx[i] * C, r = i * C;
    for (let c = 0; c < C; c++) dfinal[o + c] += dxs[r + c];
  }
}
