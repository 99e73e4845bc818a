import { TRAIN_DEFAULTS } from "../../src/train/defaults.ts";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { evaluate } from "../../src/eval/mod.ts";
import { makeTempDir, readCorpus, readText, removeDir, writeFileAtomic } from "../../src/io.ts";
import { encode } from "../../src/tokenizer/mod.ts";
import { joinDocuments, splitTokens } from "../../src/train/data.ts";
import { train } from "../../src/train/train.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
// The permissions of `deno task recipe`.
const PERMISSIONS = ["--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-ffi"];
const TEXT = [
  "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money ",
  "in my purse, and nothing particular to interest me on shore, I thought I would sail about ",
  "a little and see the watery part of the world. It is a way I have of driving off the spleen ",
  "and regulating the circulation.\n",
].join("").repeat(12);

async function recipe(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "bench/recipe.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

const TINY = ["--steps", "6", "--preset", "tiny", "--workers", "0", "--points", "2"];
const SMALL_RUN = [...TINY, "--eval-samples", "2", "--vocab", "300", "--batch", "4"];

Deno.test("bench/recipe.ts trains, prints its points and one JSON line; the dump matches its split", async () => {
  const dir = await makeTempDir();
  try {
    const data = `${dir}/text.txt`;
    await writeFileAtomic(data, TEXT);
    const r = await recipe([
      ...SMALL_RUN,
      "--data",
      data,
      "--label",
      "t",
      "--json",
      `${dir}/r.jsonl`,
    ]);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split("\n");
    assert.match(lines[0], /^# t {2}params \d+ {2}config \{.*"dModel":16.*\} {2}settings \{/);
    assert.equal(lines.length, 4, r.out);
    for (const line of lines.slice(1, 3)) {
      assert.match(
        line,
        /^step \d+ {2}tokens \d+ {2}train-seconds [\d.]+ {2}held-out bits\/char \d+\.\d{4} ± \d+\.\d{4} {2}nats\/token \d+\.\d{4}$/,
      );
    }
    const j = JSON.parse(lines[3]);
    assert.equal(j.label, "t");
    assert.equal(j.steps, 6);
    assert.equal(j.tokens, 6 * 4 * 16);
    assert.equal(j.stopped, "steps");
    assert.equal(j.config.vocabSize, 300);
    assert.equal(j.settings.loss, TRAIN_DEFAULTS.loss); // the main job's default
    assert.deepEqual(j.settings.budget, { steps: 6 });
    assert.equal(j.points.length, 2);
    assert.deepEqual(j.points.map((p: { step: number }) => p.step), [3, 6]);
    for (const p of j.points) {
      assert.ok(Number.isFinite(p.bitsPerChar) && p.bitsPerChar > 0, `${p.bitsPerChar}`);
      assert.ok(Number.isFinite(p.se) && p.se > 0, `${p.se}`);
      assert.ok(Number.isFinite(p.natsPerToken), `${p.natsPerToken}`);
      assert.ok(p.seconds >= 0 && p.seconds <= j.trainSeconds);
    }
    assert.equal(j.final.step, 6);
    assert.equal(j.final.bitsPerChar, j.points[1].bitsPerChar);
    assert.equal((await readText(`${dir}/r.jsonl`)).trim(), lines[3]);

    // The same recipe through train() and `deno task eval`'s steps gives the same final number.
    const docs = await readCorpus(data);
    const t = await train({
      data,
      tokenizerVocabSize: 300,
      model: "tiny",
      steps: 6,
      batch: 4,
      context: 16,
      workers: 0, // loss, lr and the rest: train()'s defaults, which the harness shares
      evalEvery: 0,
    });
    const stream = joinDocuments(
      docs.map((d) => encode(t.tokenizer, d, { eot: false })),
      t.tokenizer.eotId,
    );
    const { heldOut } = splitTokens(stream, { context: t.model.config.context });
    const e = evaluate(t.model, heldOut, { samples: 2, seed: 0, tokenizer: t.tokenizer });
    assert.equal(j.final.bitsPerChar, e.bitsPerChar);
    assert.equal(j.final.natsPerToken, e.natsPerToken);
    assert.equal(j.final.heldOutCharacters, e.characters);

    const d = await recipe([...SMALL_RUN, "--data", data, "--dump-tokens", `${dir}/dump.json`]);
    assert.equal(d.code, 0, d.err);
    assert.equal(d.out, ""); // no training, no points
    const dump = JSON.parse(await readText(`${dir}/dump.json`));
    assert.equal(dump.format, "sedd-recipe-tokens/1");
    assert.deepEqual(dump.tokens, [...stream]);
    assert.equal(dump.trainTokens + dump.heldOutTokens, stream.length);
    assert.equal(dump.heldOutTokens, heldOut.length);
    assert.equal(dump.heldOutCharacters, e.characters);
    assert.equal(dump.vocabSize, 300);
    assert.equal(dump.maskId, 299);
    assert.equal(dump.context, 16);
    assert.deepEqual(dump.recipe.config, j.config);
    assert.deepEqual(dump.recipe.settings, j.settings);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("bench/recipe.ts usage errors: one line, exit code 2", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["--preset", "tiny"],
      /^Invalid budget: expected exactly one of --steps, --tokens, --minutes, got none/,
    ],
    [["--steps", "4", "--minutes", "1"], /^Invalid budget: .* got --steps and --minutes/],
    [["--steps", "4", "--points", "5"], /^Invalid --points: expected at most the 4 steps/],
    [
      ["--steps", "4", "--points", "1", "--heads", "3"],
      /^Invalid config: expected dModel divisible by nHeads/,
    ],
    [
      ["--steps", "4", "--points", "1", "--dropout", "1"],
      /^Invalid --dropout: expected 0 <= p < 1, got "1"/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = await recipe(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.err, re, args.join(" "));
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
  }
});
