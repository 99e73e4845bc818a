// `deno task sample` and `deno task eval` on directories converted by tools/convert_checkpoint.py
// (the fixtures of tests/fixtures/dit/converted/), run as a user runs them: one subprocess each.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { makeTempDir, removeDir, writeFileAtomic } from "../src/io.ts";
import { cli } from "./cli_subprocess.ts";

const FIX = fileURLToPath(new URL("./fixtures/dit/converted/", import.meta.url));

Deno.test("cli sample: converted SEDD, Hub (uniform) and MDLM directories infill and continue", async () => {
  const sample = (name: string, flags: string) =>
    cli(["sample", "--checkpoint", FIX + name, ...flags.split(" "), "--steps", "4"]);
  const sedd = await cli(["sample", "--checkpoint", FIX + "sedd", "--infill", " the[MASK:4] the"]);
  assert.equal(sedd.code, 0, sedd.err);
  assert.match(sedd.err, /^Loaded .*sedd \(step 1234, \d+ parameters\)/);
  assert.ok(sedd.out.startsWith(" the") && sedd.out.endsWith(" the"), sedd.out);
  // euler by default: the uniform graph has no ancestral rule
  const hub = await cli([
    "sample",
    "--checkpoint",
    FIX + "hub",
    "--prompt",
    " the",
    "--suffix",
    " the",
    "--length",
    "8",
  ]);
  assert.equal(hub.code, 0, hub.err);
  assert.ok(hub.out.startsWith(" the") && hub.out.endsWith(" the"), hub.out);
  const mdlm = await sample("mdlm", "--length 6 --show-steps");
  assert.equal(mdlm.code, 0, mdlm.err);
  const lines = mdlm.out.split("\n");
  assert.match(lines[0], /^\[ {2}1\] /);
  assert.doesNotMatch(lines.at(-1)!, /^\[/); // the sample itself, after the steps
});

Deno.test("cli sample --workers 2 (--weights stage): a converted DiT gives the one-thread sample", async () => {
  const flags = ["sample", "--checkpoint", FIX + "sedd", "--length", "12", "--steps", "6"];
  const one = await cli([...flags, "--seed", "3"]);
  const two = await cli([...flags, "--seed", "3", "--workers", "2"]);
  assert.equal(one.code, 0, one.err);
  assert.equal(two.code, 0, two.err);
  assert.match(two.err, /Workers: 2 \(the DiT's forward passes\)/);
  assert.equal(two.out, one.out);
  const staged = await cli([...flags, "--seed", "3", "--workers", "2", "--weights", "stage"]);
  assert.equal(staged.code, 0, staged.err);
  assert.equal(staged.out, one.out);
  const bad = await cli([...flags, "--workers", "-1"]);
  assert.equal(bad.code, 1, bad.err);
  assert.equal(bad.err, 'error: Invalid --workers: expected an integer >= 0, got "-1"');
});

Deno.test("cli eval: converted directories get their own bound, graph and schedule", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/held.txt`, " the whale the sea the ship and the whale");
    for (
      const [name, bound] of [
        ["sedd", /score-entropy loss, absorb graph/],
        ["hub", /score-entropy loss, uniform graph/],
        ["mdlm", /elbo loss, absorb graph/],
      ] as const
    ) {
      const r = await cli([
        "eval",
        "--checkpoint",
        FIX + name,
        "--data",
        `${dir}/held.txt`,
        "--samples",
        "2",
      ]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.err, bound);
      const m = /^nats\/token (\d+\.\d+) ± (\d+\.\d+)\s+bits\/char (\d+\.\d+)/.exec(r.out);
      assert.ok(m && Number(m[1]) > 0 && Number(m[3]) > 0, r.out);
    }
  } finally {
    await removeDir(dir);
  }
});

Deno.test("cli on converted directories: a missing file, a wrong nHeads, an unconverted checkpoint", async () => {
  const dir = await makeTempDir();
  try {
    await Deno.mkdir(`${dir}/c`);
    await Deno.copyFile(`${FIX}sedd/model.safetensors`, `${dir}/c/model.safetensors`);
    const config = JSON.parse(await Deno.readTextFile(`${FIX}sedd/config.json`));
    await writeFileAtomic(`${dir}/c/config.json`, JSON.stringify(config));
    const oneLine = async (args: string[], re: RegExp) => {
      const r = await cli(args);
      assert.equal(r.code, 1, r.err);
      assert.equal(r.err.split("\n").length, 1, r.err);
      assert.match(r.err, re);
    };
    await oneLine(
      ["sample", "--checkpoint", `${dir}/c`],
      /^error: Incomplete converted checkpoint: expected .*tokenizer\.json/,
    );
    await Deno.copyFile(`${FIX}sedd/tokenizer.json`, `${dir}/c/tokenizer.json`);
    await writeFileAtomic(`${dir}/c/config.json`, JSON.stringify({ ...config, nHeads: 1 }));
    await oneLine(
      ["eval", "--checkpoint", `${dir}/c`],
      /^error: Invalid file .*c\/model\.safetensors: Invalid "rotary_emb\.inv_freq": expected shape \[4\] for nHeads 1, got \[2\]$/,
    );
    await writeFileAtomic(`${dir}/pytorch_model.bin`, "not really");
    await oneLine(
      ["sample", "--checkpoint", `${dir}/pytorch_model.bin`],
      /convert it first with python3 tools\/convert_checkpoint\.py/,
    );
  } finally {
    await removeDir(dir);
  }
});
