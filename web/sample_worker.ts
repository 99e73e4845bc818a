/**
 * The page's sampling worker: runs `sample()` off the main thread and posts the sequence after
 * every step, so the denoising view fills in live while the page stays responsive.
 *
 * In: {@linkcode SampleRequest}. Out: `{ type: "step", step, ids }` per step, then
 * `{ type: "done", text, ids, evaluations }`, or `{ type: "error", message }`.
 *
 * @module
 */

import { createModel, type ModelConfig } from "../src/model/mod.ts";
import { sample, type SampleTextOptions } from "../src/sampler/mod.ts";
import { tokenizerFromJSON } from "../src/tokenizer/mod.ts";

/** What the page sends. */
export interface SampleRequest {
  /** The model's config. */
  config: ModelConfig;
  /** Its parameters (a copy; transferred). */
  params: Float32Array;
  /** The tokenizer as JSON. */
  tokenizer: string;
  /** Prompt, suffix or infill, length, steps, seed, method, and how to read the output. */
  options: Omit<SampleTextOptions, "onStep" | "rng">;
  /** Post every step (the live view), or only the result. */
  live: boolean;
}

/** What the worker posts back. */
export type SampleMessage =
  | { type: "step"; step: number; ids: Int32Array }
  | { type: "done"; text: string; ids: Int32Array; evaluations: number }
  | { type: "error"; message: string };

const post = (m: SampleMessage) => (self as unknown as Worker).postMessage(m);

self.onmessage = (e: MessageEvent<SampleRequest>) => {
  try {
    const { config, params, tokenizer: json, options, live } = e.data;
    const model = createModel(config, { params });
    const tokenizer = tokenizerFromJSON(json);
    const out = sample(model, tokenizer, {
      ...options,
      onStep: live ? (ids, step) => post({ type: "step", step, ids }) : undefined,
    });
    post({ type: "done", text: out.text, ids: out.ids, evaluations: out.evaluations });
  } catch (err) {
    post({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
};
