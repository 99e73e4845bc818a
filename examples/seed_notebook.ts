/**
 * The reference notebook ("SEDD Explainer"), cell by cell, in TypeScript.
 *
 * Run it with `deno run --allow-read examples/seed_notebook.ts` (or `deno task notebook`) and read
 * it beside the notebook: each `In [n]` below is the notebook cell it reproduces. The tokenizer
 * cells print exactly the notebook's merges, vocabulary and token tensor. The cells with random
 * draws (noise, initial weights, training) use our seeded generator instead of PyTorch's, so their
 * numbers differ from the notebook's while following the same computation.
 *
 * Options: `--steps N` (default 10,000, the notebook's), `--seed S` (default 0).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { decode, encode, trainTokenizer } from "../src/tokenizer/mod.ts";
import { createModel, forward, lossAndGrad } from "../src/model/mod.ts";
import { crossEntropyForward } from "../src/nn/cross_entropy.ts";
import { adamwStep, createAdamW } from "../src/optim/adamw.ts";
import { corruptRow, seedLossWeights, sequenceRng } from "../src/diffusion/mod.ts";
import { sampleIds } from "../src/sampler/sample_ids.ts";
import { Rng } from "../src/rng.ts";

const { values } = parseArgs({
  options: { steps: { type: "string", default: "10000" }, seed: { type: "string", default: "0" } },
});
const steps = Number(values.steps);
const seed = Number(values.seed);
if (!Number.isInteger(steps) || steps < 0) {
  console.error(`Invalid --steps: expected a non-negative integer, got ${values.steps}`);
  throw new Error("bad arguments");
}
if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
  console.error(`Invalid --seed: expected an integer 0 <= seed < 2^32, got ${values.seed}`);
  throw new Error("bad arguments");
}

const cell = (n: number | string, title = "") =>
  console.log(`\nIn [${n}]${title ? ": " + title : ""}`);
const pyStr = (s: string) => `'${s.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
const fmt4 = (x: number) => x.toFixed(4);

// In [3]: the corpus.
const rawExample1 =
  "Linear algebra is central to almost all areas of mathematics. For instance, linear algebra is fundamental in modern presentations of geometry, including for defining basic objects such as lines, planes and rotations. Also, functional analysis, a branch of mathematical analysis, may be viewed as the application of linear algebra to function spaces.";
const rawExample2 =
  "In numerical analysis and linear algebra, lower–upper (LU) decomposition or factorization factors a matrix as the product of a lower triangular matrix and an upper triangular matrix (see matrix multiplication and matrix decomposition).";

// In [4]: tok = SimpleBPETokenizer(num_merges=5); tok.train([...]); tok.merges
cell(4, "tok.merges");
const tok = trainTokenizer([rawExample1, rawExample2], { kind: "seed", numMerges: 5 });
console.log(`[${tok.merges.map(([a, b]) => `(${pyStr(a)}, ${pyStr(b)})`).join(", ")}]`);

// In [5]: tok.vocab
cell(5, "tok.vocab");
console.log(`{${tok.tokens.map((t, i) => `${pyStr(t)}: ${i}`).join(",\n ")}}`);

// In [6]: vocab_size
cell(6, "vocab_size");
const vocabSize = tok.vocabSize;
console.log(vocabSize);

// In [7]: the token tensor, EOT before each example.
cell(7, "all_tokens");
const eot = tok.eotId;
const tokenList: number[] = [];
for (const example of [rawExample1, rawExample2]) {
  tokenList.push(eot, ...encode(tok, example.toLowerCase()));
}
const allTokens = Int32Array.from(tokenList);
console.log(`tensor([${[...allTokens].join(", ")}])`);

// In [8]-[10]: a batch of 2 x 8 from the start of the stream.
const B = 2; // B_batch
const T = 8; // T_context
cell(9, "tok_for_training");
const tokForTraining = allTokens.slice(0, B * T);
console.log(`tensor([${[...tokForTraining].join(", ")}])`);
cell(10, "x = tok_for_training.view(B_batch, T_context)");
const x = tokForTraining;
console.log(`[${B}, ${T}]`, rows(x, T));

// In [11]-[15]: one draw of the forward (noising) process: t per sequence, mask with probability t.
cell(11, "t = torch.rand(B_batch)  (here: one seeded generator per sequence)");
const demoRngs = Array.from({ length: B }, (_, j) => sequenceRng(seed, 0xfffffffe, j));
const t = Float32Array.from(demoRngs, (r) => r.uniform());
console.log(`tensor([${[...t].map(fmt4).join(", ")}])`);
cell("12-15", "mask_decision = bernoulli(t); noisy_x[mask_decision] = mask_token_id");
const noisyX = new Int32Array(B * T);
for (let j = 0; j < B; j++) corruptRow("seed", noisyX, x, j, T, t[j], demoRngs[j], vocabSize);
console.log(rows(noisyX, T));

// In [18]-[19]: the model and its logits.
cell(18, "model = SimpleDiffusionTransformer()  (the `seed` preset)");
const model = createModel("seed", { vocabSize, context: T, seed });
console.log(
  `${model.params.length} parameters: ${Object.keys(model.layout).length} tensors, e.g.`,
  Object.entries(model.layout).slice(0, 4).map(([k, v]) => `${k} [${v.shape}]`).join(", "),
);
cell(19, "logits = model(noisy_x)  (shape and the first position's first 5 logits)");
const logits = forward(model, noisyX, { batch: B });
console.log(`[${B}, ${T}, ${vocabSize}]`, [...logits.subarray(0, 5)].map(fmt4).join(", "));

// In [20]-[21]: cross-entropy per position, then averaged over the masked positions.
cell(20, "loss = F.cross_entropy(logits, x, reduction='none')");
const ones = new Float32Array(B * T).fill(1);
const perPosition = new Float32Array(B * T);
crossEntropyForward(perPosition, new Float32Array(B * T), logits, x, ones, B * T, vocabSize);
console.log(rows(perPosition, T, fmt4));
cell(21, "masked_loss = (loss * mask).sum() / (mask.sum() + 1e-6)");
const weight = new Float32Array(B * T);
seedLossWeights(weight, noisyX, tok.maskId, B, T);
let maskedLoss = 0;
for (let i = 0; i < B * T; i++) maskedLoss += weight[i] * perPosition[i];
console.log(fmt4(maskedLoss));

// In [22]-[24]: AdamW(lr=1e-3) and the training loop, with dropout on as in model.train().
cell(24, `train_step x ${steps}`);
const optimizer = createAdamW(model.params.length);
const grads = new Float32Array(model.params.length);
const xt = new Int32Array(B * T);
const started = performance.now();
for (let step = 0; step < steps; step++) {
  // t ~ U(0,1) and the mask for sequence j come from a generator keyed by (seed, step, j).
  for (let j = 0; j < B; j++) {
    const rng = sequenceRng(seed, step, j);
    corruptRow("seed", xt, x, j, T, rng.uniform(), rng, vocabSize);
  }
  seedLossWeights(weight, xt, tok.maskId, B, T);
  grads.fill(0);
  const { loss } = lossAndGrad(model, { input: xt, target: x, weight }, {
    batch: B,
    grads,
    dropout: { seed, step, firstRow: 0 },
  });
  adamwStep(model.params, grads, optimizer, { lr: 1e-3 });
  if (step % 100 === 0) console.log(`Step ${step}, Loss: ${fmt4(loss)}`);
}
const seconds = (performance.now() - started) / 1000;
console.log(`(${steps} steps in ${seconds.toFixed(1)} s, ${(steps / seconds).toFixed(0)} steps/s)`);

// In [25]: generation — the first 4 tokens fixed, 4 masks, 4 steps of confidence-based unmasking.
cell(25, "final_seq = sample_sedd(steps=4)");
console.log("\n--- Starting Generation (Reverse Diffusion) ---");
const sampleSteps = 4;
const pretty = (ids: ArrayLike<number>) =>
  `[${Array.from(ids, (id) => pyStr(id === tok.maskId ? "MM" : decode(tok, [id]))).join(", ")}]`;
const start = new Int32Array(T).fill(tok.maskId);
start.set(tokForTraining.subarray(0, 4));
console.log(`Step 0/${sampleSteps}: ${pretty(start)}`);
const denoise = (ids: Int32Array) => forward(model, ids, { batch: 1 });
const result = sampleIds(denoise, vocabSize, tok.maskId, {
  method: "confidence",
  length: T,
  steps: sampleSteps,
  rng: new Rng(seed, 1),
  fixed: { positions: [0, 1, 2, 3], ids: [...start.subarray(0, 4)] },
  onStep: (ids: Int32Array, step: number) =>
    console.log(`Step ${step}/${sampleSteps}: ${pretty(ids)}`),
});

// In [26]: what the sequence was in the corpus.
cell(26, "tok.decode(tok_for_training[:8])");
console.log(pyStr(decode(tok, tokForTraining.subarray(0, 8))));
console.log(`sampled: ${pyStr(decode(tok, result.ids))}`);

function rows(
  a: ArrayLike<number>,
  width: number,
  f: (v: number) => string = String,
): string {
  const out: string[] = [];
  for (let i = 0; i < a.length; i += width) {
    out.push(`[${Array.from({ length: width }, (_, k) => f(a[i + k])).join(", ")}]`);
  }
  return `[${out.join(",\n ")}]`;
}
