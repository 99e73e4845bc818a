// The command line as a user runs it: a subprocess per bad input, its exit code and its stderr.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { makeTempDir, removeDir, writeFileAtomic } from "../src/io.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-ffi",
  "--allow-env=SEDD_BLAS,XDG_RUNTIME_DIR",
];

async function cli(args: string[]): Promise<{ code: number; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "cli.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, err: new TextDecoder().decode(r.stderr).trimEnd() };
}

/** Exit 1 and one line `error: ...` matching `re`, with no stack. */
async function expectOneLine(args: string[], re: RegExp): Promise<void> {
  const r = await cli(args);
  assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
  const lines = r.err.split("\n");
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.err, /^\s+at /m);
}

Deno.test("cli: each bad input is one error: line and exit 1; unknown flags exit 2; --verbose adds the stack", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/empty.txt`, "");
    await Deno.mkdir(`${dir}/no-txt`);
    await writeFileAtomic(`${dir}/no-txt/notes.md`, "not a .txt");
    // A safetensors header length that runs past the end of the file.
    const bytes = new Uint8Array(64);
    new DataView(bytes.buffer).setBigUint64(0, 4096n, true);
    await writeFileAtomic(`${dir}/truncated.safetensors`, bytes);

    await expectOneLine(["sample", "--checkpoint", `${dir}/nope`], /Checkpoint not found.*nope/);
    await expectOneLine(["eval", "--checkpoint", `${dir}/nope`], /Checkpoint not found/);
    await expectOneLine(
      ["sample", "--checkpoint", `${dir}/truncated.safetensors`],
      /Invalid checkpoint .*truncated\.safetensors: .*header length 4096 runs past the end/,
    );
    await expectOneLine(["train", "--data", `${dir}/no-txt`], /No \.txt files.*no-txt/);
    await expectOneLine(["train", "--data", `${dir}/empty.txt`], /Empty corpus.*empty\.txt/);
    await expectOneLine(["train", "--data", `${dir}/missing.txt`], /Data not found.*missing/);
    await expectOneLine(["train", "--resume", dir], /Nothing to resume/);
    await expectOneLine(["train", "--steps", "abc"], /Invalid --steps: .*got "abc"/);
    await expectOneLine(["train", "--lr", "-1"], /Invalid --lr: expected a number > 0, got "-1"/);

    const unknown = await cli(["train", "--bogus"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /^error: Unknown option '--bogus'\nRun with --help/);
    assert.doesNotMatch(unknown.err, /^\s+at /m);

    const verbose = await cli(["sample", "--checkpoint", `${dir}/nope`, "--verbose"]);
    assert.equal(verbose.code, 1);
    assert.match(verbose.err, /^error: Checkpoint not found/);
    assert.match(verbose.err, /^\s+at .*inputs\.ts/m);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("cli: a context too long for the memory is refused before training, naming --context", async () => {
  const r = await cli(["train", "--preset", "tiny", "--context", "100000", "--steps", "1"]);
  assert.equal(r.code, 1, r.err);
  // auto looks at the GPU first: with the tasks' permissions, Mesa's software Vulkan driver adds no
  // XDG_RUNTIME_DIR line of its own (src/ffi.ts quietHeadlessDisplay), so ours is the only error
  const lines = r.err.split("\n").filter((l) => l !== "");
  const errors = lines.filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.err);
  assert.match(
    errors[0],
    /^error: Invalid --context: expected a context whose workspace fits in .*, at most \d+, got 100000/,
  );
  assert.equal(lines.at(-1), errors[0]); // the last line: nothing ran after it
  assert.doesNotMatch(r.err, /^\s+at |Wasm arena full/m);
});
