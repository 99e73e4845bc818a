/**
 * Token embedding plus optional learned position embedding.
 *
 * Dimensions: `B` batch, `T` sequence, `C` channels, `V` vocabulary.
 *
 * @module
 */

/**
 * Looks up token rows and adds position rows: `out[b,t] = wte[inp[b,t]] + wpe[t]`.
 *
 * Token ids must already be validated (0 <= id < V); this kernel does not check them.
 *
 * @param out Output, `(B,T,C)`.
 * @param inp Token ids, `(B,T)`.
 * @param wte Token table, `(V,C)`.
 * @param wpe Position table, `(>=T,C)`, or `null` for no learned positions.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 *
 * @example Two tokens, no positions
 * ```ts
 * import { embeddingForward } from "./embedding.ts";
 * import assert from "node:assert/strict";
 *
 * const wte = new Float32Array([1, 2, 3, 4]); // V=2, C=2
 * const out = new Float32Array(4);
 * embeddingForward(out, new Int32Array([1, 0]), wte, null, 1, 2, 2);
 * assert.deepEqual([...out], [3, 4, 1, 2]);
 * ```
 */
export function embeddingForward(
  out: Float32Array, // (B,T,C)
  inp: Int32Array, // (B,T)
  wte: Float32Array, // (V,C)
  wpe: Float32Array | null, // (T,C)
  B: number,
  T: number,
  C: number,
): void {
  eachToken(inp, B, T, C, (o, ix, p) => {
    if (wpe) {
      for (let c = 0; c < C; c++) out[o + c] = wte[ix + c] + wpe[p + c];
    } else {
      for (let c = 0; c < C; c++) out[o + c] = wte[ix + c];
    }
  });
}

/**
 * Calls `visit(o, ix, p)` for every token (b, t): `o` its row in `(B,T,C)`, `ix` its id's row
 * in the token table, `p` its position's row in the position table.
 */
function eachToken(
  inp: Int32Array, // (B,T)
  B: number,
  T: number,
  C: number,
  visit: (o: number, ix: number, p: number) => void,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) visit((b * T + t) * C, inp[b * T + t] * C, t * C);
  }
}

/**
 * Backward of {@linkcode embeddingForward}. ADDS into `dwte` and `dwpe`.
 *
 * Differentiates `out[b,t] = wte[inp[b,t]] + wpe[t]`.
 *
 * @param dwte Gradient of the token table, `(V,C)`.
 * @param dwpe Gradient of the position table, `(>=T,C)`, or `null`.
 * @param dout Upstream gradient, `(B,T,C)`.
 * @param inp Token ids, `(B,T)`.
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 */
export function embeddingBackward(
  dwte: Float32Array, // (V,C)
  dwpe: Float32Array | null, // (T,C)
  dout: Float32Array, // (B,T,C)
  inp: Int32Array, // (B,T)
  B: number,
  T: number,
  C: number,
): void {
  eachToken(inp, B, T, C, (o, ix, p) => {
    for (let c = 0; c < C; c++) dwte[ix + c] += dout[o + c];
    if (dwpe) { for (let c = 0; c < C; c++) dwpe[p + c] += dout[o + c]; }
  });
}
