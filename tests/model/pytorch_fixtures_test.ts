/**
 * The model against PyTorch: golden fixtures written by tests/fixtures/make_fixtures.py (see its
 * header for what each file holds and how to regenerate them).
 *
 * Tolerances: max |ours - torch| / max |torch| <= 1e-4 per tensor for the logits and
 * every gradient, <= 1e-5 for the loss. The references are float64 PyTorch stored as float32;
 * plain float32 PyTorch lands within ~1e-6 of them (the script prints the figure per case).
 *
 * Parameters after 3 AdamW steps: the same 1e-4 of the tensor's largest magnitude, except where
 * the reference gradient vanishes (|g| <= 1e-6 of the tensor's largest, e.g. the key bias of
 * learned-position models: softmax ignores a shift shared by all keys, so its gradient is zero in
 * exact arithmetic and Adam's normalised step follows float rounding noise, in PyTorch's float32
 * as in ours). There each step can move by at most about lr, so the check is 3 * lr.
 *
 * The `tc_*` cases are time-conditioned (SEDD's adaLN-Zero) and carry a `sigma` tensor `(B)`,
 * passed to modelForward and lossAndGrad; their adaLN and head weights are nonzero.
 */

import assert from "node:assert/strict";
import { parseSafetensors, type Tensor } from "../../src/checkpoint/safetensors.ts";
import { modelFromSafetensors } from "../../src/checkpoint/model_io.ts";
import {
  createModel,
  createWorkspace,
  forward,
  lossAndGrad,
  type Model,
  modelForward,
} from "../../src/model/model.ts";
import type { ModelConfig } from "../../src/model/config.ts";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";

const DIR = new URL("../fixtures/model/", import.meta.url);
const CASES = [
  "seed",
  "tiny",
  "learned_post_relu",
  "learned_pre_gelu",
  "learned_post_gelu",
  "rotary_post_relu",
  "rotary_pre_gelu",
  "rotary_pre_relu_hs8",
  // time conditioning (SEDD's adaLN-Zero), with nonzero modulation and head weights
  "tc_rotary_pre_gelu",
  "tc_learned_pre_gelu",
];
const LR = 1e-3;

function load(name: string) {
  return parseSafetensors(Deno.readFileSync(new URL(name, DIR)));
}

function f32(t: Tensor | undefined, name: string): Float32Array {
  assert.ok(t, `fixture tensor "${name}" is missing`);
  assert.equal(t.dtype, "F32", `fixture tensor "${name}" should be F32`);
  return t.data as Float32Array;
}

function i32(t: Tensor | undefined, name: string): Int32Array {
  assert.ok(t, `fixture tensor "${name}" is missing`);
  assert.equal(t.dtype, "I32", `fixture tensor "${name}" should be I32`);
  return t.data as Int32Array;
}

function preview(a: ArrayLike<number>): string {
  return Array.from({ length: Math.min(5, a.length) }, (_, i) => a[i].toPrecision(6)).join(", ");
}

/**
 * Max |got - want| / max |want|; throws naming the tensor, with the first values and the max
 * difference, when it exceeds `tol` or when `got` holds NaN or Inf.
 */
function expectClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number) {
  assert.equal(
    got.length,
    want.length,
    `${name}: expected ${want.length} values, got ${got.length}`,
  );
  let maxDiff = 0, at = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i])) {
      throw new Error(
        `${name}: non-finite value ${got[i]} at index ${i}; first values ours [${
          preview(got)
        }], torch [${preview(want)}]`,
      );
    }
    const d = Math.abs(got[i] - want[i]);
    if (d > maxDiff) [maxDiff, at] = [d, i];
    scale = Math.max(scale, Math.abs(want[i]));
  }
  const rel = scale > 0 ? maxDiff / scale : maxDiff;
  if (!(rel <= tol)) {
    throw new Error(
      `${name}: max relative error ${rel.toExponential(2)} > ${tol} (max |diff| ${
        maxDiff.toExponential(2)
      } at index ${at}: ours ${got[at]}, torch ${want[at]}); first values ours [${
        preview(got)
      }], torch [${preview(want)}]`,
    );
  }
  return rel;
}

function tensorOf(model: Model, buf: Float32Array, name: string): Float32Array {
  const { offset, shape } = model.layout[name];
  return buf.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
}

/** Builds the model from the fixture's `param.*` tensors (PyTorch state-dict names). */
function modelOf(tensors: Record<string, Tensor>, config: ModelConfig): Model {
  const model = createModel(config, { init: false });
  for (const name of Object.keys(model.layout)) {
    const src = f32(tensors[`param.${name}`], `param.${name}`);
    tensorOf(model, model.params, name).set(src);
  }
  // Every param.* tensor must be a model tensor (no name the layout does not know).
  const names = Object.keys(tensors).filter((n) => n.startsWith("param.")).map((n) => n.slice(6));
  assert.deepEqual(names.sort(), Object.keys(model.layout).sort());
  return model;
}

for (const c of CASES) {
  for (const backend of ["blas", "wasm", "ts"] as const) {
    Deno.test({
      name:
        `model (${backend} backend) matches PyTorch on fixture "${c}": logits, loss, every gradient, 3 AdamW steps`,
      ignore: backend === "blas" && ignoreBlas,
    }, () => {
      const { tensors, metadata } = load(`${c}.safetensors`);
      const config = JSON.parse(metadata.config) as ModelConfig;
      const B = Number(metadata.batch);
      const model = modelOf(tensors, config);
      const input = i32(tensors.input, "input");
      const target = i32(tensors.target, "target");
      const weight = f32(tensors.weight, "weight");
      // noise level per sequence: present exactly for the time-conditioned cases
      const sigma = config.timeConditioning === true ? f32(tensors.sigma, "sigma") : undefined;
      assert.equal(tensors.sigma === undefined, sigma === undefined);
      if (sigma) assert.equal(sigma.length, B);
      const T = input.length / B;
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
      for (const name of Object.keys(model.layout)) {
        const got = tensorOf(model, model.params, name);
        const want = f32(tensors[`adamw3.${name}`], `adamw3.${name}`);
        const g0 = f32(tensors[`grad.${name}`], `grad.${name}`);
        const gMax = g0.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        const strict: number[] = [], strictWant: number[] = [];
        for (let i = 0; i < got.length; i++) {
          if (Math.abs(g0[i]) <= 1e-6 * gMax) {
            // vanishing gradient: Adam's direction is rounding noise; each step moves <= ~lr
            const d = Math.abs(got[i] - want[i]);
            assert.ok(
              d <= 3 * LR,
              `${c} adamw3.${name}[${i}]: |diff| ${d} > 3 lr where the gradient vanishes`,
            );
          } else {
            strict.push(got[i]);
            strictWant.push(want[i]);
          }
        }
        const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        // relative to the whole tensor's largest magnitude, as for the gradients
        strictWant.push(scale);
        strict.push(scale);
        expectClose(`${c} adamw3.${name}`, strict, strictWant, 1e-4);
      }
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
