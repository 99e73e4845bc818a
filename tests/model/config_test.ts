import assert from "node:assert/strict";
import { presets, resolveConfig } from "../../src/model/config.ts";

Deno.test("resolveConfig() fills vocabulary and context from options for a preset", () => {
  const c = resolveConfig("small", { vocabSize: 512 });
  assert.equal(c.vocabSize, 512);
  assert.equal(c.context, 128);
  assert.equal(c.positions, "rotary");
  assert.equal(resolveConfig("seed", { vocabSize: 37, context: 8 }).dFF, 2048);
  assert.equal(resolveConfig("tiny", { vocabSize: 9, context: 4 }).context, 4);
});

Deno.test("resolveConfig() keeps a full config's own fields over options", () => {
  const c = resolveConfig({ ...presets.tiny, vocabSize: 20 }, { vocabSize: 30, context: 99 });
  assert.equal(c.vocabSize, 20);
  assert.equal(c.context, 16);
});

Deno.test("resolveConfig() rejects unknown presets and bad fields with a clear error", () => {
  assert.throws(
    () => resolveConfig("huge" as "tiny"),
    /Unknown preset: expected one of seed, tiny, small, got "huge"/,
  );
  assert.throws(
    () => resolveConfig("tiny"),
    /config.vocabSize: expected a positive integer, got undefined/,
  );
  assert.throws(
    () => resolveConfig({ ...presets.tiny, vocabSize: 10, nHeads: 3 }),
    /expected dModel divisible by nHeads, got dModel 16, nHeads 3/,
  );
  assert.throws(
    () => resolveConfig({ ...presets.tiny, vocabSize: 10, dModel: 6, nHeads: 2 }),
    /rotary positions need an even head size, got 3/,
  );
  assert.throws(
    () => resolveConfig({ ...presets.tiny, vocabSize: 10, dropout: 1 }),
    /0 <= p < 1, got 1/,
  );
});
