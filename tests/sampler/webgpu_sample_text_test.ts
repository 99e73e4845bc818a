// sampleAsync on the webgpu backend (src/sampler/sample_gpu.ts: the model's forward pass and
// every update on the GPU) against sample() on the ts backend, from the same seed: the same
// text, ids and evaluation counts, and the same final generator state, for every method, with
// a prompt and suffix, with an infill template, on the PyTorch fixtures' models (plain and
// time-conditioned) and a freshly initialised one; and the CLI's `sample --backend webgpu`.
// The float32 near-ties that may make the two disagree (src/kernels/webgpu/sampler.ts) do not
// arise at these seeds.
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import assert from "node:assert/strict";
import { runCli } from "../cli_run.ts";
import { evaluate, evaluateAsync } from "../../src/eval/mod.ts";
import { makeTempDir, removeDir, writeFileAtomic } from "../../src/io.ts";
import { modelCheckpointBytes } from "../../src/checkpoint/run_files.ts";
import { createDit } from "../../src/model/dit.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import {
  sample,
  sampleAsync,
  type SampleMethod,
  type SampleTextOptions,
} from "../../src/sampler/mod.ts";
import { type Tokenizer, trainTokenizer } from "../../src/tokenizer/mod.ts";
import { loadCase } from "../model/pytorch_fixtures.ts";
import { countGpuUse, gpuContext, ignoreGpu } from "../kernels/webgpu_available.ts";

const METHODS: SampleMethod[] = ["confidence", "euler", "tweedie", "ancestral"];

/** A seed tokenizer of exactly `V` ids (characters of the text, merges, two specials). */
function tokenizerOf(V: number): Tokenizer {
  for (const text of ["the whale and the sea", "the sea"]) {
    for (let m = 0; m < 8; m++) {
      const tok = trainTokenizer([text], { kind: "seed", numMerges: m });
      if (tok.vocabSize === V) return tok;
    }
  }
  throw new Error(`no seed tokenizer of ${V} ids`);
}

/** sampleAsync on webgpu equals sample on ts: text, ids, counts and the generator's end. */
async function expectSame(
  label: string,
  model: Model,
  tokenizer: Tokenizer,
  options: SampleTextOptions,
): Promise<void> {
  const cpuRng = new Rng(options.seed ?? 0, 4), gpuRng = new Rng(options.seed ?? 0, 4);
  const cpuSteps: Int32Array[] = [], gpuSteps: Int32Array[] = [];
  const want = sample(model, tokenizer, {
    ...options,
    backend: "ts",
    rng: cpuRng,
    onStep: (ids) => cpuSteps.push(ids.slice()),
  });
  const got = await sampleAsync(model, tokenizer, {
    ...options,
    backend: "webgpu",
    gpu: gpuContext(),
    rng: gpuRng,
    onStep: (ids) => gpuSteps.push(ids.slice()),
  });
  assert.deepEqual(got.texts, want.texts, label);
  assert.equal(got.text, want.text, label);
  assert.deepEqual(got.ids, want.ids, label);
  assert.equal(got.evaluations, want.evaluations, label);
  assert.equal(got.savedEvaluations, want.savedEvaluations, label);
  assert.deepEqual(gpuSteps, cpuSteps, `${label}: the ids after every step`);
  assert.equal(gpuRng.nextU32(), cpuRng.nextU32(), `${label}: the generator's state after`);
  if (!options.allowMask) assert.ok(!got.ids.includes(tokenizer.maskId), `${label}: a MASK left`);
}

Deno.test({
  name:
    "sampleAsync on webgpu gives sample()'s text on ts for every method, prompt and infill, on the fixtures' models (plain and time-conditioned)",
  ignore: ignoreGpu,
  async fn() {
    for (const c of ["tiny", "tc_rotary_pre_gelu"]) {
      const { model, config } = loadCase(c);
      const tokenizer = tokenizerOf(config.vocabSize);
      const T = config.context;
      for (const method of METHODS) {
        const common = { method, steps: Math.max(2, T - 2), batch: 2 };
        await expectSame(`${c} ${method} prompt`, model, tokenizer, {
          ...common,
          prompt: "th",
          suffix: "a",
          length: T,
          seed: 3,
        });
        await expectSame(`${c} ${method} infill`, model, tokenizer, {
          ...common,
          infill: T >= 8 ? "the[MASK:3] sea" : "t[MASK:3]",
          seed: 11,
        });
      }
      // the score-based samplers reading the outputs as log-scores (score-entropy models)
      for (const method of ["euler", "tweedie"] as const) {
        await expectSame(`${c} ${method} logScore`, model, tokenizer, {
          method,
          steps: 4,
          length: T,
          output: "logScore",
          seed: 5,
        });
      }
    }
  },
});

Deno.test({
  name:
    "sampleAsync on webgpu gives sample()'s text on ts for a fresh tiny model over 32 tokens (confidence with allowMask, ancestral cached), and opens its own device without a context",
  ignore: ignoreGpu,
  async fn() {
    const tokenizer = tokenizerOf(13);
    const model = createModel("tiny", { vocabSize: 13, context: 32, seed: 4 });
    await expectSame("fresh confidence allowMask", model, tokenizer, {
      method: "confidence",
      allowMask: true,
      steps: 8,
      length: 32,
      prompt: "the whale",
      seed: 2,
    });
    await expectSame("fresh ancestral", model, tokenizer, {
      method: "ancestral",
      steps: 12,
      batch: 3,
      length: 32,
      suffix: " sea",
      seed: 9,
    });
    const options = { infill: "the [MASK:10] sea", steps: 6, seed: 1 };
    const own = await sampleAsync(model, tokenizer, { ...options, backend: "webgpu" });
    assert.equal(own.text, sample(model, tokenizer, { ...options, backend: "ts" }).text);
  },
});

Deno.test("sample() refuses webgpu in one line; the other backends, and auto past a software adapter, are sampleAsync's (and evaluateAsync's)", async () => {
  const tokenizer = tokenizerOf(13);
  const model = createModel("tiny", { vocabSize: 13, context: 8, seed: 1 });
  assert.throws(() => sample(model, tokenizer, { backend: "webgpu" }), {
    name: "RangeError",
    message: /^Invalid backend for sample\(\): .*use sampleAsync\), got "webgpu"$/,
  });
  // every other backend is sample()'s, on any machine
  const options = { prompt: "the", length: 8, steps: 3, seed: 4, backend: "ts" } as const;
  assert.deepEqual(
    (await sampleAsync(model, tokenizer, options)).ids,
    sample(model, tokenizer, options).ids,
  );
  // auto, the default, passes over a software adapter (llvmpipe here, or none) to the CPU's
  // choice; on a real GPU it would sample there, the same ids but for float32 near-ties
  const plain = { prompt: "the", length: 8, steps: 3, seed: 4 } as const;
  assert.deepEqual(
    (await sampleAsync(model, tokenizer, plain)).ids,
    sample(model, tokenizer, plain).ids,
  );
  const held = new Int32Array([1, 2, 3, 4, 5, 6, 7, 1, 2, 3]);
  assert.deepEqual(
    await evaluateAsync(model, held, { samples: 2, seed: 1 }),
    evaluate(model, held, { samples: 2, seed: 1 }),
  );
});

Deno.test({
  name: "sampleAsync on webgpu samples a DiT (SEDD log-scores, MDLM logits) as sample() does on ts",
  ignore: ignoreGpu,
  fn: async () => {
    const tokenizer = tokenizerOf(13);
    const gpu = gpuContext(); // the file's shared context: left open
    for (const output of ["sedd", "logits"] as const) {
      const dit = createDit({
        vocabSize: 13,
        context: 8,
        dModel: 8,
        nHeads: 2,
        nLayers: 1,
        condDim: 4,
        output,
      }, { seed: 2 });
      // a fresh DiT has zero adaLN and output layers: perturb every weight
      const rng = new Rng(7);
      for (let i = 0; i < dit.params.length; i++) dit.params[i] += 0.3 * (rng.uniform() - 0.5);
      for (
        const method of output === "sedd" ? ["euler", "tweedie"] as const : ["ancestral"] as const
      ) {
        const options = { prompt: "the", length: 8, steps: 5, seed: 3, method, batch: 2 };
        const want = sample(dit, tokenizer, { ...options, backend: "ts" });
        const got = await sampleAsync(dit, tokenizer, { ...options, backend: "webgpu", gpu });
        assert.deepEqual(got.ids, want.ids, `${output} ${method}`);
        assert.equal(got.text, want.text);
      }
    }
  },
});

Deno.test({
  name:
    "cli sample --backend webgpu prints the text of --backend ts for a tiny checkpoint, acquiring the GPU once",
  ignore: ignoreGpu,
  async fn() {
    const dir = await makeTempDir();
    try {
      const tokenizer = tokenizerOf(13);
      const model = createModel("tiny", { vocabSize: 13, context: 24, seed: 6 });
      await writeFileAtomic(`${dir}/model.safetensors`, modelCheckpointBytes(model, tokenizer, 7));
      const texts: string[] = [];
      for (const backend of ["webgpu", "ts"]) {
        let r: Awaited<ReturnType<typeof runCli>> | undefined;
        // --backend is resolved once and its context handed to sampleAsync: one device
        const { devices } = await countGpuUse(async () => {
          r = await runCli([
            "sample",
            ...["--checkpoint", `${dir}/model.safetensors`, "--prompt", "the", "--length", "20"],
            ...["--steps", "6", "--seed", "3", "--method", "euler", "--backend", backend],
          ]);
        });
        assert.equal(r!.code, 0, r!.err);
        assert.match(r!.err, new RegExp(`^Backend: ${backend}`, "m"));
        assert.equal(devices, backend === "webgpu" ? 1 : 0, `${backend}: devices acquired`);
        texts.push(r!.out);
      }
      assert.ok(texts[0].startsWith("the"), texts[0]);
      assert.equal(texts[0], texts[1]);
    } finally {
      await removeDir(dir);
    }
  },
});

Deno.test({
  name:
    "cli sample --backend webgpu prints what --backend ts prints for a converted DiT (SEDD, MDLM)",
  ignore: ignoreGpu,
  fn: async () => {
    for (const name of ["sedd", "mdlm"]) {
      const dir = new URL(`../fixtures/dit/converted/${name}`, import.meta.url).pathname;
      const texts: string[] = [];
      for (const backend of ["ts", "webgpu"]) {
        const r = await runCli([
          ...["sample", "--checkpoint", dir, "--prompt", " the", "--length", "12"],
          ...["--steps", "4", "--seed", "5", "--backend", backend],
        ]);
        assert.equal(r.code, 0, r.err);
        assert.match(r.err, new RegExp(`^Backend: ${backend}`, "m"));
        texts.push(r.out);
      }
      assert.equal(texts[1], texts[0], name);
    }
  },
});
