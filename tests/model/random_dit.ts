// Random DiTs and token batches for the DiT tests (the float32 pass and the GPU pass against the
// float64 reference).

import { createDit, type DitConfigInput, type DitModel } from "../../src/model/dit.ts";

/**
 * A DiT of `config` with every weight random and nonzero: the initialisation plus uniform noise of
 * `amp` (0.1 on the adaLN and output layers, which a fresh model has at zero), from `seed`.
 */
export function perturbedDit(config: DitConfigInput, seed: number, amp: number): DitModel {
  const model = createDit(config, { seed });
  let s = seed * 7919 + 1;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  for (const [n, { offset, shape }] of Object.entries(model.layout)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const a = n.includes("adaLN") || n.startsWith("output_layer.linear") ? 0.1 : amp;
    for (let i = 0; i < size; i++) model.params[offset + i] += a * rand();
  }
  return model;
}

/** `n` token ids below `V` from `seed`, every third one the mask `V - 1`. */
export function randomTokens(n: number, V: number, seed: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = ((Math.imul(i + 1, 2654435761) ^ seed) >>> 0) % V;
  for (let i = 0; i < n; i += 3) t[i] = V - 1; // masks
  return t;
}
