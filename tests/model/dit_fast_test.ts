/**
 * The float32 DiT forward pass (src/model/dit_fast.ts) against the float64 reference
 * (`ditForward`) and the PyTorch fixtures, on every backend. Tolerance: max |fast - ref| /
 * max |ref| <= 1e-4.
 */

import assert from "node:assert/strict";
import { createDit, type DitConfig, ditForward, geluTanh } from "../../src/model/dit.ts";
import {
  createDitRunner,
  ditForwardFast,
  ditRunnerBytes,
  geluTanhInPlace,
} from "../../src/model/dit_fast.ts";
import { forward } from "../../src/model/model.ts";
import type { BackendName } from "../../src/nn/backend.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";
import { maxRelErr } from "../rel_err.ts";
import { loadDitFixture, randomDit, randomTokens } from "./dit_cases.ts";

const BACKENDS: [BackendName, boolean][] = [["ts", false], ["wasm", false], ["blas", ignoreBlas]];

for (const [backend, ignore] of BACKENDS) {
  for (const [name, output] of [["sedd", "sedd"], ["logits", "logits"]] as const) {
    Deno.test({
      name: `dit_fast: ${backend}: the ${name} fixture's output matches PyTorch to 1e-4`,
      ignore,
      fn() {
        const { model, tensors, tokens, sigma } = loadDitFixture(name, output);
        const want = tensors["out.forward"].data as Float32Array;
        const runner = createDitRunner(model, { batch: 2, length: tokens.length / 2, backend });
        assert.equal(runner.backend, backend);
        const got = runner.forward(tokens, { batch: 2, sigma });
        const e = maxRelErr(got, want, "fast forward");
        assert.ok(e <= 1e-4, `rel err ${e}`);
        // the generic forward runs the same pass on this backend
        const e2 = maxRelErr(forward(model, tokens, { batch: 2, sigma, backend }), want);
        assert.ok(e2 <= 1e-4, `generic forward: rel err ${e2}`);
      },
    });
  }
}

for (const [backend, ignore] of BACKENDS) {
  Deno.test({
    name: `dit_fast: ${backend}: a random mid-size DiT matches the float64 pass to 1e-4`,
    ignore,
    fn() {
      const cases: [Partial<DitConfig>, boolean][] = [
        [{ output: "sedd" }, false],
        [{ output: "sedd", scaleBySigma: false }, false],
        [{ output: "logits" }, false],
        [{ output: "sedd" }, true], // raw
      ];
      for (const [config, raw] of cases) {
        const model = randomDit(config, 3);
        const B = 3, T = 40, V = model.config.vocabSize;
        const runner = createDitRunner(model, { batch: B, length: 48, backend });
        const tokens = randomTokens(B * T, V, 11);
        const sigma = new Float64Array([0.05, 0.5, 3.7]);
        const got = runner.forward(tokens, { batch: B, sigma, raw });
        const want = ditForward(model, tokens, { batch: B, sigma, raw });
        const what = `${JSON.stringify(config)} raw ${raw}`;
        const e = maxRelErr(got, want, what);
        assert.ok(e <= 1e-4, `${what}: rel err ${e}`);
        assert.ok(e > 0, `${what}: float32 and float64 should differ somewhat`);
        if (config.output === "sedd" && !raw) {
          for (let n = 0; n < B * T; n++) assert.equal(got[n * V + tokens[n]], 0);
        }
        // fewer sequences than the capacity, one sequence alone: the same rows
        const one = runner.forward(tokens.subarray(T, 2 * T), {
          batch: 1,
          sigma: sigma.subarray(1, 2),
          raw,
        });
        assert.ok(maxRelErr(one, want.subarray(T * V, 2 * T * V)) <= 1e-4, `${what}: batch 1`);
      }
    },
  });
}

Deno.test("dit_fast: the runner reuses its buffers and sees parameter changes after syncParams", () => {
  const model = randomDit({ nLayers: 1 }, 4);
  const V = model.config.vocabSize, T = 16;
  const tokens = randomTokens(T, V, 2);
  const sigma = new Float32Array([1.2]);
  const runner = createDitRunner(model, { batch: 1, length: T, backend: "wasm" });
  assert.ok(runner.arenaBytes >= ditRunnerBytes(model, 1, T) - 64 * 40);
  const a = runner.forward(tokens, { batch: 1, sigma });
  const before = a.slice();
  const b = runner.forward(tokens, { batch: 1, sigma });
  assert.equal(a.buffer, b.buffer); // the same memory, no fresh (N,V) array
  assert.equal(a.byteOffset, b.byteOffset);
  assert.deepEqual(b, before); // deterministic
  // change a weight the kernels read (a copy on wasm): stale until syncParams
  const { offset } = model.layout["output_layer.linear.bias"];
  model.params[offset + 1] += 0.5;
  const stale = runner.forward(tokens, { batch: 1, sigma }).slice();
  assert.deepEqual(stale, before);
  runner.syncParams();
  const fresh = runner.forward(tokens, { batch: 1, sigma }).slice();
  const col = tokens[0] === 1 ? 2 : 1;
  assert.ok(Math.abs(fresh[col] - before[col] - 0.5) < 1e-5);
  // the embedding is read from model.params in place: no sync needed
  const emb = model.layout["vocab_embed.embedding"].offset;
  model.params[emb + tokens[0] * model.config.dModel] += 1;
  assert.notDeepEqual(runner.forward(tokens, { batch: 1, sigma }).slice(), fresh);
  // on ts the runner reads model.params in place: a change shows at once
  const ts = createDitRunner(model, { batch: 1, length: T, backend: "ts" });
  const ts0 = ts.forward(tokens, { batch: 1, sigma }).slice();
  model.params[offset + 1] += 0.5;
  assert.ok(Math.abs(ts.forward(tokens, { batch: 1, sigma })[col] - ts0[col] - 0.5) < 1e-5);
  // ditForwardFast syncs at every call
  const ref = ditForward(model, tokens, { batch: 1, sigma });
  const fast = ditForwardFast(model, tokens, { batch: 1, sigma, backend: "wasm" });
  assert.ok(maxRelErr(fast, ref) <= 1e-4);
  model.params[offset + 3] -= 0.25;
  const ref2 = ditForward(model, tokens, { batch: 1, sigma });
  assert.ok(
    maxRelErr(ditForwardFast(model, tokens, { batch: 1, sigma, backend: "wasm" }), ref2) <= 1e-4,
  );
});

Deno.test("dit_fast: bad input gets a clear error", () => {
  const model = randomDit({ nLayers: 1 }, 5);
  const runner = createDitRunner(model, { batch: 1, length: 8, backend: "ts" });
  const sigma = new Float32Array([1]);
  assert.throws(
    () => runner.forward(new Int32Array(16), { batch: 2, sigma: new Float32Array([1, 1]) }),
    /expected B <= 1 and T <= 8, got B 2, T 8/,
  );
  assert.throws(
    () => runner.forward(new Int32Array(9), { batch: 1, sigma }),
    /T <= 8, got B 1, T 9/,
  );
  assert.throws(
    () => runner.forward(new Int32Array(4), { batch: 1, sigma: new Float32Array([0]) }),
    /> 0 \(scaleBySigma\)/,
  );
  assert.throws(
    () => runner.forward(new Int32Array([301]), { batch: 1, sigma }),
    /expected 0 <= id < 301, got 301/,
  );
  assert.throws(() => createDitRunner(model, { length: 49 }), /at most context 48, got 49/);
  assert.throws(() => createDitRunner(model, { batch: 0 }), /batch: expected a positive integer/);
  assert.throws(
    () => createDitRunner(model, { backend: "gpu" as BackendName }),
    /expected "blas", "wasm" or "ts", got gpu/,
  );
  // SEDD small's output for 40 sequences of 1024 tokens cannot fit in the wasm32 memory
  const big = createDit({
    vocabSize: 50258,
    context: 1024,
    dModel: 8,
    nHeads: 2,
    nLayers: 1,
    condDim: 4,
  });
  assert.ok(ditRunnerBytes(big, 40, 1024) > 2 ** 32);
  assert.throws(
    () => createDitRunner(big, { batch: 40, backend: "wasm" }),
    /too large for the wasm32 memory: expected at most \d+ bytes, got \d+ for 40 sequences/,
  );
});

Deno.test("dit_fast: geluTanhInPlace matches geluTanh, including the tails and NaN", () => {
  const xs = [-1e4, -40, -9, -3.3, -1, -1e-3, 0, 1e-3, 0.7, 2.5, 9, 40, 1e4];
  for (let x = -6; x <= 6; x += 0.01) xs.push(x);
  const a = Float32Array.from(xs);
  const want = [...a].map(geluTanh);
  geluTanhInPlace(a, a.length);
  for (let i = 0; i < a.length; i++) {
    const tol = 1e-6 * Math.max(1, Math.abs(want[i]));
    assert.ok(Math.abs(a[i] - want[i]) <= tol, `x = ${xs[i]}: got ${a[i]}, want ${want[i]}`);
  }
  const nan = new Float32Array([NaN]);
  geluTanhInPlace(nan, 1);
  assert.ok(Number.isNaN(nan[0]));
});

for (const [backend, ignore] of [["wasm", false], ["blas", ignoreBlas]] as const) {
  Deno.test({
    name: `dit_fast: ${backend}: weights "stage" gives the floats of "copy" and reads params live`,
    ignore,
    fn() {
      const model = randomDit({ vocabSize: 301, output: "sedd" }, 5);
      const B = 2, T = 40, V = model.config.vocabSize;
      const tokens = randomTokens(B * T, V, 4);
      const sigma = new Float64Array([0.3, 2.2]);
      const copy = createDitRunner(model, { batch: B, length: 48, backend });
      const stage = createDitRunner(model, { batch: B, length: 48, backend, weights: "stage" });
      assert.ok(stage.arenaBytes < copy.arenaBytes, `${stage.arenaBytes} vs ${copy.arenaBytes}`);
      for (const raw of [false, true]) {
        const want = copy.forward(tokens, { batch: B, sigma, raw }).slice();
        const got = stage.forward(tokens, { batch: B, sigma, raw });
        assert.deepEqual(got, want, `raw ${raw}`);
      }
      // a parameter change is seen at the next call, with no syncParams
      const before = stage.forward(tokens, { batch: B, sigma }).slice();
      const { offset } = model.layout["output_layer.linear.weight"];
      model.params[offset] += 0.5;
      const after = stage.forward(tokens, { batch: B, sigma }).slice();
      copy.syncParams();
      assert.deepEqual(after, copy.forward(tokens, { batch: B, sigma }));
      assert.notDeepEqual(after, before);
    },
  });
}

Deno.test("dit_fast: an unknown weights mode gets a clear error", () => {
  const model = randomDit({ nLayers: 1 }, 1);
  assert.throws(
    () => createDitRunner(model, { length: 8, weights: "share" as never }),
    /Invalid weights: expected "copy" or "stage", got share/,
  );
});
