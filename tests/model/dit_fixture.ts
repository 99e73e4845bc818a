/**
 * What the float32 DiT tests share: the PyTorch fixtures of tests/fixtures/dit/ loaded as a DiT
 * with their inputs and tensors, and a random mid-size DiT with every weight nonzero.
 */

import { parseSafetensors, serializeSafetensors } from "../../src/checkpoint/safetensors.ts";
import { ditFromSafetensors } from "../../src/checkpoint/model_io.ts";
import { createDit, type DitConfig, type DitModel } from "../../src/model/dit.ts";

const DIR = new URL("../fixtures/dit/", import.meta.url);

/**
 * A PyTorch fixture (`sedd` or `logits`): its DiT (2 heads), its inputs (2 sequences), and every
 * stored tensor (`out.forward`, `grad.<name>`, ...).
 */
export function loadDitFixture(name: "sedd" | "logits", output: DitConfig["output"]) {
  const { tensors } = parseSafetensors(Deno.readFileSync(new URL(`${name}.safetensors`, DIR)));
  const weights = Object.fromEntries(
    Object.entries(tensors).filter(([n]) => !/^(in|out|grad)\./.test(n)),
  );
  const { model } = ditFromSafetensors(serializeSafetensors(weights), {
    config: { nHeads: 2, output },
  });
  const tokens = tensors["in.tokens"].data as Int32Array;
  const sigma = tensors["in.sigma"].data as Float32Array;
  return { model, tensors, tokens, sigma };
}

/**
 * A mid-size DiT with every weight random and nonzero (adaLN and output layers too, which a fresh
 * model has at zero).
 */
export function randomDit(config: Partial<DitConfig>, seed: number): DitModel {
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
