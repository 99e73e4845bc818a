// DiT cases shared by the float32 and the GPU pass's tests: the PyTorch fixtures of
// tests/fixtures/dit, random DiTs and token batches.

import { parseSafetensors, serializeSafetensors } from "../../src/checkpoint/safetensors.ts";
import { ditFromSafetensors } from "../../src/checkpoint/model_io.ts";
import { createDit, type DitConfigInput, type DitModel } from "../../src/model/dit.ts";

/**
 * The PyTorch fixture `tests/fixtures/dit/<name>.safetensors` (`sedd` or `logits`): its DiT (2
 * heads, `output` as given), the inputs of its 2 sequences, PyTorch's output and every stored
 * tensor (`out.forward`, `grad.<name>`, ...).
 */
export function loadDitFixture(name: string, output: "sedd" | "logits"): {
  model: DitModel;
  tokens: Int32Array;
  sigma: Float32Array;
  want: Float32Array;
  tensors: ReturnType<typeof parseSafetensors>["tensors"];
} {
  const url = new URL(`../fixtures/dit/${name}.safetensors`, import.meta.url);
  const { tensors } = parseSafetensors(Deno.readFileSync(url));
  const weights = Object.fromEntries(
    Object.entries(tensors).filter(([n]) => !/^(in|out|grad)\./.test(n)),
  );
  const { model } = ditFromSafetensors(serializeSafetensors(weights), {
    config: { nHeads: 2, output },
  });
  return {
    model,
    tokens: tensors["in.tokens"].data as Int32Array,
    sigma: tensors["in.sigma"].data as Float32Array,
    want: tensors["out.forward"].data as Float32Array,
    tensors,
  };
}

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

/**
 * A mid-size DiT (V 301, context 48, d 64, 4 heads, 2 blocks, cond 32, unless `config` says
 * otherwise) with every weight random and nonzero: {@linkcode perturbedDit} at 0.02.
 */
export function randomDit(config: Partial<DitConfigInput>, seed: number): DitModel {
  return perturbedDit(
    { vocabSize: 301, context: 48, dModel: 64, nHeads: 4, nLayers: 2, condDim: 32, ...config },
    seed,
    0.02,
  );
}

/** `n` token ids below `V` from `seed`, every third one the mask `V - 1`. */
export function randomTokens(n: number, V: number, seed: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = ((Math.imul(i + 1, 2654435761) ^ seed) >>> 0) % V;
  for (let i = 0; i < n; i += 3) t[i] = V - 1; // masks
  return t;
}
