/**
 * Parameter initialisation as PyTorch does it for the module tree of `layout.ts`:
 *
 * - `nn.Embedding`: N(0, 1).
 * - `nn.Linear` (`linear1`, `linear2`, `out_proj.weight`, `head`): Kaiming-uniform with
 *   a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias from the same range.
 * - `MultiheadAttention`: Xavier-uniform `in_proj_weight`, U(±sqrt(6 / (fan_in + fan_out)))
 *   with fan_in = C, fan_out = 3C; zero `in_proj_bias` and `out_proj.bias`.
 * - `nn.LayerNorm`: ones and zeros.
 *
 * - Time conditioning (SEDD): `sigma_map` linears as `nn.Linear`; every `adaLN_modulation` and
 *   the `head` zero-initialised (adaLN-Zero: each block starts as the identity and the output
 *   starts at zero, as SEDD's DiT blocks and final layer do).
 *
 * Draws come from one seeded {@linkcode Rng} in table order. (PyTorch's `TransformerEncoder`
 * deep-copies one layer, so its layers start identical; here each layer gets its own draw.)
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { type Layout, paramTable } from "./layout.ts";
import { Rng } from "../rng.ts";

/**
 * Fills `params` with a fresh PyTorch-style initialisation.
 *
 * @param params The flat parameter buffer, written in place.
 * @param layout Its layout.
 * @param config The model config.
 * @param seed Seed of the generator (32-bit unsigned integer).
 *
 * @example LayerNorm weights start at one
 * ```ts
 * import { initParams } from "./init.ts";
 * import { buildLayout } from "./layout.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const config = resolveConfig("tiny", { vocabSize: 10 });
 * const { layout, size } = buildLayout(config);
 * const params = new Float32Array(size);
 * initParams(params, layout, config, 1);
 * assert.equal(params[layout["transformer.norm.weight"].offset], 1);
 * ```
 */
export function initParams(
  params: Float32Array,
  layout: Layout,
  config: ModelConfig,
  seed: number,
): void {
  const rng = new Rng(seed);
  for (const { name, shape } of paramTable(config)) {
    const { offset } = layout[name];
    const n = shape.reduce((a, b) => a * b, 1);
    const view = params.subarray(offset, offset + n);
    const uniform = (bound: number) => {
      for (let i = 0; i < n; i++) view[i] = (2 * rng.uniform() - 1) * bound;
    };
    if (name === "embed.weight" || name === "pos_embed.weight") {
      for (let i = 0; i < n; i++) view[i] = rng.normal();
    } else if (name.endsWith("in_proj_weight")) {
      uniform(Math.sqrt(6 / (shape[0] + shape[1])));
    } else if (
      name.includes("adaLN_modulation") ||
      (config.timeConditioning === true && name.startsWith("head."))
    ) {
      view.fill(0);
    } else if (name.endsWith("in_proj_bias") || name.endsWith("out_proj.bias")) {
      view.fill(0);
    } else if (/norm\d?\.weight$/.test(name)) {
      view.fill(1);
    } else if (/norm\d?\.bias$/.test(name)) {
      view.fill(0);
    } else if (name.endsWith(".weight")) {
      uniform(1 / Math.sqrt(shape[1]));
    } else if (name.endsWith(".bias")) {
      // A Linear bias: the fan-in is the second dimension of its weight.
      const weight = layout[name.slice(0, -"bias".length) + "weight"];
      uniform(1 / Math.sqrt(weight.shape[1]));
    } else {
      throw new RangeError(`No initialiser for tensor: expected a known name, got "${name}"`);
    }
  }
}
