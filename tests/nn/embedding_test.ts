import assert from "node:assert/strict";
import { embeddingBackward, embeddingForward } from "../../src/nn/embedding.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

Deno.test("embeddingBackward() matches finite differences, repeated ids accumulate", () => {
  const rng = new Rng(5);
  const B = 2, T = 3, C = 4, V = 5;
  const ids = new Int32Array([1, 3, 1, 0, 1, 4]);
  const inputs = { wte: randn(rng, V * C), wpe: randn(rng, T * C) };
  const out = new Float64Array(B * T * C);
  gradcheck({
    inputs,
    forward: () => {
      embeddingForward(f32(out), ids, f32(inputs.wte), f32(inputs.wpe), B, T, C);
      return out;
    },
    backward: (dout) => {
      const g = { wte: new Float64Array(V * C), wpe: new Float64Array(T * C) };
      embeddingBackward(f32(g.wte), f32(g.wpe), f32(dout), ids, B, T, C);
      return g;
    },
  });
});

Deno.test("embeddingForward() adds the position row of t to the token row", () => {
  const wte = new Float32Array([0, 0, 10, 20]); // V=2, C=2
  const wpe = new Float32Array([1, 2, 3, 4]); // T=2
  const out = new Float32Array(4);
  embeddingForward(out, new Int32Array([1, 1]), wte, wpe, 1, 2, 2);
  assert.deepEqual([...out], [11, 22, 13, 24]);
});
