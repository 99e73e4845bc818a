/**
 * Checkpoints: the safetensors format, models to and from it under PyTorch's state-dict names
 * (`load_state_dict(strict=True)` works both ways), and the bytes of the trainer's two checkpoint
 * files, `model.safetensors` and `optimizer.safetensors`. Nothing here does I/O, so all of it
 * runs in a browser.
 *
 * @example Save and load a model
 * ```ts
 * import { modelFromSafetensors, modelToSafetensors } from "./mod.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 20, seed: 7 });
 * const { model: loaded, metadata } = modelFromSafetensors(
 *   modelToSafetensors(model, { note: "hello" }),
 * );
 * assert.deepEqual(loaded.config, model.config);
 * assert.deepEqual(loaded.params, model.params);
 * assert.equal(metadata.note, "hello");
 * ```
 *
 * @module
 */

export {
  bf16ToFloat,
  type Dtype,
  type DtypeArrays,
  f16ToFloat,
  FLOAT_DTYPES,
  type FloatTensorReader,
  floatTensorReaders,
  parseSafetensors,
  readFloats,
  readSafetensorsHeader,
  type Safetensors,
  type SafetensorsHeader,
  serializeSafetensors,
  type Tensor,
  type TensorData,
  type TensorEntry,
  type TensorInput,
} from "./safetensors.ts";
export {
  ditFromSafetensors,
  modelFromSafetensors,
  type ModelFromSafetensorsOptions,
  modelToSafetensors,
} from "./model_io.ts";
export {
  CHECKPOINT_FORMAT,
  type LoadedCheckpoint,
  type LoadedRun,
  modelCheckpointBytes,
  optimizerBytes,
  parseModelCheckpoint,
  parseOptimizer,
} from "./run_files.ts";
export {
  CONVERTED_FORMAT,
  type ConvertedConfig,
  convertedConfigJSON,
  type ConvertedFiles,
  type ConvertedNoise,
  convertedSampling,
  convertedSchedule,
  type LoadedDit,
  parseConvertedConfig,
  parseConvertedDit,
} from "./converted.ts";
