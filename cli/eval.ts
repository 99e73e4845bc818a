/**
 * `eval`: the diffusion bound of a checkpoint on held-out text.
 *
 * @module
 */

import {
  encode,
  type EvalReport,
  evaluateAsync,
  type GraphName,
  joinDocuments,
  LOSS_NAMES,
  type LossName,
  splitTokens,
  TRAIN_DEFAULTS,
} from "../mod.ts";
import { mobyDick, readCorpus } from "../src/files/mod.ts";
import { commonHelp, evalBackendOf, int, num, parse, str } from "./args.ts";
import { InputError, UsageError } from "./errors.ts";
import { readCheckpoint, runSettings, samplerOutput } from "./inputs.ts";

/** Monte-Carlo draws per window, by default. */
const EVAL_SAMPLES = 8;
/** The held-out fraction of a run whose settings do not say (the trainer's default). */
const HELD_OUT_FRACTION = TRAIN_DEFAULTS.heldOutFraction;

const OPTIONS = {
  checkpoint: { type: "string" },
  data: { type: "string" },
  "held-out": { type: "string" },
  samples: { type: "string" },
  seed: { type: "string" },
  backend: { type: "string" },
} as const;

/** The help text. */
export function evalHelp(): string {
  return `Usage: deno task eval --checkpoint <dir> [options]

Estimates the diffusion bound of a checkpoint on held-out text: nats per token, bits per
character and the perplexity bound, with a Monte-Carlo standard error. The bound is the one of
the loss the checkpoint was trained with (its metadata): SEDD's DWDSE for score-entropy, on its
graph; MDLM's ELBO for elbo, and for seed (the notebook's loss, which has no bound of its own).

Options:
  --checkpoint <dir>  a run directory, a model.safetensors file, or a directory converted
                      from SEDD or MDLM by tools/convert_checkpoint.py (required; its own
                      loss, graph and noise schedule)
  --data <path>       held-out text: a .txt file or a folder of .txt files, evaluated whole
                      (default: the run's own data, else Moby-Dick, of which only the tail
                      that the trainer held out is evaluated)
  --held-out <f>      evaluate only the tail of the data, as a fraction (default without
                      --data: the run's held-out fraction, ${HELD_OUT_FRACTION} unless it was changed; with
                      --data: none, the whole of it)
  --samples <n>       Monte-Carlo draws per window (default: ${EVAL_SAMPLES})
  --seed <n>          noise seed (default: 0)
${commonHelp(22)}
`;
}

/**
 * The bound that scores a checkpoint, from the loss and graph in its metadata: SEDD's DWDSE for
 * score entropy (either graph), MDLM's ELBO otherwise. The notebook's `seed` loss has no bound of
 * its own; its logits are read as the ELBO's SUBS parameterisation reads them, so `seed` models
 * get the `elbo` bound (`note` says so).
 */
function checkpointBound(file: string, metadata: Record<string, string>): {
  trained: string;
  loss: "elbo" | "score-entropy";
  graph: GraphName;
  note?: string;
} {
  const trained = metadata.loss ?? "seed"; // as samplerOutput reads it
  const graph = metadata.graph ?? "absorb";
  if (!LOSS_NAMES.includes(trained as LossName)) {
    throw new InputError(
      `Unknown loss in the metadata of ${file}: expected one of ${LOSS_NAMES.join(", ")}, got ${
        JSON.stringify(trained)
      }`,
    );
  }
  if (graph !== "absorb" && graph !== "uniform") {
    throw new InputError(
      `Unknown graph in the metadata of ${file}: expected "absorb" or "uniform", got ${
        JSON.stringify(graph)
      }`,
    );
  }
  if (trained === "score-entropy") return { trained, loss: "score-entropy", graph };
  return {
    trained,
    loss: "elbo",
    graph,
    note: trained === "seed"
      ? "the seed loss has no bound of its own: scored with the elbo bound, its logits read as " +
        "MDLM's SUBS parameterisation reads them"
      : undefined,
  };
}

/**
 * Runs `eval` with its flags.
 *
 * @param args The flags after `eval`.
 * @returns The exit code.
 */
export async function evalCommand(args: string[]): Promise<number> {
  const v = parse(args, OPTIONS);
  if (v.help) {
    console.log(evalHelp());
    return 0;
  }
  const checkpoint = str(v.checkpoint);
  if (!checkpoint) throw new UsageError("Missing --checkpoint: expected a run directory");
  const fractionFlag = num("held-out", v["held-out"]);
  if (fractionFlag !== undefined && fractionFlag >= 1) {
    throw new InputError(`Invalid --held-out: expected a fraction < 1, got "${v["held-out"]}"`);
  }
  const samples = int("samples", v.samples, 1) ?? EVAL_SAMPLES;
  const seed = int("seed", v.seed, 0) ?? 0;
  const { model, tokenizer, step, metadata } = await readCheckpoint(checkpoint);
  const bound = checkpointBound(checkpoint, metadata);
  const reading = samplerOutput(metadata);
  const run = await runSettings(checkpoint);
  const data = str(v.data);
  const runData = typeof run.data === "string" ? run.data : undefined;
  const dataName = data ?? (runData !== undefined ? `the run's data (${runData})` : "Moby-Dick");
  const path = data ?? runData;
  const docs = path !== undefined ? await readCorpus(path) : [await mobyDick()];
  const stream = joinDocuments(
    docs.map((d) => encode(tokenizer, d, { eot: false })),
    tokenizer.eotId,
  );
  // A file given with --data is held-out text: all of it, unless --held-out asks for a tail.
  // Otherwise the data is what the run trained on, and only the tail the trainer held out is
  // evaluated, split exactly as the trainer split it (its context and held-out fraction).
  const fraction = fractionFlag ??
    (data !== undefined ? undefined : run.heldOutFraction ?? HELD_OUT_FRACTION);
  if (fraction !== undefined && !(typeof fraction === "number" && fraction > 0)) {
    throw new InputError(
      `Nothing held out: expected the run's held-out fraction > 0, got ${fraction}; ` +
        "pass --data or --held-out",
    );
  }
  const heldOut = fraction === undefined ? stream : splitTokens(stream, {
    context: typeof run.context === "number" ? run.context : model.config.context,
    heldOutFraction: fraction,
  }).heldOut;
  console.error(
    `Evaluating ${checkpoint} (step ${step}, ${bound.trained} loss, ${bound.graph} graph) on ${
      fraction === undefined
        ? `all ${heldOut.length} tokens of ${dataName}`
        : `the last ${heldOut.length} tokens (held-out fraction ${fraction}) of ${dataName}`
    }, ${samples} draws per window, with the ${bound.loss} bound...`,
  );
  if (bound.note) console.error(`Note: ${bound.note}.`);
  const dit = (model.config as { kind?: string }).kind === "dit";
  // the GPU context resolved here is the one evaluateAsync runs on: acquired and checked once
  const { backend, gpu } = await evalBackendOf(v.backend, dit);
  let r: EvalReport;
  try {
    r = await evaluateAsync(model, heldOut, {
      samples,
      seed,
      tokenizer,
      loss: bound.loss,
      graph: bound.graph,
      backend,
      gpu,
      // a converted DiT's noise schedule and time conditioning (a trainer checkpoint has neither)
      schedule: reading.schedule,
      timeConditioned: reading.timeConditioned,
    });
  } finally {
    await gpu?.destroy().catch(() => {});
  }
  console.log(
    `nats/token ${r.natsPerToken.toFixed(4)} ± ${r.standardError.toFixed(4)}  ` +
      `bits/char ${r.bitsPerChar?.toFixed(4) ?? "-"}  perplexity bound ${
        r.perplexity.toFixed(2)
      }  ` +
      `(${r.loss} bound${bound.trained !== r.loss ? ` of a ${bound.trained}-loss model` : ""}, ` +
      `${r.graph} graph; ${r.tokens} tokens, ${r.windows} windows)`,
  );
  return 0;
}
