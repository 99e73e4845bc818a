/**
 * The float32 DiT training pass (src/model/dit_train.ts) against the PyTorch fixtures' output and
 * every gradient, against the float64 reference (`ditForwardCached` / `ditBackward`) on a random
 * mid-size DiT trained with each output's loss, and against its own central differences along a
 * few directions, on every backend. Tolerance: max |ours - ref| / max |ref| <= 1e-4 per tensor.
 */

import assert from "node:assert/strict";
import { lossBackward, lossForward, type LossInputs } from "../../src/diffusion/losses.ts";
import {
  createDit,
  ditBackward,
  type DitConfig,
  ditForwardCached,
  type DitModel,
  ditParamTable,
} from "../../src/model/dit.ts";
import { createDitTrainer, ditTrainBytes } from "../../src/model/dit_train.ts";
import type { BackendName } from "../../src/nn/backend.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";
import { maxRelErr } from "../rel_err.ts";
import { loadDitFixture, randomDit } from "./dit_cases.ts";

const BACKENDS: [BackendName, boolean][] = [["ts", false], ["wasm", false], ["blas", ignoreBlas]];

/** Fails naming the first tensor whose gradient is off by more than `tol` relative. */
function assertGradsClose(
  model: DitModel,
  got: ArrayLike<number> & { subarray(a: number, b: number): ArrayLike<number> },
  want: (name: string, offset: number, n: number) => ArrayLike<number>,
  tol: number,
  what: string,
): void {
  let checked = 0;
  for (const { name, shape } of ditParamTable(model.config)) {
    const { offset } = model.layout[name];
    const n = shape.reduce((a, b) => a * b, 1);
    const e = maxRelErr(got.subarray(offset, offset + n), want(name, offset, n), name);
    assert.ok(e <= tol, `${what}: grad ${name}: rel err ${e}`);
    checked++;
  }
  assert.equal(checked, 10 + 10 * model.config.nLayers);
}

for (const [backend, ignore] of BACKENDS) {
  for (const [name, output] of [["sedd", "sedd"], ["logits", "logits"]] as const) {
    Deno.test({
      name: `dit_train: ${backend}: the ${name} fixture's output and every gradient match ` +
        "PyTorch to 1e-4",
      ignore,
      fn() {
        const { model, tensors, tokens, sigma } = loadDitFixture(name, output);
        const r = tensors["in.r"].data as Float32Array;
        const T = tokens.length / 2;
        const trainer = createDitTrainer(model, { rows: 2, length: T, backend });
        assert.equal(trainer.backend, backend);
        assert.equal(trainer.arenaBytes > 0, backend !== "ts");
        const out = trainer.forward(tokens, { batch: 2, sigma });
        const e = maxRelErr(out, tensors["out.forward"].data as Float32Array, "forward");
        assert.ok(e <= 1e-4, `forward: rel err ${e}`);
        // the gradient of sum(out * r), twice: the second pass must not see the first's
        for (let round = 0; round < 2; round++) {
          const grads = new Float32Array(model.params.length);
          trainer.forward(tokens, { batch: 2, sigma });
          trainer.backward(r, grads);
          assertGradsClose(
            model,
            grads,
            (p) => tensors[`grad.${p}`].data as Float32Array,
            1e-4,
            `${name} round ${round}`,
          );
        }
        // it ADDS: a second backward into the same buffer doubles it
        const once = new Float32Array(model.params.length);
        trainer.forward(tokens, { batch: 2, sigma });
        trainer.backward(r, once);
        const twice = once.slice();
        trainer.backward(r, twice);
        assert.ok(maxRelErr(twice, once.map((g) => 2 * g)) <= 1e-6);
      },
    });
  }
}

/** A noised batch of `B` rows of `T`: clean ids, about a third of them masked, and the noise. */
function noisedBatch(B: number, T: number, V: number, seed: number) {
  const x0 = new Int32Array(B * T), xt = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) {
    x0[i] = ((Math.imul(i + 1, 2654435761) ^ seed) >>> 0) % (V - 1);
    xt[i] = i % 3 === 0 ? V - 1 : x0[i];
  }
  const sigma = Float64Array.from({ length: B }, (_, b) => 0.2 + 1.1 * b); // both sides of 0.5
  const dsigma = sigma.map((s) => 1 + s);
  return { x0, xt, sigma, dsigma };
}

for (const [backend, ignore] of BACKENDS) {
  Deno.test({
    name: `dit_train: ${backend}: a random mid-size DiT's loss gradient matches the float64 ` +
      "pass to 1e-4 (sedd with score-entropy, logits with elbo)",
    ignore,
    fn() {
      const cases: [Partial<DitConfig>, LossInputs["loss"]][] = [
        [{ output: "sedd" }, "score-entropy"],
        [{ output: "logits" }, "elbo"],
      ];
      for (const [config, loss] of cases) {
        const model = randomDit(config, 5);
        const B = 3, T = 40, V = model.config.vocabSize;
        const batch = noisedBatch(B, T, V, 17);
        const inputs: LossInputs = { loss, ...batch, B, T, V, scale: 1 / (B * T) };
        const what = `${config.output} / ${loss}`;

        const ref = ditForwardCached(model, batch.xt, { batch: B, sigma: batch.sigma, raw: true });
        const refLogits = Float32Array.from(ref.out);
        const refDl = new Float32Array(refLogits.length);
        lossBackward(refDl, refLogits, inputs);
        const refGrads = new Float64Array(model.params.length);
        ditBackward(model, ref.cache, refDl, refGrads);

        // a trainer larger than the batch, run on it in place, as a shard runs it
        const trainer = createDitTrainer(model, { rows: 4, length: 48, backend });
        const logits = trainer.forward(batch.xt, { batch: B, sigma: batch.sigma, raw: true });
        assert.ok(maxRelErr(logits, ref.out, `${what} logits`) <= 1e-4);
        const l32 = lossForward(logits, inputs), l64 = lossForward(refLogits, inputs);
        assert.ok(Math.abs(l32 - l64) <= 1e-4 * Math.abs(l64), `${what}: loss ${l32} vs ${l64}`);
        const dl = trainer.dlogits(logits.length);
        lossBackward(dl, logits, inputs);
        const grads = new Float32Array(model.params.length);
        trainer.backward(dl, grads);
        assertGradsClose(model, grads, (_, o, n) => refGrads.subarray(o, o + n), 1e-4, what);
        // a float64 gradient buffer is added into the same way
        const g64 = new Float64Array(model.params.length).fill(1);
        trainer.forward(batch.xt, { batch: B, sigma: batch.sigma, raw: true });
        const dl2 = trainer.dlogits(logits.length);
        lossBackward(
          dl2,
          trainer.forward(batch.xt, { batch: B, sigma: batch.sigma, raw: true }),
          inputs,
        );
        trainer.backward(dl2, g64);
        assertGradsClose(
          model,
          g64.map((g) => g - 1),
          (_, o, n) => refGrads.subarray(o, o + n),
          1e-4,
          `${what} (f64 buffer)`,
        );
      }
    },
  });
}

for (const [backend, ignore] of BACKENDS) {
  Deno.test({
    name: `dit_train: ${backend}: directional derivatives match float32 central differences`,
    ignore,
    fn() {
      const model = randomDit({ vocabSize: 23, dModel: 16, nHeads: 2, condDim: 8 }, 9);
      const B = 2, T = 12, V = model.config.vocabSize;
      const batch = noisedBatch(B, T, V, 4);
      const inputs: LossInputs = {
        loss: "score-entropy",
        ...batch,
        B,
        T,
        V,
        scale: 1 / (B * T),
      };
      const trainer = createDitTrainer(model, { rows: B, length: T, backend });
      const lossAt = () =>
        lossForward(trainer.forward(batch.xt, { batch: B, sigma: batch.sigma, raw: true }), inputs);
      const base = model.params.slice();
      lossAt();
      const dl = trainer.dlogits(B * T * V);
      lossBackward(
        dl,
        trainer.forward(batch.xt, { batch: B, sigma: batch.sigma, raw: true }),
        inputs,
      );
      const grads = new Float32Array(model.params.length);
      trainer.backward(dl, grads);
      let s = 12345;
      const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
      const h = 1e-2;
      for (let dir = 0; dir < 3; dir++) {
        const u = Float64Array.from({ length: base.length }, rand);
        let want = 0;
        for (let i = 0; i < u.length; i++) want += grads[i] * u[i];
        const at = (sign: number) => {
          for (let i = 0; i < u.length; i++) model.params[i] = base[i] + sign * h * u[i];
          return lossAt();
        };
        const fd = (at(1) - at(-1)) / (2 * h);
        model.params.set(base);
        assert.ok(
          Math.abs(fd - want) <= 1e-2 * Math.abs(want),
          `direction ${dir}: analytic ${want} vs central difference ${fd}`,
        );
      }
    },
  });
}

Deno.test("dit_train: bad sizes and inputs get one-line errors", () => {
  const model = createDit({
    vocabSize: 9,
    context: 32768,
    dModel: 8,
    nHeads: 2,
    nLayers: 1,
    condDim: 4,
  });
  // the attention probabilities alone: 2 heads x 32768^2 x 4 bytes
  assert.ok(ditTrainBytes(model, 1, 32768) > 2 ** 33);
  assert.throws(() => createDitTrainer(model, { rows: 1, length: 32768, backend: "wasm" }), {
    name: "RangeError",
    message:
      /^DiT training pass too large for the wasm32 memory: expected at most \d+ bytes, got \d+ for 1 rows per pass at context 32768 .*lower the rows per pass \(microBatch\) or the context$/,
  });
  assert.throws(
    () => createDitTrainer(model, { rows: 0, length: 8 }),
    { message: /^Invalid rows: expected a positive integer, got 0$/ },
  );
  assert.throws(() => createDitTrainer(model, { length: 40000 }), /expected at most context 32768/);
  const trainer = createDitTrainer(model, { rows: 1, length: 4, backend: "ts" });
  assert.throws(
    () => trainer.backward(new Float32Array(36), new Float32Array(model.params.length)),
    {
      message: "DiT trainer backward: expected a forward pass first",
    },
  );
  const sigma = new Float32Array([0.5, 0.5]);
  assert.throws(
    () => trainer.forward(new Int32Array(8), { batch: 2, sigma }),
    /expected B <= 1 and T <= 4, got B 2, T 4/,
  );
  trainer.forward(new Int32Array(4), { batch: 1, sigma: sigma.subarray(0, 1) });
  assert.throws(
    () => trainer.backward(new Float32Array(35), new Float32Array(model.params.length)),
    { message: /^Invalid dout length: expected 36 \(B\*T\*V\), got 35$/ },
  );
  assert.throws(
    () => trainer.backward(new Float32Array(36), new Float32Array(3)),
    { message: /^Invalid grads: expected \d+ values, got 3$/ },
  );
});
