import assert from "node:assert/strict";
import {
  createModel,
  createWorkspace,
  forward,
  lossAndGrad,
  modelBackward,
  modelForward,
  validateTokens,
  workspaceBytes,
} from "../../src/model/model.ts";
import { buildLayout, paramTable } from "../../src/model/layout.ts";
import { type ModelConfig, resolveConfig } from "../../src/model/config.ts";
import { Rng } from "../../src/rng.ts";
import { checkModelGradients, testConfig } from "./model_gradcheck.ts";

const tinyConfig = testConfig;

/** Whole-model finite-difference check (see checkModelGradients). */
function checkModel(config: ModelConfig, dropout = false) {
  checkModelGradients(config, { perturb: 0.1, maxPerInput: 12, minChecked: 100, dropout });
}

for (const positions of ["learned", "rotary"] as const) {
  for (const normFirst of [true, false]) {
    for (const activation of ["relu", "gelu"] as const) {
      const name = `${positions}, ${normFirst ? "pre" : "post"}-norm, ${activation}`;
      Deno.test(`modelBackward() matches finite differences (${name})`, () => {
        checkModel(tinyConfig({ positions, normFirst, activation }));
      });
    }
  }
}

Deno.test("modelBackward() matches finite differences with dropout masks (seed-like model)", () => {
  checkModel(
    tinyConfig({ positions: "learned", normFirst: false, activation: "relu", dropout: 0.3 }),
    true,
  );
});

Deno.test("paramTable() names and shapes are the PyTorch state-dict list", () => {
  const c = tinyConfig({ positions: "learned", normFirst: true, vocabSize: 9, context: 5 });
  const layer = (i: number): [string, number[]][] => [
    [`transformer.layers.${i}.self_attn.in_proj_weight`, [24, 8]],
    [`transformer.layers.${i}.self_attn.in_proj_bias`, [24]],
    [`transformer.layers.${i}.self_attn.out_proj.weight`, [8, 8]],
    [`transformer.layers.${i}.self_attn.out_proj.bias`, [8]],
    [`transformer.layers.${i}.linear1.weight`, [12, 8]],
    [`transformer.layers.${i}.linear1.bias`, [12]],
    [`transformer.layers.${i}.linear2.weight`, [8, 12]],
    [`transformer.layers.${i}.linear2.bias`, [8]],
    [`transformer.layers.${i}.norm1.weight`, [8]],
    [`transformer.layers.${i}.norm1.bias`, [8]],
    [`transformer.layers.${i}.norm2.weight`, [8]],
    [`transformer.layers.${i}.norm2.bias`, [8]],
  ];
  const expected: [string, number[]][] = [
    ["embed.weight", [9, 8]],
    ["pos_embed.weight", [5, 8]],
    ...layer(0),
    ...layer(1),
    ["transformer.norm.weight", [8]],
    ["transformer.norm.bias", [8]],
    ["head.weight", [9, 8]],
    ["head.bias", [9]],
  ];
  assert.deepEqual(paramTable(c).map((e) => [e.name, e.shape]), expected);
  // rotary has no position table; post-norm has no final norm
  const names = paramTable(tinyConfig({ positions: "rotary", normFirst: false })).map((e) =>
    e.name
  );
  assert.ok(!names.includes("pos_embed.weight"));
  assert.ok(!names.includes("transformer.norm.weight"));
  assert.equal(names.length, 1 + 2 * 12 + 2);
});

Deno.test("buildLayout() packs tensors in table order without gaps or overlap", () => {
  const c = tinyConfig({ positions: "learned" });
  const { layout, size } = buildLayout(c);
  let next = 0;
  for (const { name, shape } of paramTable(c)) {
    assert.equal(layout[name].offset, next, name);
    next += shape.reduce((a, b) => a * b, 1);
  }
  assert.equal(size, next);
});

Deno.test("createModel('small') at V=512 has 924,928 parameters", () => {
  // embed 512*128 + 4 layers * (3*128*128 + 3*128 + 128*128 + 128 + 2*128*512 + 512 + 128
  // + 4*128) + final norm 2*128 + head 128*512 + 512
  const perLayer = 3 * 128 * 128 + 3 * 128 + 128 * 128 + 128 + 2 * 128 * 512 + 512 + 128 + 4 * 128;
  const expected = 512 * 128 + 4 * perLayer + 2 * 128 + 128 * 512 + 512;
  const model = createModel("small", { vocabSize: 512 });
  assert.equal(model.params.length, expected);
  assert.equal(expected, 924928);
});

Deno.test("createModel() initialises as PyTorch: ranges, zeros, ones and N(0,1) embeddings", () => {
  const model = createModel("small", { vocabSize: 512, seed: 9 });
  const t = (name: string) => {
    const { offset, shape } = model.layout[name];
    return model.params.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
  };
  const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const xavier = Math.sqrt(6 / (128 + 384));
  const w = t("transformer.layers.0.self_attn.in_proj_weight");
  assert.ok(maxAbs(w) <= xavier && maxAbs(w) > 0.95 * xavier);
  assert.equal(maxAbs(t("transformer.layers.0.self_attn.in_proj_bias")), 0);
  assert.equal(maxAbs(t("transformer.layers.1.self_attn.out_proj.bias")), 0);
  const l2 = t("transformer.layers.2.linear2.weight");
  assert.ok(maxAbs(l2) <= 1 / Math.sqrt(512) && maxAbs(l2) > 0.95 / Math.sqrt(512));
  const b1 = t("transformer.layers.2.linear1.bias");
  assert.ok(maxAbs(b1) <= 1 / Math.sqrt(128) && maxAbs(b1) > 0.9 / Math.sqrt(128));
  assert.ok(t("transformer.layers.3.norm2.weight").every((v) => v === 1));
  assert.ok(t("transformer.norm.bias").every((v) => v === 0));
  const e = t("embed.weight");
  const mean = e.reduce((s, v) => s + v, 0) / e.length;
  const variance = e.reduce((s, v) => s + (v - mean) ** 2, 0) / e.length;
  assert.ok(Math.abs(mean) < 0.02 && Math.abs(variance - 1) < 0.03, `${mean} ${variance}`);
  // layers draw independently, and the seed matters
  assert.notDeepEqual(w, t("transformer.layers.1.self_attn.in_proj_weight"));
  assert.notDeepEqual(
    createModel("tiny", { vocabSize: 9, seed: 1 }).params,
    createModel("tiny", { vocabSize: 9, seed: 2 }).params,
  );
  assert.deepEqual(
    createModel("tiny", { vocabSize: 9, seed: 1 }).params,
    createModel("tiny", { vocabSize: 9, seed: 1 }).params,
  );
});

Deno.test("createModel() keeps a given params buffer unless init: true", () => {
  const { size } = buildLayout(resolveConfig("tiny", { vocabSize: 9 }));
  const shared = new Float32Array(new SharedArrayBuffer(size * 4)).fill(0.5);
  const m = createModel("tiny", { vocabSize: 9, params: shared });
  assert.equal(m.params, shared);
  assert.ok(shared.every((v) => v === 0.5));
  createModel("tiny", { vocabSize: 9, params: shared, init: true, seed: 4 });
  assert.deepEqual([...shared], [...createModel("tiny", { vocabSize: 9, seed: 4 }).params]);
  assert.throws(() => createModel("tiny", { vocabSize: 9, params: new Float32Array(3) }), {
    name: "RangeError",
    message: `Invalid params: expected ${size} values for this config, got 3`,
  });
});

Deno.test("lossAndGrad() over a batch equals the sum over its shards, dropout masks included", () => {
  const config = resolveConfig("seed", { vocabSize: 11 });
  const model = createModel(config, { seed: 3 });
  const B = 4, T = 8, N = B * T;
  const rng = new Rng(8);
  const input = Int32Array.from({ length: N }, () => rng.int(11));
  const target = Int32Array.from({ length: N }, () => rng.int(11));
  const weight = Float32Array.from({ length: N }, () => rng.uniform());
  const dropout = { seed: 1, step: 3, firstRow: 0 };
  const full = lossAndGrad(model, { input, target, weight }, { batch: B, dropout });
  const grads = new Float32Array(model.params.length);
  let loss = 0;
  for (const first of [0, 2]) {
    const s = { start: first * T, end: (first + 2) * T };
    loss += lossAndGrad(model, {
      input: input.slice(s.start, s.end),
      target: target.slice(s.start, s.end),
      weight: weight.slice(s.start, s.end),
    }, { batch: 2, grads, dropout: { ...dropout, firstRow: first } }).loss;
  }
  assert.ok(Math.abs(loss - full.loss) < 1e-5 * Math.abs(full.loss));
  let maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < grads.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(grads[i] - full.grads[i]));
    maxAbs = Math.max(maxAbs, Math.abs(full.grads[i]));
  }
  assert.ok(maxDiff < 1e-5 * maxAbs, `max diff ${maxDiff} of ${maxAbs}`);
  // dropout is active: another step gives another loss
  const other = lossAndGrad(model, { input, target, weight }, {
    batch: B,
    dropout: { ...dropout, step: 4 },
  });
  assert.notEqual(other.loss, full.loss);
});

Deno.test("forward() is eval mode: deterministic, equals lossAndGrad without dropout", () => {
  const model = createModel("seed", { vocabSize: 11, seed: 1 });
  const tokens = new Int32Array([1, 2, 3, 4, 5, 6]); // T = 3 < context 8
  const a = forward(model, tokens, { batch: 2 });
  const b = forward(model, tokens, { batch: 2 });
  assert.deepEqual(a, b);
  assert.equal(a.length, 2 * 3 * 11);
  // loss from the logits by hand at one position
  const target = new Int32Array(6).fill(0);
  const weight = new Float32Array(6);
  weight[4] = 1;
  const { loss } = lossAndGrad(model, { input: tokens, target, weight }, { batch: 2 });
  const row = a.subarray(4 * 11, 5 * 11);
  const max = Math.max(...row);
  const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  assert.ok(Math.abs(loss - (lse - row[0])) < 1e-5);
});

Deno.test("lossAndGrad() adds into options.grads", () => {
  const model = createModel("tiny", { vocabSize: 9, seed: 1 });
  const data = {
    input: new Int32Array([8, 1, 2, 8]),
    target: new Int32Array([3, 1, 2, 4]),
    weight: new Float32Array([1, 0, 0, 1]),
  };
  const once = lossAndGrad(model, data, { batch: 1 }).grads;
  const grads = new Float32Array(model.params.length);
  lossAndGrad(model, data, { batch: 1, grads });
  lossAndGrad(model, data, { batch: 1, grads });
  for (let i = 0; i < grads.length; i += 97) assert.ok(Math.abs(grads[i] - 2 * once[i]) < 1e-6);
  assert.ok(once.some((v) => v !== 0));
});

Deno.test("validateTokens() and the public entries reject bad ids and lengths", () => {
  const model = createModel("tiny", { vocabSize: 9 });
  assert.throws(() => validateTokens(new Int32Array([0, -1]), 9, "input"), {
    name: "RangeError",
    message: "Token id out of range in input[1]: expected 0 <= id < 9, got -1",
  });
  assert.throws(() => forward(model, new Int32Array([0, 9]), { batch: 1 }), {
    name: "RangeError",
    message: "Token id out of range in tokens[1]: expected 0 <= id < 9, got 9",
  });
  assert.throws(() => forward(model, new Int32Array(5), { batch: 2 }), {
    name: "RangeError",
    message: "Invalid tokens length: expected a positive multiple of batch 2, got 5",
  });
  assert.throws(() => forward(model, new Int32Array(17), { batch: 1 }), {
    name: "RangeError",
    message: "Sequence too long: expected T <= context 16, got 17",
  });
  const input = new Int32Array(4);
  assert.throws(
    () =>
      lossAndGrad(model, {
        input,
        target: new Int32Array([0, 0, 12, 0]),
        weight: new Float32Array(4),
      }, { batch: 1 }),
    {
      name: "RangeError",
      message: "Token id out of range in target[2]: expected 0 <= id < 9, got 12",
    },
  );
  assert.throws(
    () =>
      lossAndGrad(model, { input, target: new Int32Array(3), weight: new Float32Array(4) }, {
        batch: 1,
      }),
    { name: "RangeError", message: "Invalid target length: expected 4 (like input), got 3" },
  );
  assert.throws(
    () =>
      lossAndGrad(model, { input, target: new Int32Array(4), weight: new Float32Array(2) }, {
        batch: 1,
      }),
    {
      name: "RangeError",
      message: "Invalid weight: expected a Float32Array of 4 values (like input), got 2",
    },
  );
  const ws = createWorkspace(model.config, 1, 2);
  assert.throws(() => modelForward(model, ws, input, 1, 4), {
    name: "RangeError",
    message: "Batch too large for workspace: expected B <= 1 and T <= 2, got B 1, T 4",
  });
  assert.throws(
    () =>
      modelBackward(
        model,
        createWorkspace(model.config, 1, 2),
        new Float32Array(18),
        new Float32Array(model.params.length),
      ),
    {
      name: "RangeError",
      message: "No forward pass to differentiate: expected modelForward first, got none",
    },
  );
});

/** Bytes of every typed array reachable from `ws` (each buffer once), the config aside. */
function typedArrayBytes(ws: object): number {
  const seen = new Set<ArrayBufferLike>();
  let bytes = 0;
  const walk = (v: unknown) => {
    if (ArrayBuffer.isView(v)) {
      if (!seen.has(v.buffer)) seen.add(v.buffer), bytes += v.byteLength;
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") Object.values(v).forEach(walk);
  };
  for (const [k, v] of Object.entries(ws)) if (k !== "config" && k !== "nn") walk(v);
  return bytes;
}

const sizingConfigs: [string, ModelConfig][] = [
  ["pre-norm, rotary", tinyConfig({})],
  [
    "post-norm, dropout, learned",
    tinyConfig({ normFirst: false, dropout: 0.1, positions: "learned" }),
  ],
  ["time-conditioned, dropout", tinyConfig({ timeConditioning: true, dropout: 0.1, dModel: 12 })],
  ["small preset", resolveConfig("small", { vocabSize: 40, context: 32 })],
];

Deno.test("workspaceBytes() is the arena bytes createWorkspace() takes (wasm), the typed arrays' bytes (ts)", () => {
  for (const [name, config] of sizingConfigs) {
    for (const [B, T] of [[1, 1], [2, 3], [5, config.context]]) {
      const wasm = createWorkspace(config, B, T, { backend: "wasm" });
      const expected = workspaceBytes(config, B, T, { backend: "wasm" });
      assert.ok(wasm.arenaBytes > 0, name);
      assert.equal(expected, wasm.arenaBytes, `${name}, wasm, B ${B}, T ${T}`);
      for (const float64 of [false, true]) {
        const ts = createWorkspace(config, B, T, { backend: "ts", float64 });
        assert.equal(
          workspaceBytes(config, B, T, { backend: "ts", float64 }),
          typedArrayBytes(ts),
          `${name}, ts, float64 ${float64}, B ${B}, T ${T}`,
        );
      }
    }
  }
  // the same checks on its arguments as createWorkspace
  const config = tinyConfig({});
  assert.throws(
    () => workspaceBytes(config, 0, 2),
    /Invalid batch size: expected a positive integer, got 0/,
  );
  assert.throws(
    () => workspaceBytes(config, 1, 5),
    /Sequence too long: expected T <= context 4, got 5/,
  );
});

Deno.test("createWorkspace() refuses a workspace larger than the wasm32 memory up front, in one line", () => {
  const config = resolveConfig("tiny", { vocabSize: 40, context: 100000 });
  const bytes = workspaceBytes(config, 16, 100000, { backend: "wasm" });
  assert.ok(bytes > 2 ** 32);
  let message = "";
  assert.throws(() => createWorkspace(config, 16, 100000, { backend: "wasm" }), (e: Error) => {
    message = e.message;
    return e instanceof RangeError;
  });
  // Our check, before anything is reserved: the kernels' own "Wasm arena full" never runs.
  assert.match(
    message,
    new RegExp(
      `^Workspace too large for the wasm32 memory: expected at most \\d+ bytes, got ${bytes} ` +
        `for context 100000 × batch 16 \\(dModel 16, 2 layers, vocabulary 40\\)$`,
    ),
  );
  const limit = Number(/at most (\d+) bytes/.exec(message)![1]);
  assert.ok(limit < 2 ** 32 && limit > 2 ** 32 - 2 ** 24, `limit ${limit}`);
  // The least batch over the limit at context 4096 fails the same way, with the same limit.
  const wide = resolveConfig("tiny", { vocabSize: 40, context: 4096 });
  let B = 1;
  while (workspaceBytes(wide, B, 4096, { backend: "wasm" }) <= limit) B++;
  const over = workspaceBytes(wide, B, 4096, { backend: "wasm" });
  assert.throws(
    () => createWorkspace(wide, B, 4096, { backend: "wasm" }),
    {
      name: "RangeError",
      message: `Workspace too large for the wasm32 memory: expected at most ${limit} bytes, got ` +
        `${over} for context 4096 × batch ${B} (dModel 16, 2 layers, vocabulary 40)`,
    },
  );
});
