/**
 * Files on disk, for Deno, Bun and Node (not the browser): run directories, checkpoints, corpora,
 * and the default corpus.
 *
 * `train()` and the command line write a run directory (`model.safetensors`,
 * `optimizer.safetensors`, `metrics.jsonl`, `loss.svg`); these read it back. This module is apart
 * from the main one because it imports `node:fs`, which a browser does not have.
 *
 * @example Train into a run directory, then load its checkpoint
 * ```ts
 * import { loadCheckpoint, loadRun } from "./mod.ts";
 * import { train } from "../../mod.ts";
 * import { makeTempDir, removeDir } from "../io.ts";
 * import assert from "node:assert/strict";
 *
 * const out = await makeTempDir();
 * const text = "the whale swam in the sea. ".repeat(40);
 * await train({ text, model: "tiny", steps: 2, batch: 2, context: 8, workers: 0, out, tokenizerVocabSize: 270 });
 * const { step, model, tokenizer } = await loadCheckpoint(out);
 * assert.equal(step, 2);
 * assert.equal((await loadRun(out)).settings.batch, 2);
 * assert.equal(model.config.vocabSize, tokenizer.vocabSize);
 * await removeDir(out);
 * ```
 *
 * @module
 */

export { linkLatest, readCorpus, type ReadCorpusOptions } from "../io.ts";
export {
  loadAnyCheckpoint,
  loadCheckpoint,
  loadConverted,
  type LoadedCheckpoint,
  type LoadedDit,
  type LoadedRun,
  loadRun,
} from "../train/run_dir.ts";
export { mobyDick } from "./moby_dick.ts";
// The types the loaders return, as the main module exports them.
export type { Model } from "../model/model.ts";
export type { DitModel } from "../model/dit.ts";
export type { Tokenizer } from "../tokenizer/types.ts";
export type { AdamWState } from "../optim/adamw.ts";
