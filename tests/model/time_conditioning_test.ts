import assert from "node:assert/strict";
import { createModel, forward, lossAndGrad, type Model } from "../../src/model/model.ts";
import { paramTable } from "../../src/model/layout.ts";
import type { ModelConfig } from "../../src/model/config.ts";
import { layernormForward } from "../../src/nn/layernorm.ts";
import { linearForward } from "../../src/nn/linear.ts";
import { Rng } from "../../src/rng.ts";
import { checkModelGradients, testConfig } from "./model_gradcheck.ts";

function tcConfig(over: Partial<ModelConfig> = {}): ModelConfig {
  return testConfig({ timeConditioning: true, ...over });
}

function tensor(model: Model, name: string): Float32Array {
  const { offset, shape } = model.layout[name];
  return model.params.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
}

/** Whole-model finite-difference check; adaLN-Zero starts at zero: perturb everything. */
function checkModel(config: ModelConfig, dropout = false) {
  const sigma = new Float64Array([0.3, 2.5]);
  checkModelGradients(config, { perturb: 0.2, maxPerInput: 10, minChecked: 150, dropout, sigma });
}

Deno.test("modelBackward() matches finite differences with time conditioning (rotary, gelu)", () => {
  checkModel(tcConfig());
});

Deno.test("modelBackward() matches finite differences with time conditioning (learned, relu, dropout)", () => {
  checkModel(tcConfig({ positions: "learned", activation: "relu", dropout: 0.25 }), true);
});

Deno.test("paramTable() adds sigma_map, per-layer adaLN_modulation and final_adaLN_modulation", () => {
  const names = paramTable(tcConfig({ nLayers: 1 })).map((e) => `${e.name} ${e.shape.join("x")}`);
  assert.deepEqual(names, [
    "embed.weight 7x8",
    "sigma_map.mlp.0.weight 8x256",
    "sigma_map.mlp.0.bias 8",
    "sigma_map.mlp.2.weight 8x8",
    "sigma_map.mlp.2.bias 8",
    "transformer.layers.0.self_attn.in_proj_weight 24x8",
    "transformer.layers.0.self_attn.in_proj_bias 24",
    "transformer.layers.0.self_attn.out_proj.weight 8x8",
    "transformer.layers.0.self_attn.out_proj.bias 8",
    "transformer.layers.0.linear1.weight 12x8",
    "transformer.layers.0.linear1.bias 12",
    "transformer.layers.0.linear2.weight 8x12",
    "transformer.layers.0.linear2.bias 8",
    "transformer.layers.0.norm1.weight 8",
    "transformer.layers.0.norm1.bias 8",
    "transformer.layers.0.norm2.weight 8",
    "transformer.layers.0.norm2.bias 8",
    "transformer.layers.0.adaLN_modulation.weight 48x8",
    "transformer.layers.0.adaLN_modulation.bias 48",
    "transformer.norm.weight 8",
    "transformer.norm.bias 8",
    "final_adaLN_modulation.weight 16x8",
    "final_adaLN_modulation.bias 16",
    "head.weight 7x8",
    "head.bias 7",
  ]);
});

Deno.test("createModel() with time conditioning starts adaLN-Zero: zero logits, identity blocks", () => {
  const model = createModel(tcConfig(), { seed: 6 });
  for (const { name } of paramTable(model.config)) {
    if (name.includes("adaLN_modulation") || name.startsWith("head.")) {
      assert.ok(tensor(model, name).every((v) => v === 0), name);
    }
  }
  assert.ok(tensor(model, "sigma_map.mlp.0.weight").some((v) => v !== 0));
  const tokens = new Int32Array([1, 2, 3, 4, 5, 6]);
  const logits = forward(model, tokens, { batch: 2, sigma: new Float32Array([0.1, 3]) });
  assert.ok(logits.every((v) => v === 0));
  // With a non-zero head, zero gates make every block the identity:
  // logits = head(norm(embed(tokens))) whatever sigma is.
  const rng = new Rng(7);
  tensor(model, "head.weight").forEach((_, i, a) => a[i] = rng.normal());
  const got = forward(model, tokens, { batch: 2, sigma: new Float32Array([0.1, 3]) });
  const C = 8, N = 6, V = 7;
  const emb = new Float32Array(N * C);
  const embed = tensor(model, "embed.weight");
  for (let n = 0; n < N; n++) emb.set(embed.subarray(tokens[n] * C, tokens[n] * C + C), n * C);
  const normed = new Float32Array(N * C);
  layernormForward(
    normed,
    new Float32Array(N),
    new Float32Array(N),
    emb,
    tensor(model, "transformer.norm.weight"),
    tensor(model, "transformer.norm.bias"),
    N,
    C,
  );
  const expected = new Float32Array(N * V);
  linearForward(
    expected,
    normed,
    tensor(model, "head.weight"),
    tensor(model, "head.bias"),
    N,
    C,
    V,
  );
  for (let i = 0; i < N * V; i++) assert.ok(Math.abs(got[i] - expected[i]) < 1e-5);
});

Deno.test("forward() of a time-conditioned model depends on sigma once modulation is learned", () => {
  const model = createModel(tcConfig(), { seed: 8 });
  const rng = new Rng(9);
  for (let i = 0; i < model.params.length; i++) model.params[i] += 0.1 * rng.normal();
  const tokens = new Int32Array([1, 2, 3, 1, 2, 3]);
  const logits = forward(model, tokens, { batch: 2, sigma: new Float32Array([0.2, 4]) });
  const row0 = logits.subarray(0, 3 * 7), row1 = logits.subarray(3 * 7);
  let diff = 0;
  for (let i = 0; i < row0.length; i++) diff = Math.max(diff, Math.abs(row0[i] - row1[i]));
  assert.ok(diff > 1e-3, `same tokens, different sigma: max logit difference ${diff}`);
  const again = forward(model, tokens, { batch: 2, sigma: new Float32Array([4, 4]) });
  assert.deepEqual(again.subarray(0, 21), again.subarray(21));
});

Deno.test("lossAndGrad() with time conditioning is additive over shards", () => {
  const model = createModel(tcConfig(), { seed: 10 });
  const rng = new Rng(11);
  for (let i = 0; i < model.params.length; i++) model.params[i] += 0.1 * rng.normal();
  const input = new Int32Array([6, 1, 6, 2, 3, 6, 6, 6, 0, 1, 2, 6]);
  const target = new Int32Array([0, 1, 2, 2, 3, 4, 5, 0, 0, 1, 2, 3]);
  const weight = Float32Array.from(input, (t) => (t === 6 ? 1 : 0));
  const sigma = new Float32Array([0.5, 1, 2]);
  const full = lossAndGrad(model, { input, target, weight }, { batch: 3, sigma });
  const grads = new Float32Array(model.params.length);
  let loss = lossAndGrad(model, {
    input: input.slice(0, 4),
    target: target.slice(0, 4),
    weight: weight.slice(0, 4),
  }, { batch: 1, sigma: sigma.slice(0, 1), grads }).loss;
  loss += lossAndGrad(model, {
    input: input.slice(4),
    target: target.slice(4),
    weight: weight.slice(4),
  }, { batch: 2, sigma: sigma.slice(1), grads }).loss;
  assert.ok(Math.abs(loss - full.loss) < 1e-5 * full.loss);
  for (let i = 0; i < grads.length; i++) {
    assert.ok(Math.abs(grads[i] - full.grads[i]) < 1e-5, `grad ${i}`);
  }
});

Deno.test("time conditioning rejects a missing or bad sigma and post-norm configs", () => {
  const model = createModel(tcConfig(), { seed: 1 });
  const tokens = new Int32Array(4);
  assert.throws(() => forward(model, tokens, { batch: 2 }), {
    name: "TypeError",
    message:
      "Missing sigma: expected a Float32Array or Float64Array of 2 noise levels for a time-conditioned model, got undefined",
  });
  assert.throws(() => forward(model, tokens, { batch: 2, sigma: new Float32Array(3) }), {
    name: "RangeError",
    message: "Invalid sigma length: expected 2 (one per sequence), got 3",
  });
  assert.throws(() => forward(model, tokens, { batch: 2, sigma: new Float32Array([1, NaN]) }), {
    name: "RangeError",
    message: "Invalid sigma[1]: expected a finite value >= 0, got NaN",
  });
  assert.throws(() => tcConfig({ normFirst: false }), {
    name: "RangeError",
    message:
      "Invalid config: timeConditioning modulates the pre-norm LayerNorms, expected normFirst true, got false",
  });
  // a model without time conditioning ignores sigma
  const plain = createModel("tiny", { vocabSize: 9 });
  assert.deepEqual(
    forward(plain, tokens, { batch: 2, sigma: new Float32Array([1, 2]) }),
    forward(plain, tokens, { batch: 2 }),
  );
});
