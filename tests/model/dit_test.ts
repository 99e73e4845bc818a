/**
 * The DiT model kind (src/model/dit.ts) against PyTorch and against finite differences.
 *
 * Fixtures: tests/fixtures/dit/make_dit_fixtures.py (a plain-PyTorch DiT with SEDD's names,
 * float64 from float32 weights, all weights nonzero). Tolerance: max |ours - torch| / max |torch|
 * <= 1e-4 for the output and for the gradient of `sum(out * r)` w.r.t. every parameter.
 */

import assert from "node:assert/strict";
import { parseSafetensors, serializeSafetensors } from "../../src/checkpoint/safetensors.ts";
import { ditFromSafetensors, modelFromSafetensors } from "../../src/checkpoint/model_io.ts";
import {
  createDit,
  ditBackward,
  type DitConfig,
  ditForward,
  ditForwardCached,
  type DitModel,
  ditParamTable,
  ditStateDict,
  esigm1Log,
  geluTanh,
  geluTanhGrad,
} from "../../src/model/dit.ts";
import { createModel, forward } from "../../src/model/model.ts";
import {
  absorbLogScore,
  lossBackward,
  lossForward,
  type LossInputs,
} from "../../src/diffusion/losses.ts";
import { maxRelErr } from "../rel_err.ts";

const DIR = new URL("../fixtures/dit/", import.meta.url);

function loadCase(name: string, output: DitConfig["output"]) {
  const bytes = Deno.readFileSync(new URL(`${name}.safetensors`, DIR));
  const { tensors } = parseSafetensors(bytes);
  const params = Object.fromEntries(
    Object.entries(tensors).filter(([n]) => !/^(in|out|grad)\./.test(n)),
  );
  const plain = serializeSafetensors(params);
  // both entry points: the generic loader with kind "dit", and the DiT one
  const { model } = output === "sedd"
    ? modelFromSafetensors(plain, { config: { kind: "dit", nHeads: 2, output } })
    : ditFromSafetensors(plain, { config: { nHeads: 2, output } });
  // our state dict has exactly PyTorch's names, shapes and rotary buffer
  const ours = ditStateDict(model);
  assert.deepEqual(Object.keys(ours).sort(), Object.keys(params).sort());
  for (const [n, t] of Object.entries(ours)) {
    assert.deepEqual(t.shape, params[n].shape, n);
    assert.ok(maxRelErr(t.data, params[n].data as Float32Array, n) < 1e-6, n);
  }
  return { model, tensors };
}

for (const [name, output] of [["sedd", "sedd"], ["logits", "logits"]] as const) {
  Deno.test(`dit: ${name} output and every gradient match PyTorch to 1e-4`, () => {
    const { model, tensors } = loadCase(name, output);
    assert.equal(model.config.vocabSize, 37);
    assert.equal(model.config.dModel, 16);
    assert.equal(model.config.condDim, 8);
    assert.equal(model.config.nLayers, name === "sedd" ? 2 : 1);
    const tokens = tensors["in.tokens"].data as Int32Array;
    const sigma = tensors["in.sigma"].data as Float32Array;
    const r = tensors["in.r"].data as Float32Array;
    const { out, cache } = ditForwardCached(model, tokens, { batch: 2, sigma });
    const want = tensors["out.forward"].data as Float32Array;
    const e = maxRelErr(out, want, "forward");
    assert.ok(e <= 1e-4, `forward: rel err ${e}`);
    // the generic forward dispatches to the DiT and returns float32
    const out32 = forward(model, tokens, { batch: 2, sigma });
    assert.ok(out32 instanceof Float32Array);
    const e32 = maxRelErr(out32, want, "forward (float32)");
    assert.ok(e32 <= 1e-4, `forward (float32): rel err ${e32}`);
    if (output === "sedd") {
      for (let n = 0; n < tokens.length; n++) assert.equal(out[n * 37 + tokens[n]], 0);
    }
    const grads = new Float64Array(model.params.length);
    ditBackward(model, cache, r, grads);
    let checked = 0;
    for (const { name: p, shape } of ditParamTable(model.config)) {
      const { offset } = model.layout[p];
      const n = shape.reduce((a, b) => a * b, 1);
      const g = tensors[`grad.${p}`];
      assert.ok(g, `fixture lacks grad.${p}`);
      const err = maxRelErr(grads.subarray(offset, offset + n), g.data as Float32Array, p);
      assert.ok(err <= 1e-4, `grad ${p}: rel err ${err}`);
      checked++;
    }
    assert.equal(checked, 5 + 10 * model.config.nLayers + 5);
  });
}

/** A small model with every weight random and nonzero, params in float64. */
function randomModel(output: DitConfig["output"]): { model: DitModel; p64: Float64Array } {
  const model = createDit({
    vocabSize: 7,
    context: 4,
    dModel: 8,
    nHeads: 2,
    nLayers: 2,
    condDim: 4,
    output,
  }, { seed: 5 });
  let s = 12345;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const p64 = new Float64Array(model.params.length);
  for (let i = 0; i < p64.length; i++) p64[i] = model.params[i] + 0.3 * rand();
  return { model, p64 };
}

for (const output of ["sedd", "logits"] as const) {
  Deno.test(`dit: ${output} backward matches central differences in float64`, () => {
    const { model, p64 } = randomModel(output);
    const tokens = new Int32Array([6, 1, 2, 6, 3, 6, 0, 5]);
    const sigma = new Float64Array([0.2, 2.5]);
    const V = 7, N = tokens.length;
    const r = new Float64Array(N * V);
    for (let i = 0; i < r.length; i++) r[i] = Math.sin(1.3 * i + 0.5);
    const loss = (p: Float64Array) => {
      const out = ditForward(model, tokens, { batch: 2, sigma, params: p });
      let l = 0;
      for (let i = 0; i < out.length; i++) l += out[i] * r[i];
      return l;
    };
    const { cache } = ditForwardCached(model, tokens, { batch: 2, sigma, params: p64 });
    const grads = new Float64Array(p64.length);
    ditBackward(model, cache, r, grads);
    // every tensor: its first, middle and last element
    const h = 1e-5;
    let worst = 0;
    for (const [pname, { offset, shape }] of Object.entries(model.layout)) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const i of new Set([offset, offset + (n >> 1), offset + n - 1])) {
        const keep = p64[i];
        p64[i] = keep + h;
        const up = loss(p64);
        p64[i] = keep - h;
        const down = loss(p64);
        p64[i] = keep;
        const fd = (up - down) / (2 * h);
        const err = Math.abs(fd - grads[i]) / Math.max(1, Math.abs(fd));
        assert.ok(err < 1e-6, `${pname}[${i - offset}]: analytic ${grads[i]}, numeric ${fd}`);
        worst = Math.max(worst, err);
      }
    }
    assert.ok(worst < 1e-6);
  });
}

Deno.test("dit: geluTanh and its derivative", () => {
  for (const x of [-3, -0.7, 0, 0.4, 2.2]) {
    const fd = (geluTanh(x + 1e-6) - geluTanh(x - 1e-6)) / 2e-6;
    assert.ok(Math.abs(fd - geluTanhGrad(x)) < 1e-8, `x = ${x}`);
  }
  // PyTorch's F.gelu(torch.tensor(1.0, dtype=torch.float64), approximate="tanh")
  assert.ok(Math.abs(geluTanh(1) - 0.8411919906082768) < 1e-12);
});

/** V 5, context 4, d 4, one head, one block, cond 2. */
const SMALL = { vocabSize: 5, context: 4, dModel: 4, nHeads: 1, nLayers: 1, condDim: 2 };

Deno.test("dit: scale-by-sigma branches and the fresh model's output", () => {
  assert.equal(esigm1Log(0.3), Math.log(Math.expm1(0.3)));
  assert.equal(esigm1Log(1.7), Math.log(Math.exp(1.7) - 1));
  // a fresh model has zero adaLN and output layers: SEDD's output is -log(expm1 s) - log(V-1)
  // off the current token, 0 on it
  const model = createDit(SMALL);
  const out = ditForward(model, new Int32Array([1, 4]), { batch: 1, sigma: new Float32Array([2]) });
  const want = -Math.log(Math.exp(2) - 1) - Math.log(4);
  assert.equal(out[1], 0);
  assert.ok(Math.abs(out[0] - want) < 1e-12);
  assert.equal(out[5 + 4], 0);
  assert.ok(Math.abs(out[5 + 2] - want) < 1e-12);
});

Deno.test("dit: bad input gets a clear error", () => {
  const model = createDit(SMALL);
  const tok = new Int32Array([1, 2]);
  assert.throws(() => ditForward(model, tok, { batch: 1, sigma: new Float32Array([0]) }), /> 0/);
  assert.throws(
    () => ditForward(model, tok, { batch: 1, sigma: new Float32Array([1, 1]) }),
    /expected 1 \(one per sequence\), got 2/,
  );
  assert.throws(
    () => ditForward(model, new Int32Array(5), { batch: 1, sigma: new Float32Array([1]) }),
    /T <= context 4/,
  );
  assert.throws(
    () => createDit({ vocabSize: 5, context: 4, dModel: 6, nHeads: 2, nLayers: 1, condDim: 2 }),
    /even integer/,
  );
  // the plain loader points at the DiT one; the DiT loader needs nHeads and checks inv_freq
  const tensors = ditStateDict(model);
  assert.deepEqual(Object.keys(tensors).slice(4, 6), [
    "sigma_map.mlp.2.bias",
    "rotary_emb.inv_freq",
  ]);
  assert.deepEqual(
    ditFromSafetensors(serializeSafetensors(tensors), { config: { nHeads: 1 } }).model.params,
    model.params,
  );
  const bytes = serializeSafetensors(tensors);
  assert.throws(() => modelFromSafetensors(bytes), /config\.kind "dit"/);
  const viaCreate = createModel({ kind: "dit", ...SMALL });
  assert.deepEqual(viaCreate.params, model.params); // same seed, same initialisation
  assert.throws(
    () => ditFromSafetensors(bytes, { config: {} as { nHeads: number } }),
    /expected config\.nHeads/,
  );
  const badInv = serializeSafetensors({
    ...tensors,
    "rotary_emb.inv_freq": { shape: [2], data: new Float32Array([1, 0.5]) },
  });
  assert.throws(() => ditFromSafetensors(badInv, { config: { nHeads: 1 } }), /base 10000/);
});

Deno.test("dit: SEDD's output is the losses' absorbing log-score of the raw logits", () => {
  const { model, tensors } = loadCase("sedd", "sedd");
  const tokens = tensors["in.tokens"].data as Int32Array;
  const sigma = tensors["in.sigma"].data as Float32Array;
  const raw = ditForward(model, tokens, { batch: 2, sigma, raw: true });
  const scored = absorbLogScore(
    new Float32Array(raw.length),
    Float32Array.from(raw),
    tokens,
    sigma,
    2,
    8,
    37,
  );
  const e = maxRelErr(scored, ditForward(model, tokens, { batch: 2, sigma }), "log-score");
  assert.ok(e < 1e-6, `rel err ${e}`);
  assert.ok(maxRelErr(raw, tensors["out.forward"].data as Float32Array) > 0.01); // raw differs
});

/**
 * Fine-tuning as docs/dit.md composes it: the raw logits into one of the library's losses (which
 * apply SEDD's or MDLM's parameterisation), its gradient back through the DiT.
 */
function ditLossAndGrad(
  model: DitModel,
  inputs: Omit<LossInputs, "B" | "T" | "V" | "scale">,
  B: number,
): { loss: number; grads: Float64Array } {
  const sigma = Float64Array.from(inputs.sigma!);
  const { out, cache } = ditForwardCached(model, inputs.xt, { batch: B, sigma, raw: true });
  const full = { ...inputs, B, T: cache.T, V: model.config.vocabSize, scale: 1 / inputs.xt.length };
  const logits = Float32Array.from(out);
  const loss = lossForward(logits, full);
  const dlogits = new Float32Array(logits.length);
  lossBackward(dlogits, logits, full);
  const grads = new Float64Array(model.params.length);
  ditBackward(model, cache, dlogits, grads);
  return { loss, grads };
}

for (const loss of ["score-entropy", "elbo"] as const) {
  Deno.test(`dit: gradient steps on the ${loss} loss lower it`, () => {
    const { model, p64 } = randomModel("sedd");
    model.params.set(p64); // every weight nonzero
    const x0 = new Int32Array([0, 1, 2, 3, 4, 5, 0, 1]);
    const xt = new Int32Array([0, 6, 2, 6, 6, 5, 6, 1]); // 6 is MASK
    const inputs = { loss, x0, xt, sigma: [0.4, 1.5], dsigma: [1, 1] };
    const first = ditLossAndGrad(model, inputs, 2).loss;
    let last = first;
    for (let step = 0; step < 30; step++) {
      const { loss: l, grads } = ditLossAndGrad(model, inputs, 2);
      last = l;
      for (let i = 0; i < grads.length; i++) model.params[i] -= 0.05 * grads[i];
    }
    assert.ok(Number.isFinite(first) && first > 0);
    assert.ok(last < 0.8 * first, `loss went from ${first} to ${last}`);
  });
}
