import assert from "node:assert/strict";
import { runCli } from "../cli_run.ts";
import { exists, makeTempDir, removeDir, writeFileAtomic } from "../../src/io.ts";
import { evaluate, type EvaluateOptions } from "../../src/eval/mod.ts";
import { sample } from "../../src/sampler/mod.ts";
import { encode } from "../../src/tokenizer/mod.ts";
import { joinDocuments, splitTokens } from "../../src/train/data.ts";
import { loadCheckpoint } from "../../src/train/run_dir.ts";
import type { ModelConfig } from "../../src/model/config.ts";

const run = runCli;

Deno.test("cli main() prints help with exit 0 for every subcommand", async () => {
  for (const cmd of ["train", "sample", "eval"]) {
    const r = await run([cmd, "--help"]);
    assert.equal(r.code, 0, cmd);
    assert.match(r.out, new RegExp(`Usage: deno task ${cmd}`));
  }
});

Deno.test("cli main(): usage errors exit 2, bad values exit 1, each with an error: line", async () => {
  const cases: [string[], number, RegExp][] = [
    [["train", "--bogus"], 2, /^error: Unknown option '--bogus'/],
    [
      ["train", "--steps", "ten"],
      1,
      /^error: Invalid --steps: expected an integer >= 1, got "ten"$/,
    ],
    [["train", "--preset", "huge"], 1, /^error: Invalid --preset/],
    [["train", "--lr", "0"], 1, /^error: Invalid --lr: expected a number > 0, got "0"$/],
    [["train", "--lr", "-1"], 1, /^error: Invalid --lr: expected a number > 0, got "-1"$/],
    [["train", "--loss", "mse"], 1, /^error: Invalid --loss/],
    [["train", "--graph", "ring"], 1, /^error: Invalid --graph: expected one of absorb, uniform/],
    [
      ["train", "--graph", "uniform", "--loss", "elbo"],
      1,
      /^error: Invalid --loss: expected score-entropy/,
    ],
    [["sample"], 2, /^error: Missing --checkpoint/],
    [["sample", "--checkpoint", "x", "--length", "0"], 1, /^error: Invalid --length/],
    [["sample", "--checkpoint", "x", "--method", "magic"], 1, /^error: Invalid --method/],
    [["eval"], 2, /^error: Missing --checkpoint/],
    [["eval", "--checkpoint", "x", "--held-out", "1.5"], 1, /^error: Invalid --held-out/],
    [["frobnicate"], 2, /^error: Unknown command/],
    [[], 2, /^error: Missing command/],
  ];
  for (const [argv, code, re] of cases) {
    const r = await run(argv);
    assert.equal(r.code, code, argv.join(" "));
    assert.match(r.err, re, argv.join(" "));
    if (code === 1) assert.equal(r.err.split("\n").length, 1, r.err);
  }
});

Deno.test("cli train, eval and sample: run directory, progress, samples, next command", async () => {
  const dir = await makeTempDir();
  try {
    const text = "Call me Ishmael. Some years ago, never mind how long precisely. ".repeat(30);
    await writeFileAtomic(`${dir}/data.txt`, text);
    const t = await run([
      "train",
      ...["--data", `${dir}/data.txt`, "--preset", "tiny", "--steps", "3", "--workers", "0"],
      ...["--out", `${dir}/run`, "--batch", "2", "--vocab", "300", "--samples", "2"],
    ]);
    assert.equal(t.code, 0, t.err);
    for (const f of ["model.safetensors", "optimizer.safetensors", "metrics.jsonl", "loss.svg"]) {
      assert.ok(await exists(`${dir}/run/${f}`), f);
    }
    assert.match(t.out, new RegExp(`Next: deno task sample --checkpoint ${dir}/run`));
    assert.match(t.out, /--- sample 1 \(prompt "Call me Ishmael\."\) ---\nCall me Ishmael\./);
    assert.match(t.out, /--- sample 2 /);
    assert.match(t.err, /step 1\/3 {2}loss \d/); // plain progress lines when not a terminal
    assert.match(t.err, /Done \(steps\): 3 steps, final loss \d/);
    const r = await run(["train", "--resume", `${dir}/run`, "--steps", "5", "--samples", "0"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /Done \(steps\): 5 steps/);
    assert.match(r.err, /step 4\/5 /);
    const e = await run([
      "eval",
      ...["--checkpoint", `${dir}/run`, "--data", `${dir}/data.txt`, "--samples", "2"],
    ]);
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /nats\/token \d+\.\d+ ± \d+\.\d+ {2}bits\/char \d+\.\d+/);
    const s = await run([
      "sample",
      ...["--checkpoint", `${dir}/run`, "--prompt", "Call me", "--length", "12", "--steps", "4"],
      "--show-steps",
    ]);
    assert.equal(s.code, 0, s.err);
    const lines = s.out.split("\n");
    const sampled = lines.at(-1)!;
    assert.ok(lines.length >= 5, s.out); // a line per step (4, and a final denoise), the text
    assert.ok(lines.slice(0, -1).every((l) => /^\[ {2}\d\] Call me/.test(l)), s.out);
    assert.match(lines[0], /_/); // masks still showing after the first step
    assert.ok(sampled.startsWith("Call me") && !sampled.includes("<|mask|>"), sampled);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("cli eval: a --data file is evaluated whole; without --data, the run's held-out tail", async () => {
  const dir = await makeTempDir();
  try {
    const text = "Call me Ishmael. Some years ago, never mind how long precisely. ".repeat(30);
    await writeFileAtomic(`${dir}/data.txt`, text);
    const held = "It is a way I have of driving off the spleen, and regulating the circulation.";
    await writeFileAtomic(`${dir}/held.txt`, held);
    const t = await run([
      "train",
      ...["--data", `${dir}/data.txt`, "--preset", "tiny", "--steps", "2", "--workers", "0"],
      ...["--out", `${dir}/run`, "--batch", "2", "--vocab", "300", "--samples", "0"],
    ]);
    assert.equal(t.code, 0, t.err);
    const { model, tokenizer } = await loadCheckpoint(`${dir}/run`);
    const tokensOf = (s: string) =>
      joinDocuments([encode(tokenizer, s, { eot: false })], tokenizer.eotId);
    const evalTokens = async (...flags: string[]): Promise<number> => {
      const e = await run(["eval", "--checkpoint", `${dir}/run`, "--samples", "2", ...flags]);
      assert.equal(e.code, 0, e.err);
      const m = e.out.match(/ (\d+) tokens, (\d+) windows\)/);
      assert.ok(m, e.out);
      assert.equal(Number(m[2]), Math.ceil(Number(m[1]) / model.config.context), e.out);
      return Number(m[1]);
    };
    // A file given for evaluation is held-out text: every one of its tokens is scored.
    const heldTokens = tokensOf(held);
    assert.ok(heldTokens.length > model.config.context); // more than one window: not a tail
    assert.equal(await evalTokens("--data", `${dir}/held.txt`), heldTokens.length);
    // --held-out still asks for a tail of it.
    assert.equal(
      await evalTokens("--data", `${dir}/held.txt`, "--held-out", "0.5"),
      Math.ceil(heldTokens.length * 0.5),
    );
    // Without --data: the run's own data, and the tail the trainer held out of it.
    const trained = tokensOf(text);
    const { heldOut } = splitTokens(trained, { context: 16, heldOutFraction: 0.02 });
    assert.ok(heldOut.length < trained.length / 10);
    assert.equal(await evalTokens(), heldOut.length);
    assert.equal(
      await evalTokens("--held-out", "0.25"),
      splitTokens(trained, { context: 16, heldOutFraction: 0.25 }).heldOut.length,
    );
  } finally {
    await removeDir(dir);
  }
});

Deno.test("cli eval scores a checkpoint with the bound of its loss and graph; train samples as it trained", async () => {
  const dir = await makeTempDir();
  try {
    const text = "Call me Ishmael. Some years ago, never mind how long precisely. ".repeat(30);
    await writeFileAtomic(`${dir}/data.txt`, text);
    const evalOut = async (run_: string) => {
      const e = await run([
        "eval",
        "--checkpoint",
        run_,
        "--data",
        `${dir}/data.txt`,
        "--samples",
        "2",
      ]);
      assert.equal(e.code, 0, e.err);
      return e;
    };
    /** The figure evaluate() gives the checkpoint directly, on the whole file, as eval prints it. */
    const direct = async (run_: string, options: EvaluateOptions) => {
      const { model, tokenizer } = await loadCheckpoint(run_);
      const stream = joinDocuments([encode(tokenizer, text, { eot: false })], tokenizer.eotId);
      const r = evaluate(model, stream, { samples: 2, seed: 0, tokenizer, ...options });
      return `nats/token ${r.natsPerToken.toFixed(4)} ± ${r.standardError.toFixed(4)}`;
    };
    const trainFlags = [
      ...["--data", `${dir}/data.txt`, "--preset", "tiny", "--steps", "2", "--workers", "0"],
      ...["--batch", "2", "--vocab", "300", "--samples", "0"],
    ];

    // Score entropy on the absorbing graph (the CLI's --loss score-entropy).
    const t = await run(["train", ...trainFlags, "--out", `${dir}/se`, "--loss", "score-entropy"]);
    assert.equal(t.code, 0, t.err);
    const se = await evalOut(`${dir}/se`);
    assert.match(se.err, /step 2, score-entropy loss, absorb graph/);
    assert.match(se.out, /\(score-entropy bound, absorb graph; \d+ tokens/);
    const seFigure = await direct(`${dir}/se`, { loss: "score-entropy", graph: "absorb" });
    assert.ok(se.out.startsWith(seFigure), `${se.out} / ${seFigure}`);
    assert.notEqual(await direct(`${dir}/se`, { loss: "elbo" }), seFigure); // not vacuous

    // Score entropy on the uniform graph (--graph uniform: score entropy, time conditioning);
    // then resumed, whose samples must read it as uniform.
    const u = await run(["train", ...trainFlags, "--out", `${dir}/uniform`, "--graph", "uniform"]);
    assert.equal(u.code, 0, u.err);
    const uniformConfig = (await loadCheckpoint(`${dir}/uniform`)).model.config as ModelConfig;
    assert.equal(uniformConfig.timeConditioning, true);
    const r = await run(["train", "--resume", `${dir}/uniform`, "--steps", "3", "--samples", "1"]);
    assert.equal(r.code, 0, r.err);
    const printed = r.out.match(/--- sample 1 \(prompt "Call me Ishmael\."\) ---\n([^]*)\n\nNext:/);
    assert.ok(printed, r.out);
    const ckpt = await loadCheckpoint(`${dir}/uniform`);
    assert.equal(ckpt.step, 3);
    const expected = sample(ckpt.model, ckpt.tokenizer, {
      prompt: "Call me Ishmael.",
      length: Math.min(96, ckpt.model.config.context),
      steps: 48,
      seed: 0,
      method: "euler",
      output: "logScore",
      graph: "uniform",
    });
    assert.equal(printed[1], expected.text);
    const uniform = await evalOut(`${dir}/uniform`);
    assert.match(uniform.out, /\(score-entropy bound, uniform graph; \d+ tokens/);
    const uFigure = await direct(`${dir}/uniform`, { loss: "score-entropy", graph: "uniform" });
    assert.ok(uniform.out.startsWith(uFigure), `${uniform.out} / ${uFigure}`);

    // The notebook's seed loss has no bound of its own: the elbo bound, and the printout says so.
    const s = await run(["train", ...trainFlags, "--out", `${dir}/seed`, "--loss", "seed"]);
    assert.equal(s.code, 0, s.err);
    const seed = await evalOut(`${dir}/seed`);
    assert.match(seed.out, /\(elbo bound of a seed-loss model, absorb graph; \d+ tokens/);
    assert.match(
      seed.err,
      /Note: the seed loss has no bound of its own: scored with the elbo bound/,
    );
    assert.ok(seed.out.startsWith(await direct(`${dir}/seed`, { loss: "elbo" })), seed.out);
  } finally {
    await removeDir(dir);
  }
});
