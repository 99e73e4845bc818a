/**
 * Bounded, seeded fuzzing of run directories: a checkpoint file with mutated bytes, a cut, a
 * deleted or retyped metadata entry, or a missing or retyped tensor either loads to a consistent
 * checkpoint, or throws a `RunFileError` whose one-line message names the file.
 */
import assert from "node:assert/strict";
import { parseSafetensors, serializeSafetensors } from "../../src/checkpoint/safetensors.ts";
import { buildLayout } from "../../src/model/layout.ts";
import { makeTempDir, readBytes, removeDir, writeFileAtomic } from "../../src/io.ts";
import { rm } from "node:fs/promises";
import { Rng } from "../../src/rng.ts";
import {
  loadCheckpoint,
  loadRun,
  readMetrics,
  readTokenCache,
  RunFileError,
  writeTokenCache,
} from "../../src/train/run_dir.ts";
import { train } from "../../src/train/train.ts";
import { type ModelConfig, presets } from "../../src/model/config.ts";
import { tinyRun } from "./fixture.ts";

const CASES = 60; // per file and mutation kind

const removeFile = (file: string) => rm(file, { force: true });

/** Messages of the engine's own errors: a parser that lets one through has crashed. */
const CRASH =
  /Cannot read|Cannot convert|is not a function|is not iterable|is not defined|of undefined|of null|Invalid array length|Invalid typed array length|call stack|allocation failed|out of memory/i;

type Loaded = Awaited<ReturnType<typeof loadCheckpoint>>;

/** A loaded checkpoint is whole: parameters of the config's size, matching vocabularies. */
function assertConsistent(c: Loaded, what: string): void {
  assert.equal(c.model.params.length, buildLayout(c.model.config as ModelConfig).size, what);
  assert.equal(c.tokenizer.vocabSize, c.model.config.vocabSize, what);
  assert.ok(Number.isInteger(c.step) && c.step >= 0, what);
}

/** Writes `bytes` as `name` in `dir` and loads it: a consistent checkpoint or a RunFileError. */
async function verdict(
  dir: string,
  name: "model.safetensors" | "optimizer.safetensors",
  bytes: Uint8Array,
  what: string,
): Promise<"loaded" | "refused"> {
  const file = `${dir}/${name}`;
  await writeFileAtomic(file, bytes);
  try {
    if (name === "model.safetensors") assertConsistent(await loadCheckpoint(dir), what);
    else {
      const run = await loadRun(dir);
      assertConsistent(run, what);
      const P = run.model.params.length;
      assert.ok(run.optimizer.m.length === P && run.optimizer.v.length === P, what);
      assert.equal(typeof run.settings, "object", what);
    }
    return "loaded";
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof RunFileError, `${what}: ${(e as Error)?.stack ?? e}`);
    assert.equal(e.path, file);
    assert.ok(e.message.startsWith(`Invalid file ${file}: `), e.message);
    assert.doesNotMatch(e.message, /\n/, what);
    // The cause is one of the parsers' own errors, not a crash of the engine's.
    const cause = e.cause as Error;
    assert.ok(
      cause instanceof Error && !CRASH.test(cause.message) && /[A-Z]/.test(cause.message[0]),
      `${what}: ${cause?.stack ?? cause}`,
    );
    return "refused";
  }
}

/** A value of another type for a metadata entry (metadata values are strings in the file). */
function retype(v: string, rng: Rng): string {
  const options = [
    "",
    "null",
    "1e308",
    "-1",
    "[]",
    "{}",
    '{"a":1}',
    "nan",
    v.slice(0, v.length / 2),
  ];
  try {
    const parsed = JSON.parse(v);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      // A JSON object: drop or retype one of its keys.
      const keys = Object.keys(parsed);
      const k = keys[rng.int(keys.length)];
      const copy = { ...parsed };
      if (rng.uniform() < 0.5) delete copy[k];
      else copy[k] = [null, "x", -3, 1e9, [], {}][rng.int(6)];
      options.push(JSON.stringify(copy), JSON.stringify(copy), JSON.stringify(copy));
    }
  } catch { /* not JSON */ }
  return options[rng.int(options.length)];
}

Deno.test("loadCheckpoint() and loadRun() on mutated run-directory files: a whole checkpoint or a RunFileError naming the file", async () => {
  const dir = await makeTempDir();
  try {
    const src = `${dir}/src`;
    await train({ ...tinyRun, model: { ...presets.tiny, nLayers: 1 }, steps: 1, out: src });
    const fuzz = `${dir}/fuzz`;
    for (const name of ["model.safetensors", "optimizer.safetensors"] as const) {
      // loadRun() also checks a model.safetensors against optimizer.safetensors: the optimizer's
      // cases run alone, so that each verdict is about the mutated file.
      await removeFile(`${fuzz}/model.safetensors`);
      const bytes = await readBytes(`${src}/${name}`);
      const { tensors, metadata } = parseSafetensors(bytes);
      const headerEnd = 8 +
        Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
      const rng = new Rng(21, name === "model.safetensors" ? 0 : 1);
      const counts = { loaded: 0, refused: 0 };
      const check = async (b: Uint8Array, what: string) =>
        counts[await verdict(fuzz, name, b, `${name}, ${what}`)]++;
      assert.equal(await verdict(fuzz, name, bytes, "unchanged"), "loaded");
      for (let c = 0; c < CASES; c++) {
        // Bytes of the header (its JSON: shapes, offsets, config, tokenizer, settings) changed.
        const b = bytes.slice();
        for (let m = 1 + rng.int(3); m > 0; m--) b[rng.int(headerEnd)] = rng.int(256);
        await check(b, `header bytes, case ${c}`);
        // Cut anywhere.
        const at = rng.int(bytes.length);
        await check(bytes.slice(0, at), `cut at ${at}`);
        // A metadata entry deleted or given another type.
        const keys = Object.keys(metadata);
        const k = keys[rng.int(keys.length)];
        const meta = { ...metadata };
        if (rng.uniform() < 0.3) delete meta[k];
        else meta[k] = retype(meta[k], rng);
        const ts = Object.fromEntries(
          Object.entries(tensors).map(([n, t]) => [n, { shape: t.shape, data: t.data }]),
        );
        await check(
          serializeSafetensors(ts, meta),
          `metadata ${k} -> ${String(meta[k]).slice(0, 60)}`,
        );
        // A tensor deleted, or another dtype or shape.
        const names = Object.keys(ts);
        const n = names[rng.int(names.length)];
        const t2 = { ...ts };
        const r = rng.uniform();
        if (r < 0.3) delete t2[n];
        else if (r < 0.6) t2[n] = { shape: t2[n].shape, data: new Int32Array(t2[n].data.length) };
        else t2[n] = { shape: [t2[n].data.length - 1], data: t2[n].data.subarray(1) };
        await check(serializeSafetensors(t2, metadata), `tensor ${n}`);
      }
      // The mutations bite: most cases are refused, and something still loads.
      assert.ok(counts.refused > 2 * CASES, JSON.stringify(counts));
    }
  } finally {
    await removeDir(dir);
  }
});

Deno.test("readMetrics() drops a last line cut short by a kill, and names the file for a bad line before it", async () => {
  const dir = await makeTempDir();
  try {
    const line = (step: number) =>
      JSON.stringify({ step, loss: 1, lr: 1, gradNorm: 1, tokensPerSecond: 1, seconds: 1 });
    await writeFileAtomic(
      `${dir}/metrics.jsonl`,
      `${line(1)}\n${line(2)}\n${line(3).slice(0, 20)}`,
    );
    assert.deepEqual((await readMetrics(dir)).map((r) => r.step), [1, 2]);
    await writeFileAtomic(`${dir}/metrics.jsonl`, `${line(1)}\n{"step":\n${line(3)}\n`);
    await assert.rejects(readMetrics(dir), (e: unknown) => {
      assert.ok(e instanceof RunFileError);
      assert.equal(
        e.message,
        `Invalid file ${dir}/metrics.jsonl: expected line 2 to be a JSON record with an integer step, got {"step":`,
      );
      return true;
    });
    await writeFileAtomic(`${dir}/metrics.jsonl`, `${line(1)}\n[1]\n`);
    await assert.rejects(readMetrics(dir), RunFileError);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("readTokenCache() treats a cut or corrupted cache as absent", async () => {
  const dir = await makeTempDir();
  try {
    const file = `${dir}/tokens.safetensors`;
    await writeTokenCache(file, new Int32Array([1, 2, 3]));
    assert.deepEqual(await readTokenCache(file), new Int32Array([1, 2, 3]));
    const bytes = await readBytes(file);
    await writeFileAtomic(file, bytes.slice(0, bytes.length - 5));
    assert.equal(await readTokenCache(file), undefined);
    await writeFileAtomic(file, "not safetensors");
    assert.equal(await readTokenCache(file), undefined);
  } finally {
    await removeDir(dir);
  }
});
