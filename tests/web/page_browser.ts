/**
 * The page in a real browser: headless Chromium (Debian's `/usr/bin/chromium`, or
 * `SEDD_CHROMIUM`) driven by playwright-core, against `deno task web` on a free port.
 *
 * Run: `deno task test:web` (CI runs it from `.ci/run` after installing Chromium). Not picked up
 * by `deno task test`: it needs a browser and the network permission. With
 * `SEDD_WEB_SCREENSHOT=<file>` (`deno task screenshot:web`) it also writes a screenshot of the
 * page after training and sampling.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chromium, type Page } from "playwright-core";
import { modelFromSafetensors } from "../../src/checkpoint/mod.ts";
import { serializeSafetensors } from "../../src/checkpoint/mod.ts";
import { modelCheckpointBytes } from "../../src/checkpoint/mod.ts";
import { createModel } from "../../src/model/mod.ts";
import { sample, type SampleMethod } from "../../src/sampler/mod.ts";
import { trainTokenizer } from "../../src/tokenizer/mod.ts";
import { corpusText } from "../../web/build.ts";
import { samplerReading } from "../../web/view.ts";

const CHROMIUM = Deno.env.get("SEDD_CHROMIUM") ?? "/usr/bin/chromium";
const SCREENSHOT = Deno.env.get("SEDD_WEB_SCREENSHOT");
/** Root in a container: no sandbox; a small /dev/shm: shared memory through /tmp instead. */
const LAUNCH = {
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
};
const root = new URL("../../", import.meta.url);

/** Runs `deno task <args>` in the repository; its stdout, or a failure with its stderr. */
async function denoTask(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", ...args],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`deno task ${args.join(" ")} failed (${out.code}):\n${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** Starts `deno task web --port 0 ...` and waits for the URL it prints. */
async function startServer(extra: string[] = []): Promise<{ url: string; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "web", "--port", "0", ...extra],
    cwd: root,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 120_000;
  while (!/Serving the page at (\S+)/.test(seen)) {
    if (Date.now() > deadline) throw new Error(`deno task web printed no URL: ${seen}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`deno task web exited before printing its URL: ${seen}`);
    seen += value;
  }
  const url = /Serving the page at (\S+)/.exec(seen)![1];
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    url,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drain.catch(() => {});
    },
  };
}

async function setFields(page: Page, fields: Record<string, string>): Promise<void> {
  for (const [id, value] of Object.entries(fields)) {
    const tag = await page.$eval(`#${id}`, (el) => el.tagName);
    if (tag === "SELECT") await page.selectOption(`#${id}`, value);
    else await page.fill(`#${id}`, value);
  }
}

async function waitState(page: Page, panel: string, states: string[], timeout = 180_000) {
  const sel = states.map((s) => `#${panel}[data-state="${s}"]`).join(", ");
  await page.waitForSelector(sel, { timeout, state: "attached" });
  return await page.getAttribute(`#${panel}`, "data-state");
}

async function errorText(page: Page): Promise<string> {
  return (await page.$eval(
    "#error",
    (el) => (el as HTMLElement).hidden ? "" : el.textContent ?? "",
  ));
}

/** The sampler settings of one comparison: a prompt and suffix, or an infill template. */
interface SampleSettings {
  prompt?: string;
  suffix?: string;
  infill?: string;
  length: number;
  steps: number;
  seed: number;
  method: string;
}

/** Samples in the page with the given settings; the text and the masked count of every step. */
async function samplePage(
  page: Page,
  s: SampleSettings,
): Promise<{ text: string; masked: number[]; liveMasked: number[] }> {
  await page.click('nav [data-tab="sample"]');
  await setFields(page, { mode: s.infill === undefined ? "prompt" : "infill" });
  await setFields(page, {
    ...(s.infill === undefined
      ? { prompt: s.prompt ?? "", suffix: s.suffix ?? "" }
      : { infill: s.infill }),
    length: String(s.length),
    "sample-steps": String(s.steps),
    method: s.method,
    "sample-seed": String(s.seed),
  });
  await page.check("#live");
  // Record every masked count the view shows while the sampler runs.
  await page.evaluate(() => {
    const box = document.getElementById("cells")!;
    const seen: number[] = [];
    (globalThis as unknown as { liveMasked: number[] }).liveMasked = seen;
    new MutationObserver(() => seen.push(Number(box.dataset.masked))).observe(box, {
      attributes: true,
      attributeFilter: ["data-masked"],
    });
  });
  await page.click("#sample-run");
  const state = await waitState(page, "sample", ["done", "error"]);
  assert.equal(state, "done", `sampling failed: ${await errorText(page)}`);
  const text = (await page.textContent("#sample-text")) ?? "";
  const liveMasked = await page.evaluate(() =>
    (globalThis as unknown as { liveMasked: number[] }).liveMasked
  );
  // Replay: every step through the slider.
  const masked = await page.evaluate(() => {
    const replay = document.getElementById("replay") as HTMLInputElement;
    const box = document.getElementById("cells")!;
    const out: number[] = [];
    for (let k = 0; k <= Number(replay.max); k++) {
      replay.value = String(k);
      replay.dispatchEvent(new Event("input"));
      const cells = box.querySelectorAll(".cell").length;
      const blocks = box.querySelectorAll(".cell.masked").length;
      if (Number(box.dataset.masked) !== blocks) {
        throw new Error("data-masked disagrees with the cells");
      }
      if (cells === 0) throw new Error("no cells drawn");
      out.push(blocks);
    }
    return out;
  });
  return { text, masked, liveMasked };
}

/** Drops a file with these bytes on a drop zone, as a person dragging it there would. */
async function dropFile(page: Page, zone: string, name: string, bytes: Uint8Array) {
  await page.evaluate(({ zone, name, data }) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(data)], name));
    document.querySelector(zone)!.dispatchEvent(
      new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }),
    );
  }, { zone, name, data: [...bytes] });
}

/** The Train tab's fields for a 3-step run of `tiny`. */
const TINY_3_STEPS = { preset: "tiny", steps: "3", batch: "2", context: "16", vocab: "270" };

const PAGE_RUN = { steps: 30, workers: 2, batch: 8, context: 16, vocab: 300, evalEvery: 10 };

Deno.test({
  name: "the page trains, denoises live, downloads and loads checkpoints in headless Chromium",
  sanitizeResources: false, // playwright's pipes to the browser outlive single steps
  sanitizeOps: false,
  async fn(t) {
    try {
      await Deno.stat(CHROMIUM);
    } catch {
      throw new Error(
        `Chromium not found: expected ${CHROMIUM} (apt-get install chromium, or set SEDD_CHROMIUM)`,
      );
    }
    const tmp = await Deno.makeTempDir({ prefix: "sedd-web-" });
    const server = await startServer();
    const browser = await chromium.launch(LAUNCH);
    try {
      const context = await browser.newContext({
        acceptDownloads: true,
        viewport: { width: 1100, height: 900 },
      });
      const page = await context.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="true"]');
      assert.equal(
        await page.evaluate(() => crossOriginIsolated),
        true,
        "the page is not cross-origin isolated",
      );
      let pageTokensPerSecond = NaN;
      let pageSample = { text: "", masked: [] as number[], liveMasked: [] as number[] };
      const sampleSettings = {
        prompt: "Call me",
        length: 16,
        steps: 16,
        seed: 5,
        method: "ancestral",
      };

      await t.step(
        `1. trains ${PAGE_RUN.steps} steps of tiny with ${PAGE_RUN.workers} workers`,
        async () => {
          await page.check('input[name="corpus"][value="bundled"]');
          await setFields(page, {
            preset: "tiny",
            vocab: String(PAGE_RUN.vocab),
            steps: String(PAGE_RUN.steps),
            batch: String(PAGE_RUN.batch),
            context: String(PAGE_RUN.context),
            "eval-every": String(PAGE_RUN.evalEvery),
            workers: String(PAGE_RUN.workers),
            seed: "0",
          });
          await page.click("#start");
          const state = await waitState(page, "train", ["done", "error"]);
          assert.equal(state, "done", `training failed: ${await errorText(page)}`);
          assert.equal(await page.getAttribute("#progress", "data-step"), String(PAGE_RUN.steps));
          assert.equal(await page.getAttribute("#chart", "data-points"), String(PAGE_RUN.steps));
          const points = ((await page.getAttribute("#train-line", "points")) ?? "").trim().split(
            /\s+/,
          );
          assert.equal(points.length, PAGE_RUN.steps, "the training line has one point per step");
          const heldOut = Number(await page.textContent("#heldout-value"));
          assert.ok(Number.isFinite(heldOut) && heldOut > 0, `held-out loss ${heldOut}`);
          assert.equal(
            await page.getAttribute("#chart", "data-heldout-points"),
            String(PAGE_RUN.steps / PAGE_RUN.evalEvery),
          );
          const progress = (await page.textContent("#progress-text")) ?? "";
          assert.match(progress, new RegExp(`step ${PAGE_RUN.steps} / ${PAGE_RUN.steps}`));
          assert.match(progress, /2 workers/, progress);
          pageTokensPerSecond = Number(
            await page.getAttribute("#progress", "data-tokens-per-second"),
          );
          assert.ok(pageTokensPerSecond > 0);
        },
      );

      await t.step("2. samples with the live view: the masked cells fall to zero", async () => {
        pageSample = await samplePage(page, sampleSettings);
        const { masked, liveMasked } = pageSample;
        const prompt = masked[0];
        assert.ok(prompt > 0 && prompt < sampleSettings.length, `masked at step 0: ${prompt}`);
        assert.equal(masked.at(-1), 0, `masked by step: ${masked}`);
        for (let k = 1; k < masked.length; k++) {
          assert.ok(masked[k] <= masked[k - 1], `masked cells came back: ${masked}`);
        }
        assert.ok(masked.length > 2, `the replay has ${masked.length} states`);
        assert.equal(liveMasked.at(-1), 0);
        assert.ok(new Set(liveMasked).size > 2, `the live view showed only ${liveMasked}`);
        assert.ok(pageSample.text.startsWith(sampleSettings.prompt), pageSample.text);
      });

      await t.step(
        "4. downloads the page's model: modelFromSafetensors and the CLI read it",
        async () => {
          await page.click('nav [data-tab="models"]');
          const [download] = await Promise.all([
            page.waitForEvent("download"),
            page.click("#download"),
          ]);
          assert.equal(download.suggestedFilename(), "model.safetensors");
          const file = `${tmp}/page-model.safetensors`;
          await download.saveAs(file);
          const { model, metadata } = modelFromSafetensors(await Deno.readFile(file));
          assert.equal(model.config.dModel, 16);
          assert.equal(model.config.nLayers, 2);
          assert.equal(model.config.vocabSize, PAGE_RUN.vocab);
          assert.equal(model.config.context, PAGE_RUN.context);
          assert.equal(metadata.step, String(PAGE_RUN.steps));
          assert.ok(model.params.every(Number.isFinite));
          // The CLI samples the downloaded file to exactly the text the page sampled.
          const cli = await denoTask(sampleArgs(file, sampleSettings));
          assert.equal(cli.replace(/\n$/, ""), pageSample.text);
        },
      );

      await t.step(
        "3. loads a CLI checkpoint and samples what deno task sample prints",
        async () => {
          const corpus = `${tmp}/corpus.txt`;
          await Deno.writeTextFile(corpus, await corpusText());
          const run = `${tmp}/cli-run`;
          await denoTask([
            "train",
            "--data",
            corpus,
            "--preset",
            "tiny",
            "--steps",
            String(PAGE_RUN.steps),
            "--workers",
            String(PAGE_RUN.workers),
            "--batch",
            String(PAGE_RUN.batch),
            "--context",
            String(PAGE_RUN.context),
            "--vocab",
            String(PAGE_RUN.vocab),
            "--seed",
            "1",
            "--backend",
            "wasm",
            "--out",
            run,
            "--samples",
            "0",
          ]);
          const metrics = (await Deno.readTextFile(`${run}/metrics.jsonl`)).trim().split("\n");
          const cliTokensPerSecond = JSON.parse(metrics.at(-1)!).tokensPerSecond as number;
          console.log(
            `tokens/s, tiny, batch ${PAGE_RUN.batch} x ${PAGE_RUN.context}, ${PAGE_RUN.workers} workers, wasm: ` +
              `page ${Math.round(pageTokensPerSecond)}, CLI ${Math.round(cliTokensPerSecond)}`,
          );
          const ckpt = `${run}/model.safetensors`;
          await page.setInputFiles("#model-file", ckpt);
          await waitState(page, "models", ["loaded", "error"]);
          assert.equal(await errorText(page), "");
          assert.match(
            (await page.textContent("#model-info")) ?? "",
            /model\.safetensors: 16 wide/,
          );
          const runs: SampleSettings[] = [
            { ...sampleSettings, prompt: "The whale", seed: 11, method: "ancestral" },
            { ...sampleSettings, prompt: "The", suffix: " sea.", seed: 12, method: "confidence" },
            { ...sampleSettings, prompt: "The whale", seed: 13, method: "euler" },
            { ...sampleSettings, prompt: "The whale", seed: 14, method: "tweedie" },
            {
              length: 16,
              steps: 12,
              seed: 15,
              method: "ancestral",
              infill: "The [MASK:5] whale [MASK:3].",
            },
          ];
          for (const s of runs) {
            const method = s.method;
            const { text, masked } = await samplePage(page, s);
            assert.equal(masked.at(-1), 0);
            const cli = await denoTask(sampleArgs(ckpt, s));
            assert.equal(text, cli.replace(/\n$/, ""), `${method}: the page and the CLI differ`);
          }
        },
      );

      await t.step("5. bad input gets a message that names the problem", async () => {
        await page.click('nav [data-tab="models"]');
        await dropFile(
          page,
          "#model-drop",
          "broken.safetensors",
          new TextEncoder().encode("not a checkpoint, just text"),
        );
        await waitState(page, "models", ["error"]);
        assert.match(await errorText(page), /Cannot load broken\.safetensors: .*header length/);
        // A valid safetensors file that is not a model checkpoint.
        const foreign = serializeSafetensors({ w: { shape: [2], data: new Float32Array(2) } }, {});
        await dropFile(page, "#model-drop", "foreign.safetensors", foreign);
        await page.waitForFunction(() =>
          document.getElementById("error")!.textContent!.includes("foreign")
        );
        assert.match(await errorText(page), /Cannot load foreign\.safetensors: .*embed\.weight/);
        // The loaded model is still the CLI's: a bad file does not replace it.
        assert.match((await page.textContent("#model-info")) ?? "", /model\.safetensors: 16 wide/);

        await page.click('nav [data-tab="train"]');
        await dropFile(
          page,
          "#corpus-drop",
          "picture.png",
          new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0xff, 0xfe, 0, 1]),
        );
        await page.waitForFunction(() =>
          document.getElementById("error")!.textContent!.includes("picture.png")
        );
        assert.match(await errorText(page), /Not a text file: expected UTF-8 text in picture\.png/);
        await page.check('input[name="corpus"][value="custom"]');
        await page.fill("#corpus-text", "   \n ");
        await page.click("#start");
        await waitState(page, "train", ["error"]);
        assert.match(await errorText(page), /Empty corpus/);

        await page.click('nav [data-tab="sample"]');
        await setFields(page, { mode: "prompt" });
        await setFields(page, {
          prompt: "Call me Ishmael. Some years ago, never mind how long precisely",
          length: "16",
        });
        await page.click("#sample-run");
        await waitState(page, "sample", ["error"]);
        assert.match(await errorText(page), /prompt does not fit: .*too long.*context 16/);
        assert.deepEqual(pageErrors, [], "uncaught errors in the page");
      });
    } finally {
      await browser.close();
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "a page that is not cross-origin isolated trains in-process and says so",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await startServer(["--no-isolation", "--no-build"]);
    const browser = await chromium.launch(LAUNCH);
    try {
      const page = await browser.newPage();
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="true"]');
      assert.equal(await page.evaluate(() => crossOriginIsolated), false);
      assert.match(
        (await page.textContent("#isolation")) ?? "",
        /not cross-origin isolated.*workers: 0/,
      );
      assert.equal(await page.inputValue("#workers"), "0");
      await setFields(page, {
        ...TINY_3_STEPS,
        workers: "2",
      });
      await page.click("#start");
      assert.equal(
        await waitState(page, "train", ["done", "error"]),
        "done",
        await errorText(page),
      );
      assert.match((await page.textContent("#progress-text")) ?? "", /step 3 \/ 3.*0 workers/);
      // Stop ends a long run after the current step, and keeps its model.
      await setFields(page, { steps: "100000" });
      await page.click("#start");
      await page.waitForFunction(() =>
        Number(document.getElementById("progress")!.dataset.step) >= 2 &&
        document.getElementById("train")!.dataset.state === "running"
      );
      await page.click("#stop");
      assert.equal(
        await waitState(page, "train", ["done", "error"]),
        "done",
        await errorText(page),
      );
      const stopped = (await page.textContent("#progress-text")) ?? "";
      assert.match(stopped, /stopped: \d+ steps/);
      assert.ok(Number(/stopped: (\d+) steps/.exec(stopped)![1]) < 100000);
      assert.match((await page.textContent("#model-info")) ?? "", /Trained in this page/);
    } finally {
      await browser.close();
      await server.stop();
    }
  },
});

/** Samples in the page on `backend`; the text and the backend the worker reports. */
async function sampleOn(
  page: Page,
  backend: string,
  s: SampleSettings,
): Promise<{ text: string; ran: string | null }> {
  await page.click('nav [data-tab="sample"]');
  await setFields(page, { "sample-backend": backend });
  const { text } = await samplePage(page, s);
  assert.equal(await errorText(page), "", `sampling on ${backend}`);
  return { text, ran: await page.getAttribute("#sample", "data-backend") };
}

Deno.test({
  name:
    "the page trains and samples on WebGPU where Chromium gives an adapter (SwiftShader, --enable-unsafe-webgpu), the CPU's text; without one it shows why and stays on the CPU",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "sedd-web-gpu-" });
    const server = await startServer();
    const plain = await chromium.launch(LAUNCH);
    const gpu = await chromium.launch({
      ...LAUNCH,
      args: [...LAUNCH.args, "--enable-unsafe-webgpu"],
    });
    try {
      const tokenizer = trainTokenizer([await corpusText()], { vocabSize: 300 });
      const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, context: 16, seed: 2 });
      const file = `${tmp}/model.safetensors`;
      await Deno.writeFile(file, modelCheckpointBytes(model, tokenizer, 0, { loss: "elbo" }));
      const runs: SampleSettings[] = [
        { prompt: "The whale", length: 16, steps: 12, seed: 3, method: "ancestral" },
        { prompt: "The", suffix: " sea.", length: 16, steps: 8, seed: 4, method: "euler" },
        {
          infill: "The [MASK:5] whale [MASK:3].",
          length: 16,
          steps: 6,
          seed: 5,
          method: "confidence",
        },
      ];
      // what sample() gives on the CPU (the page's CPU backend is wasm)
      const want = runs.map((s) =>
        sample(model, tokenizer, {
          ...s,
          method: s.method as SampleMethod,
          backend: "wasm",
          ...samplerReading("elbo", "absorb"),
        })
          .text
      );
      const open = async (browser: typeof plain) => {
        const page = await browser.newPage();
        await page.goto(server.url);
        await page.waitForSelector("body[data-webgpu]");
        await page.setInputFiles("#model-file", file);
        await waitState(page, "models", ["loaded", "error"]);
        assert.equal(await errorText(page), "");
        return page;
      };

      await t.step(
        "without an adapter: the reason in one line, WebGPU not offered, CPU used",
        async () => {
          const page = await open(plain);
          assert.equal(await page.getAttribute("body", "data-webgpu"), "unavailable");
          const info = (await page.textContent("#webgpu-info")) ?? "";
          assert.match(
            info,
            /^WebGPU backend unavailable: expected an adapter, got .*; training and sampling run on the CPU$/,
          );
          for (const id of ["sample-backend", "train-backend"]) {
            assert.equal(await page.inputValue(`#${id}`), "auto");
            assert.equal(
              await page.$eval(
                `#${id} option[value="webgpu"]`,
                (o) => (o as HTMLOptionElement).disabled,
              ),
              true,
            );
          }
          const { text, ran } = await sampleOn(page, "auto", runs[0]);
          assert.equal(ran, "cpu");
          assert.equal(text, want[0]);
          await page.close();
        },
      );

      await t.step(
        "with SwiftShader: samples on WebGPU the CPU's text, trains on WebGPU",
        async () => {
          const page = await open(gpu);
          const pageErrors: string[] = [];
          page.on("pageerror", (e) => pageErrors.push(e.message));
          assert.equal(
            await page.getAttribute("body", "data-webgpu"),
            "available",
            (await page.textContent("#webgpu-info")) ?? "",
          );
          assert.match(
            (await page.textContent("#webgpu-info")) ?? "",
            /^Backend webgpu: .*swiftshader/i,
          );
          for (const [k, s] of runs.entries()) {
            const { text, ran } = await sampleOn(page, "webgpu", s);
            assert.equal(ran, "webgpu");
            assert.equal(
              text,
              want[k],
              `${s.method}: WebGPU in the page and sample() on the CPU differ`,
            );
          }
          await page.click('nav [data-tab="train"]');
          await page.check('input[name="corpus"][value="bundled"]');
          await setFields(page, { ...TINY_3_STEPS, "train-backend": "webgpu" });
          await page.click("#start");
          assert.equal(
            await waitState(page, "train", ["done", "error"]),
            "done",
            await errorText(page),
          );
          assert.match(
            (await page.textContent("#progress-text")) ?? "",
            /done: 3 steps, .*webgpu backend/,
          );
          const onGpu = await sampleOn(page, "webgpu", runs[0]);
          const onCpu = await sampleOn(page, "auto", runs[0]);
          assert.deepEqual([onGpu.ran, onCpu.ran], ["webgpu", "cpu"]);
          assert.equal(
            onGpu.text,
            onCpu.text,
            "the page-trained model: WebGPU and CPU samples differ",
          );
          assert.deepEqual(pageErrors, [], "uncaught errors in the page");
          await page.close();
        },
      );
    } finally {
      await plain.close();
      await gpu.close();
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

function sampleArgs(checkpoint: string, s: SampleSettings): string[] {
  const cond = s.infill === undefined
    ? ["--prompt", s.prompt ?? "", ...(s.suffix ? ["--suffix", s.suffix] : [])]
    : ["--infill", s.infill];
  return [
    "sample",
    "--checkpoint",
    checkpoint,
    ...cond,
    "--length",
    String(s.length),
    "--steps",
    String(s.steps),
    "--seed",
    String(s.seed),
    "--method",
    s.method,
    "--backend",
    "wasm",
  ];
}

Deno.test({
  name: "screenshot: the page's defaults trained, and a sample half denoised (SEDD_WEB_SCREENSHOT)",
  ignore: SCREENSHOT === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await startServer(["--no-build"]);
    const browser = await chromium.launch(LAUNCH);
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="true"]');
      await setFields(page, { steps: Deno.env.get("SEDD_WEB_SCREENSHOT_STEPS") ?? "300" });
      await page.click("#start");
      const state = await waitState(page, "train", ["done", "error"], 600_000);
      assert.equal(state, "done", await errorText(page));
      console.log((await page.textContent("#progress-text"))?.trim());
      const s = { prompt: "Call me Ishmael.", length: 64, steps: 64, seed: 0, method: "ancestral" };
      const { text, masked } = await samplePage(page, s);
      console.log(`sample: ${JSON.stringify(text)}`);
      await page.evaluate((mid) => {
        for (const id of ["train", "sample"]) document.getElementById(id)!.hidden = false;
        const replay = document.getElementById("replay") as HTMLInputElement;
        replay.value = String(mid);
        replay.dispatchEvent(new Event("input"));
      }, masked.findIndex((m) => m <= masked[0] / 2));
      await page.waitForTimeout(600); // the cells' colour transition
      await page.screenshot({ path: SCREENSHOT!, fullPage: true });
      console.log(`wrote ${SCREENSHOT}`);
    } finally {
      await browser.close();
      await server.stop();
    }
  },
});

Deno.test({
  name: "the page loads converted SEDD / MDLM directories and samples what deno task sample prints",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fixtures = new URL("tests/fixtures/dit/converted/", root).pathname;
    const server = await startServer();
    const browser = await chromium.launch(LAUNCH);
    try {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="true"]');
      const load = async (dir: string, files: string[]) => {
        await page.click('nav [data-tab="models"]');
        await page.setInputFiles("#model-file", files.map((f) => `${dir}/${f}`));
        return await waitState(page, "models", ["loaded", "error"]);
      };
      // The tokenizer missing: a message naming the file, and nothing loaded.
      assert.equal(await load(fixtures + "sedd", ["model.safetensors", "config.json"]), "error");
      assert.match(await errorText(page), /Missing tokenizer file: expected tokenizer\.json/);
      const cases: [string, string[], SampleSettings][] = [
        ["sedd", ["tokenizer.json"], {
          infill: " the[MASK:5] the",
          length: 7,
          steps: 6,
          seed: 3,
          method: "euler",
        }],
        ["hub", ["vocab.json", "merges.txt"], {
          prompt: " the",
          suffix: " the",
          length: 8,
          steps: 5,
          seed: 4,
          method: "tweedie",
        }],
        ["mdlm", ["tokenizer.json"], {
          prompt: " the",
          length: 8,
          steps: 6,
          seed: 5,
          method: "ancestral",
        }],
      ];
      for (const [name, tok, s] of cases) {
        const dir = fixtures + name;
        assert.equal(await load(dir, ["model.safetensors", "config.json", ...tok]), "loaded");
        assert.equal(await errorText(page), "");
        assert.match(
          (await page.textContent("#model-info")) ?? "",
          new RegExp(`Converted ${name} DiT: 8 wide`),
        );
        const { text, masked } = await samplePage(page, s);
        assert.equal(masked.at(-1), 0, name);
        const cli = await denoTask(sampleArgs(dir, s));
        assert.equal(text, cli.replace(/\n$/, ""), `${name}: the page and the CLI differ`);
      }
      assert.deepEqual(pageErrors, [], "uncaught errors in the page");
    } finally {
      await browser.close();
      await server.stop();
    }
  },
});

const THROUGHPUT = Deno.env.get("SEDD_WEB_THROUGHPUT"); // "preset,steps,batch,context,vocab"

Deno.test({
  name: "throughput: the page and the CLI train the same run (SEDD_WEB_THROUGHPUT)",
  ignore: THROUGHPUT === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const [preset, steps, batch, context, vocab] = (THROUGHPUT ?? "").split(",");
    const run = { preset, steps, batch, context, vocab, workers: "2", seed: "0" };
    const tmp = await Deno.makeTempDir({ prefix: "sedd-web-tps-" });
    const server = await startServer(["--no-build"]);
    const browser = await chromium.launch(LAUNCH);
    try {
      const page = await browser.newPage();
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="true"]');
      await page.check('input[name="corpus"][value="bundled"]');
      await setFields(page, { ...run, "eval-every": steps });
      await page.click("#start");
      const state = await waitState(page, "train", ["done", "error"], 600_000);
      assert.equal(state, "done", await errorText(page));
      const pageTps = Number(await page.getAttribute("#progress", "data-tokens-per-second"));
      const corpus = `${tmp}/corpus.txt`;
      await Deno.writeTextFile(corpus, await corpusText());
      const cli: Record<string, number> = {};
      for (const backend of ["wasm", "blas"]) {
        const out = `${tmp}/${backend}`;
        await denoTask([
          "train",
          ...["--data", corpus, "--out", out, "--samples", "0", "--backend", backend],
          ...Object.entries(run).flatMap(([k, v]) => [`--${k}`, v]),
        ]);
        const last = (await Deno.readTextFile(`${out}/metrics.jsonl`)).trim().split("\n").at(-1)!;
        cli[backend] = JSON.parse(last).tokensPerSecond;
      }
      console.log(
        `tokens/s at step ${steps}, ${preset} ${batch} x ${context}, vocabulary ${vocab}, 2 workers:` +
          ` page (wasm) ${Math.round(pageTps)}, CLI wasm ${Math.round(cli.wasm)}, CLI blas ` +
          `${Math.round(cli.blas)}; page / CLI wasm ${(pageTps / cli.wasm).toFixed(2)}`,
      );
      assert.ok(pageTps > 0 && cli.wasm > 0 && cli.blas > 0);
    } finally {
      await browser.close();
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
