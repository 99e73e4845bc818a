/**
 * `train`: trains a model into a run directory, prints progress, then a few samples.
 *
 * @module
 */

import {
  type AnyModel,
  BACKEND_CHOICES,
  type BackendChoice,
  type GraphName,
  LOSS_NAMES,
  type ModelConfig,
  type PresetName,
  presets,
  sampleAsync,
  type StepInfo,
  train,
  TRAIN_DEFAULTS as D,
  type TrainOptions,
  type TrainResult,
} from "../mod.ts";
import {
  linkLatest,
  type LoadedCheckpoint,
  type LoadedDit,
  type LoadedRun,
  mobyDick,
  readCorpus,
} from "../src/files/mod.ts";
import { choice, commonHelp, int, num, parse, str, trainBackendOf } from "./args.ts";
import { InputError } from "./errors.ts";
import { readCheckpoint, readRun, samplerOutput } from "./inputs.ts";
import { SAMPLE_STEPS } from "./sample.ts";

/** The graphs `train()` accepts. */
const GRAPHS: readonly GraphName[] = ["absorb", "uniform"];
/** The prompts of the samples printed at the end. */
const PROMPTS = ["Call me Ishmael.", "The whale", "It was the"];
/** Samples printed at the end, by default. */
const SAMPLES = 3;
/** Their length (at most the context) and denoising steps. */
const END_SAMPLE = { length: 96, steps: 48 };
/** The least tokenizer vocabulary: the 256 bytes, EOT and MASK. */
const MIN_VOCAB = 258;

const OPTIONS = {
  data: { type: "string" },
  steps: { type: "string" },
  minutes: { type: "string" },
  workers: { type: "string" },
  preset: { type: "string" },
  out: { type: "string" },
  resume: { type: "string" },
  init: { type: "string" },
  seed: { type: "string" },
  batch: { type: "string" },
  context: { type: "string" },
  lr: { type: "string" },
  loss: { type: "string" },
  graph: { type: "string" },
  antithetic: { type: "boolean" },
  "no-antithetic": { type: "boolean" },
  vocab: { type: "string" },
  samples: { type: "string" },
  backend: { type: "string" },
} as const;

/** The help text; every default in it comes from `TRAIN_DEFAULTS` or the constants above. */
export function trainHelp(): string {
  return `Usage: deno task train [options]

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
  --init <dir>       fine-tune the weights of a checkpoint: a directory converted from SEDD or
                     MDLM by tools/convert_checkpoint.py, or a run directory; its tokenizer,
                     loss, graph and time conditioning are kept (a DiT: not on webgpu)
  --seed <n>         run seed (default: ${D.seed})
  --batch <n>        sequences per step (default: ${D.batch})
  --context <n>      tokens per sequence (default: ${D.context}, at most the preset's)
  --lr <x>           peak learning rate, warm-up then cosine decay to ${D.minLrFraction}x (default: ${D.lr})
  --loss <name>      ${LOSS_NAMES.join(" | ")} (default: ${D.loss}, or score-entropy on
                     the uniform graph; eval reports the bound of the loss)
  --graph <name>     ${
    GRAPHS.join(" | ")
  }: the noising graph of score-entropy (default: ${D.graph});
                     uniform trains with score-entropy and SEDD's time conditioning
  --antithetic       diffusion times spread evenly over the batch${
    D.antithetic ? " (the default)" : ""
  }
  --no-antithetic    independent diffusion times per sequence${D.antithetic ? "" : " (the default)"}
  --vocab <n>        tokenizer vocabulary size, at least ${MIN_VOCAB} (default: ${D.tokenizerVocabSize})
  --samples <n>      samples printed at the end, at most ${PROMPTS.length} (default: ${SAMPLES})
${commonHelp(21)}
`;
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

/**
 * A word for the shell: as it is when it has no special characters, else single-quoted.
 *
 * @param s The word.
 * @returns It, quoted where needed.
 */
export function shellQuote(s: string): string {
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

/**
 * The training data: `--data`, else a resumed run's own path, else Moby-Dick (a fresh run, or a
 * run that trained on it: `train()` checks that the text is the run's by its hash). Read here,
 * before any output, so that a missing, empty or unreadable corpus is the one line printed.
 */
async function trainingData(
  data: string | undefined,
  run: LoadedRun | undefined,
): Promise<{ source: Pick<TrainOptions, "data" | "text">; name: string }> {
  const saved = typeof run?.settings.data === "string" ? run.settings.data : undefined;
  const path = data ?? saved;
  if (path !== undefined) {
    await readCorpus(path);
    return { source: { data: path }, name: data ?? "its data" };
  }
  return { source: { text: await mobyDick() }, name: "Moby-Dick" };
}

/** Whether a config is a DiT's. */
function isDit(config: { kind?: unknown } | object): boolean {
  return (config as { kind?: unknown }).kind === "dit";
}

/** What `--init` starts from: a checkpoint's model and tokenizer and how it was trained. */
interface InitCheckpoint {
  model: LoadedCheckpoint["model"] | LoadedDit["model"];
  tokenizer: LoadedCheckpoint["tokenizer"];
  step: number;
  loss: TrainOptions["loss"];
  graph: GraphName;
  /** A DiT's: whether its network reads sigma (a converted MDLM's default is false). */
  timeConditioned: boolean | undefined;
}

/**
 * Reads the checkpoint of `--init`: a converted SEDD or MDLM directory, or a run directory or
 * `model.safetensors` of this trainer. The trainer draws sigma from the loglinear schedule, so a
 * converted checkpoint trained with another one is refused.
 */
async function initCheckpoint(path: string): Promise<InitCheckpoint> {
  const ckpt = await readCheckpoint(path);
  const meta = ckpt.metadata;
  if (meta.schedule !== undefined) {
    let noise: { type?: string } | null;
    try {
      noise = JSON.parse(meta.schedule);
    } catch {
      noise = null;
    }
    if (noise?.type !== "loglinear") {
      throw new InputError(
        `Unsupported --init ${path}: expected a checkpoint trained with the loglinear noise ` +
          `schedule (the one the trainer draws sigma from), got ${
            noise ? JSON.stringify(noise.type) : `unreadable schedule ${meta.schedule}`
          }`,
      );
    }
  }
  const loss = (meta.loss ?? "seed") as TrainOptions["loss"];
  return {
    model: ckpt.model,
    tokenizer: ckpt.tokenizer,
    step: ckpt.step,
    loss,
    graph: meta.graph === "uniform" ? "uniform" : "absorb",
    timeConditioned: isDit(ckpt.model.config) ? meta.timeConditioning !== "false" : undefined,
  };
}

/** Exit code of a run stopped by Ctrl+C (128 + SIGINT), as shells report it. */
export const INTERRUPTED = 130;

/** The C library, by platform, for `_exit`. */
const LIBC: Record<string, string> = {
  darwin: "libSystem.B.dylib",
  windows: "ucrtbase.dll",
};

/**
 * Ends the process with `code` now, through the C library's `_exit`, which runs no exit handlers:
 * a native library's own (OpenBLAS's) crash the process when they run while a worker thread is
 * inside one of its calls, which is where a second Ctrl+C finds them. `Deno.exit` where the C
 * library cannot be opened.
 */
function exitNow(code: number): never {
  try {
    const libc = Deno.dlopen(LIBC[Deno.build.os] ?? "libc.so.6", {
      _exit: { parameters: ["i32"], result: "void" },
    });
    libc.symbols._exit(code);
  } catch {
    // no FFI permission or no such library: the ordinary exit
  }
  Deno.exit(code);
}

/**
 * Runs `train()` with Ctrl+C wired to its `signal`: the first stops the run at the end of the
 * current step, where `train()` saves a checkpoint and resolves (`interrupted` is then true); a
 * second one exits with code 130 at once. Either way the run directory stays loadable: every file
 * in it is written to a temporary file and renamed into place.
 */
async function trainWithSignal(
  options: TrainOptions<AnyModel>,
): Promise<{ result: TrainResult<AnyModel>; interrupted: boolean }> {
  const stop = new AbortController();
  const onSignal = () => {
    if (stop.signal.aborted) {
      console.error("\nInterrupted again: exiting now; the last saved checkpoint is kept.");
      exitNow(INTERRUPTED);
    }
    console.error("\nStopping after this step and saving (Ctrl+C again to quit at once)...");
    stop.abort();
  };
  let listening = false;
  try {
    Deno.addSignalListener("SIGINT", onSignal);
    listening = true;
  } catch {
    // No signal support (e.g. some platforms): Ctrl+C ends the process as usual.
  }
  try {
    const result = await train({ ...options, signal: stop.signal });
    return { result, interrupted: stop.signal.aborted };
  } finally {
    if (listening) Deno.removeSignalListener("SIGINT", onSignal);
  }
}

/**
 * Runs `train` with its flags.
 *
 * @param args The flags after `train`.
 * @returns The exit code.
 */
export async function trainCommand(args: string[]): Promise<number> {
  const v = parse(args, OPTIONS);
  if (v.help) {
    console.log(trainHelp());
    return 0;
  }
  // Every value is checked before anything is read or printed.
  const preset = choice<PresetName>("preset", v.preset, Object.keys(presets) as PresetName[]) ??
    D.model;
  const graph = choice("graph", v.graph, GRAPHS);
  const lossFlag = choice("loss", v.loss, LOSS_NAMES);
  if (graph === "uniform" && lossFlag !== undefined && lossFlag !== "score-entropy") {
    throw new InputError(
      `Invalid --loss: expected score-entropy with --graph uniform, got "${lossFlag}"`,
    );
  }
  const loss = lossFlag ?? (graph === "uniform" ? "score-entropy" : undefined);
  if (v.antithetic && v["no-antithetic"]) {
    throw new InputError("Invalid flags: expected --antithetic or --no-antithetic, got both");
  }
  const steps = int("steps", v.steps, 1);
  const minutes = num("minutes", v.minutes) ?? (steps === undefined ? D.minutes : undefined);
  const workers = int("workers", v.workers, 0);
  const seed = int("seed", v.seed, 0);
  // Unset flags are left to train(): TRAIN_DEFAULTS for a fresh run, the saved settings for a
  // resumed one.
  const batch = int("batch", v.batch, 1);
  const context = int("context", v.context, 1);
  const lr = num("lr", v.lr);
  const antithetic = v.antithetic ? true : v["no-antithetic"] ? false : undefined;
  const vocab = int("vocab", v.vocab, MIN_VOCAB);
  const nSamples = int("samples", v.samples, 0) ?? SAMPLES;
  const resume = str(v.resume);
  const initPath = str(v.init);
  if (initPath !== undefined) {
    const clash = ["resume", "preset", "vocab"].filter((k) => v[k as keyof typeof v] !== undefined);
    if (clash.length > 0) {
      throw new InputError(
        `Invalid flags: expected --init without --${clash.join(", --")} (the checkpoint gives ` +
          `the model and its tokenizer), got both`,
      );
    }
  }

  const run = resume !== undefined ? await readRun(resume) : undefined;
  if (resume !== undefined && run === undefined) {
    throw new InputError(
      `Nothing to resume: expected a run directory with optimizer.safetensors, got "${resume}"`,
    );
  }
  const init = initPath !== undefined ? await initCheckpoint(initPath) : undefined;
  const start = run?.model ?? init?.model;
  const dit = start !== undefined && isDit(start.config);
  // The uniform graph has no mask token to condition on: the network needs the noise level (a
  // DiT always has its sigma_map).
  const timeConditioned = start
    ? dit || (start.config as { timeConditioning?: boolean }).timeConditioning === true
    : graph === "uniform";
  if (graph === "uniform" && !timeConditioned) {
    throw new InputError(
      `Invalid --graph uniform: expected a run trained with time conditioning, got "${
        resume ?? initPath
      }", ` +
        "trained without it",
    );
  }
  const { source, name } = await trainingData(str(v.data), run);
  // A DiT's run resumes with model: { kind: "dit" } (the run's own model is what trains).
  const model: TrainOptions<AnyModel>["model"] = init?.model ??
    (run && dit ? { kind: "dit" } : undefined) ??
    (timeConditioned && !run
      ? {
        ...presets[preset],
        ...(context !== undefined ? { context } : {}),
        timeConditioning: true,
      } as Partial<ModelConfig>
      : preset as PresetName);
  const out = resume ?? str(v.out) ?? `runs/${init ? "init" : preset}-${stamp(new Date())}`;

  const what = run
    ? `Resuming ${resume}`
    : init
    ? `Fine-tuning ${initPath} (step ${init.step}, ${init.model.params.length} parameters)`
    : `Training the ${preset} preset`;
  console.error(
    `${what} on ${name} for ${steps !== undefined ? `${steps} steps` : ""}${
      steps !== undefined && minutes !== undefined ? " or " : ""
    }${minutes !== undefined ? `${minutes} minutes` : ""}; run directory ${out}`,
  );
  // A DiT's backend is resolved by train() (CPU backends only: no webgpu), which says which pass.
  const backend = dit
    ? choice<BackendChoice>("backend", v.backend, BACKEND_CHOICES) ?? "auto"
    : (await trainBackendOf(v.backend, workers)).backend;
  const { result, interrupted } = await trainWithSignal({
    ...source,
    ...(init ? { tokenizer: init.tokenizer, timeConditioned: init.timeConditioned } : {}),
    backend,
    model,
    steps,
    minutes,
    workers,
    seed,
    batch,
    context,
    lr,
    loss: loss ?? init?.loss,
    graph: graph ?? init?.graph,
    antithetic,
    tokenizerVocabSize: vocab,
    out,
    resume,
    onStep: progressPrinter(minutes),
  });
  if (Deno.stderr.isTerminal()) console.error("");
  if (dit) console.error(`Backend: ${result.backend.note}`);
  const last = result.history.at(-1);
  const heldOut = result.history.findLast((h) => h.heldOutLoss !== undefined)?.heldOutLoss;
  const tps = result.history.length
    ? result.history.reduce((a, h) => a + h.tokensPerSecond, 0) / result.history.length
    : 0;
  console.error(
    `Done (${result.stopped}): ${result.step} steps, final loss ${last?.loss.toFixed(4) ?? "-"}, ` +
      `held-out ${heldOut?.toFixed(4) ?? "-"}, ${Math.round(tps).toLocaleString("en-US")} tok/s ` +
      `with ${result.workers || "no"} worker${
        result.workers === 1 ? "" : "s"
      } on ${result.backend.backend}.`,
  );
  const linked = out.startsWith("runs/") ? await linkLatest(out, "runs/latest") : false;
  console.error(`Wrote ${out}/model.safetensors, optimizer.safetensors, metrics.jsonl, loss.svg`);
  if (interrupted) {
    console.error(
      `Interrupted at step ${result.step}: resume with deno task train --resume ${shellQuote(out)}`,
    );
    return INTERRUPTED;
  }

  // Read the network as the run trained it: a resumed run's loss and graph are its saved ones.
  const output = samplerOutput({
    loss: result.loss,
    graph: result.graph,
    ...(init?.timeConditioned === false ? { timeConditioning: "false" } : {}),
  });
  for (let k = 0; k < Math.min(nSamples, PROMPTS.length); k++) {
    const s = await sampleAsync(result.model, result.tokenizer, {
      prompt: PROMPTS[k],
      length: Math.min(END_SAMPLE.length, result.model.config.context),
      steps: END_SAMPLE.steps,
      seed: k,
      // a DiT samples on its float32 pass with the default backend; after a run on the GPU,
      // a transformer samples there too
      backend: dit ? undefined : backend,
      // The uniform graph has no masks to unmask: SEDD's Euler sampler instead of ancestral.
      method: result.graph === "uniform" ? "euler" : undefined,
      ...output,
    });
    console.log(`\n--- sample ${k + 1} (prompt ${JSON.stringify(PROMPTS[k])}) ---\n${s.text}`);
  }
  const ckpt = linked ? "runs/latest" : out;
  console.log(
    `\nNext: deno task sample --checkpoint ${shellQuote(ckpt)} --prompt ${
      shellQuote(PROMPTS[0])
    } --length ${result.model.config.context} --steps ${SAMPLE_STEPS}`,
  );
  return 0;
}
