/**
 * The model against PyTorch: golden fixtures written by tests/fixtures/make_fixtures.py (see its
 * header for what each file holds and how to regenerate them).
 *
 * The loaders, the tolerances (1e-4 of each tensor's largest magnitude for the logits, every
 * gradient and the parameters after 3 AdamW steps; 1e-5 for the loss) and why they are what they
 * are: tests/model/pytorch_fixtures.ts, shared with the webgpu backend's test.
 *
 * The `tc_*` cases are time-conditioned (SEDD's adaLN-Zero) and carry a `sigma` tensor `(B)`,
 * passed to modelForward and lossAndGrad; their adaLN and head weights are nonzero.
 */

import assert from "node:assert/strict";
import { modelFromSafetensors } from "../../src/checkpoint/model_io.ts";
import { createWorkspace, forward, lossAndGrad, modelForward } from "../../src/model/model.ts";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";
import {
  CASES,
  DIR,
  expectAdamw3,
  expectClose,
  f32,
  i32,
  load,
  loadCase,
  tensorOf,
} from "./pytorch_fixtures.ts";

for (const c of CASES) {
  for (const backend of ["blas", "wasm", "ts"] as const) {
    Deno.test({
      name:
        `model (${backend} backend) matches PyTorch on fixture "${c}": logits, loss, every gradient, 3 AdamW steps`,
      ignore: backend === "blas" && ignoreBlas,
    }, () => {
      // sigma: the noise level per sequence, present exactly for the time-conditioned cases
      const { tensors, B, T, model, input, target, weight, sigma } = loadCase(c);
      const workspace = createWorkspace(model.config, B, T, { backend });
      assert.equal(workspace.backend, backend);

      expectClose(
        `${c} logits`,
        modelForward(model, workspace, input, B, T, { sigma }).slice(),
        f32(tensors.logits, "logits"),
        1e-4,
      );

      const { loss, grads } = lossAndGrad(model, { input, target, weight }, {
        batch: B,
        workspace,
        sigma,
      });
      const wantLoss = f32(tensors.loss, "loss");
      assert.equal(wantLoss.length, 1);
      expectClose(`${c} loss`, [loss], wantLoss, 1e-5);
      for (const name of Object.keys(model.layout)) {
        const want = f32(tensors[`grad.${name}`], `grad.${name}`);
        expectClose(`${c} grad.${name}`, tensorOf(model, grads, name), want, 1e-4);
      }

      const state = createAdamW(model.params.length);
      for (let step = 0; step < 3; step++) {
        const g = lossAndGrad(model, { input, target, weight }, { batch: B, workspace, sigma })
          .grads;
        adamwStep(model.params, g, state);
      }
      expectAdamw3(c, model, model.params, tensors);
    });
  }
}

Deno.test("modelFromSafetensors() loads a PyTorch state dict of the notebook's model; logits match", () => {
  const bytes = Deno.readFileSync(new URL("notebook_state_dict.safetensors", DIR));
  assert.throws(() => modelFromSafetensors(bytes), /nHeads and activation/);
  const { model, metadata } = modelFromSafetensors(bytes, {
    config: { nHeads: 2, activation: "relu" },
  });
  assert.deepEqual(metadata, {}); // a plain state dict: no config travelled with it
  assert.equal(model.config.vocabSize, 37);
  assert.equal(model.config.context, 8);
  assert.equal(model.config.dModel, 4);
  assert.equal(model.config.nLayers, 2);
  assert.equal(model.config.dFF, 2048);
  assert.equal(model.config.positions, "learned");
  assert.equal(model.config.normFirst, false);
  const ref = load("notebook_state_dict_logits.safetensors");
  const input = i32(ref.tensors.input, "input");
  const logits = forward(model, input, { batch: Number(ref.metadata.batch) });
  expectClose("notebook logits", logits, f32(ref.tensors.logits, "logits"), 1e-4);
});

for (const name of ["ts_checkpoint", "ts_checkpoint_learned"]) {
  Deno.test(`${name}.safetensors (checked in PyTorch by make_fixtures.py) loads and gives its logits`, () => {
    const { model } = modelFromSafetensors(Deno.readFileSync(new URL(`${name}.safetensors`, DIR)));
    const ref = load(`${name}_logits.safetensors`);
    const input = i32(ref.tensors.input, "input");
    const logits = forward(model, input, { batch: Number(ref.metadata.batch) });
    expectClose(`${name} logits`, logits, f32(ref.tensors.logits, "logits"), 1e-6);
  });
}
