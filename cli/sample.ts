/**
 * `sample`: generates text from a checkpoint by iterative unmasking.
 *
 * @module
 */

import { decode, sampleAsync, type SampleMethod } from "../mod.ts";
import { choice, commonHelp, evalBackendOf, int, openBackendOf, parse, str } from "./args.ts";
import { InputError, UsageError } from "./errors.ts";
import { readCheckpoint, samplerOutput } from "./inputs.ts";

/** The samplers. */
const METHODS: readonly SampleMethod[] = ["ancestral", "confidence", "euler", "tweedie"];
/** Tokens in all, by default (at most the model's context). */
const SAMPLE_LENGTH = 128;
/** Denoising steps, by default. */
export const SAMPLE_STEPS = 64;

const OPTIONS = {
  checkpoint: { type: "string" },
  prompt: { type: "string" },
  suffix: { type: "string" },
  infill: { type: "string" },
  length: { type: "string" },
  steps: { type: "string" },
  seed: { type: "string" },
  method: { type: "string" },
  "show-steps": { type: "boolean" },
  backend: { type: "string" },
  workers: { type: "string" },
  weights: { type: "string" },
} as const;

/** The help text. */
export function sampleHelp(): string {
  return `Usage: deno task sample --checkpoint <dir> [options]

Generates text from a trained checkpoint by iterative unmasking.

Options:
  --checkpoint <dir>  a run directory, a model.safetensors file, or a directory converted
                      from SEDD or MDLM by tools/convert_checkpoint.py (required)
  --prompt <text>     the text to continue (default: "")
  --suffix <text>     text fixed at the end of the sample
  --infill <template> fixed text with gaps, e.g. "The whale [MASK:20] the sea" (alone)
  --length <n>        tokens in all, prompt included (default: ${SAMPLE_LENGTH}, at most the context)
  --steps <n>         denoising steps (default: ${SAMPLE_STEPS})
  --seed <n>          sampling seed (default: 0)
  --method <name>     ${METHODS.join(" | ")} (default: ${METHODS[0]}; euler for a
                      converted SEDD checkpoint, as SEDD samples)
  --show-steps        print the text after every step, masks shown as _
  --workers <n>       a DiT's forward passes on n worker threads, the same sample as on one;
                      0 runs in-process (default: 0; other models always run in-process)
  --weights <how>     copy | stage: each worker copies the weights once (default), or
                      stages each matmul's weight from the shared ones (less memory)
${commonHelp(22)}
`;
}

/**
 * Runs `sample` with its flags.
 *
 * @param args The flags after `sample`.
 * @returns The exit code.
 */
export async function sampleCommand(args: string[]): Promise<number> {
  const v = parse(args, OPTIONS);
  if (v.help) {
    console.log(sampleHelp());
    return 0;
  }
  const checkpoint = str(v.checkpoint);
  if (!checkpoint) throw new UsageError("Missing --checkpoint: expected a run directory");
  if (v.infill !== undefined && (v.prompt !== undefined || v.suffix !== undefined)) {
    throw new UsageError(
      "Invalid flags: expected --infill alone, got it with --prompt or --suffix",
    );
  }
  const lengthFlag = int("length", v.length, 1);
  const steps = int("steps", v.steps, 1) ?? SAMPLE_STEPS;
  const seed = int("seed", v.seed, 0) ?? 0;
  const method = choice("method", v.method, METHODS);
  const workers = int("workers", v.workers, 0) ?? 0;
  const weights = choice("weights", v.weights, ["copy", "stage"] as const);
  const { model, tokenizer, step, metadata } = await readCheckpoint(checkpoint);
  const seddDit = (model.config as { kind?: string }).kind === "dit" &&
    (model.config as { output?: string }).output === "sedd";
  const context = model.config.context;
  if (lengthFlag !== undefined && lengthFlag > context) {
    throw new InputError(
      `Invalid --length: expected at most the model's context ${context}, got ${lengthFlag}`,
    );
  }
  const infill = str(v.infill);
  // An infill template sets its own length unless --length says otherwise.
  const length = lengthFlag ??
    (infill !== undefined ? undefined : Math.min(SAMPLE_LENGTH, context));
  const prompt = infill !== undefined ? undefined : str(v.prompt) ?? "";
  console.error(`Loaded ${checkpoint} (step ${step}, ${model.params.length} parameters)`);
  const dit = (model.config as { kind?: string }).kind === "dit";
  // A DiT given --workers samples on the CPU pool; auto looks at the GPU otherwise. The GPU
  // context resolved here is the one sampleAsync samples on: acquired and checked once.
  const { backend, gpu } = dit && workers > 1
    ? await openBackendOf(v.backend, workers)
    : await evalBackendOf(v.backend);
  try {
    if (workers > 1) {
      console.error(
        dit
          ? `Workers: ${workers} (the DiT's forward passes)`
          : `Workers: none (--workers applies to a DiT; this model samples in-process)`,
      );
    }
    const out = await sampleAsync(model, tokenizer, {
      backend,
      gpu,
      workers,
      weights,
      prompt,
      suffix: str(v.suffix),
      infill,
      length,
      steps,
      seed,
      method: method ?? (seddDit ? "euler" : undefined),
      ...samplerOutput(metadata),
      onStep: v["show-steps"]
        ? (ids: Int32Array, k: number) => {
          // Runs of revealed tokens decode together (a byte-level token may be half a character).
          let text = "", run: number[] = [];
          for (const id of ids) {
            if (id !== tokenizer.maskId) run.push(id);
            else (text += decode(tokenizer, run) + "_"), run = [];
          }
          text += decode(tokenizer, run);
          console.log(`[${String(k).padStart(3)}] ${text.replace(/\n/g, " ")}`);
        }
        : undefined,
    });
    console.log(out.text);
  } finally {
    await gpu?.destroy().catch(() => {});
  }
  return 0;
}
