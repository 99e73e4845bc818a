// Directories written by tools/convert_checkpoint.py from tiny fake SEDD / Hub / MDLM checkpoints
// (tests/fixtures/dit/converted/make_converted_fixtures.py): loaded here, their forward pass
// matched against PyTorch's, then sampled, infilled and scored.
import assert from "node:assert/strict";
import {
  absorbLogScore,
  convertedSampling,
  decode,
  encode,
  evaluate,
  forward,
  parseSafetensors,
  sample,
} from "../../mod.ts";
import {
  loadAnyCheckpoint,
  loadCheckpoint,
  loadConverted,
  type LoadedDit,
} from "../../src/files/mod.ts";
import { ditForward, type DitModel } from "../../src/model/dit.ts";
import { ditForwardFast } from "../../src/model/dit_fast.ts";
import { makeTempDir, removeDir } from "../../src/io.ts";

const DIR = new URL("../fixtures/dit/converted/", import.meta.url).pathname;
const CASES = ["sedd", "hub", "mdlm"] as const;

async function expected(name: string) {
  const { tensors } = parseSafetensors(await Deno.readFile(`${DIR}expected_${name}.safetensors`));
  return {
    tokens: tensors["in.tokens"].data as Int32Array,
    sigma: tensors["in.sigma"].data as Float32Array,
    out: { shape: tensors["out.forward"].shape, data: tensors["out.forward"].data as Float32Array },
  };
}

/** The noise level the network is given: sigma, or 0 without time conditioning (MDLM). */
function netSigma(loaded: LoadedDit, sigma: Float32Array): Float32Array {
  return convertedSampling(loaded.metadata).timeConditioned
    ? sigma
    : new Float32Array(sigma.length);
}

Deno.test("converted SEDD, Hub and MDLM checkpoints: forward matches PyTorch to 1e-4", async () => {
  // sedd_f16 / sedd_bf16: the SEDD run converted with --dtype f16 / bf16, against PyTorch's
  // output for the weights rounded the same way.
  for (const name of [...CASES, "sedd_f16", "sedd_bf16"]) {
    const loaded = await loadConverted(DIR + name);
    const { tokens, sigma, out } = await expected(name);
    const ours = forward(loaded.model, tokens, { batch: 2, sigma: netSigma(loaded, sigma) });
    const [B, T, Vt] = out.shape;
    const V = loaded.model.config.vocabSize;
    // The uniform Hub case has no mask in PyTorch (Vt = V - 1): the converter appended one.
    assert.equal(Vt, name === "hub" ? V - 1 : V, name);
    let err = 0, scale = 0;
    for (let r = 0; r < B * T; r++) {
      for (let v = 0; v < Vt; v++) {
        const want = out.data[r * Vt + v];
        err = Math.max(err, Math.abs(ours[r * V + v] - want));
        scale = Math.max(scale, Math.abs(want));
      }
    }
    assert.ok(scale > 1, `${name}: a nontrivial output`);
    assert.ok(err / scale <= 1e-4, `${name}: max |ours - torch| / max |torch| = ${err / scale}`);
  }
});

Deno.test("converted checkpoints: config, metadata and the GPT-2-style tokenizer", async () => {
  const sedd = await loadConverted(DIR + "sedd");
  assert.deepEqual(
    [sedd.model.config.nHeads, sedd.model.config.nLayers, sedd.model.config.output, sedd.step],
    [2, 2, "sedd", 1234],
  );
  assert.equal(sedd.metadata.loss, "score-entropy");
  assert.equal(sedd.converted.ema, true);
  const hub = await loadConverted(DIR + "hub"); // vocab.json + merges.txt
  const s = convertedSampling(hub.metadata);
  assert.deepEqual([s.graph, s.schedule.name, s.timeConditioned], ["uniform", "geometric", true]);
  assert.ok(Math.abs(s.schedule.sigma(1) - 20) < 1e-9);
  assert.equal(hub.model.config.scaleBySigma, false);
  const mdlm = await loadConverted(DIR + "mdlm");
  assert.deepEqual(
    [mdlm.metadata.loss, mdlm.metadata.timeConditioning, mdlm.step],
    ["elbo", "false", 500],
  );
  for (const { tokenizer } of [sedd, hub, mdlm]) {
    assert.equal(tokenizer.vocabSize, 261);
    assert.equal(tokenizer.maskId, 260);
    const ids = encode(tokenizer, " the whale", { eot: false });
    assert.equal(ids[0], 258); // "Ġthe", by the merges Ġ t, h e, Ġt he
    assert.equal(decode(tokenizer, ids), " the whale");
  }
  // loadAnyCheckpoint recognises the directory; loadCheckpoint says which loader to use.
  const any = await loadAnyCheckpoint(DIR + "mdlm");
  assert.equal((any.model.config as { kind?: string }).kind, "dit");
  await assert.rejects(
    () => loadCheckpoint(DIR + "mdlm"),
    /converted DiT checkpoint.*loadConverted/,
  );
});

Deno.test("converted checkpoints sample and infill with their own graph and schedule", async () => {
  const methods = { sedd: ["euler", "ancestral"], hub: ["euler", "tweedie"], mdlm: ["ancestral"] };
  for (const name of CASES) {
    const { model, tokenizer, metadata } = await loadConverted(DIR + name);
    for (const method of methods[name] as ("euler" | "ancestral" | "tweedie")[]) {
      const own = { method, ...convertedSampling(metadata) };
      const r = sample(model, tokenizer, { ...own, infill: " the[MASK:3] the", steps: 4, seed: 1 });
      assert.ok(r.text.startsWith(" the") && r.text.endsWith(" the"), `${name} ${method}`);
      assert.equal(r.ids.length, 5);
      assert.ok(!r.ids.includes(tokenizer.maskId), `${name} ${method}: nothing left masked`);
      const p = sample(model, tokenizer, { ...own, prompt: " the", length: 6, steps: 3 });
      assert.equal(p.ids[0], 258);
    }
  }
  const { model, tokenizer } = await loadConverted(DIR + "mdlm");
  assert.throws(
    () => sample(model, tokenizer, { output: "logScore", steps: 2 }),
    /expected "logits" \(its config.output is "logits"\), got "logScore"/,
  );
});

Deno.test("MDLM without time conditioning: the sampler caches, the network sees sigma 0", async () => {
  const { model, tokenizer, metadata } = await loadConverted(DIR + "mdlm");
  const opts = { steps: 16, seed: 2, length: 12, method: "ancestral" as const };
  const r = sample(model, tokenizer, { ...opts, ...convertedSampling(metadata) });
  assert.ok(r.savedEvaluations > 0, "ancestral reuses the output of an unchanged step");
  const t = sample(model, tokenizer, { ...opts, timeConditioned: true });
  assert.equal(t.savedEvaluations, 0);
});

Deno.test("converted checkpoints: the bound scores what the network returns", async () => {
  const text = " the whale the sea the whale and the ship the end";
  for (const name of CASES) {
    const { model, tokenizer, metadata } = await loadConverted(DIR + name);
    const tokens = encode(tokenizer, text, { eot: false });
    const { graph, schedule, timeConditioned } = convertedSampling(metadata);
    const backend = "wasm" as const;
    const opts = { samples: 4, seed: 3, graph, schedule, timeConditioned, tokenizer, backend };
    const r = evaluate(model, tokens, opts);
    assert.ok(Number.isFinite(r.natsPerToken) && r.natsPerToken > 0, name);
    assert.equal(r.loss, name === "mdlm" ? "elbo" : "score-entropy");
    assert.ok(r.bitsPerChar! > 0);
    // The same bound from the network as a function: MDLM's logits at sigma 0, SEDD's raw logits,
    // through the float32 pass evaluate() runs (exactly), and through the float64 reference (to
    // float32 rounding).
    const bound = (pass: "fast" | "f64") =>
      evaluate(
        (ids: Int32Array, sigma: Float32Array) => {
          const o = {
            batch: sigma.length,
            sigma: timeConditioned ? sigma : new Float32Array(sigma.length),
            raw: true,
          };
          return pass === "fast"
            ? Float32Array.from(ditForwardFast(model, ids, { ...o, backend }))
            : Float32Array.from(ditForward(model, ids, o));
        },
        tokens,
        {
          ...opts,
          loss: r.loss,
          vocabSize: model.config.vocabSize,
          context: model.config.context,
        },
      ).natsPerToken;
    assert.equal(r.natsPerToken, bound("fast"), name);
    const f64 = bound("f64");
    assert.ok(Math.abs(r.natsPerToken - f64) <= 1e-5 * f64, `${name}: ${r.natsPerToken} vs ${f64}`);
  }
});

Deno.test("a DiT without scale-by-sigma under absorb: the bound scores its own log-scores", async () => {
  const { model, tokenizer } = await loadConverted(DIR + "sedd");
  const plain: DitModel = { ...model, config: { ...model.config, scaleBySigma: false } };
  const V = model.config.vocabSize;
  const tokens = encode(tokenizer, " the whale the sea the ship", { eot: false });
  const opts = { samples: 3, seed: 5, vocabSize: V, context: 16 };
  // SEDD's output of this network (log-scores, current token 0), shifted so that the score-entropy
  // loss's own scale-by-sigma (absorbLogScore) gives it back unchanged.
  const seddOut = (ids: Int32Array, sigma: Float32Array) => {
    const out = forward(plain, ids, { batch: sigma.length, sigma });
    const n = out.length / sigma.length;
    for (let b = 0; b < sigma.length; b++) {
      const shift = Math.log(Math.expm1(sigma[b])) + Math.log(V - 1);
      for (let i = b * n; i < (b + 1) * n; i++) out[i] += shift;
    }
    const back = absorbLogScore(
      new Float32Array(out.length),
      out,
      ids,
      sigma,
      sigma.length,
      n / V,
      V,
    );
    const direct = forward(plain, ids, { batch: sigma.length, sigma });
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(back[i] - direct[i]) < 1e-3);
    return out;
  };
  const want = evaluate(seddOut, tokens, { ...opts, loss: "score-entropy" });
  const got = evaluate(plain, tokens, { samples: 3, seed: 5 });
  assert.ok(Math.abs(got.natsPerToken - want.natsPerToken) < 1e-5 * want.natsPerToken);
  const scaled = evaluate(model, tokens, { samples: 3, seed: 5 });
  assert.ok(Math.abs(scaled.natsPerToken - got.natsPerToken) > 1e-3, "the flag changes the bound");
});

Deno.test("converted directories: a missing file, a wrong nHeads, a foreign tokenizer", async () => {
  const tmp = await makeTempDir();
  try {
    const copy = async (name: string, edit?: (c: Record<string, unknown>) => void) => {
      const d = `${tmp}/${name}`;
      await Deno.mkdir(d);
      for (const f of ["model.safetensors", "config.json", "tokenizer.json"]) {
        await Deno.copyFile(`${DIR}sedd/${f}`, `${d}/${f}`);
      }
      if (edit) {
        const c = JSON.parse(await Deno.readTextFile(`${d}/config.json`));
        edit(c);
        await Deno.writeTextFile(`${d}/config.json`, JSON.stringify(c));
      }
      return d;
    };
    const noTok = await copy("notok");
    await Deno.remove(`${noTok}/tokenizer.json`);
    await assert.rejects(
      () => loadConverted(noTok),
      /^RangeError: Incomplete converted checkpoint: expected .*tokenizer.json/,
    );
    await assert.rejects(
      async () => loadConverted(await copy("heads", (c) => (c.nHeads = 4))),
      /Invalid "rotary_emb.inv_freq": expected shape \[1\] for nHeads 4, got \[2\]/,
    );
    await assert.rejects(
      async () => loadConverted(await copy("layers", (c) => (c.nLayers = 3))),
      /config.json says nLayers 3, model.safetensors has 2/,
    );
    await assert.rejects(
      async () => loadConverted(await copy("graph", (c) => (c.graph = "ring"))),
      /Invalid config.json: expected graph one of "absorb", "uniform", got "ring"/,
    );
    const vm = await copy("vm", (c) => (c.tokenizer = ["vocab.json", "merges.txt"]));
    await assert.rejects(() => loadConverted(vm), /expected .*vocab.json/);
    // GPT-2's layout but another vocabulary: the bytes and <|endoftext|>, no merges (258 ids).
    const vocab = JSON.parse(await Deno.readTextFile(`${DIR}hub/vocab.json`));
    for (const k of ["Ġt", "he", "Ġthe"]) delete vocab[k];
    vocab["<|endoftext|>"] = 256;
    await Deno.writeTextFile(`${vm}/vocab.json`, JSON.stringify(vocab));
    await Deno.writeTextFile(`${vm}/merges.txt`, "#version: 0.2\n");
    await assert.rejects(
      () => loadConverted(vm),
      /Mismatched tokenizer: expected a vocabulary of 261 \(the model's, the mask included\), got 258 from vocab.json \+ merges.txt/,
    );
  } finally {
    await removeDir(tmp);
  }
});
