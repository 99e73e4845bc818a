/**
 * One training step (lossAndGrad + adamwStep) per iteration, single thread.
 *
 * deno bench --allow-read bench/step_bench.ts
 */

import { createModel, createWorkspace, lossAndGrad } from "../src/model/model.ts";
import { adamwStep, createAdamW } from "../src/optim/adamw.ts";
import { Rng } from "../src/rng.ts";

function setup(preset: "seed" | "small", V: number, B: number, T: number) {
  const model = createModel(preset, { vocabSize: V, seed: 1 });
  const ws = createWorkspace(model.config, B, T);
  const grads = new Float32Array(model.params.length);
  const opt = createAdamW(model.params.length);
  const rng = new Rng(2);
  const N = B * T;
  const target = Int32Array.from({ length: N }, () => rng.int(V - 1));
  const input = target.map((t) => (rng.uniform() < 0.5 ? V - 1 : t));
  const weight = Float32Array.from(input, (t) => (t === V - 1 ? 1 : 0));
  let step = 0;
  return () => {
    grads.fill(0);
    const dropout = model.config.dropout > 0 ? { seed: 1, step, firstRow: 0 } : undefined;
    lossAndGrad(model, { input, target, weight }, { batch: B, grads, workspace: ws, dropout });
    adamwStep(model.params, grads, opt);
    step++;
  };
}

const seedStep = setup("seed", 37, 2, 8);
const smallStep = setup("small", 512, 16, 128);

Deno.bench("train step: seed preset, V=37, B=2, T=8", { group: "step" }, () => seedStep());
Deno.bench(
  "train step: small preset, V=512, B=16, T=128",
  { group: "step", n: 5, warmup: 1 },
  () => smallStep(),
);
