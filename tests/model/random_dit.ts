/** A random DiT with every weight nonzero and token ids, for the DiT tests. */

import { createDit, type DitConfigInput, type DitModel } from "../../src/model/dit.ts";

/**
 * A mid-size DiT with every weight random and nonzero (adaLN and output layers too, which a fresh
 * model has at zero).
 */
export function randomDit(config: Partial<DitConfigInput>, seed: number): DitModel {
  const model = createDit({
    vocabSize: 301,
    context: 48,
    dModel: 64,
    nHeads: 4,
    nLayers: 2,
    condDim: 32,
    ...config,
  }, { seed });
  let s = seed * 7919 + 1;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  for (const [n, { offset, shape }] of Object.entries(model.layout)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const amp = n.includes("adaLN") || n.startsWith("output_layer.linear") ? 0.1 : 0.02;
    for (let i = 0; i < size; i++) model.params[offset + i] += amp * rand();
  }
  return model;
}

/** Token ids below `V`, every third one MASK (`V - 1`). */
export function randomTokens(n: number, V: number, seed: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = ((Math.imul(i + 1, 2654435761) ^ seed) >>> 0) % V;
  for (let i = 0; i < n; i += 3) t[i] = V - 1; // masks
  return t;
}
