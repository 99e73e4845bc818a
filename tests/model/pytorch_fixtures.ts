/**
 * The PyTorch golden fixtures of tests/fixtures/model (written by tests/fixtures/make_fixtures.py)
 * and the checks every backend's fixture test runs on them: loaders, the relative-error check,
 * and the AdamW comparison.
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
 * @module
 */

import assert from "node:assert/strict";
import { parseSafetensors, type Tensor } from "../../src/checkpoint/safetensors.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import type { ModelConfig } from "../../src/model/config.ts";

export const DIR = new URL("../fixtures/model/", import.meta.url);
export const CASES = [
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
export const LR = 1e-3;

export function load(name: string) {
  return parseSafetensors(Deno.readFileSync(new URL(name, DIR)));
}

export function f32(t: Tensor | undefined, name: string): Float32Array {
  assert.ok(t, `fixture tensor "${name}" is missing`);
  assert.equal(t.dtype, "F32", `fixture tensor "${name}" should be F32`);
  return t.data as Float32Array;
}

export function i32(t: Tensor | undefined, name: string): Int32Array {
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
export function expectClose(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
) {
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

export function tensorOf(model: Model, buf: Float32Array, name: string): Float32Array {
  const { offset, shape } = model.layout[name];
  return buf.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
}

/** Builds the model from the fixture's `param.*` tensors (PyTorch state-dict names). */
export function modelOf(tensors: Record<string, Tensor>, config: ModelConfig): Model {
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

/**
 * Checks parameters after 3 AdamW steps against the fixture's `adamw3.*` tensors (the
 * tolerances of the module's notes).
 */
export function expectAdamw3(
  c: string,
  model: Model,
  params: Float32Array,
  tensors: Record<string, Tensor>,
): void {
  for (const name of Object.keys(model.layout)) {
    const got = tensorOf(model, params, name);
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
}

/**
 * One fixture case: its tensors, config, shape, the model built from its parameters, and the
 * batch (`sigma` present exactly for the time-conditioned cases).
 */
export function loadCase(c: string) {
  const { tensors, metadata } = load(`${c}.safetensors`);
  const config = JSON.parse(metadata.config) as ModelConfig;
  const B = Number(metadata.batch);
  const model = modelOf(tensors, config);
  const input = i32(tensors.input, "input");
  const target = i32(tensors.target, "target");
  const weight = f32(tensors.weight, "weight");
  const sigma = config.timeConditioning === true ? f32(tensors.sigma, "sigma") : undefined;
  assert.equal(tensors.sigma === undefined, sigma === undefined);
  if (sigma) assert.equal(sigma.length, B);
  return { tensors, config, B, T: input.length / B, model, input, target, weight, sigma };
}
