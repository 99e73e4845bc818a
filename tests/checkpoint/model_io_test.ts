import assert from "node:assert/strict";
import { modelFromSafetensors, modelToSafetensors } from "../../src/checkpoint/model_io.ts";
import {
  parseSafetensors,
  serializeSafetensors,
  type TensorInput,
} from "../../src/checkpoint/safetensors.ts";
import type { ModelConfig } from "../../src/model/config.ts";
import { createModel, forward } from "../../src/model/model.ts";

const SMALL: Partial<ModelConfig> = {
  vocabSize: 11,
  context: 5,
  dModel: 8,
  nHeads: 2,
  nLayers: 2,
  dFF: 16,
  dropout: 0,
};

const VARIANTS: Partial<ModelConfig>[] = [
  { ...SMALL, positions: "learned", normFirst: false, activation: "relu" },
  { ...SMALL, positions: "learned", normFirst: true, activation: "gelu" },
  { ...SMALL, positions: "rotary", normFirst: false, activation: "gelu" },
  { ...SMALL, positions: "rotary", normFirst: true, activation: "relu" },
  { ...SMALL, positions: "rotary", normFirst: true, activation: "gelu", timeConditioning: true },
];

/** The file's tensors without its metadata: what PyTorch's state_dict() saved would hold. */
function plain(bytes: Uint8Array, edit?: (t: Record<string, TensorInput>) => void): Uint8Array {
  const tensors: Record<string, TensorInput> = { ...parseSafetensors(bytes).tensors };
  edit?.(tensors);
  return serializeSafetensors(tensors);
}

function withMetadata(bytes: Uint8Array, metadata: Record<string, string>): Uint8Array {
  return serializeSafetensors(parseSafetensors(bytes).tensors, metadata);
}

for (const c of VARIANTS) {
  const label = `${c.positions}, normFirst ${c.normFirst}, ${c.activation}` +
    (c.timeConditioning ? ", time-conditioned" : "");
  Deno.test(`modelFromSafetensors(modelToSafetensors()) is bitwise the model (${label})`, () => {
    const model = createModel(c, { seed: 5 });
    const bytes = modelToSafetensors(model, { tokenizer: '{"type":"x"}', step: "12" });
    const { model: back, metadata } = modelFromSafetensors(bytes);
    assert.deepEqual(back.config, model.config);
    assert.deepEqual(back.layout, model.layout);
    assert.deepEqual(
      new Uint8Array(back.params.buffer, back.params.byteOffset, back.params.byteLength),
      new Uint8Array(model.params.buffer, model.params.byteOffset, model.params.byteLength),
    );
    assert.deepEqual(metadata, {
      config: JSON.stringify(model.config),
      tokenizer: '{"type":"x"}',
      step: "12",
    });
    // and the file holds exactly the layout's tensors, F32, under the state-dict names
    const { tensors } = parseSafetensors(bytes);
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(model.layout).sort());
    for (const [name, info] of Object.entries(model.layout)) {
      assert.equal(tensors[name].dtype, "F32");
      assert.deepEqual(tensors[name].shape, info.shape);
    }
  });

  Deno.test(`modelFromSafetensors() infers the config of a plain state dict (${label})`, () => {
    const model = createModel(c, { seed: 6 });
    const given: Partial<ModelConfig> = { nHeads: 2, activation: c.activation };
    if (c.positions === "rotary") given.context = 5;
    const { model: back, metadata } = modelFromSafetensors(plain(modelToSafetensors(model)), {
      config: given,
    });
    assert.deepEqual(metadata, {});
    assert.deepEqual(back.config, model.config);
    assert.deepEqual(back.params, model.params);
  });
}

Deno.test("modelFromSafetensors() says which fields a plain state dict cannot give", () => {
  const learned = plain(modelToSafetensors(createModel({ ...VARIANTS[0] })));
  assert.throws(() => modelFromSafetensors(learned), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /Cannot infer nHeads and activation/);
    return true;
  });
  assert.throws(
    () => modelFromSafetensors(learned, { config: { nHeads: 2 } }),
    /Cannot infer activation/,
  );
  const rotary = plain(modelToSafetensors(createModel({ ...VARIANTS[3] })));
  assert.throws(
    () => modelFromSafetensors(rotary, { config: { nHeads: 2, activation: "relu" } }),
    /Cannot infer context.*no position table/,
  );
  // The given fields still pass the config check: 3 heads cannot split d = 8.
  assert.throws(
    () => modelFromSafetensors(learned, { config: { nHeads: 3, activation: "relu" } }),
    /divisible by nHeads/,
  );
});

Deno.test("modelFromSafetensors() rejects missing, extra, misshapen and non-F32 tensors by name", () => {
  const bytes = modelToSafetensors(createModel({ ...VARIANTS[0] }, { seed: 1 }));
  const meta = parseSafetensors(bytes).metadata;
  const edited = (edit: (t: Record<string, TensorInput>) => void) =>
    withMetadata(plain(bytes, edit), meta);

  assert.throws(
    () => modelFromSafetensors(edited((t) => delete t["transformer.layers.1.norm2.bias"])),
    (e: unknown) =>
      e instanceof RangeError &&
      /Missing tensors: expected "transformer.layers.1.norm2.bias"/.test(e.message),
  );
  assert.throws(
    () =>
      modelFromSafetensors(
        edited((t) => (t["transformer.norm.weight"] = { shape: [8], data: new Float32Array(8) })),
      ),
    (e: unknown) =>
      e instanceof RangeError && /Unexpected tensors.*"transformer.norm.weight"/.test(e.message),
  );
  assert.throws(
    () =>
      modelFromSafetensors(
        edited((t) => (t["head.bias"] = { shape: [1, 11], data: new Float32Array(11) })),
      ),
    (e: unknown) =>
      e instanceof RangeError &&
      /"head.bias": expected shape \[11\], got \[1,11\]/.test(e.message),
  );
  assert.throws(
    () =>
      modelFromSafetensors(
        edited((t) => (t["head.bias"] = { shape: [11], data: new Float64Array(11) })),
      ),
    (e: unknown) =>
      e instanceof TypeError && /"head.bias": expected dtype F32, got F64/.test(e.message),
  );
  // a plain state dict whose shapes disagree with each other
  assert.throws(
    () =>
      modelFromSafetensors(
        plain(
          bytes,
          (t) => (t["pos_embed.weight"] = { shape: [5, 6], data: new Float32Array(30) }),
        ),
        { config: { nHeads: 2, activation: "relu" } },
      ),
    /"pos_embed.weight": expected shape \[5,8\], got \[5,6\]/,
  );
});

Deno.test("modelFromSafetensors() rejects bad config metadata and files that are not models", () => {
  const bytes = modelToSafetensors(createModel({ ...VARIANTS[1] }));
  assert.throws(
    () => modelFromSafetensors(withMetadata(bytes, { config: "{nope" })),
    (e: unknown) =>
      e instanceof TypeError && /__metadata__.config: expected the JSON/.test(e.message),
  );
  assert.throws(
    () => modelFromSafetensors(withMetadata(bytes, { config: "[1]" })),
    /expected a JSON object/,
  );
  const cfg = JSON.parse(parseSafetensors(bytes).metadata.config);
  assert.throws(
    () => modelFromSafetensors(withMetadata(bytes, { config: JSON.stringify({ ...cfg, dFF: 0 }) })),
    /config.dFF/,
  );
  const notAModel = serializeSafetensors({ w: { shape: [1], data: new Float32Array(1) } });
  assert.throws(
    () => modelFromSafetensors(notAModel, { config: { nHeads: 1, activation: "relu" } }),
    /"embed.weight"/,
  );
  assert.throws(() => modelFromSafetensors(new Uint8Array(3)), /at least 8 bytes/);
});

Deno.test("modelFromSafetensors() takes options.config over the file's config", () => {
  const model = createModel({ ...VARIANTS[3] }, { seed: 2 });
  const { model: back } = modelFromSafetensors(modelToSafetensors(model), {
    config: { dropout: 0.1 },
  });
  assert.equal(back.config.dropout, 0.1);
  assert.deepEqual(back.params, model.params);
  assert.throws(
    () => modelFromSafetensors(modelToSafetensors(model), { config: { dFF: 32 } }),
    /"transformer.layers.0.linear1.weight": expected shape \[32,8\], got \[16,8\]/,
  );
});

Deno.test("modelToSafetensors() reserves the config entry", () => {
  const model = createModel({ ...VARIANTS[0] });
  assert.throws(() => modelToSafetensors(model, { config: "{}" }), /reserved/);
});

Deno.test("a loaded model computes what the saved one did", () => {
  const model = createModel("tiny", { vocabSize: 12, seed: 9 });
  const { model: back } = modelFromSafetensors(modelToSafetensors(model));
  const tokens = new Int32Array([1, 11, 3, 11, 5, 6]);
  assert.deepEqual(forward(back, tokens, { batch: 2 }), forward(model, tokens, { batch: 2 }));
  // The loaded model owns its buffer: changing it leaves the original alone.
  back.params[0] += 1;
  assert.notEqual(back.params[0], model.params[0]);
});
