import assert from "node:assert/strict";
import { createBatch, fillBatch } from "../../src/train/batch.ts";

const tokens = Int32Array.from({ length: 500 }, (_, i) => (i * 7) % 11);

Deno.test("fillBatch() antithetic times put one time in each 1/B stratum of [eps, 1]", () => {
  const B = 8;
  const buf = createBatch(B, 16);
  fillBatch(buf, tokens, { seed: 3, step: 5, loss: "elbo", vocabSize: 12, antithetic: true });
  const strata = new Set<number>();
  for (const t of buf.t) {
    const u = (t - 1e-3) / (1 - 1e-3);
    strata.add(Math.floor(u * B));
  }
  assert.equal(strata.size, B, `times ${[...buf.t]}`);
  // Independent times (the default) almost never cover all 8 strata; this seed does not.
  const iid = createBatch(B, 16);
  fillBatch(iid, tokens, { seed: 3, step: 5, loss: "elbo", vocabSize: 12 });
  const iidStrata = new Set([...iid.t].map((t) => Math.floor(((t - 1e-3) / (1 - 1e-3)) * B)));
  assert.ok(iidStrata.size < B, `iid times ${[...iid.t]}`);
});

Deno.test("fillBatch() antithetic times are deterministic per (seed, step) and change with the step", () => {
  const a = createBatch(4, 8), b = createBatch(4, 8), c = createBatch(4, 8);
  const opts = { seed: 1, loss: "elbo" as const, vocabSize: 12, antithetic: true };
  fillBatch(a, tokens, { ...opts, step: 2 });
  fillBatch(b, tokens, { ...opts, step: 2 });
  fillBatch(c, tokens, { ...opts, step: 3 });
  assert.deepEqual(a.t, b.t);
  assert.deepEqual(a.input, b.input);
  assert.notDeepEqual(a.t, c.t);
});

Deno.test("fillBatch() antithetic masking rates for the seed loss: one rate in each 1/B stratum of [0, 1)", () => {
  const B = 8;
  const buf = createBatch(B, 16);
  fillBatch(buf, tokens, { seed: 3, step: 5, loss: "seed", vocabSize: 12, antithetic: true });
  assert.equal(new Set([...buf.t].map((t) => Math.floor(t * B))).size, B, `rates ${[...buf.t]}`);
  // Without it the rates are the notebook's independent torch.rand(B): this seed misses strata.
  const iid = createBatch(B, 16);
  fillBatch(iid, tokens, { seed: 3, step: 5, loss: "seed", vocabSize: 12 });
  assert.ok(new Set([...iid.t].map((t) => Math.floor(t * B))).size < B, `${[...iid.t]}`);
  // The masks still follow the rates: about t * T masked per row on average over the batch.
  let masked = 0, expected = 0;
  for (let j = 0; j < B; j++) {
    expected += buf.t[j] * 16;
    for (let i = 0; i < 16; i++) masked += buf.input[j * 16 + i] === 11 ? 1 : 0;
  }
  assert.ok(Math.abs(masked - expected) < 4 * Math.sqrt(expected), `${masked} vs ${expected}`);
});

Deno.test("fillBatch() refuses an unknown loss, naming the ones it accepts", () => {
  const buf = createBatch(2, 4);
  assert.throws(
    () =>
      fillBatch(buf, new Int32Array(16), {
        seed: 1,
        step: 0,
        loss: "mse" as "seed",
        vocabSize: 12,
      }),
    {
      name: "RangeError",
      message: 'Unknown loss: expected one of seed, elbo, score-entropy, got "mse"',
    },
  );
});
