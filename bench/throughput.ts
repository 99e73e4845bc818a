/**
 * Training throughput: full training steps (the trainer's `takeStep`: batch draw, sharded
 * gradient, sum, clip, AdamW overlapped with the next step's start) at a preset, batch, context
 * and worker count. The last line printed is one JSON object:
 *
 * ```json
 * {"preset":"small","batch":16,"context":128,"workers":2,"msPerStep":...,"tokensPerSecond":...,"peakRssMB":...}
 * ```
 *
 * ```sh
 * deno run --allow-read bench/throughput.ts --preset small --batch 16 --context 128 --workers 2
 * deno run --allow-read --allow-sys bench/throughput.ts --compare   # 1 vs 2 workers, the ratio
 * ```
 *
 * With `--compare` it also prints the CPU time per step (all threads): when two workers use no
 * more CPU per step than one, a wall-clock ratio below 2x comes from other load on the cores.
 *
 * `msPerStep` is the median over the timed steps, after untimed warm-up steps (JIT, worker start).
 * Tokens are random ids over a 512-token vocabulary: the cost of a step does not depend on them.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { type ModelConfig, type PresetName, presets, resolveConfig } from "../src/model/config.ts";
import { BACKEND_CHOICES, type BackendChoice, resolveBackend } from "../src/nn/backend.ts";
import { createModel } from "../src/model/model.ts";
import { createAdamW } from "../src/optim/adamw.ts";
import { Rng } from "../src/rng.ts";
import { LOSS_NAMES, type LossName } from "../src/train/batch.ts";
import { createPool } from "../src/train/pool.ts";
import type { Settings } from "../src/train/setup.ts";
import { type PendingGradient, type StepContext, takeStep } from "../src/train/step.ts";

/** One measurement. */
export interface Throughput {
  preset: string;
  /** The backend the workers ran. */
  backend: string;
  /** Parameters of the measured model. */
  params: number;
  batch: number;
  context: number;
  workers: number;
  msPerStep: number;
  tokensPerSecond: number;
  peakRssMB: number;
}

/** A measurement with the process's CPU time per step (every thread, workers included). */
export interface Measured extends Throughput {
  /** CPU milliseconds per timed step, averaged; wall time above it means waiting or sharing. */
  cpuMsPerStep: number;
}

function rssMB(): number {
  return Deno.memoryUsage().rss / 2 ** 20;
}

/**
 * Times `steps` training steps after `warmup` untimed ones.
 *
 * @param o Shape, worker count, step counts, loss.
 * @returns The measurement.
 */
export async function measure(o: {
  preset: PresetName;
  batch: number;
  context: number;
  workers: number;
  steps: number;
  warmup: number;
  vocab: number;
  loss: LossName;
  microBatch?: number;
  backend?: BackendChoice;
  /** Shape overrides over the preset (width, depth, heads, feed-forward). */
  shape?: Partial<Pick<ModelConfig, "dModel" | "nLayers" | "nHeads" | "dFF">>;
}): Promise<Measured> {
  const config = resolveConfig({
    ...resolveConfig(o.preset, { vocabSize: o.vocab, context: o.context }),
    ...o.shape,
  });
  const model = createModel(config, { seed: 1 });
  const backend = resolveBackend(o.backend ?? "auto").backend;
  const rng = new Rng(1);
  const tokens = Int32Array.from({ length: 100_000 }, () => rng.int(o.vocab - 1));
  const pool = await createPool({
    config: model.config,
    params: model.params,
    batch: o.batch,
    context: o.context,
    workers: o.workers,
    seed: 1,
    loss: o.loss,
    microBatch: o.microBatch,
    backend,
  });
  // the trainer's step (src/train/step.ts): batch, gradient, clip, AdamW, the next step's
  // gradient started during AdamW
  const settings: Settings = {
    seed: 1,
    batch: o.batch,
    context: o.context,
    lr: 1e-3,
    warmup: 0,
    schedule: "constant",
    minLr: 0,
    clip: 1,
    weightDecay: 0.01,
    loss: o.loss,
    graph: "absorb",
    antithetic: false,
    timeConditioned: true,
    heldOutFraction: 0,
    evalBatches: 0,
    steps: o.warmup + o.steps,
    workers: o.workers,
    data: null,
    dataHash: "",
  };
  const ctx: StepContext = {
    pool,
    trainTokens: tokens,
    settings,
    vocabSize: o.vocab,
    optimizer: createAdamW(model.params.length),
  };
  const times: number[] = [];
  let peak = rssMB();
  let cpu0 = process.cpuUsage();
  let pending: PendingGradient | undefined;
  const total = o.warmup + o.steps;
  try {
    for (let s = 0; s < total; s++) {
      if (s === o.warmup) cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const next = s + 1 < total ? s + 1 : undefined;
      pending = (await takeStep(ctx, s, 1e-3, () => "", pending, next)).pending;
      if (s >= o.warmup) times.push(performance.now() - t0);
      peak = Math.max(peak, rssMB());
    }
  } finally {
    pool.terminate();
  }
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  return {
    preset: o.preset,
    backend,
    params: model.params.length,
    batch: o.batch,
    context: o.context,
    workers: pool.workers === 0 ? Math.min(o.workers, 1) : pool.workers,
    msPerStep: Number(ms.toFixed(2)),
    tokensPerSecond: Math.round(o.batch * o.context / (ms / 1000)),
    peakRssMB: Number(peak.toFixed(1)),
    cpuMsPerStep: Number(((cpu.user + cpu.system) / 1000 / o.steps).toFixed(1)),
  };
}

function jsonLine(m: Measured): string {
  const { cpuMsPerStep: _, ...r } = m;
  return JSON.stringify(r);
}

const HELP = `Usage: deno run --allow-read bench/throughput.ts [options]

  --preset <name>   ${Object.keys(presets).join(" | ")} (default: small)
  --batch <n>       sequences per step (default: 16)
  --context <n>     tokens per sequence (default: 128)
  --workers <n>     gradient workers; 0 or 1 in-process (default: 2)
  --steps <n>       timed steps (default: 10)
  --warmup <n>      untimed steps first (default: 3)
  --loss <name>     ${LOSS_NAMES.join(" | ")} (default: seed)
  --micro-batch <n> rows per forward/backward pass in a worker (default: 4)
  --backend <name>  ${BACKEND_CHOICES.join(" | ")} (default: auto)
  --vocab <n>       vocabulary size (default: 512)
  --d-model <n>, --layers <n>, --heads <n>, --dff <n>
                    the shape, over the preset's
  --compare         measure 1 and 2 workers and print the speed-up
  --json            print only the JSON line(s)
  --help            this text
`;

function int(name: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min) {
    console.error(`Invalid --${name}: expected an integer >= ${min}, got "${v}"`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  let v;
  try {
    v = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        preset: { type: "string" },
        batch: { type: "string" },
        context: { type: "string" },
        workers: { type: "string" },
        steps: { type: "string" },
        warmup: { type: "string" },
        loss: { type: "string" },
        "micro-batch": { type: "string" },
        backend: { type: "string" },
        vocab: { type: "string" },
        "d-model": { type: "string" },
        layers: { type: "string" },
        heads: { type: "string" },
        dff: { type: "string" },
        compare: { type: "boolean" },
        json: { type: "boolean" },
        help: { type: "boolean" },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${HELP}`);
    Deno.exit(2);
  }
  if (v.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const preset = (v.preset ?? "small") as PresetName;
  if (!(preset in presets)) {
    console.error(
      `Invalid --preset: expected one of ${Object.keys(presets).join(", ")}, got "${preset}"`,
    );
    Deno.exit(2);
  }
  const loss = (v.loss ?? "seed") as LossName;
  if (!LOSS_NAMES.includes(loss)) {
    console.error(`Invalid --loss: expected one of ${LOSS_NAMES.join(", ")}, got "${loss}"`);
    Deno.exit(2);
  }
  const base = {
    preset,
    loss,
    batch: int("batch", v.batch, 16, 1),
    context: int("context", v.context, 128, 1),
    steps: int("steps", v.steps, 10, 1),
    warmup: int("warmup", v.warmup, 3, 0),
    microBatch: v["micro-batch"] === undefined
      ? undefined
      : int("micro-batch", v["micro-batch"], 0, 1),
    vocab: int("vocab", v.vocab, 512, 2),
    backend: (v.backend ?? "auto") as BackendChoice,
    shape: Object.fromEntries(
      ([["dModel", "d-model"], ["nLayers", "layers"], ["nHeads", "heads"], ["dFF", "dff"]] as const)
        .filter(([, f]) => v[f] !== undefined)
        .map(([k, f]) => [k, int(f, v[f], 0, 1)]),
    ),
  };
  if (!BACKEND_CHOICES.includes(base.backend)) {
    console.error(
      `Invalid --backend: expected one of ${BACKEND_CHOICES.join(", ")}, got "${v.backend}"`,
    );
    Deno.exit(2);
  }
  const counts = v.compare ? [1, 2] : [int("workers", v.workers, 2, 0)];
  const results: Measured[] = [];
  for (const workers of counts) {
    const r = await measure({ ...base, workers });
    results.push(r);
    if (!v.json) {
      console.log(
        `${preset} (${r.params} params) B=${r.batch} T=${r.context} workers=${r.workers} ` +
          `${r.backend}: ${r.msPerStep} ms/step, ` +
          `${r.tokensPerSecond.toLocaleString("en-US")} tokens/s, peak RSS ${r.peakRssMB} MB, ` +
          `CPU ${r.cpuMsPerStep} ms/step`,
      );
    }
    if (v.json || !v.compare) console.log(jsonLine(r));
  }
  if (v.compare && !v.json) {
    const ratio = results[1].tokensPerSecond / results[0].tokensPerSecond;
    const cpuRatio = results[1].cpuMsPerStep / results[0].cpuMsPerStep;
    let load = "unknown (--allow-sys shows it)";
    try {
      load = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
    } catch { /* no sys permission */ }
    console.log(
      `speed-up 2 vs 1 workers: ${ratio.toFixed(2)}x (target >= 1.7x); CPU per step ` +
        `${cpuRatio.toFixed(2)}x that of one worker; load average ${load} on ` +
        `${navigator.hardwareConcurrency} cores`,
    );
    console.log(jsonLine(results[1]));
  }
}
