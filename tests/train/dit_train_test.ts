// Fine-tuning a DiT through train(): the converted SEDD and MDLM fixtures (tests/fixtures/dit/
// converted/) trained on a short text with their own tokenizers, checked against a reference step
// computed here directly from the DiT's passes (the float64 ditForwardCached / ditBackward on ts,
// the float32 training pass of dit_train.ts on wasm and blas) / the losses / AdamW.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { lossBackward, lossForward } from "../../src/diffusion/losses.ts";
import { makeTempDir, readBytes, removeDir } from "../../src/io.ts";
import {
  createDit,
  ditBackward,
  ditForward,
  ditForwardCached,
  type DitModel,
} from "../../src/model/dit.ts";
import { createDitTrainer } from "../../src/model/dit_train.ts";
import { createModel } from "../../src/model/model.ts";
import { type BackendName, defaultBackend } from "../../src/nn/backend.ts";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";
import { parseSafetensors } from "../../src/checkpoint/safetensors.ts";
import { modelFromSafetensors } from "../../src/checkpoint/model_io.ts";
import { encode } from "../../src/tokenizer/mod.ts";
import { createBatch, fillBatch, type GraphName, type LossName } from "../../src/train/batch.ts";
import { splitTokens } from "../../src/train/data.ts";
import { createPool } from "../../src/train/pool.ts";
import { loadCheckpoint, loadConverted, loadRun } from "../../src/train/run_dir.ts";
import { clipGradNorm } from "../../src/train/step.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { text } from "./fixture.ts";
import { maxRelErr } from "../rel_err.ts";

const FIX = fileURLToPath(new URL("../fixtures/dit/converted/", import.meta.url));
const B = 4, T = 16, SEED = 3;

/** A converted fixture, its token stream, and the trainer's split of it. */
async function fixture(name: "sedd" | "mdlm" | "hub") {
  const { model, tokenizer, metadata } = await loadConverted(FIX + name);
  const tokens = encode(tokenizer, text, { eot: false });
  const trainTokens = splitTokens(tokens, { context: T, heldOutFraction: 0.02 }).train;
  const loss = metadata.loss as LossName;
  const timeConditioned = metadata.timeConditioning !== "false";
  // the reference of step 0, as train() runs it
  const graph = metadata.graph as GraphName;
  const step0 = { step: 0, loss, graph, timeConditioned };
  return { model, tokenizer, tokens, trainTokens, loss, timeConditioned, step0 };
}

/**
 * The loss and gradient of step `step`'s whole batch, computed in one pass straight from the
 * DiT's functions on `backend` (the float64 pass on ts, the float32 trainer otherwise): the batch
 * train() draws, the network's raw logits (sigma 0 without time conditioning), the loss on them,
 * and the backward pass.
 */
function reference(
  model: DitModel,
  trainTokens: Int32Array,
  o: { step: number; loss: LossName; graph: GraphName; timeConditioned: boolean },
  backend: BackendName = "ts",
): { loss: number; grads: Float32Array } {
  const V = model.config.vocabSize;
  const batch = createBatch(B, T);
  fillBatch(batch, trainTokens, {
    seed: SEED,
    step: o.step,
    loss: o.loss,
    vocabSize: V,
    graph: o.graph,
    antithetic: true,
  });
  const sigma = o.timeConditioned ? batch.sigma : new Float64Array(B);
  const grads = new Float32Array(model.params.length);
  let logits: Float32Array, backward: (dlogits: Float32Array) => void;
  if (backend === "ts") {
    const { out, cache } = ditForwardCached(model, batch.input, { batch: B, sigma, raw: true });
    logits = Float32Array.from(out);
    backward = (d) => ditBackward(model, cache, d, grads);
  } else {
    const trainer = createDitTrainer(model, { rows: B, length: T, backend });
    logits = trainer.forward(batch.input, { batch: B, sigma, raw: true });
    backward = (d) => trainer.backward(d, grads);
  }
  const inputs = {
    loss: o.loss,
    graph: o.graph,
    x0: batch.target,
    xt: batch.input,
    sigma: batch.sigma,
    dsigma: batch.dsigma,
    B,
    T,
    V,
    scale: batch.scale[0],
  };
  const loss = lossForward(logits, inputs);
  const dlogits = new Float32Array(logits.length);
  lossBackward(dlogits, logits, inputs);
  backward(dlogits);
  return { loss, grads };
}

function runOptions(
  f: Awaited<ReturnType<typeof fixture>>,
  extra: Partial<TrainOptions<DitModel>>,
): TrainOptions<DitModel> & { model: DitModel } {
  return {
    tokens: f.tokens,
    tokenizer: f.tokenizer,
    model: f.model,
    batch: B,
    context: T,
    seed: SEED,
    lr: 3e-3,
    warmup: 0,
    schedule: "constant",
    evalEvery: 0,
    workers: 0,
    ...(f.timeConditioned ? {} : { timeConditioned: false }),
    ...extra,
  } as TrainOptions<DitModel> & { model: DitModel };
}

Deno.test("DiT shards: 2 workers sum to the full-batch gradient, in-process equals it bitwise", async () => {
  // SEDD on absorb, MDLM's SUBS without time conditioning, SEDD's uniform graph (the Hub fixture);
  // on ts (the float64 pass) and wasm (the float32 one), each against its own reference
  for (
    const [name, backend] of [
      ["sedd", "ts"],
      ["mdlm", "ts"],
      ["hub", "ts"],
      ["sedd", "wasm"],
      ["mdlm", "wasm"],
    ] as const
  ) {
    const f = await fixture(name);
    const o = f.step0;
    const ref = reference(f.model, f.trainTokens, o, backend);
    assert.ok(ref.grads.some((g) => g !== 0) && Number.isFinite(ref.loss), name);
    if (backend !== "ts") {
      // the float32 pass agrees with the float64 one
      const ref64 = reference(f.model, f.trainTokens, o, "ts");
      assert.ok(Math.abs(ref.loss - ref64.loss) <= 1e-5 * Math.abs(ref64.loss), name);
      const e = maxRelErr(ref.grads, ref64.grads, name);
      assert.ok(e <= 1e-4, `${name}: float32 vs float64 gradient: relative error ${e}`);
    }
    for (const workers of name === "sedd" ? [0, 2] : [0]) {
      const pool = await createPool({
        backend,
        config: f.model.config,
        params: f.model.params,
        batch: B,
        context: T,
        workers,
        seed: SEED,
        loss: f.loss,
        graph: o.graph,
        timeConditioned: f.timeConditioned,
      });
      try {
        fillBatch(pool.batch, f.trainTokens, {
          seed: SEED,
          step: 0,
          loss: f.loss,
          vocabSize: f.model.config.vocabSize,
          graph: o.graph,
          antithetic: true,
        });
        const loss = await pool.gradient(0);
        assert.equal(pool.workers, workers);
        if (workers === 0) {
          assert.equal(loss, ref.loss, `${name} on ${backend}`);
          assert.deepEqual(pool.grads, ref.grads, `${name} on ${backend}`);
        } else {
          assert.ok(
            Math.abs(loss - ref.loss) <= 1e-6 * Math.abs(ref.loss),
            `${loss} vs ${ref.loss}`,
          );
          const e = maxRelErr(pool.grads, ref.grads, name);
          assert.ok(e <= 1e-6, `${name} on ${backend}, 2 workers: relative gradient error ${e}`);
        }
      } finally {
        pool.terminate();
      }
    }
  }
});

Deno.test("train() on a converted DiT: step 1 is the reference AdamW step, and the loss falls", async () => {
  // "auto" picks the float32 pass (blas or wasm) where WebAssembly SIMD validates; "ts" the float64
  for (const [name, backend] of [["sedd", "auto"], ["mdlm", "auto"], ["sedd", "ts"]] as const) {
    const f = await fixture(name);
    const before = f.model.params.slice();
    const one = await train(runOptions(f, { steps: 1, backend }));
    assert.deepEqual(f.model.params, before, "train() must not write the caller's model");
    assert.equal(one.loss, f.loss);
    const ran = one.backend.backend as BackendName;
    if (backend === "ts" || defaultBackend() === "ts") assert.equal(ran, "ts");
    else assert.ok(ran === "wasm" || ran === "blas", `auto ran ${ran}`);
    assert.match(
      one.backend.note,
      ran === "ts"
        ? /a DiT trains on its float64 reference pass$/
        : /a DiT trains on its float32 pass$/,
    );
    const o = f.step0;
    const ref = reference(f.model, f.trainTokens, o, ran);
    assert.equal(one.history[0].loss, ref.loss, name);
    const gradNorm = clipGradNorm(ref.grads, 1);
    assert.equal(one.history[0].gradNorm, gradNorm, name);
    const params = f.model.params.slice();
    adamwStep(params, ref.grads, createAdamW(params.length), { lr: 3e-3, weightDecay: 0.01 });
    assert.deepEqual(one.model.params, params, name);
    assert.equal((one.model.config as { kind?: string }).kind, "dit");

    // A dozen steps lower the loss of the first step's batch.
    if (backend === "ts") continue; // the float64 pass is slow: one step is enough there
    const many = await train(runOptions(f, { steps: 12, backend }));
    const after = reference(many.model, f.trainTokens, o).loss;
    assert.ok(after < ref.loss * 0.9, `${name}: loss ${ref.loss} -> ${after}`);
  }
});

Deno.test("a SEDD DiT without scale-by-sigma is scored on its own log-scores", async () => {
  // The shard shifts the raw logits so that the absorb loss reads the network's output itself:
  // check its loss against SEDD's score entropy written out on that output.
  const f = await fixture("sedd");
  const model = createDit({ ...f.model.config, scaleBySigma: false }, { params: f.model.params });
  const V = model.config.vocabSize, MASK = V - 1;
  const pool = await createPool({
    config: model.config,
    params: model.params,
    batch: B,
    context: T,
    workers: 0,
    seed: SEED,
    loss: "score-entropy",
  });
  const opts = { seed: SEED, step: 0, loss: "score-entropy" as const, vocabSize: V };
  fillBatch(pool.batch, f.trainTokens, { ...opts, antithetic: true });
  const got = await pool.gradient(0);
  const { input, target, sigma, dsigma, scale } = pool.batch;
  const s = ditForward(model, input, { batch: B, sigma }); // SEDD's log-scores
  let want = 0, masked = 0;
  for (let i = 0; i < B * T; i++) {
    if (input[i] !== MASK) continue;
    masked++;
    const b = Math.floor(i / T), r = 1 / Math.expm1(sigma[b]);
    let sum = 0;
    for (let y = 0; y < MASK; y++) sum += Math.exp(s[i * V + y]);
    want += dsigma[b] * (sum - r * s[i * V + target[i]] + r * (Math.log(r) - 1));
  }
  want *= scale[0];
  assert.ok(masked > 0);
  assert.ok(Math.abs(got - want) <= 1e-5 * Math.abs(want), `${got} vs ${want}`);
  pool.terminate();
});

Deno.test("a fine-tuned DiT's run directory reloads, and resuming continues bit-identically", async () => {
  const dir = await makeTempDir();
  try {
    const f = await fixture("mdlm"); // no time conditioning: the setting must survive the resume
    const whole = await train(runOptions(f, { steps: 4, out: `${dir}/whole` }));
    await train(runOptions(f, { steps: 2, out: `${dir}/cut` }));
    // the option says the result holds a DiT; without it the resume is refused
    await assert.rejects(train({ tokens: f.tokens, resume: `${dir}/cut`, steps: 4 }), {
      message: /^Invalid model: expected model: \{ kind: "dit" \} to resume a DiT's run, got null$/,
    });
    const resumed = await train({
      tokens: f.tokens,
      resume: `${dir}/cut`,
      steps: 4,
      model: { kind: "dit" },
    });
    assert.equal(resumed.step, 4);
    assert.deepEqual(resumed.model.params, whole.model.params);
    assert.equal(resumed.history.length, 2);

    const ckpt = await loadCheckpoint(`${dir}/whole`);
    assert.equal((ckpt.model.config as { kind?: string }).kind, "dit");
    assert.deepEqual(ckpt.model.config, f.model.config);
    assert.deepEqual(ckpt.model.params, whole.model.params);
    assert.equal(ckpt.step, 4);
    assert.equal(ckpt.metadata.loss, "elbo");
    assert.equal(ckpt.metadata.timeConditioning, "false");
    assert.equal(ckpt.tokenizer.vocabSize, f.tokenizer.vocabSize);
    // SEDD's state dict, its rotary buffer included, as PyTorch's strict load wants
    const bytes = await readBytes(`${dir}/whole/model.safetensors`);
    const { tensors } = parseSafetensors(bytes);
    assert.deepEqual(tensors["rotary_emb.inv_freq"].shape, [2]);
    assert.deepEqual(tensors["vocab_embed.embedding"].shape, [261, 8]);
    // the transformer reader names what the file is instead of misreading it
    assert.throws(() => modelFromSafetensors(bytes), {
      name: "TypeError",
      message: /^A DiT checkpoint \(__metadata__.config kind "dit"\)/,
    });
    const run = await loadRun(`${dir}/whole`);
    assert.equal(run.settings.timeConditioned, false);
    assert.equal(run.optimizer.step, 4);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("train(): a fresh DiT from a config, and a DiT's bad options get one-line errors", async () => {
  const f = await fixture("sedd");
  const fresh = await train({
    tokens: f.tokens,
    tokenizer: f.tokenizer,
    model: { kind: "dit", dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 },
    steps: 2,
    batch: 2,
    context: T,
    evalEvery: 0,
    workers: 0,
  });
  assert.deepEqual(
    { ...fresh.model.config },
    {
      kind: "dit",
      vocabSize: 261,
      context: T,
      dModel: 8,
      nHeads: 2,
      nLayers: 1,
      condDim: 4,
      scaleBySigma: true,
      output: "sedd",
    },
  );
  assert.equal(fresh.loss, "score-entropy");
  assert.ok(fresh.history.every((h) => Number.isFinite(h.loss)));

  const bad: [Partial<TrainOptions<DitModel>>, RegExp][] = [
    [{ loss: "elbo" }, /^Invalid loss for this DiT: expected "score-entropy" .*got "elbo"$/],
    [{ loss: "seed" }, /^Invalid loss for this DiT/],
    [{ graph: "uniform" }, /^Unsupported DiT: expected scaleBySigma false with the uniform graph/],
    [
      { backend: "webgpu" as unknown as "ts" },
      /^Unsupported backend for a DiT: training a DiT on "webgpu" is not supported yet/,
    ],
  ];
  for (const [extra, re] of bad) {
    await assert.rejects(train(runOptions(f, { steps: 1, ...extra })), { message: re });
  }
  const uniform = createDit({ ...f.model.config, scaleBySigma: false }, { params: f.model.params });
  const u = await train(runOptions(f, { model: uniform, graph: "uniform", steps: 1 }));
  assert.equal(u.graph, "uniform");
  assert.ok(Number.isFinite(u.history[0].loss));
  await assert.rejects(
    train({
      tokens: f.tokens,
      tokenizer: f.tokenizer,
      model: createModel("tiny", { vocabSize: 261 }),
      timeConditioned: false,
      steps: 1,
      batch: 2,
      context: T,
      workers: 0,
    }),
    { message: /^Invalid timeConditioned: expected it only with a DiT/ },
  );
});

Deno.test("train(): a DiT whose float32 pass would not fit in the wasm32 memory is refused first", async () => {
  const f = await fixture("sedd");
  const tokens = Int32Array.from({ length: 80000 }, (_, i) => (i * 7919) % 260);
  // one head of 16384^2 float32 probabilities is 1 GiB per row: 4 rows per pass do not fit
  const big = (extra: Partial<TrainOptions<DitModel>>) =>
    train({
      tokens,
      tokenizer: f.tokenizer,
      model: { kind: "dit", dModel: 8, nHeads: 1, nLayers: 1, condDim: 4 },
      context: 16384,
      batch: 4,
      steps: 1,
      evalEvery: 0,
      workers: 0,
      backend: "wasm",
      ...extra,
    });
  await assert.rejects(big({}), {
    name: "RangeError",
    message:
      /^Invalid --batch: expected sequences per pass whose workspace fits in 4\.00 GiB .*--batch 4 at --context 16384 \(4 per pass/,
  });
  await assert.rejects(big({ context: 32768, batch: 1 }), {
    name: "RangeError",
    message:
      /^Invalid --context: expected a context whose workspace fits in .*, at most \d+, got 32768/,
  });
});
