/**
 * The model's output side: the final norm (pre-norm; modulated under time conditioning), the
 * head `logits = final W^T + b`, and the head's compaction to the rows a weighted loss reads.
 * Forward and backward.
 *
 * The compaction: a masked loss weights only the masked positions (about half), and the other
 * rows' logits are never read, nor their gradients anything but zero. On the wasm and blas
 * backends, from 64 rows of which at most 3/4 count, the head's products run on those rows only,
 * gathered into `ws.headIn`; their indices are in `ws.headRowIds`. Same math.
 *
 * @module
 */

import type { ModelTensors } from "./layout.ts";
import type { Workspace } from "./workspace.ts";

/** The head's input: `mf` (time conditioning), `lnf` (pre-norm) or the last residual. */
function headInput(ws: Workspace): Float32Array {
  if (ws.time) return ws.time.mf;
  return ws.config.normFirst ? ws.lnf : ws.resid[ws.config.nLayers];
}

/** Whether this workspace can run the head on some rows: wasm/blas, and 64 rows or more. */
function canCompact(ws: Workspace, N: number): boolean {
  return ws.headRowIds.length >= N && N >= 64;
}

/** Whether running the head on `n` of `N` rows pays for the gather: at most 3/4 of them. */
function compactionPays(n: number, N: number): boolean {
  return n * 4 <= N * 3;
}

/**
 * Final norm and head, forward, on the shape of `ws.lastB`, `ws.lastT`. With `rowWeights` (a
 * weighted loss that reads only its rows of non-zero weight) the head may run on those rows
 * only: the logits are then `(n,V)` for the `n` rows listed in `ws.headRowIds`, and
 * `ws.lastHeadRows` is `n`; otherwise `(N,V)`, and `lastHeadRows` is -1.
 *
 * @returns The logits, a view into `ws.logits`.
 */
export function finalForward(
  ws: Workspace,
  P: ModelTensors,
  rowWeights: Float32Array | undefined, // (N)
): Float32Array {
  const cfg = ws.config;
  const { dModel: C, vocabSize: V } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const tm = ws.time;
  if (cfg.normFirst) {
    // lnf = norm(resid[L])
    ws.nn.layernormForward(
      ws.lnf,
      ws.lnfMean,
      ws.lnfRstd,
      ws.resid[cfg.nLayers],
      P.normW!,
      P.normB!,
      N,
      C,
    );
    // mf = lnf * (1 + scale) + shift
    if (tm) ws.nn.modulateForward(tm.mf, ws.lnf, tm.finalMod, 0, 1, { K: 2, B, T, C });
  }
  // logits = final W^T + b, on the weighted rows only where that pays
  const final = headInput(ws);
  ws.lastHeadRows = -1;
  if (rowWeights !== undefined && canCompact(ws, N)) {
    const idx = ws.headRowIds;
    let n = 0;
    for (let i = 0; i < N; i++) if (rowWeights[i] !== 0) idx[n++] = i;
    if (compactionPays(n, N)) {
      gatherRows(ws.headIn, final, idx, n, C);
      if (n > 0) ws.nn.linearForward(ws.logits, ws.headIn, P.headW, P.headB, n, C, V);
      ws.lastHeadRows = n;
      return ws.logits.subarray(0, n * V);
    }
  }
  ws.nn.linearForward(ws.logits, final, P.headW, P.headB, N, C, V);
  return N * V === ws.logits.length ? ws.logits : ws.logits.subarray(0, N * V);
}

/**
 * Head and final norm, backward: `ws.dresid` gets the gradient of the last residual (and
 * `ws.time.dcond` the final modulation's share of the gradient of `cond`).
 */
export function finalBackward(
  ws: Workspace,
  P: ModelTensors,
  G: ModelTensors,
  dlogits: Float32Array, // (N,V), or (n,V) after a compacted forward pass
): void {
  const cfg = ws.config;
  const C = cfg.dModel;
  const B = ws.lastB, T = ws.lastT, NC = B * T * C;
  const tm = ws.time;
  const dresid = ws.dresid;
  // the gradient of the head's input: dmf, dlnf or dresid
  const dfinal = tm ? tm.dmf : cfg.normFirst ? ws.dlnf : dresid;
  dfinal.fill(0, 0, NC);
  headBackward(ws, dfinal, dlogits, P, G);
  if (!cfg.normFirst) return; // post-norm: the head read the last residual
  if (tm) {
    // mf = lnf * (1 + scale) + shift
    ws.dlnf.fill(0, 0, NC);
    tm.dfinalMod.fill(0);
    ws.nn.modulateBackward(ws.dlnf, tm.dfinalMod, tm.dmf, ws.lnf, tm.finalMod, 0, 1, {
      K: 2,
      B,
      T,
      C,
    });
    // finalMod = cond Wf^T + bf
    ws.nn.linearBackward(
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
  }
  // lnf = norm(resid[L])
  dresid.fill(0, 0, NC);
  ws.nn.layernormBackward(
    dresid,
    G.normW!,
    G.normB!,
    ws.dlnf,
    ws.resid[cfg.nLayers],
    P.normW!,
    ws.lnfMean,
    ws.lnfRstd,
    B * T,
    C,
  );
}

/**
 * The head's backward pass into `dfinal` (zero on entry). After a compacted forward pass it runs
 * on those rows; after a full one it compacts to the rows of `dlogits` that are not all zero
 * (the positions the loss ignores add nothing to any gradient) by the forward pass's rule. On
 * `n` rows: their inputs in `ws.headIn`, their logit gradients `drows` `(n,V)`, and `dheadIn`
 * their input gradients, added into `dfinal` row by row.
 */
function headBackward(
  ws: Workspace,
  dfinal: Float32Array, // (N,C)
  dlogits: Float32Array, // (N,V), or (n,V) after a compacted forward pass
  P: ModelTensors,
  G: ModelTensors,
): void {
  const { dModel: C, vocabSize: V } = ws.config;
  const N = ws.lastB * ws.lastT;
  const idx = ws.headRowIds;
  let n = ws.lastHeadRows; // the forward pass gathered these rows' inputs into headIn
  let drows = dlogits;
  if (n < 0) {
    const final = headInput(ws);
    n = canCompact(ws, N) ? listNonZeroRows(idx, dlogits, N, V) : -1;
    if (n < 0 || !compactionPays(n, N)) {
      ws.nn.linearBackward(dfinal, G.headW, G.headB, dlogits, final, P.headW, N, C, V);
      return;
    }
    gatherRows(ws.dlogitRows, dlogits, idx, n, V);
    gatherRows(ws.headIn, final, idx, n, C);
    drows = ws.dlogitRows;
  }
  if (n === 0) return;
  const dheadIn = ws.dheadIn;
  dheadIn.fill(0, 0, n * C);
  ws.nn.linearBackward(dheadIn, G.headW, G.headB, drows, ws.headIn, P.headW, n, C, V);
  for (let i = 0; i < n; i++) {
    const o = idx[i] * C, r = i * C;
    for (let c = 0; c < C; c++) dfinal[o + c] += dheadIn[r + c];
  }
}

/** Lists in `idx` the rows of `dlogits` `(N,V)` that are not all zero; returns how many. */
function listNonZeroRows(idx: Int32Array, dlogits: Float32Array, N: number, V: number): number {
  let n = 0;
  for (let i = 0; i < N; i++) {
    const o = i * V;
    for (let v = 0; v < V; v++) {
      if (dlogits[o + v] !== 0) {
        idx[n++] = i;
        break;
      }
    }
  }
  return n;
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
