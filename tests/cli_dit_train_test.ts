// `deno task train --init <converted dir>`: fine-tuning a directory converted by
// tools/convert_checkpoint.py (the fixtures of tests/fixtures/dit/converted/) with its own
// tokenizer, run as a user runs it: one subprocess per command.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { exists, makeTempDir, removeDir, writeFileAtomic } from "../src/io.ts";
import { loadCheckpoint, loadConverted } from "../src/train/run_dir.ts";
import { cli } from "./cli_subprocess.ts";

const FIX = fileURLToPath(new URL("./fixtures/dit/converted/", import.meta.url));
/** `train` writes its run directory. */
const TRAIN = [
  "--allow-read",
  "--allow-write",
  "--allow-ffi",
  "--allow-env=SEDD_BLAS,XDG_RUNTIME_DIR",
];

Deno.test("cli train --init: a converted MDLM directory fine-tunes, then samples from its run", async () => {
  const dir = await makeTempDir();
  try {
    const data = `${dir}/text.txt`;
    await writeFileAtomic(data, "the whale and the sea, the ship and the sea. ".repeat(30));
    const out = `${dir}/run`;
    const flags = ["--data", data, "--steps", "2", "--batch", "2", "--context", "16"];
    const r = await cli([
      "train",
      "--init",
      FIX + "mdlm",
      ...flags,
      "--workers",
      "0",
      "--samples",
      "0",
      "--out",
      out,
    ], TRAIN);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /^Fine-tuning .*mdlm \(step 500, \d+ parameters\) on /m);
    // "auto": the float32 pass on blas or wasm (this runtime validates WebAssembly SIMD)
    assert.match(r.err, /^Backend: (blas|wasm)\b.*; a DiT trains on its float32 pass$/m);
    assert.match(r.err, /^Done \(steps\): 2 steps, final loss \d/m);
    const ckpt = await loadCheckpoint(out);
    const base = await loadConverted(FIX + "mdlm");
    assert.deepEqual(ckpt.model.config, base.model.config);
    assert.equal(ckpt.step, 2);
    assert.equal(ckpt.metadata.loss, "elbo");
    assert.equal(ckpt.metadata.timeConditioning, "false");
    assert.equal(ckpt.tokenizer.vocabSize, base.tokenizer.vocabSize);
    assert.notDeepEqual(ckpt.model.params, base.model.params);

    const s = await cli(["sample", "--checkpoint", out, "--length", "6", "--steps", "2"]);
    assert.equal(s.code, 0, s.err);
    assert.match(s.err, /^Loaded .* \(step 2, \d+ parameters\)/m);

    // A schedule the trainer does not draw from, and flags --init replaces, are refused.
    const hub = await cli(["train", "--init", FIX + "hub", ...flags, "--out", `${dir}/hub`], TRAIN);
    assert.equal(hub.code, 1);
    assert.match(
      hub.err,
      /^error: Unsupported --init .*hub: expected a checkpoint trained with the loglinear noise schedule .*got "geometric"$/,
    );
    const clash = await cli(["train", "--init", FIX + "sedd", "--preset", "tiny", ...flags], TRAIN);
    assert.equal(clash.code, 1);
    assert.match(clash.err, /^error: Invalid flags: expected --init without --preset/);
    // SEDD on wasm with 2 gradient workers
    const wasm = await cli([
      "train",
      "--init",
      FIX + "sedd",
      "--backend",
      "wasm",
      "--workers",
      "2",
      ...flags,
      "--samples",
      "0",
      "--out",
      `${dir}/sedd`,
    ], TRAIN);
    assert.equal(wasm.code, 0, wasm.err);
    assert.match(wasm.err, /^Backend: wasm; a DiT trains on its float32 pass$/m);
    assert.match(wasm.err, /^Done \(steps\): 2 steps, final loss \d/m);
    assert.equal((await loadCheckpoint(`${dir}/sedd`)).step, 2);
    // refused before anything is written: no run directory (nor its token cache) is left
    const gpu = await cli(
      ["train", "--init", FIX + "sedd", "--backend", "webgpu", ...flags, "--out", `${dir}/gpu`],
      TRAIN,
    );
    assert.equal(gpu.code, 1);
    assert.match(gpu.err, /^error: Unsupported backend for a DiT: training a DiT on "webgpu"/m);
    assert.equal(await exists(`${dir}/gpu`), false, "a run directory was left behind");
  } finally {
    await removeDir(dir);
  }
});
