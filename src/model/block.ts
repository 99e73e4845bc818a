/**
 * The transformer block, PyTorch's `nn.TransformerEncoderLayer` (with RoPE on q and k when
 * rotary), forward and backward: post-norm, pre-norm, and pre-norm with adaLN modulation (time
 * conditioning).
 *
 * @module
 */

import type { LayerTensors } from "./layout.ts";
import type { LayerActs, Workspace } from "./workspace.ts";
import type { DropoutKeys } from "./model.ts";
import { Rng } from "../rng.ts";
import { layernormBackward, layernormForward } from "../nn/layernorm.ts";
import { ropeBackward, ropeForward } from "../nn/attention.ts";
import {
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
} from "../nn/activations.ts";
import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
} from "../nn/adaln.ts";
import { residualForward } from "../nn/residual.ts";
import { dropoutBackward, dropoutForward, dropoutMask } from "../nn/dropout.ts";

/** Draws every layer's dropout masks for sequences `0..B-1` (see `modelForward`). */
export function drawMasks(ws: Workspace, keys: DropoutKeys, B: number, T: number): void {
  const { dropout: p, nHeads: NH, dModel: C, dFF: F } = ws.config;
  for (let b = 0; b < B; b++) {
    const rng = new Rng(keys.seed, keys.step, keys.firstRow + b, 1);
    for (const a of ws.layers) {
      dropoutMask(a.maskAtt!, rng, p, NH * T * T, b * NH * T * T);
      dropoutMask(a.mask1!, rng, p, T * C, b * T * C);
      dropoutMask(a.maskF!, rng, p, T * F, b * T * F);
      dropoutMask(a.mask2!, rng, p, T * C, b * T * C);
    }
  }
}

/** One layer forward: `out` from `x`, saving its activations in `a`. */
export function layerForward(
  ws: Workspace,
  w: LayerTensors,
  a: LayerActs,
  x: Float32Array, // (N,C)
  out: Float32Array, // (N,C)
  B: number,
  T: number,
  useDrop: boolean,
): void {
  const cfg = ws.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const N = B * T;
  const nn = ws.nn;
  const rotary = cfg.positions === "rotary";
  const gelu = cfg.activation === "gelu";
  const pre = cfg.normFirst;
  const tm = ws.time;
  if (tm) nn.linearForward(a.mod, tm.cond, w.adaW!, w.adaB!, B, C, 6 * C);
  // self-attention block
  let saIn = x;
  if (pre) {
    layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B, N, C);
    saIn = a.ln1;
    if (tm) {
      modulateForward(a.m1, a.ln1, a.mod, 0, 1, 6, B, T, C);
      saIn = a.m1;
    }
  }
  nn.linearForward(a.qkv, saIn, w.inProjW, w.inProjB, N, C, 3 * C);
  if (rotary) ropeForward(a.qkv, ws.cos, ws.sin, B, T, C, NH);
  nn.attentionForward(a.attY, a.att, a.qkv, useDrop ? a.maskAtt : null, B, T, C, NH, a.heads);
  const proj = tm ? a.projD : ws.tmp;
  nn.linearForward(proj, a.attY, w.outProjW, w.outProjB, N, C, C);
  if (useDrop) dropoutForward(proj, proj, a.mask1!, N * C);
  if (tm) gatedResidualForward(a.r1, x, proj, a.mod, 2, 6, B, T, C);
  else residualForward(a.r1, x, proj, N * C);
  // feed-forward block
  let ffIn: Float32Array;
  if (pre) {
    layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, w.norm2W, w.norm2B, N, C);
    ffIn = a.ln2;
    if (tm) {
      modulateForward(a.m2, a.ln2, a.mod, 3, 4, 6, B, T, C);
      ffIn = a.m2;
    }
  } else {
    layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.r1, w.norm1W, w.norm1B, N, C);
    ffIn = a.ln1;
  }
  nn.linearForward(a.fch, ffIn, w.lin1W, w.lin1B, N, C, F);
  // fh = drop(act(fch)), the dropout fused into the activation's pass
  // (GELU keeps its derivative in fch for the backward pass)
  if (gelu) geluForwardKeepGrad(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
  else reluForward(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
  const fo = tm ? a.foD : ws.tmp;
  nn.linearForward(fo, a.fh, w.lin2W, w.lin2B, N, F, C);
  if (useDrop) dropoutForward(fo, fo, a.mask2!, N * C);
  if (tm) {
    gatedResidualForward(out, a.r1, fo, a.mod, 5, 6, B, T, C);
  } else if (pre) {
    residualForward(out, a.r1, fo, N * C);
  } else {
    residualForward(a.r2, a.ln1, fo, N * C);
    layernormForward(out, a.ln2Mean, a.ln2Rstd, a.r2, w.norm2W, w.norm2B, N, C);
  }
}

/**
 * One layer backward: `g0` holds d(layer output) on entry and d(layer input) on return; the
 * parameter gradients are added into `dw`.
 */
export function layerBackward(
  ws: Workspace,
  w: LayerTensors,
  dw: LayerTensors,
  a: LayerActs,
  x: Float32Array, // (N,C)
  B: number,
  T: number,
  useDrop: boolean,
): void {
  const cfg = ws.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const N = B * T;
  const nn = ws.nn;
  const rotary = cfg.positions === "rotary";
  const gelu = cfg.activation === "gelu";
  const pre = cfg.normFirst;
  const tm = ws.time;
  const NC = N * C, NF = N * F;
  const [g0, g1, g2, g3] = ws.g;
  const gQKV = ws.gQKV;
  if (tm) tm.dmod.fill(0);
  // g0 holds d(layer output). First d(fo after dropout):
  let dfoD: Float32Array;
  if (tm) {
    // out = r1 + gate2 * foD
    g1.fill(0, 0, NC);
    gatedResidualBackward(null, g1, tm.dmod, g0, a.foD, a.mod, 5, 6, B, T, C);
    dfoD = g1;
  } else if (pre) {
    dfoD = g0; // out = r1 + foD
  } else {
    // out = norm2(r2), r2 = ln1 + foD
    g1.fill(0, 0, NC);
    layernormBackward(
      g1,
      dw.norm2W,
      dw.norm2B,
      g0,
      a.r2,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
    dfoD = g1;
  }
  let dfo = dfoD;
  if (useDrop) {
    g2.fill(0, 0, NC);
    dropoutBackward(g2, dfoD, a.mask2!, NC);
    dfo = g2;
  }
  // fo = fh W2^T + b2
  const [f0, f1] = ws.gF;
  f0.fill(0, 0, NF);
  nn.linearBackward(f0, dw.lin2W, dw.lin2B, dfo, a.fh, w.lin2W, N, F, C);
  // fh = drop(act(fch)): dfch = act'(fch) * mask * dfh in one pass
  const dfch = f1;
  dfch.fill(0, 0, NF);
  const maskF = useDrop ? a.maskF : null;
  if (gelu) scaleBackward(dfch, f0, a.fch, NF, maskF); // fch holds gelu'(fch)
  else reluBackward(dfch, f0, a.fch, NF, maskF);
  // dr1: gradient w.r.t. the first residual sum r1, built in g3.
  if (pre) {
    // fch = ffIn W1^T + b1, ffIn = m2 = ln2 * (1 + scale2) + shift2 (or ln2), ln2 = norm2(r1)
    g2.fill(0, 0, NC);
    nn.linearBackward(g2, dw.lin1W, dw.lin1B, dfch, tm ? a.m2 : a.ln2, w.lin1W, N, C, F);
    let dln2 = g2;
    if (tm) {
      g1.fill(0, 0, NC);
      modulateBackward(g1, tm.dmod, g2, a.ln2, a.mod, 3, 4, 6, B, T, C);
      dln2 = g1;
    }
    g3.set(g0.subarray(0, NC)); // out = r1 + ...
    layernormBackward(
      g3,
      dw.norm2W,
      dw.norm2B,
      dln2,
      a.r1,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
  } else {
    // fch = ln1 W1^T + b1, r2 = ln1 + ..., ln1 = norm1(r1)
    g2.set(dfoD.subarray(0, NC));
    nn.linearBackward(g2, dw.lin1W, dw.lin1B, dfch, a.ln1, w.lin1W, N, C, F);
    g3.fill(0, 0, NC);
    layernormBackward(
      g3,
      dw.norm1W,
      dw.norm1B,
      g2,
      a.r1,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  }
  // r1 = x + gate1 * projD (or x + projD), projD = drop1(proj)
  let dprojD = g3;
  if (tm) {
    g1.fill(0, 0, NC);
    gatedResidualBackward(null, g1, tm.dmod, g3, a.projD, a.mod, 2, 6, B, T, C);
    dprojD = g1;
  }
  let dproj = dprojD;
  if (useDrop) {
    g2.fill(0, 0, NC);
    dropoutBackward(g2, dprojD, a.mask1!, NC);
    dproj = g2;
  }
  // proj = attY Wo^T + bo
  const dattY = dproj === g2 ? g1 : g2;
  dattY.fill(0, 0, NC);
  nn.linearBackward(dattY, dw.outProjW, dw.outProjB, dproj, a.attY, w.outProjW, N, C, C);
  gQKV.fill(0, 0, N * 3 * C);
  nn.attentionBackward(
    gQKV,
    dattY,
    a.qkv,
    a.att,
    useDrop ? a.maskAtt : null,
    ws.rowT,
    B,
    T,
    C,
    NH,
    a.heads,
  );
  if (rotary) ropeBackward(gQKV, ws.cos, ws.sin, B, T, C, NH);
  // qkv = saIn Win^T + bin; new g0 = d(layer input) = dr1 (residual) + path through SA.
  if (pre) {
    // saIn = m1 = ln1 * (1 + scale1) + shift1 (or ln1), ln1 = norm1(x)
    g1.fill(0, 0, NC);
    nn.linearBackward(
      g1,
      dw.inProjW,
      dw.inProjB,
      gQKV,
      tm ? a.m1 : a.ln1,
      w.inProjW,
      N,
      C,
      3 * C,
    );
    let dln1 = g1;
    if (tm) {
      g2.fill(0, 0, NC);
      modulateBackward(g2, tm.dmod, g1, a.ln1, a.mod, 0, 1, 6, B, T, C);
      dln1 = g2;
    }
    g0.set(g3.subarray(0, NC));
    layernormBackward(
      g0,
      dw.norm1W,
      dw.norm1B,
      dln1,
      x,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  } else {
    g0.set(g3.subarray(0, NC));
    nn.linearBackward(g0, dw.inProjW, dw.inProjB, gQKV, x, w.inProjW, N, C, 3 * C);
  }
  // mod = c Wada^T + bada
  if (tm) nn.linearBackward(tm.dcond, dw.adaW!, dw.adaB!, tm.dmod, tm.cond, w.adaW!, B, C, 6 * C);
}
