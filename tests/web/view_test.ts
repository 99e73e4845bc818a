/**
 * The page's DOM-free logic (web/view.ts), in Deno: corpus checks, the denoising view's cells,
 * the loss chart's geometry, the progress line, and checkpoints to and from bytes. The page
 * itself, in a browser, is tested by page_browser.ts (`deno task test:web`).
 */

import assert from "node:assert/strict";
import {
  cellsOf,
  chartLines,
  checkCorpus,
  checkpointFromBytes,
  checkpointToBytes,
  clock,
  convertedFromFiles,
  corpusFromBytes,
  defaultWorkers,
  initialIds,
  MAX_WORKERS,
  probeWebGpu,
  progressLine,
  samplerReading,
} from "../../web/view.ts";
import { createModel } from "../../src/model/mod.ts";
import { modelToSafetensors, serializeSafetensors } from "../../src/checkpoint/mod.ts";
import { conditioning } from "../../src/sampler/mod.ts";
import { trainTokenizer } from "../../src/tokenizer/mod.ts";
import { loadCheckpoint } from "../../src/train/run_dir.ts";

const tokenizer = trainTokenizer(["the whale and the sea, the whale and the ship"], {
  vocabSize: 264,
});

Deno.test("defaultWorkers: the cores, capped; none without cross-origin isolation", () => {
  assert.equal(defaultWorkers(2, true), 2);
  assert.equal(defaultWorkers(64, true), MAX_WORKERS);
  assert.equal(defaultWorkers(undefined, true), 1);
  assert.equal(defaultWorkers(8, false), 0);
});

Deno.test("corpusFromBytes: text passes, binary and empty files get a message naming them", () => {
  const enc = new TextEncoder();
  assert.equal(corpusFromBytes("a.txt", enc.encode("Call me Ishmael.")), "Call me Ishmael.");
  assert.throws(
    () => corpusFromBytes("img.png", new Uint8Array([0x89, 0x50, 0xff, 0xfe])),
    /Not a text file: expected UTF-8 text in img\.png, got binary data/,
  );
  assert.throws(
    () => corpusFromBytes("nul.txt", new Uint8Array([0x61, 0, 0x62])),
    /Not a text file: expected UTF-8 text in nul\.txt, got NUL bytes/,
  );
  assert.throws(
    () => corpusFromBytes("blank.txt", enc.encode(" \n\t")),
    /Empty corpus: .*blank\.txt/,
  );
  assert.throws(() => checkCorpus(""), /Empty corpus: expected some text in the corpus/);
});

Deno.test("cellsOf and initialIds: fixed tokens in place, every other position a masked cell", () => {
  const { length, fixed } = conditioning(tokenizer, { prompt: "the whale", length: 8 });
  const ids = initialIds(length, fixed, tokenizer.maskId);
  const cells = cellsOf(ids, tokenizer);
  assert.equal(cells.length, 8);
  const masked = cells.filter((c) => c.masked).length;
  assert.equal(masked, 8 - fixed.positions.length);
  assert.ok(fixed.positions.length > 0);
  assert.equal(cells.slice(0, fixed.positions.length).map((c) => c.text).join(""), "the whale");
  assert.ok(cells.every((c) => c.masked === (c.text === "")));
});

Deno.test("chartLines: both series in one box, the lowest loss at the bottom", () => {
  const train = [{ step: 1, loss: 4 }, { step: 2, loss: 3 }, { step: 4, loss: 2 }];
  const held = [{ step: 4, loss: 2.5 }];
  const lines = chartLines(train, held, 100, 50);
  assert.equal(lines.train, "25.0,0.0 50.0,25.0 100.0,50.0");
  assert.equal(lines.heldOut, "100.0,37.5");
  assert.deepEqual([lines.maxStep, lines.minLoss, lines.maxLoss], [4, 2, 4]);
  // One point, or a flat line, still fits the box; non-finite points are left out.
  const flat = chartLines([{ step: 1, loss: 3 }, { step: 2, loss: NaN }], [], 10, 10);
  assert.equal(flat.train, "10.0,5.0");
});

Deno.test("progressLine: step, tokens/s and the time left at the current pace", () => {
  const p = progressLine(10, 30, 20, 12345.6);
  assert.equal(p.text, "step 10 / 30 · 12,346 tokens/s · ETA 0:40");
  assert.ok(Math.abs(p.fraction - 1 / 3) < 1e-12);
  assert.equal(progressLine(0, 30, 0, NaN).text, "step 0 / 30 · ? tokens/s · ETA ?");
  assert.equal(clock(125), "2:05");
});

Deno.test("samplerReading: log-scores for score entropy, logits otherwise", () => {
  assert.deepEqual(samplerReading("seed", undefined), { output: "logits" });
  assert.deepEqual(samplerReading("elbo", "absorb"), { output: "logits" });
  assert.deepEqual(samplerReading("score-entropy", "uniform"), {
    output: "logScore",
    graph: "uniform",
  });
});

Deno.test("checkpointToBytes: the command line's loader reads the page's download", async () => {
  const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 4 });
  const bytes = checkpointToBytes({
    model,
    tokenizer,
    step: 30,
    loss: "elbo",
    graph: "absorb",
    source: "test",
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/model.safetensors`, bytes);
    const loaded = await loadCheckpoint(dir);
    assert.deepEqual(loaded.model.params, model.params);
    assert.equal(loaded.step, 30);
    assert.equal(loaded.metadata.loss, "elbo");
    const again = checkpointFromBytes("model.safetensors", bytes);
    assert.deepEqual(again.model.config, model.config);
    assert.equal(again.loss, "elbo");
    assert.equal(again.tokenizer.vocabSize, tokenizer.vocabSize);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpointFromBytes: malformed and foreign files get a message naming the problem", () => {
  assert.throws(
    () => checkpointFromBytes("short.safetensors", new Uint8Array(3)),
    /Cannot load short\.safetensors: expected a model\.safetensors .*at least 8 bytes/,
  );
  const foreign = serializeSafetensors({ w: { shape: [2], data: new Float32Array(2) } }, {});
  assert.throws(
    () => checkpointFromBytes("foreign.safetensors", foreign),
    /Cannot load foreign\.safetensors: .*embed\.weight/,
  );
  // A model file without a tokenizer (a PyTorch export, say) cannot be sampled from.
  const bare = modelToSafetensors(createModel("tiny", { vocabSize: 270 }));
  assert.throws(
    () => checkpointFromBytes("bare.safetensors", bare),
    /Cannot load bare\.safetensors: .*__metadata__\.tokenizer/,
  );
});

Deno.test("web/view.ts and web/sample_worker.ts reach no file-system code (src/io.ts, run_dir.ts)", async () => {
  for (const entry of ["view.ts", "sample_worker.ts"]) {
    const file = new URL(`../../web/${entry}`, import.meta.url);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", file.href],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const graph = JSON.parse(new TextDecoder().decode(stdout)) as {
      modules: { specifier: string }[];
    };
    const specs = graph.modules.map((m) => m.specifier);
    // The graph was read: both reach the tokenizer.
    assert.ok(specs.some((s) => s.endsWith("/src/tokenizer/mod.ts")), specs.join(", "));
    const fsCode = specs.filter((s) => /\/src\/io\.ts$|\/src\/train\/run_dir\.ts$/.test(s));
    assert.deepEqual(fsCode, [], `${entry} imports ${fsCode.join(", ")}`);
  }
});

Deno.test("convertedFromFiles: a converted directory's files chosen together, or a clear message", async () => {
  const dir = new URL("../fixtures/dit/converted/hub/", import.meta.url);
  const read = async (name: string) => ({
    name,
    bytes: await Deno.readFile(new URL(name, dir)),
  });
  const files = await Promise.all(
    ["model.safetensors", "config.json", "vocab.json", "merges.txt"].map(read),
  );
  const m = convertedFromFiles(files);
  assert.equal(m.model.config.vocabSize, 261);
  assert.equal(m.tokenizer.vocabSize, 261);
  assert.deepEqual([m.loss, m.graph, m.converted?.timeConditioning], [
    "score-entropy",
    "uniform",
    "true",
  ]);
  assert.throws(() => checkpointToBytes(m), /Nothing to download: a converted DiT/);
  assert.throws(
    () => convertedFromFiles(files.filter((f) => f.name !== "config.json")),
    /^RangeError: Cannot load a converted checkpoint: expected config.json among the chosen files, got model.safetensors, vocab.json, merges.txt$/,
  );
  assert.throws(
    () => convertedFromFiles(files.filter((f) => f.name !== "merges.txt")),
    /Cannot load the converted checkpoint: Missing tokenizer file: expected merges.txt/,
  );
});

Deno.test("probeWebGpu() offers the adapter the backend found, or shows the first line of why not", async () => {
  const found = await probeWebGpu(() => Promise.resolve("webgpu: swiftshader (fallback)"));
  assert.deepEqual(found, {
    available: true,
    text: "Backend webgpu: swiftshader (fallback): training and sampling may run on it",
  });
  const none = await probeWebGpu(() =>
    Promise.reject(new Error("WebGPU backend unavailable: expected an adapter, got none\nstack"))
  );
  assert.equal(none.available, false);
  assert.equal(
    none.text,
    "WebGPU backend unavailable: expected an adapter, got none; training and sampling run on the CPU",
  );
});
