/**
 * Shared by the model's tests: a config small enough for finite differences, and the
 * whole-model gradient check in float64.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  createModel,
  createWorkspace,
  type Model,
  modelBackward,
  modelForward,
  type ModelForwardOptions,
} from "../../src/model/model.ts";
import { type ModelConfig, resolveConfig } from "../../src/model/config.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck } from "../gradcheck.ts";

/** V 7, context 4, C 8, 2 heads, 2 layers, F 12, rotary, pre-norm, GELU, no dropout; `over` wins. */
export function testConfig(over: Partial<ModelConfig>): ModelConfig {
  return resolveConfig({
    vocabSize: 7,
    context: 4,
    dModel: 8,
    nHeads: 2,
    nLayers: 2,
    dFF: 12,
    positions: "rotary",
    normFirst: true,
    activation: "gelu",
    dropout: 0,
    ...over,
  });
}

/** Options of {@linkcode checkModelGradients}. */
export interface ModelGradcheckOptions {
  /** Scale of the normal noise added to every parameter, so every path carries signal. */
  perturb: number;
  /** Entries checked per tensor, at most. */
  maxPerInput: number;
  /** Entries that must be checked in all. */
  minChecked: number;
  /** Training-mode dropout (fixed keys). */
  dropout?: boolean;
  /** Noise levels, `(2)`, for a time-conditioned model. */
  sigma?: Float64Array;
}

/**
 * Whole-model finite-difference check in float64 on sampled entries of every tensor, for a
 * batch of 2 sequences of 3 tokens.
 */
export function checkModelGradients(config: ModelConfig, o: ModelGradcheckOptions): void {
  const B = 2, T = 3;
  const base = createModel(config, { seed: 3 });
  const rng = new Rng(4);
  const p64 = Float64Array.from(base.params, (v) => v + o.perturb * rng.normal());
  const model: Model = { config, layout: base.layout, params: f32(p64) };
  const ws = createWorkspace(config, B, T, { float64: true });
  const input = new Int32Array([1, 6, 2, 0, 6, 6]);
  const g64 = new Float64Array(p64.length);
  const inputs: Record<string, Float64Array> = {};
  const grads: Record<string, Float64Array> = {};
  for (const [name, { offset, shape }] of Object.entries(model.layout)) {
    const n = shape.reduce((a, b) => a * b, 1);
    inputs[name] = p64.subarray(offset, offset + n);
    grads[name] = g64.subarray(offset, offset + n);
  }
  const opts: ModelForwardOptions = {
    ...(o.sigma ? { sigma: o.sigma } : {}),
    ...(o.dropout ? { dropout: { seed: 5, step: 2, firstRow: 0 } } : {}),
  };
  const result = gradcheck({
    inputs,
    forward: () => modelForward(model, ws, input, B, T, opts) as unknown as Float64Array,
    backward: (dout) => {
      g64.fill(0);
      modelBackward(model, ws, f32(dout), f32(g64));
      return grads;
    },
    maxPerInput: o.maxPerInput,
    rtol: 1e-5,
    atol: 1e-7, // FD round-off is ~1e-9 here; the key bias has an exactly zero gradient
  });
  assert.ok(result.checked > o.minChecked, `checked ${result.checked}`);
}
