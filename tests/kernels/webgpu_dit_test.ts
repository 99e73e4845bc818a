// The DiT on the GPU (src/kernels/webgpu/dit.ts) against the float64 reference (ditForward), the
// PyTorch fixtures of tests/fixtures/dit and the converted checkpoints of
// tests/fixtures/dit/converted, each within 1e-4 of the output's largest magnitude; and
// sampleIdsGpu over it against sampleIds over the CPU DiT denoiser (the same tokens for the same
// seed).
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import assert from "node:assert/strict";
import { parseSafetensors } from "../../src/checkpoint/safetensors.ts";
import { convertedSampling } from "../../src/checkpoint/converted.ts";
import { loadConverted } from "../../src/files/mod.ts";
import { type DitConfigInput, ditForward, type DitModel } from "../../src/model/dit.ts";
import { forward } from "../../src/model/model.ts";
import { sampleIds, type SampleOptions } from "../../src/sampler/sample_ids.ts";
import type { GpuContext } from "../../src/kernels/webgpu/context.ts";
import {
  createGpuDit,
  createGpuDitDenoiser,
  gpuDitAttention,
} from "../../src/kernels/webgpu/dit.ts";
import { sampleIdsGpu } from "../../src/kernels/webgpu/sampler.ts";
import { attentionForward } from "../../src/nn/attention.ts";
import { loadDitFixture, perturbedDit, randomTokens } from "../model/dit_cases.ts";
import { maxRelErr } from "../rel_err.ts";
import { countSubmits, gpuContext, ignoreGpu } from "./webgpu_available.ts";

function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({ name, ignore: ignoreGpu, fn: () => fn(gpuContext()) });
}

const DIR = new URL("../fixtures/dit/", import.meta.url);

/** A DiT with every weight random and nonzero (adaLN and output layers too). */
function randomDit(config: Partial<DitConfigInput>, seed: number): DitModel {
  return perturbedDit(
    {
      vocabSize: 53,
      context: 80,
      dModel: 32,
      nHeads: 2,
      nLayers: 2,
      condDim: 16,
      ...config,
    },
    seed,
    0.05,
  );
}

gpuTest(
  "gpuDitAttention matches attentionForward for T past the chunk and heads past the workgroup",
  async (ctx) => {
    // HS 8 (one channel each), HS 96 (two per invocation, the second partly idle), HS 64 (SEDD
    // small's: every invocation one channel); T 1, 63, 64, 65, 150 around the 64-key chunks, and
    // SEDD's context of 1024
    const shapes = [[16, 2], [96, 1], [128, 2]];
    const lengths = [[1, 1], [2, 63], [1, 64], [2, 65], [1, 150], [1, 1024]];
    for (const [C, NH] of shapes) {
      for (const [B, T] of C === 128 ? [[2, 65]] : lengths) {
        const qkv = new Float32Array(B * T * 3 * C);
        let s = 12345 + T;
        for (let i = 0; i < qkv.length; i++) {
          s = (s * 1103515245 + 12345) % 2147483648;
          qkv[i] = (s / 2147483648) * 4 - 2;
        }
        const want = new Float32Array(B * T * C);
        attentionForward(want, new Float32Array(B * NH * T * T), qkv, null, B, T, C, NH);
        const out = ctx.zeros(B * T * C);
        gpuDitAttention(ctx, out, ctx.upload(qkv), B, T, C, NH);
        const e = maxRelErr(await ctx.readF32(out), want, `C ${C} NH ${NH} B ${B} T ${T}`);
        assert.ok(e <= 1e-5, `C ${C} NH ${NH} B ${B} T ${T}: rel err ${e}`);
      }
    }
  },
);

gpuTest("the GPU DiT matches PyTorch on the sedd and logits fixtures to 1e-4", async (ctx) => {
  for (const [name, output] of [["sedd", "sedd"], ["logits", "logits"]] as const) {
    const { model, tokens, sigma, want } = loadDitFixture(name, output);
    const denoise = createGpuDitDenoiser(ctx, model);
    const got = await ctx.readF32(denoise(ctx.upload(tokens), sigma, 2));
    const e = maxRelErr(got, want, name);
    assert.ok(e <= 1e-4, `${name}: rel err ${e}`);
  }
});

gpuTest(
  "the GPU DiT matches the float64 pass to 1e-4: SEDD with and without scale-by-sigma, MDLM logits",
  async (ctx) => {
    const cases: [string, Partial<DitConfigInput>][] = [
      ["sedd", { output: "sedd" }],
      ["sedd, no scaleBySigma", { output: "sedd", scaleBySigma: false }],
      ["logits", { output: "logits" }],
      ["logits, HS 80", { output: "logits", dModel: 80, nHeads: 1, nLayers: 1 }],
    ];
    for (const [what, config] of cases) {
      const model = randomDit(config, 3);
      const V = model.config.vocabSize;
      const gd = createGpuDit(ctx, model);
      const denoise = createGpuDitDenoiser(ctx, gd);
      // sigma on both sides of 0.5 (SEDD's expm1 / exp - 1 switch); T past the 64-key chunk
      for (const [B, T] of [[3, 70], [1, 5]]) {
        const tokens = randomTokens(B * T, V, 11 + T);
        const sigma = new Float32Array([0.05, 0.5, 3.7].slice(0, B));
        const want = ditForward(model, tokens, { batch: B, sigma });
        const got = await ctx.readF32(denoise(ctx.upload(tokens), sigma, B));
        const e = maxRelErr(got, want, what);
        assert.ok(e <= 1e-4, `${what} B ${B} T ${T}: rel err ${e}`);
        assert.ok(e > 0, `${what}: float32 and float64 should differ somewhat`);
        if (config.output === "sedd") {
          for (let n = 0; n < B * T; n++) assert.equal(got[n * V + tokens[n]], 0, `${what} ${n}`);
        }
      }
      // disposing a denoiser frees its activations, not the GpuDit it was given
      denoise.dispose();
      const again = createGpuDitDenoiser(ctx, gd);
      const tokens = randomTokens(4, V, 2), sigma = new Float32Array([0.8]);
      const e = maxRelErr(
        await ctx.readF32(again(ctx.upload(tokens), sigma, 1)),
        ditForward(model, tokens, { batch: 1, sigma }),
      );
      assert.ok(e <= 1e-4, `${what}: after dispose, rel err ${e}`);
      again.dispose();
      gd.destroy();
    }
  },
);

/** The noise level the network is given: sigma, or 0 without time conditioning (MDLM). */
function netSigma(timeConditioned: boolean, sigma: Float32Array): Float32Array {
  return timeConditioned ? sigma : new Float32Array(sigma.length);
}

gpuTest(
  "the GPU DiT matches PyTorch on the converted SEDD, Hub (uniform) and MDLM checkpoints",
  async (ctx) => {
    const dir = new URL("converted/", DIR).pathname;
    for (const name of ["sedd", "hub", "mdlm"]) {
      const loaded = await loadConverted(dir + name);
      const { tensors } = parseSafetensors(
        await Deno.readFile(`${dir}expected_${name}.safetensors`),
      );
      const tokens = tensors["in.tokens"].data as Int32Array;
      const sigma = tensors["in.sigma"].data as Float32Array;
      const want = tensors["out.forward"].data as Float32Array;
      const [B, T, Vt] = tensors["out.forward"].shape;
      const { timeConditioned } = convertedSampling(loaded.metadata);
      const denoise = createGpuDitDenoiser(ctx, loaded.model, { timeConditioned });
      const got = await ctx.readF32(denoise(ctx.upload(tokens), sigma, B));
      // the CPU denoiser, as sample() builds it, gives the same values
      const cpu = forward(loaded.model, tokens, {
        batch: B,
        sigma: netSigma(timeConditioned, sigma),
      });
      assert.ok(maxRelErr(got, cpu, `${name} vs cpu`) <= 1e-5, `${name}: against the CPU pass`);
      const V = loaded.model.config.vocabSize; // Hub: PyTorch has no mask column (Vt = V - 1)
      let err = 0, scale = 0;
      for (let r = 0; r < B * T; r++) {
        for (let v = 0; v < Vt; v++) {
          err = Math.max(err, Math.abs(got[r * V + v] - want[r * Vt + v]));
          scale = Math.max(scale, Math.abs(want[r * Vt + v]));
        }
      }
      assert.ok(scale > 1, `${name}: a nontrivial output`);
      assert.ok(err / scale <= 1e-4, `${name}: max |gpu - torch| / max |torch| = ${err / scale}`);
    }
  },
);

gpuTest(
  "sampleIdsGpu over the GPU DiT gives sampleIds' tokens over the CPU DiT (euler, ancestral)",
  async (ctx) => {
    const cases: [string, Partial<DitConfigInput>, Partial<SampleOptions>][] = [
      ["sedd euler", { output: "sedd" }, {
        method: "euler",
        output: "logScore",
        scaleBySigma: false,
        timeConditioned: true,
      }],
      ["sedd uniform euler", { output: "sedd", scaleBySigma: false }, {
        method: "euler",
        graph: "uniform",
        output: "logScore",
        scaleBySigma: false,
        timeConditioned: true,
      }],
      ["mdlm ancestral, no time conditioning", { output: "logits" }, {
        method: "ancestral",
        output: "logits",
        timeConditioned: false,
      }],
    ];
    for (const [what, config, opts] of cases) {
      const model = randomDit({ ...config, vocabSize: 23, context: 12 }, 5);
      const V = model.config.vocabSize, B = 2, T = 12;
      const tc = opts.timeConditioned === true;
      const zeros = new Float32Array(B);
      const cpu = (ids: Int32Array, sigma: Float32Array) =>
        forward(model, ids, { batch: B, sigma: tc ? sigma : zeros });
      const gpu = createGpuDitDenoiser(ctx, model, { timeConditioned: tc });
      const base = { ...opts, steps: 6, length: T, batch: B } as SampleOptions;
      const samples: string[] = [];
      for (const seed of [1, 2]) {
        const want = sampleIds(cpu, V, V - 1, { ...base, seed });
        const got = await sampleIdsGpu(ctx, gpu, V, V - 1, { ...base, seed });
        assert.deepEqual([...got.ids], [...want.ids], `${what} seed ${seed}: ids`);
        assert.equal(got.evaluations, want.evaluations, `${what}: evaluations`);
        assert.equal(got.savedEvaluations, want.savedEvaluations, `${what}: saved evaluations`);
        if (opts.graph !== "uniform") assert.ok(!want.ids.includes(V - 1), `${what}: unmasked`);
        samples.push(want.ids.join());
      }
      assert.notEqual(samples[0], samples[1], `${what}: two seeds, two samples`);
    }
  },
);

gpuTest(
  "sampleIdsGpu over the GPU DiT: one submit per step, only the end read back",
  async (ctx) => {
    const model = randomDit({ vocabSize: 19, context: 8, nLayers: 1 }, 8);
    const V = model.config.vocabSize, B = 2, T = 8, steps = 4;
    const denoise = createGpuDitDenoiser(ctx, model, { batch: B, context: T });
    await ctx.sync();
    try {
      const { submits, maps } = await countSubmits(ctx, () =>
        sampleIdsGpu(ctx, denoise, V, V - 1, {
          method: "euler",
          steps,
          length: T,
          batch: B,
          seed: 1,
          output: "logScore",
          scaleBySigma: false,
        }));
      // as for any denoiser: the final denoising step joins the ids' read, then the generator's
      // state is read
      assert.equal(submits, steps + 2, "submits");
      assert.equal(maps, 2, "readbacks");
    } finally {
      denoise.dispose();
    }
  },
);

gpuTest("the GPU DiT refuses tensors past the device's binding limit, with both numbers", (ctx) => {
  const model = randomDit({ nLayers: 1, context: 8 }, 7); // V 53, d 32, MLP 128
  const limits = { maxStorageBufferBindingSize: 4096, maxBufferSize: 1 << 30 };
  const small = { device: { limits } } as unknown as GpuContext;
  assert.throws(
    () => createGpuDit(small, model),
    /at most 4096 bytes, got 6784 for vocab_embed\.embedding \[53, 32\]/,
  );
  // the parameters fit, the (B*T,4d) MLP hidden of 2 x 8 tokens does not
  limits.maxStorageBufferBindingSize = 5000;
  limits.maxBufferSize = 8000;
  const fits = { ctx: small, model, params: {}, destroy() {} };
  const denoise = createGpuDitDenoiser(small, fits);
  assert.throws(
    () => denoise(ctx.upload(new Int32Array(16)), new Float32Array([1, 1]), 2),
    /at most 5000 bytes, got 8192 for the \(B\*T,4d\) MLP hidden of 2 sequences of 8 tokens/,
  );
  return Promise.resolve();
});

gpuTest("the GPU DiT denoiser rejects bad input with one-line messages", async (ctx) => {
  const model = randomDit({ nLayers: 1, context: 8 }, 7);
  const denoise = createGpuDitDenoiser(ctx, model);
  const ids = ctx.upload(new Int32Array([1, 2, 3, 4]));
  assert.throws(() => denoise(ids, new Float32Array([0]), 1), /Invalid sigma\[0\].*> 0.*got 0/);
  assert.throws(
    () => denoise(ids, new Float32Array([1]), 2),
    /expected a Float32Array of 2.*got 1/,
  );
  assert.throws(() => denoise(ctx.zeros(4), new Float32Array([1]), 1), /expected an i32.*got f32/);
  assert.throws(() => denoise(ids, new Float32Array([1]), 3), /multiple of batch 3, got 4/);
  assert.throws(
    () => denoise(ctx.upload(new Int32Array(9)), new Float32Array([1]), 1),
    /expected T <= context 8, got 9/,
  );
  assert.throws(
    () =>
      createGpuDitDenoiser(ctx, model, { timeConditioned: false })(ids, new Float32Array([1]), 1),
    /timeConditioned false.*> 0.*got 0/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => createGpuDit(ctx, { config: { kind: "transformer" } } as any),
    /expected a DiT.*got kind transformer/,
  );
  denoise.dispose();
  assert.throws(() => denoise(ids, new Float32Array([1]), 1), /got a disposed one/);
  await ctx.sync();
});
