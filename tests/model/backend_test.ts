import assert from "node:assert/strict";
import { resolveConfig } from "../../src/model/config.ts";
import {
  createModel,
  createWorkspace,
  lossAndGrad,
  type Model,
  modelBackward,
  modelForward,
} from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";

function maxRel(got: Float32Array, want: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `non-finite ${got[i]} at ${i}`);
    d = Math.max(d, Math.abs(got[i] - want[i]));
    s = Math.max(s, Math.abs(want[i]));
  }
  return d / s;
}

function both(model: Model, B: number, T: number, timed: boolean) {
  const V = model.config.vocabSize;
  const rng = new Rng(4);
  const N = B * T;
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  const weight = Float32Array.from({ length: N }, () => rng.uniform());
  const sigma = timed ? Float64Array.from({ length: B }, (_, b) => 0.2 + b) : undefined;
  const dropout = model.config.dropout > 0 ? { seed: 1, step: 2, firstRow: 0 } : undefined;
  const run = (backend: "blas" | "wasm" | "ts") => {
    const workspace = createWorkspace(model.config, B, T, { backend });
    // twice on one workspace: the second pass must not see the first one's state
    lossAndGrad(model, { input, target, weight }, { batch: B, workspace, dropout, sigma });
    return lossAndGrad(model, { input, target, weight }, { batch: B, workspace, dropout, sigma });
  };
  return { wasm: run("wasm"), ts: run("ts"), blas: ignoreBlas ? null : run("blas") };
}

const CASES = [
  ["seed preset with dropout", resolveConfig("seed", { vocabSize: 11 }), 3, 8, false],
  [
    "small shape, rotary gelu",
    resolveConfig("small", { vocabSize: 40, context: 24 }),
    2,
    24,
    false,
  ],
  [
    "tiny with time conditioning",
    resolveConfig({ ...resolveConfig("tiny", { vocabSize: 13 }), timeConditioning: true }),
    2,
    5,
    true,
  ],
] as const;

for (const [name, config, B, T, timed] of CASES) {
  Deno.test(`lossAndGrad() on the wasm backend equals the ts backend (${name})`, () => {
    const model = createModel(config, { seed: 7 });
    // train-like parameters: adaLN-Zero and zero biases would hide whole paths
    const rng = new Rng(9);
    for (let i = 0; i < model.params.length; i++) model.params[i] += 0.05 * (rng.uniform() - 0.5);
    const { wasm, ts } = both(model, B, T, timed);
    assert.ok(
      Math.abs(wasm.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss),
      `${wasm.loss} vs ${ts.loss}`,
    );
    const rel = maxRel(wasm.grads, ts.grads);
    assert.ok(rel < 1e-4, `gradients: max relative error ${rel}`);
  });
  Deno.test({
    name: `lossAndGrad() on the blas backend equals the ts backend (${name})`,
    ignore: ignoreBlas,
    fn() {
      const model = createModel(config, { seed: 7 });
      const rng = new Rng(9);
      for (let i = 0; i < model.params.length; i++) model.params[i] += 0.05 * (rng.uniform() - 0.5);
      const { blas, ts } = both(model, B, T, timed);
      assert.ok(blas !== null);
      assert.ok(
        Math.abs(blas.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss),
        `${blas.loss} vs ${ts.loss}`,
      );
      const rel = maxRel(blas.grads, ts.grads);
      assert.ok(rel < 1e-4, `gradients: max relative error ${rel}`);
    },
  });
}

Deno.test("createWorkspace() backends: wasm by default, ts for float64, wasm + float64 refused", () => {
  const config = resolveConfig("tiny", { vocabSize: 9 });
  assert.equal(createWorkspace(config, 1, 2).backend, "wasm");
  assert.equal(createWorkspace(config, 1, 2, { backend: "ts" }).backend, "ts");
  assert.equal(createWorkspace(config, 1, 2, { float64: true }).backend, "ts");
  assert.throws(() => createWorkspace(config, 1, 2, { backend: "wasm", float64: true }), TypeError);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => createWorkspace(config, 1, 2, { backend: "gpu" as any }),
    { name: "TypeError", message: 'Invalid backend: expected "blas", "wasm" or "ts", got gpu' },
  );
});

Deno.test("modelBackward() on the wasm backend takes dlogits from outside the kernels' memory", () => {
  const config = resolveConfig("tiny", { vocabSize: 9 });
  const model = createModel(config, { seed: 2 });
  const B = 2, T = 4, N = B * T, V = 9;
  const rng = new Rng(5);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const dlogits = Float32Array.from({ length: N * V }, () => rng.uniform() - 0.5);
  const grads = {
    wasm: new Float32Array(model.params.length),
    ts: new Float32Array(model.params.length),
  };
  for (const backend of ["wasm", "ts"] as const) {
    const ws = createWorkspace(config, B, T, { backend });
    modelForward(model, ws, input, B, T);
    modelBackward(model, ws, dlogits, grads[backend]);
  }
  const rel = maxRel(grads.wasm, grads.ts);
  assert.ok(rel < 1e-5, `max relative error ${rel}`);
  assert.ok(grads.ts.some((g) => g !== 0));
});

Deno.test("lossAndGrad() on the wasm and blas backends skips zero-weight rows in the head and still equals the ts backend", () => {
  const config = resolveConfig("small", { vocabSize: 30, context: 16 });
  const model = createModel(config, { seed: 11 });
  const B = 5, T = 16, N = B * T, V = 30; // N >= 64: the compacting path
  const rng = new Rng(6);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  for (const keep of [0, 0.3, 0.6, 1]) {
    // keep = 0: no row counts (zero loss, zero gradient); 1: every row (no compaction)
    const weight = Float32Array.from({ length: N }, () => (rng.uniform() < keep ? 1 : 0));
    const run = (backend: "blas" | "wasm" | "ts") =>
      lossAndGrad(model, { input, target, weight }, {
        batch: B,
        workspace: createWorkspace(config, B, T, { backend }),
      });
    const ts = run("ts");
    for (const backend of ignoreBlas ? ["wasm"] as const : ["wasm", "blas"] as const) {
      const fast = run(backend);
      assert.ok(Math.abs(fast.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss), backend);
      if (weight.some((w) => w !== 0)) {
        const rel = maxRel(fast.grads, ts.grads);
        assert.ok(rel < 1e-4, `${backend}, keep ${keep}: max relative error ${rel}`);
      } else {
        assert.ok(fast.grads.every((g) => g === 0) && ts.grads.every((g) => g === 0), backend);
      }
    }
  }
});

Deno.test("lossAndGrad() on the wasm backend computes the head on the weighted rows only, and equals the ts backend", () => {
  const config = resolveConfig("small", { vocabSize: 30, context: 16 });
  const model = createModel(config, { seed: 12 });
  const B = 5, T = 16, N = B * T, V = 30;
  const rng = new Rng(8);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  const weight = Float32Array.from({ length: N }, () => (rng.uniform() < 0.5 ? 0.02 : 0));
  const kept = weight.filter((w) => w !== 0).length;
  const ws = createWorkspace(config, B, T, { backend: "wasm" });
  const fast = lossAndGrad(model, { input, target, weight }, { batch: B, workspace: ws });
  assert.equal(ws.lastHeadRows, kept); // the compact path ran
  const ts = lossAndGrad(model, { input, target, weight }, {
    batch: B,
    workspace: createWorkspace(config, B, T, { backend: "ts" }),
  });
  assert.ok(Math.abs(fast.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss));
  assert.ok(maxRel(fast.grads, ts.grads) < 1e-4);
  // Its logits are not the full (B,T,V) a public backward pass differentiates.
  assert.throws(
    () => modelBackward(model, ws, new Float32Array(N * V), new Float32Array(model.params.length)),
    /expected modelForward first, got lossAndGrad's/,
  );
  modelForward(model, ws, input, B, T); // a full pass again
  assert.equal(ws.lastHeadRows, -1);
});
