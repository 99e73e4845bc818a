/**
 * Ours beside PyTorch: runs bench/throughput.ts (workers 1 and 2) and
 * bench/reference/pytorch_step.py (torch threads 1 and 2) at the same preset, batch and context,
 * keeps the best of each, and prints a markdown table and the ratio ours / PyTorch.
 *
 * ```sh
 * deno run --allow-read --allow-env --allow-run bench/compare.ts --preset small --batch 16 --context 128
 * deno run --allow-read --allow-env --allow-run bench/compare.ts --preset seed --batch 2 --context 8
 * ```
 *
 * Both sides run with the environment as it is, so on the same OpenBLAS with the same kernel
 * (ours through the `blas` backend, `--backend` to choose another). `--unset-openblas-env`
 * removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from both sides' environments (those commands
 * alone): where they pin `Haswell` on an AVX-512 machine, Debian's OpenBLAS 0.3.21 then picks
 * its AVX-512 kernel. Both sides use the same vocabulary (512, throughput.ts's).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Throughput } from "./throughput.ts";

/** A JSON line of throughput.ts or of reference/pytorch_step.py (which names no backend). */
type Row = Omit<Throughput, "params" | "backend"> & { backend?: string };

const here = new URL(".", import.meta.url).pathname;
const PY = "/usr/bin/python3";

async function run(cmd: string, args: string[], env?: Record<string, string>, clear?: string[]) {
  const e = { ...Deno.env.toObject(), ...env };
  for (const k of clear ?? []) delete e[k];
  const out = await new Deno.Command(cmd, { args, env: e, clearEnv: true, stdout: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n");
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code})`);
  return JSON.parse(text[text.length - 1]) as Row;
}

async function torchInstalled(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PY, { args: ["-c", "import torch"], stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

function best(rows: Row[]): Row {
  return rows.reduce((a, b) => (b.tokensPerSecond > a.tokensPerSecond ? b : a));
}

if (import.meta.main) {
  const v = parseArgs({
    args: Deno.args,
    options: {
      preset: { type: "string", default: "small" },
      batch: { type: "string" },
      context: { type: "string" },
      steps: { type: "string" },
      backend: { type: "string", default: "auto" },
      "unset-openblas-env": { type: "boolean" },
    },
  }).values;
  const seed = v.preset === "seed";
  const batch = v.batch ?? (seed ? "2" : "16");
  const context = v.context ?? (seed ? "8" : "128");
  const steps = v.steps ?? (seed ? "200" : "10");
  const warmup = seed ? "20" : "3";
  const shape = ["--preset", v.preset!, "--batch", batch, "--context", context];
  const common = [...shape, "--steps", steps, "--warmup", warmup, "--json"];

  const clear = v["unset-openblas-env"] ? ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"] : [];
  const ours: Row[] = [];
  for (const w of ["1", "2"]) {
    ours.push(
      await run(
        Deno.execPath(),
        [
          "run",
          "--allow-read",
          "--allow-env",
          "--allow-ffi",
          `${here}throughput.ts`,
          ...common,
          "--backend",
          v.backend!,
          "--workers",
          w,
        ],
        {},
        clear,
      ),
    );
  }
  const theirs: Row[] = [];
  const hasTorch = await torchInstalled();
  if (hasTorch) {
    for (const t of ["1", "2"]) {
      theirs.push(
        await run(
          PY,
          [
            `${here}reference/pytorch_step.py`,
            ...common,
            "--vocab",
            "512",
            "--threads",
            t,
          ],
          {},
          clear,
        ),
      );
    }
  }
  const line = (name: string, r: Row) =>
    `| ${name} | ${r.workers} | ${r.msPerStep} | ${
      r.tokensPerSecond.toLocaleString("en-US")
    } | ${r.peakRssMB} |`;
  console.log(
    `\n${v.preset} B=${batch} T=${context}, OPENBLAS_CORETYPE ${
      v["unset-openblas-env"] ? "unset" : (Deno.env.get("OPENBLAS_CORETYPE") ?? "unset")
    } on both sides\n`,
  );
  console.log("| system | workers/threads | ms/step | tokens/s | peak RSS MB |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const r of ours) console.log(line(`@sedd/core (${r.backend})`, r));
  for (const r of theirs) console.log(line("PyTorch", r));
  if (!hasTorch) {
    console.log(
      "\nPyTorch is not installed: apt-get install python3-torch libopenblas0-pthread",
    );
  } else {
    const a = best(ours), b = best(theirs);
    console.log(
      `\nbest: ours ${a.tokensPerSecond} tokens/s (${a.workers} workers), PyTorch ` +
        `${b.tokensPerSecond} (${b.workers} threads): ours / PyTorch = ` +
        `${(a.tokensPerSecond / b.tokensPerSecond).toFixed(2)}x`,
    );
  }
}
