/**
 * One training step (lossAndGrad + AdamW: in the wasm module on the wasm and blas backends,
 * `adamwStep` on ts) per iteration, single thread, on each backend
 * (`wasm`: the WebAssembly SIMD kernels, `ts`: the plain TypeScript reference).
 *
 * ```sh
 * deno bench --allow-read bench/step_bench.ts           # deno bench groups (averages)
 * deno run --allow-read --allow-sys bench/step_bench.ts --medians   # medians of wall and CPU time
 * deno run --allow-read --allow-sys bench/step_bench.ts --medians --preset small --backend wasm
 * deno run --allow-read bench/step_bench.ts --profile --preset seed --backend wasm   # µs per op
 * ```
 *
 * `--profile` wraps every op of the workspace's backend in a timer and prints µs per step for
 * each, AdamW, the whole `lossAndGrad` and what of it ran outside the backend's ops (2,000 steps
 * of `seed`, 5 of `small`, after as many to warm up). The timers add their own cost, and an op
 * called inside another (none today) would count in both.
 *
 * `--medians` times each step on its own after warm-up and prints, per preset and backend, the
 * median wall-clock and CPU time (this process; one thread), tokens/s and steps/s, then one
 * JSON line per case. The machine's other load shows up in wall time more than in CPU time:
 * both are printed, with the load average.
 *
 * @module
 */

import process from "node:process";
import { loadavg } from "node:os";
import { createModel, createWorkspace, lossAndGrad } from "../src/model/model.ts";
import { adamwStep, createAdamW, createWasmAdamW } from "../src/optim/adamw.ts";
import type { BackendName } from "../src/nn/backend.ts";
import { Rng } from "../src/rng.ts";

type Preset = "seed" | "small";

const SHAPES: Record<Preset, { V: number; B: number; T: number }> = {
  seed: { V: 37, B: 2, T: 8 }, // the notebook's batch
  small: { V: 512, B: 16, T: 128 }, // the default training run
};

function setup(preset: Preset, backend: BackendName, timers?: Map<string, number>) {
  const { V, B, T } = SHAPES[preset];
  const model = createModel(preset, { vocabSize: V, seed: 1 });
  const ws = createWorkspace(model.config, B, T, { backend });
  if (timers) timeOps(ws.nn as unknown as Record<string, unknown>, timers);
  const grads = new Float32Array(model.params.length);
  const opt = createAdamW(model.params.length);
  // the trainer's main-thread AdamW: in the wasm module where the backend runs wasm kernels
  const adamw = backend === "ts" ? adamwStep : createWasmAdamW();
  const rng = new Rng(2);
  const N = B * T;
  const target = Int32Array.from({ length: N }, () => rng.int(V - 1));
  const input = target.map((t) => (rng.uniform() < 0.5 ? V - 1 : t));
  const weight = Float32Array.from(input, (t) => (t === V - 1 ? 1 : 0));
  let step = 0;
  const time = timers ? timed(timers) : (_: string, f: () => void) => f();
  return () => {
    time("grads.fill (bench)", () => grads.fill(0));
    const dropout = model.config.dropout > 0 ? { seed: 1, step, firstRow: 0 } : undefined;
    time(
      "lossAndGrad (all of it)",
      () =>
        lossAndGrad(model, { input, target, weight }, { batch: B, grads, workspace: ws, dropout }),
    );
    time("AdamW", () => adamw(model.params, grads, opt));
    step++;
  };
}

/** `time(name, f)` runs `f` and adds its milliseconds to `timers[name]`. */
function timed(timers: Map<string, number>) {
  return (name: string, f: () => void) => {
    const t0 = performance.now();
    f();
    timers.set(name, (timers.get(name) ?? 0) + performance.now() - t0);
  };
}

/** Replaces every method of `nn` by a timed call of itself (nested calls count in both). */
function timeOps(nn: Record<string, unknown>, timers: Map<string, number>) {
  for (const [name, f] of Object.entries(nn)) {
    if (typeof f !== "function") continue;
    nn[name] = (...args: unknown[]) => {
      const t0 = performance.now();
      const r = f(...args);
      timers.set(`  nn.${name}`, (timers.get(`  nn.${name}`) ?? 0) + performance.now() - t0);
      return r;
    };
  }
}

/** Prints where a step's time goes: µs per step for each timed part, sorted. */
function profile(preset: Preset, backend: BackendName, steps: number) {
  const timers = new Map<string, number>();
  const run = setup(preset, backend, timers);
  for (let i = 0; i < steps; i++) run();
  timers.clear();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) run();
  const total = (performance.now() - t0) / steps * 1000;
  const ops = [...timers.entries()].filter(([k]) => k.startsWith("  nn."));
  const inOps = ops.reduce((s, [, v]) => s + v, 0) / steps * 1000;
  const lag = (timers.get("lossAndGrad (all of it)") ?? 0) / steps * 1000;
  console.log(`${preset} ${backend}: ${total.toFixed(1)} µs/step with timers (${steps} steps)`);
  const rows = [...timers.entries(), [
    `  lossAndGrad outside the nn ops`,
    (lag - inOps) * steps / 1000,
  ]];
  for (const [name, ms] of rows.sort((a, b) => (b[1] as number) - (a[1] as number))) {
    console.log(`${(ms as number / steps * 1000).toFixed(1).padStart(9)} µs  ${name}`);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median wall and CPU milliseconds a step; `inner` steps per sample for tiny shapes. */
function measure(run: () => void, samples: number, inner: number) {
  for (let i = 0; i < Math.max(3, samples >> 2) * inner; i++) run();
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < samples; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let j = 0; j < inner; j++) run();
    wall.push((performance.now() - t0) / inner);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000 / inner);
  }
  return { wallMs: median(wall), cpuMs: median(cpu) };
}

if (import.meta.main && Deno.args.includes("--profile")) {
  const i = Deno.args.indexOf("--preset");
  const preset = (i >= 0 ? Deno.args[i + 1] : "seed") as Preset;
  const j = Deno.args.indexOf("--backend");
  profile(
    preset,
    (j >= 0 ? Deno.args[j + 1] : "wasm") as BackendName,
    preset === "seed" ? 2000 : 5,
  );
} else if (import.meta.main && Deno.args.includes("--medians")) {
  const arg = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 ? Deno.args[i + 1] : undefined;
  };
  const presets = (arg("--preset") ? [arg("--preset")] : ["seed", "small"]) as Preset[];
  const backends = (arg("--backend") ? [arg("--backend")] : ["wasm", "ts"]) as BackendName[];
  const lines: string[] = [];
  for (const preset of presets) {
    for (const backend of backends) {
      const small = preset === "small";
      const samples = Number(arg("--steps") ?? (small ? (backend === "ts" ? 5 : 15) : 31));
      const { wallMs, cpuMs } = measure(setup(preset, backend), samples, small ? 1 : 200);
      const { B, T } = SHAPES[preset];
      const tokensPerSecond = Math.round(B * T / wallMs * 1000);
      console.log(
        `${preset} B=${B} T=${T} ${backend}: median ${wallMs.toFixed(3)} ms/step wall, ` +
          `${cpuMs.toFixed(3)} ms CPU; ${tokensPerSecond} tokens/s, ` +
          `${Math.round(1000 / wallMs)} steps/s (${samples} samples)`,
      );
      lines.push(JSON.stringify({ preset, backend, batch: B, context: T, wallMs, cpuMs }));
    }
  }
  let load = "unknown (needs --allow-sys)";
  try {
    load = loadavg().map((x) => x.toFixed(2)).join(" ");
  } catch { /* no sys permission */ }
  console.log(`load average ${load}`);
  for (const l of lines) console.log(l);
} else {
  const seedWasm = setup("seed", "wasm"), seedTs = setup("seed", "ts");
  const smallWasm = setup("small", "wasm"), smallTs = setup("small", "ts");
  Deno.bench("train step: seed preset, V=37, B=2, T=8 (wasm)", {
    group: "seed",
    baseline: true,
  }, () => seedWasm());
  Deno.bench("train step: seed preset, V=37, B=2, T=8 (ts)", { group: "seed" }, () => seedTs());
  Deno.bench(
    "train step: small preset, V=512, B=16, T=128 (wasm)",
    { group: "small", baseline: true, n: 10, warmup: 2 },
    () => smallWasm(),
  );
  Deno.bench(
    "train step: small preset, V=512, B=16, T=128 (ts)",
    { group: "small", n: 3, warmup: 1 },
    () => smallTs(),
  );
}
