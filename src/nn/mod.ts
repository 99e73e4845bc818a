/**
 * The ops of the transformer, each a forward/backward pair over `Float32Array`s writing into
 * caller-owned buffers (backward passes ADD into their gradients).
 *
 * @example A linear layer and its gradient
 * ```ts
 * import { linearBackward, linearForward } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const x = new Float32Array([1, 2]); // (N=1, IC=2)
 * const w = new Float32Array([3, 4]); // (OC=1, IC=2)
 * const y = new Float32Array(1);
 * linearForward(y, x, w, null, 1, 2, 1);
 * assert.equal(y[0], 11);
 * const dx = new Float32Array(2), dw = new Float32Array(2);
 * linearBackward(dx, dw, null, new Float32Array([1]), x, w, 1, 2, 1);
 * assert.deepEqual([...dx], [3, 4]);
 * assert.deepEqual([...dw], [1, 2]);
 * ```
 *
 * @module
 */

export {
  erf,
  erfc,
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
  siluBackward,
  siluForward,
} from "./activations.ts";
export {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
  timestepEmbedding,
} from "./adaln.ts";
export {
  attentionBackward,
  attentionForward,
  ropeBackward,
  ropeForward,
  ropeTables,
} from "./attention.ts";
export {
  type BackendName,
  defaultBackend,
  type NNBackend,
  tsBackend,
  wasmBackend,
  wasmBackendFloats,
} from "./backend.ts";
export { crossEntropyBackward, crossEntropyForward } from "./cross_entropy.ts";
export { dropoutBackward, dropoutForward, dropoutMask } from "./dropout.ts";
export { embeddingBackward, embeddingForward } from "./embedding.ts";
export { addScaledExp, expFast, expScaledInPlace, expSum } from "./fast_exp.ts";
export { LAYERNORM_EPS, layernormBackward, layernormForward } from "./layernorm.ts";
export { linearBackward, linearForward } from "./linear.ts";
export { residualForward } from "./residual.ts";
