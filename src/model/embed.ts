/**
 * The model's input side: token (and learned position) embedding, and the time conditioning
 * of SEDD (sinusoidal sigma embedding -> MLP -> the conditioning vector `c` that every block's
 * and the final norm's modulation reads). Forward and backward.
 *
 * @module
 */

import type { ModelTensors } from "./layout.ts";
import { TIME_EMBED_DIM } from "./layout.ts";
import type { Workspace } from "./workspace.ts";
import { siluBackward, siluForward } from "../nn/activations.ts";
import { timestepEmbedding } from "../nn/adaln.ts";

/**
 * Time conditioning and embedding, forward, of `ws.tokens` at the shape `ws.lastB`, `ws.lastT`:
 * into `ws.time` and `ws.resid[0]`.
 */
export function embedForward(
  ws: Workspace,
  P: ModelTensors,
  sigma: Float32Array | Float64Array | undefined, // (B)
): void {
  const C = ws.config.dModel;
  const B = ws.lastB, T = ws.lastT;
  const nn = ws.nn;
  const tm = ws.time;
  if (tm) {
    // cond = silu(mlp.2(silu(mlp.0(embedding(sigma))))): temb -> h1 -> a1 -> h2 -> cond
    timestepEmbedding(tm.temb, sigma!, B, TIME_EMBED_DIM);
    nn.linearForward(tm.h1, tm.temb, P.sigma0W!, P.sigma0B!, B, TIME_EMBED_DIM, C);
    siluForward(tm.a1, tm.h1, B * C);
    nn.linearForward(tm.h2, tm.a1, P.sigma2W!, P.sigma2B!, B, C, C);
    siluForward(tm.cond, tm.h2, B * C);
    // the final norm's shift and scale (read by the head)
    nn.linearForward(tm.finalMod, tm.cond, P.finalAdaW!, P.finalAdaB!, B, C, 2 * C);
  }
  // resid[0] = embed[tokens] (+ pos_embed)
  nn.embeddingForward(ws.resid[0], ws.tokens, P.embed, P.posEmbed, B, T, C);
}

/**
 * Embedding and time conditioning, backward, from `ws.dresid` (the gradient of `resid[0]`) and
 * `ws.time.dcond` (of `cond`, summed over every layer's modulation and the final one).
 */
export function embedBackward(ws: Workspace, P: ModelTensors, G: ModelTensors): void {
  const C = ws.config.dModel;
  const B = ws.lastB, T = ws.lastT;
  const nn = ws.nn;
  const tm = ws.time;
  // resid[0] = embed[tokens] (+ pos_embed)
  nn.embeddingBackward(G.embed, G.posEmbed, ws.dresid, ws.tokens, B, T, C);
  if (tm) {
    // cond = silu(h2)
    tm.dh2.fill(0);
    siluBackward(tm.dh2, tm.dcond, tm.h2, B * C);
    // h2 = a1 W2^T + b2
    tm.da1.fill(0);
    nn.linearBackward(tm.da1, G.sigma2W!, G.sigma2B!, tm.dh2, tm.a1, P.sigma2W!, B, C, C);
    // a1 = silu(h1)
    tm.dh1.fill(0);
    siluBackward(tm.dh1, tm.da1, tm.h1, B * C);
    // h1 = temb W0^T + b0 (temb is a function of sigma alone: no gradient)
    nn.linearBackward(
      null,
      G.sigma0W!,
      G.sigma0B!,
      tm.dh1,
      tm.temb,
      P.sigma0W!,
      B,
      TIME_EMBED_DIM,
      C,
    );
  }
}
