/**
 * The page's sampling worker: runs `sampleAsync()` off the main thread, on a CPU backend or on
 * WebGPU (`options.backend: "webgpu"`, the worker's own device), and posts the sequence after
 * every step, so the denoising view fills in live while the page stays responsive.
 *
 * In: {@linkcode SampleRequest}. Out: `{ type: "step", step, ids }` per step, then
 * `{ type: "done", text, ids, evaluations, backend }`, or `{ type: "error", message }`.
 *
 * @module
 */

import { createModel, type DitConfig, type ModelConfig } from "../src/model/mod.ts";
import { sampleAsync, type SampleTextOptions } from "../src/sampler/mod.ts";
import { convertedSampling } from "../src/checkpoint/mod.ts";
import { tokenizerFromJSON } from "../src/tokenizer/mod.ts";

/** What the page sends. */
export interface SampleRequest {
  /** The model's config (a DiT's for a converted SEDD / MDLM checkpoint). */
  config: ModelConfig | DitConfig;
  /** Its parameters (a copy; transferred). */
  params: Float32Array;
  /** The tokenizer as JSON. */
  tokenizer: string;
  /** Prompt, suffix or infill, length, steps, seed, method, backend, how to read the output. */
  options: Omit<SampleTextOptions, "onStep" | "rng">;
  /** Post every step (the live view), or only the result. */
  live: boolean;
  /** A converted DiT's metadata: its graph, noise schedule and time conditioning. */
  converted?: Record<string, string>;
}

/** What the worker posts back. */
export type SampleMessage =
  | { type: "step"; step: number; ids: Int32Array }
  | { type: "done"; text: string; ids: Int32Array; evaluations: number; backend: string }
  | { type: "error"; message: string };

const post = (m: SampleMessage) => (self as unknown as Worker).postMessage(m);

self.onmessage = async (e: MessageEvent<SampleRequest>) => {
  try {
    const { config, params, tokenizer: json, options, live, converted } = e.data;
    const model = (config as { kind?: string }).kind === "dit"
      ? createModel(config as DitConfig, { params })
      : createModel(config as ModelConfig, { params });
    const tokenizer = tokenizerFromJSON(json);
    const out = await sampleAsync(model, tokenizer, {
      ...options,
      ...(converted ? convertedSampling(converted) : {}),
      onStep: live ? (ids, step) => post({ type: "step", step, ids }) : undefined,
    });
    const backend = options.backend === "webgpu" ? "webgpu" : "cpu";
    post({ type: "done", text: out.text, ids: out.ids, evaluations: out.evaluations, backend });
  } catch (err) {
    post({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
};
