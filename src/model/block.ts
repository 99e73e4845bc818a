/**
 * The transformer block, PyTorch's `nn.TransformerEncoderLayer` (with RoPE on q and k when
 * rotary), forward and backward: post-norm, pre-norm, and pre-norm with adaLN modulation (time
 * conditioning).
 *
 * @module
 */

import type { ModelTensors } from "./layout.ts";
import type { LayerActs, Workspace } from "./workspace.ts";
import type { DropoutKeys } from "./model.ts";
import { Rng } from "../rng.ts";
import type { NNBackend } from "../nn/backend.ts";
import { dropoutMask as drawMask } from "../nn/dropout.ts";

/** The dropout masks of one layer, as {@linkcode drawMasks} fills them. */
export type DropoutMasks = Pick<LayerActs, "maskAtt" | "mask1" | "maskF" | "mask2">;

/**
 * Draws every layer's dropout masks for sequences `0..B-1` (see `modelForward`) into
 * `ws.layers` (a workspace, or any holder of the masks: the WebGPU backend draws them on the
 * host into its own arrays and uploads them), each mask by `dropoutMask` (default the
 * TypeScript one; the model passes its backend's).
 */
export function drawMasks(
  ws: Pick<Workspace, "config"> & { readonly layers: readonly DropoutMasks[] },
  keys: DropoutKeys,
  B: number,
  T: number,
  dropoutMask: typeof drawMask = drawMask,
): void {
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

/**
 * Layer `l` forward at the shape `ws.lastB`, `ws.lastT`: `out = resid[l+1]` from
 * `x = resid[l]`, saving its activations in `a = ws.layers[l]`. With `SA` the attention branch
 * (`proj = out_proj(attention(rope(in_proj(saIn))))`), `FF` the MLP branch
 * (`fo = linear2(drop(act(linear1(ffIn))))`) and `projD`, `foD` their outputs after dropout:
 *
 * ```
 * post-norm:  r1 = x + projD,   saIn = x;     ln1 = norm1(r1)
 *             r2 = ln1 + foD,   ffIn = ln1;   out = norm2(r2)
 * pre-norm:   r1 = x + projD,   saIn = ln1 = norm1(x)
 *             out = r1 + foD,   ffIn = ln2 = norm2(r1)
 * adaLN:      r1 = x + gate1 * projD,   saIn = m1 = ln1 * (1 + scale1) + shift1
 *             out = r1 + gate2 * foD,   ffIn = m2 = ln2 * (1 + scale2) + shift2
 * ```
 */
export function layerForward(ws: Workspace, P: ModelTensors, l: number): void {
  const cfg = ws.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const useDrop = ws.lastDropout;
  const w = P.layers[l], a = ws.layers[l];
  const x = ws.resid[l], out = ws.resid[l + 1]; // (N,C)
  const nn = ws.nn;
  const pre = cfg.normFirst;
  const tm = ws.time;
  // mod = cond Wada^T + bada: shift1, scale1, gate1, shift2, scale2, gate2
  if (tm) nn.linearForward(a.mod, tm.cond, w.adaW!, w.adaB!, B, C, 6 * C);

  // Attention block. saIn: x (post-norm), ln1 = norm1(x), or m1 = modulate(ln1)
  let saIn = x;
  if (pre) {
    nn.layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B, N, C);
    saIn = a.ln1;
    if (tm) {
      nn.modulateForward(a.m1, a.ln1, a.mod, 0, 1, { K: 6, B, T, C });
      saIn = a.m1;
    }
  }
  // qkv = rope(saIn Win^T + bin); attY = attention(qkv)
  nn.linearForward(a.qkv, saIn, w.inProjW, w.inProjB, N, C, 3 * C);
  if (cfg.positions === "rotary") nn.ropeForward(a.qkv, ws.cos, ws.sin, B, T, C, NH);
  nn.attentionForward(a.attY, a.att, a.qkv, useDrop ? a.maskAtt : null, B, T, C, NH, a.heads);
  // projD = drop(proj), proj = attY Wo^T + bo (in place: one buffer)
  const projD = tm ? a.projD : ws.branch;
  nn.linearForward(projD, a.attY, w.outProjW, w.outProjB, N, C, C);
  if (useDrop) nn.dropoutForward(projD, projD, a.mask1!, N * C);
  // r1 = x + gate1 * projD, or x + projD
  if (tm) nn.gatedResidualForward(a.r1, x, projD, a.mod, 2, { K: 6, B, T, C });
  else nn.residualForward(a.r1, x, projD, N * C);

  // MLP block. ffIn: ln1 = norm1(r1) (post-norm), ln2 = norm2(r1), or m2 = modulate(ln2)
  let ffIn: Float32Array;
  if (pre) {
    nn.layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, w.norm2W, w.norm2B, N, C);
    ffIn = a.ln2;
    if (tm) {
      nn.modulateForward(a.m2, a.ln2, a.mod, 3, 4, { K: 6, B, T, C });
      ffIn = a.m2;
    }
  } else {
    nn.layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.r1, w.norm1W, w.norm1B, N, C);
    ffIn = a.ln1;
  }
  // fch = ffIn W1^T + b1
  nn.linearForward(a.fch, ffIn, w.lin1W, w.lin1B, N, C, F);
  // fh = drop(act(fch)), the dropout fused into the activation's pass
  // (GELU keeps its derivative in fch for the backward pass)
  if (cfg.activation === "gelu") {
    nn.geluForwardKeepGrad(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
  } else nn.reluForward(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
  // foD = drop(fo), fo = fh W2^T + b2 (in place: one buffer)
  const foD = tm ? a.foD : ws.branch;
  nn.linearForward(foD, a.fh, w.lin2W, w.lin2B, N, F, C);
  if (useDrop) nn.dropoutForward(foD, foD, a.mask2!, N * C);
  if (tm) {
    // out = r1 + gate2 * foD
    nn.gatedResidualForward(out, a.r1, foD, a.mod, 5, { K: 6, B, T, C });
  } else if (pre) {
    // out = r1 + foD
    nn.residualForward(out, a.r1, foD, N * C);
  } else {
    // r2 = ln1 + foD; out = norm2(r2)
    nn.residualForward(a.r2, a.ln1, foD, N * C);
    nn.layernormForward(out, a.ln2Mean, a.ln2Rstd, a.r2, w.norm2W, w.norm2B, N, C);
  }
}

/**
 * Layer `l` backward, the lines of {@linkcode layerForward} in reverse: `ws.dresid` holds the
 * gradient of the layer's output on entry and of its input on return; the parameter gradients
 * are added into `dw = G.layers[l]`, the modulation's share of the gradient of `cond` into `ws.time.dcond`.
 * Every `dX` is the gradient of activation `X`, in `ws.d` (zeroed before the op that adds into
 * it), or the very buffer of the activation it equals.
 */
export function layerBackward(ws: Workspace, P: ModelTensors, G: ModelTensors, l: number): void {
  const cfg = ws.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T, NC = N * C, NF = N * F;
  const useDrop = ws.lastDropout;
  const w = P.layers[l], dw = G.layers[l], a = ws.layers[l];
  const x = ws.resid[l]; // (N,C)
  const nn = ws.nn;
  const pre = cfg.normFirst;
  const tm = ws.time;
  const d = ws.d;
  const dout = ws.dresid; // of out on entry; dx is written there last
  if (tm) tm.dmod.fill(0);

  // MLP block, from the bottom of the forward pass.
  let dfoD: Float32Array;
  if (tm) {
    // out = r1 + gate2 * foD (the r1 term below, with dr1)
    d.dfoD.fill(0, 0, NC);
    nn.gatedResidualBackward(null, d.dfoD, tm.dmod, dout, a.foD, a.mod, 5, { K: 6, B, T, C });
    dfoD = d.dfoD;
  } else if (pre) {
    // out = r1 + foD
    dfoD = dout;
  } else {
    // out = norm2(r2); r2 = ln1 + foD (the ln1 term below, with dln1)
    d.dr2.fill(0, 0, NC);
    nn.layernormBackward(
      d.dr2,
      dw.norm2W,
      dw.norm2B,
      dout,
      a.r2,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
    dfoD = d.dr2;
  }
  // foD = drop(fo)
  const dfo = useDrop ? dropoutGrad(nn, d.dfo, dfoD, a.mask2!, NC) : dfoD;
  // fo = fh W2^T + b2
  d.dfh.fill(0, 0, NF);
  nn.linearBackward(d.dfh, dw.lin2W, dw.lin2B, dfo, a.fh, w.lin2W, N, F, C);
  // fh = drop(act(fch)): dfch = act'(fch) * mask * dfh in one pass (GELU: fch holds gelu'(fch))
  d.dfch.fill(0, 0, NF);
  const maskF = useDrop ? a.maskF : null;
  if (cfg.activation === "gelu") nn.scaleBackward(d.dfch, d.dfh, a.fch, NF, maskF);
  else nn.reluBackward(d.dfch, d.dfh, a.fch, NF, maskF);
  if (pre) {
    // fch = ffIn W1^T + b1, ffIn = m2 or ln2
    const dffIn = tm ? d.dm2 : d.dln2;
    dffIn.fill(0, 0, NC);
    nn.linearBackward(dffIn, dw.lin1W, dw.lin1B, d.dfch, tm ? a.m2 : a.ln2, w.lin1W, N, C, F);
    if (tm) {
      // m2 = ln2 * (1 + scale2) + shift2
      d.dln2.fill(0, 0, NC);
      nn.modulateBackward(d.dln2, tm.dmod, d.dm2, a.ln2, a.mod, 3, 4, { K: 6, B, T, C });
    }
    // ln2 = norm2(r1), plus out's r1 term
    d.dr1.set(dout.subarray(0, NC));
    nn.layernormBackward(
      d.dr1,
      dw.norm2W,
      dw.norm2B,
      d.dln2,
      a.r1,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
  } else {
    // fch = ln1 W1^T + b1, plus r2's ln1 term
    d.dln1.set(dfoD.subarray(0, NC));
    nn.linearBackward(d.dln1, dw.lin1W, dw.lin1B, d.dfch, a.ln1, w.lin1W, N, C, F);
    // ln1 = norm1(r1)
    d.dr1.fill(0, 0, NC);
    nn.layernormBackward(
      d.dr1,
      dw.norm1W,
      dw.norm1B,
      d.dln1,
      a.r1,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  }

  // Attention block.
  let dprojD = d.dr1; // r1 = x + projD (the x term below, with dx)
  if (tm) {
    // r1 = x + gate1 * projD
    d.dprojD.fill(0, 0, NC);
    nn.gatedResidualBackward(null, d.dprojD, tm.dmod, d.dr1, a.projD, a.mod, 2, { K: 6, B, T, C });
    dprojD = d.dprojD;
  }
  // projD = drop(proj)
  const dproj = useDrop ? dropoutGrad(nn, d.dproj, dprojD, a.mask1!, NC) : dprojD;
  // proj = attY Wo^T + bo
  d.dattY.fill(0, 0, NC);
  nn.linearBackward(d.dattY, dw.outProjW, dw.outProjB, dproj, a.attY, w.outProjW, N, C, C);
  // attY = attention(qkv)
  d.dqkv.fill(0, 0, 3 * NC);
  nn.attentionBackward(
    d.dqkv,
    d.dattY,
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
  // qkv = rope(...), in place: now the gradient of qkv before RoPE
  if (cfg.positions === "rotary") nn.ropeBackward(d.dqkv, ws.cos, ws.sin, B, T, C, NH);
  const dx = dout; // out's gradient is spent: dx takes its buffer
  if (pre) {
    // qkv = saIn Win^T + bin, saIn = m1 or ln1
    const dsaIn = tm ? d.dm1 : d.dln1;
    dsaIn.fill(0, 0, NC);
    nn.linearBackward(
      dsaIn,
      dw.inProjW,
      dw.inProjB,
      d.dqkv,
      tm ? a.m1 : a.ln1,
      w.inProjW,
      N,
      C,
      3 * C,
    );
    if (tm) {
      // m1 = ln1 * (1 + scale1) + shift1
      d.dln1.fill(0, 0, NC);
      nn.modulateBackward(d.dln1, tm.dmod, d.dm1, a.ln1, a.mod, 0, 1, { K: 6, B, T, C });
    }
    // ln1 = norm1(x), plus r1's x term
    dx.set(d.dr1.subarray(0, NC));
    nn.layernormBackward(
      dx,
      dw.norm1W,
      dw.norm1B,
      d.dln1,
      x,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  } else {
    // qkv = x Win^T + bin, plus r1's x term
    dx.set(d.dr1.subarray(0, NC));
    nn.linearBackward(dx, dw.inProjW, dw.inProjB, d.dqkv, x, w.inProjW, N, C, 3 * C);
  }
  // mod = cond Wada^T + bada
  if (tm) nn.linearBackward(tm.dcond, dw.adaW!, dw.adaB!, tm.dmod, tm.cond, w.adaW!, B, C, 6 * C);
}

/** `dx` of `y = x * mask` (dropout, the mask holding 0 or 1/(1-p)) into `dx`; returns it. */
function dropoutGrad(
  nn: NNBackend,
  dx: Float32Array,
  dy: Float32Array,
  mask: Float32Array,
  n: number,
): Float32Array {
  dx.fill(0, 0, n);
  nn.dropoutBackward(dx, dy, mask, n);
  return dx;
}
