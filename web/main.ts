/**
 * The page: wires the Train, Sample and Models tabs to the library. Training runs `train()` on
 * the page's thread with the gradient pool's module workers, or the whole step on WebGPU;
 * sampling runs in its own worker (`sample_worker.ts`, on the CPU or on WebGPU) and posts every
 * step to the denoising view. WebGPU is offered where the browser gives an adapter that passes
 * the backend's self-check; otherwise the page says why, in one line, and stays on the CPU.
 *
 * @module
 */

import { train } from "../src/train/mod.ts";
import type { BackendChoice } from "../src/nn/backend.ts";
import { resolveAnyBackend } from "../src/kernels/webgpu/select.ts";
import { conditioning, type SampleMethod } from "../src/sampler/mod.ts";
import { tokenizerToJSON } from "../src/tokenizer/mod.ts";
import type { LossName } from "../src/diffusion/mod.ts";
import type { PresetName } from "../src/model/mod.ts";
import type { SampleMessage, SampleRequest } from "./sample_worker.ts";
import {
  cellsOf,
  chartLines,
  checkCorpus,
  checkpointFromBytes,
  checkpointToBytes,
  convertedFromFiles,
  corpusFromBytes,
  defaultWorkers,
  initialIds,
  type LossPoint,
  type PageModel,
  probeWebGpu,
  progressLine,
  samplerReading,
} from "./view.ts";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`The page lacks #${id}`);
  return el as T;
};
const input = (id: string) => $<HTMLInputElement>(id);

const isolated = globalThis.crossOriginIsolated === true;
let current: PageModel | undefined;
let bundledCorpus: string | undefined;
let training: AbortController | undefined;

// ---- messages ----

function showError(e: unknown): void {
  const el = $("error");
  el.textContent = e instanceof Error ? e.message : String(e);
  el.hidden = false;
}

function clearError(): void {
  const el = $("error");
  el.textContent = "";
  el.hidden = true;
}

/** Reads a number field; a clear message when it is not one. */
function numberField(id: string, label: string, integer = true): number {
  const raw = input(id).value.trim();
  const v = Number(raw);
  if (raw === "" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new RangeError(
      `Invalid ${label}: expected ${integer ? "an integer" : "a number"}, got "${raw}"`,
    );
  }
  return v;
}

// ---- tabs ----

function selectTab(name: string): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>("nav [data-tab]")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  }
  for (const p of document.querySelectorAll<HTMLElement>("[data-panel]")) {
    p.hidden = p.dataset.panel !== name;
  }
}

// ---- drag and drop ----

/** Makes `zone` accept dropped files; the whole window ignores drops elsewhere. */
function dropZone(zone: HTMLElement, onFiles: (f: File[]) => void): void {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    zone.classList.remove("over");
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length > 0) onFiles(files);
  });
}

async function fileBytes(f: File): Promise<Uint8Array> {
  return new Uint8Array(await f.arrayBuffer());
}

// ---- the current model ----

function setModel(m: PageModel): void {
  current = m;
  const c = m.model.config;
  const what =
    `${m.source}: ${c.dModel} wide × ${c.nLayers} layers, context ${c.context}, vocabulary ${c.vocabSize}, ` +
    `${m.loss} loss, step ${m.step}`;
  $("model-info").textContent = `Current model — ${what}`;
  $("sample-model").textContent = `Sampling from ${what}`;
  $<HTMLButtonElement>("download").disabled = m.converted !== undefined;
  $<HTMLButtonElement>("sample-run").disabled = false;
  // A converted checkpoint samples as its own code does: SEDD with euler, MDLM with ancestral.
  if (m.converted !== undefined) {
    $<HTMLSelectElement>("method").value = m.loss === "score-entropy" ? "euler" : "ancestral";
  }
  input("length").value = String(Math.min(c.context, Number(input("length").value) || c.context));
}

// ---- train ----

async function corpus(): Promise<string> {
  const choice = document.querySelector<HTMLInputElement>('input[name="corpus"]:checked')?.value;
  if (choice === "custom") {
    return checkCorpus($<HTMLTextAreaElement>("corpus-text").value, "the text box");
  }
  if (bundledCorpus === undefined) {
    const res = await fetch(new URL("./corpus.txt", import.meta.url));
    if (!res.ok) {
      throw new Error(`Cannot fetch the bundled corpus: expected 200, got ${res.status}`);
    }
    bundledCorpus = await res.text();
  }
  return checkCorpus(bundledCorpus, "the bundled corpus");
}

const trainPoints: LossPoint[] = [];
const heldOutPoints: LossPoint[] = [];

function drawChart(): void {
  const svg = $("chart");
  const lines = chartLines(trainPoints, heldOutPoints, 600, 220);
  $("train-line").setAttribute("points", lines.train);
  $("heldout-line").setAttribute("points", lines.heldOut);
  svg.dataset.points = String(trainPoints.length);
  svg.dataset.heldoutPoints = String(heldOutPoints.length);
  const last = trainPoints.at(-1), lastHeld = heldOutPoints.at(-1);
  $("train-value").textContent = last ? last.loss.toFixed(4) : "–";
  $("heldout-value").textContent = lastHeld ? lastHeld.loss.toFixed(4) : "–";
  $("chart-range").textContent = trainPoints.length
    ? `(loss ${lines.minLoss.toFixed(2)}–${lines.maxLoss.toFixed(2)}, steps 0–${lines.maxStep})`
    : "";
}

async function startTraining(): Promise<void> {
  clearError();
  const panel = $("train");
  const start = $<HTMLButtonElement>("start"), stop = $<HTMLButtonElement>("stop");
  try {
    const text = await corpus();
    const steps = numberField("steps", "steps");
    let workers = numberField("workers", "workers");
    if (!isolated && workers > 0) {
      workers = 0;
      $("isolation").textContent =
        "This page is not cross-origin isolated (no SharedArrayBuffer): " +
        "training runs in-process (workers: 0).";
    }
    const options = {
      text,
      model: $<HTMLSelectElement>("preset").value as PresetName,
      tokenizerVocabSize: numberField("vocab", "vocabulary"),
      steps,
      batch: numberField("batch", "batch"),
      context: numberField("context", "context"),
      lr: numberField("lr", "learning rate", false),
      loss: $<HTMLSelectElement>("loss").value as LossName,
      evalEvery: numberField("eval-every", "held-out interval"),
      workers,
      backend: $<HTMLSelectElement>("train-backend").value as BackendChoice,
      // The bundle builds workers/grad_worker.ts as grad_worker.js beside this script.
      workerUrl: new URL("./grad_worker.js", import.meta.url),
      seed: numberField("seed", "seed"),
    };
    trainPoints.length = 0;
    heldOutPoints.length = 0;
    drawChart();
    training = new AbortController();
    start.disabled = true;
    stop.disabled = false;
    panel.dataset.state = "running";
    $("progress-text").textContent = "training the tokenizer…";
    await new Promise((r) => setTimeout(r, 0)); // paint before the tokenizer's work
    const result = await train({
      ...options,
      signal: training.signal,
      onStep: async (info) => {
        trainPoints.push({ step: info.step, loss: info.loss });
        if (info.heldOutLoss !== undefined) {
          heldOutPoints.push({ step: info.step, loss: info.heldOutLoss });
        }
        const p = progressLine(info.step, steps, info.seconds, info.tokensPerSecond);
        const bar = $<HTMLProgressElement>("progress");
        bar.value = p.fraction;
        bar.dataset.step = String(info.step);
        bar.dataset.tokensPerSecond = String(info.tokensPerSecond);
        $("progress-text").textContent = p.text;
        drawChart();
        await new Promise((r) => setTimeout(r, 0)); // let the page paint and hear Stop
      },
    });
    setModel({
      model: result.model,
      tokenizer: result.tokenizer,
      step: result.step,
      loss: result.loss,
      graph: result.graph,
      source: "Trained in this page",
    });
    const last = result.history.at(-1);
    $("progress-text").textContent += ` — ${result.stopped === "aborted" ? "stopped" : "done"}: ` +
      `${result.step} steps, ${result.workers} worker${result.workers === 1 ? "" : "s"}, ` +
      `${result.backend.backend} backend${last ? `, ${last.seconds.toFixed(1)} s` : ""}`;
    panel.dataset.state = "done";
  } catch (e) {
    panel.dataset.state = "error";
    showError(e);
  } finally {
    training = undefined;
    start.disabled = false;
    stop.disabled = true;
  }
}

// ---- sample ----

let snapshots: Int32Array[] = [];
let fixedPositions = new Set<number>();

function drawCells(k: number): void {
  if (!current || !snapshots[k]) return;
  const box = $("cells");
  const ids = snapshots[k], prev = snapshots[k - 1];
  const cells = cellsOf(ids, current.tokenizer);
  while (box.children.length > cells.length) box.lastChild!.remove();
  while (box.children.length < cells.length) {
    const span = document.createElement("span");
    span.className = "cell";
    box.append(span);
  }
  cells.forEach((c, i) => {
    const span = box.children[i] as HTMLElement;
    span.textContent = c.masked ? "█" : c.text;
    span.classList.toggle("masked", c.masked);
    span.classList.toggle("fixed", fixedPositions.has(i));
    span.classList.toggle("new", !c.masked && prev !== undefined && prev[i] !== ids[i]);
  });
  const masked = cells.filter((c) => c.masked).length;
  box.dataset.masked = String(masked);
  const replay = input("replay");
  replay.value = String(k);
  $("replay-label").textContent = `${k} / ${snapshots.length - 1} · ${masked} masked`;
}

let sampler: Worker | undefined;

function runSample(): void {
  clearError();
  const panel = $("sample");
  if (!current) {
    return showError(new Error("No model: train one, or load a model.safetensors under Models"));
  }
  try {
    const m = current;
    const context = m.model.config.context;
    const length = numberField("length", "length");
    if (length < 1 || length > context) {
      throw new RangeError(
        `Invalid length: expected 1 to the model's context ${context}, got ${length}`,
      );
    }
    const infillMode = $<HTMLSelectElement>("mode").value === "infill";
    const cond = infillMode
      ? { infill: input("infill").value, length }
      : { prompt: input("prompt").value, suffix: input("suffix").value || undefined, length };
    let fixed;
    try {
      fixed = conditioning(m.tokenizer, cond).fixed;
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new RangeError(
        `The ${
          infillMode ? "template" : "prompt"
        } does not fit: ${why} (length ${length}, context ${context})`,
      );
    }
    const options: SampleRequest["options"] = {
      ...cond,
      steps: numberField("sample-steps", "steps"),
      seed: numberField("sample-seed", "seed"),
      method: $<HTMLSelectElement>("method").value as SampleMethod,
      backend: $<HTMLSelectElement>("sample-backend").value as BackendChoice,
      ...samplerReading(m.loss, m.graph),
    };
    fixedPositions = new Set(fixed.positions);
    snapshots = [initialIds(length, fixed, m.tokenizer.maskId)];
    input("replay").max = "0";
    drawCells(0);
    $("sample-text").textContent = "";
    sampler?.terminate();
    const worker = new Worker(new URL("./sample_worker.js", import.meta.url), { type: "module" });
    sampler = worker;
    panel.dataset.state = "running";
    delete panel.dataset.backend;
    $<HTMLButtonElement>("sample-run").disabled = true;
    const finish = () => {
      worker.terminate();
      if (sampler === worker) sampler = undefined;
      $<HTMLButtonElement>("sample-run").disabled = false;
    };
    worker.onmessage = (e: MessageEvent<SampleMessage>) => {
      const msg = e.data;
      if (msg.type === "step") {
        const following = Number(input("replay").value) === snapshots.length - 1;
        snapshots.push(msg.ids.slice(0, length));
        input("replay").max = String(snapshots.length - 1);
        if (following) drawCells(snapshots.length - 1);
      } else if (msg.type === "done") {
        const final = msg.ids.slice(0, length);
        const last = snapshots.at(-1)!;
        if (last.some((v, i) => v !== final[i])) snapshots.push(final);
        input("replay").max = String(snapshots.length - 1);
        drawCells(snapshots.length - 1);
        $("sample-text").textContent = msg.text;
        panel.dataset.backend = msg.backend;
        panel.dataset.state = "done";
        finish();
      } else {
        panel.dataset.state = "error";
        showError(new Error(`Sampling failed: ${msg.message}`));
        finish();
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      panel.dataset.state = "error";
      showError(new Error(`The sampling worker stopped: ${e.message || "it could not start"}`));
      finish();
    };
    const params = m.model.params.slice();
    const req: SampleRequest = {
      config: m.model.config,
      params,
      tokenizer: tokenizerToJSON(m.tokenizer),
      options,
      live: input("live").checked,
      converted: m.converted,
    };
    worker.postMessage(req, [params.buffer]);
  } catch (e) {
    panel.dataset.state = "error";
    showError(e);
  }
}

// ---- models ----

/**
 * Loads the chosen files: one `model.safetensors` of this trainer, or a converted SEDD / MDLM
 * directory's files chosen together (`config.json` among them).
 */
async function loadModelFiles(files: File[]): Promise<void> {
  clearError();
  const panel = $("models");
  try {
    if (files.some((f) => f.name === "config.json")) {
      const all = await Promise.all(
        files.map(async (f) => ({ name: f.name, bytes: await fileBytes(f) })),
      );
      setModel(convertedFromFiles(all));
    } else {
      const f = files[0];
      setModel(checkpointFromBytes(f.name, await fileBytes(f)));
    }
    panel.dataset.state = "loaded";
  } catch (e) {
    panel.dataset.state = "error";
    showError(e);
  }
}

function downloadModel(): void {
  if (!current) return showError(new Error("No model to download: train one first"));
  const blob = new Blob([checkpointToBytes(current) as Uint8Array<ArrayBuffer>], {
    type: "application/octet-stream",
  });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "model.safetensors";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ---- start-up ----

/** Looks for WebGPU once: offers it where it passes the self-check, else says why. */
async function findWebGpu(): Promise<void> {
  const status = await probeWebGpu(async () => {
    const r = await resolveAnyBackend("webgpu");
    await r.gpu?.destroy();
    return r.note;
  });
  $("webgpu-info").textContent = status.text;
  for (const id of ["train-backend", "sample-backend"]) {
    const select = $<HTMLSelectElement>(id);
    const option = select.querySelector<HTMLOptionElement>('option[value="webgpu"]')!;
    option.disabled = !status.available;
    if (!status.available) select.value = "auto";
  }
  document.body.dataset.webgpu = status.available ? "available" : "unavailable";
}

async function useCorpusFile(f: File): Promise<void> {
  clearError();
  try {
    const text = corpusFromBytes(f.name, await fileBytes(f));
    $<HTMLTextAreaElement>("corpus-text").value = text;
    input("corpus-custom").checked = true;
    $("corpus-info").textContent = `${f.name}: ${text.length.toLocaleString("en-US")} characters`;
  } catch (e) {
    showError(e);
  }
}

function init(): void {
  const cores = navigator.hardwareConcurrency;
  input("workers").value = String(defaultWorkers(cores, isolated));
  $("isolation").textContent = isolated
    ? `Cross-origin isolated: training shards each batch over up to ${
      defaultWorkers(cores, true)
    } workers (${cores ?? "?"} cores).`
    : "This page is not cross-origin isolated (no SharedArrayBuffer): training runs in-process (workers: 0).";
  for (const b of document.querySelectorAll<HTMLButtonElement>("nav [data-tab]")) {
    b.addEventListener("click", () => selectTab(b.dataset.tab!));
  }
  document.querySelector<HTMLInputElement>('input[name="corpus"][value="custom"]')!.id =
    "corpus-custom";
  $("start").addEventListener("click", () => void startTraining());
  $("stop").addEventListener("click", () => training?.abort());
  input("corpus-file").addEventListener("change", () => {
    const f = input("corpus-file").files?.[0];
    if (f) void useCorpusFile(f);
  });
  $<HTMLTextAreaElement>("corpus-text").addEventListener("input", () => {
    input("corpus-custom").checked = true;
  });
  dropZone($("corpus-drop"), (f) => void useCorpusFile(f[0]));
  $("mode").addEventListener("change", () => {
    const infill = $<HTMLSelectElement>("mode").value === "infill";
    input("infill").disabled = !infill;
    input("prompt").disabled = infill;
    input("suffix").disabled = infill;
  });
  $("sample-run").addEventListener("click", runSample);
  input("replay").addEventListener("input", () => drawCells(Number(input("replay").value)));
  input("model-file").addEventListener("change", () => {
    const files = [...(input("model-file").files ?? [])];
    if (files.length > 0) void loadModelFiles(files);
  });
  dropZone($("model-drop"), (f) => void loadModelFiles(f));
  $("download").addEventListener("click", downloadModel);
  // A file dropped outside a drop zone must not navigate away from the page.
  addEventListener("dragover", (e) => e.preventDefault());
  addEventListener("drop", (e) => e.preventDefault());
  document.body.dataset.ready = "true";
  void findWebGpu();
}

init();
