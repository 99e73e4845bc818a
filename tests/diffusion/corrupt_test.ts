import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import {
  corruptBatch,
  corruptRow,
  countMasked,
  moveProb,
  seedLossWeights,
} from "../../src/diffusion/corrupt.ts";
import { sequenceRng } from "../../src/diffusion/schedule.ts";

function cleanIds(n: number, V: number, rng: Rng, maskId = V - 1): Int32Array {
  const x = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let id = rng.int(V);
    while (id === maskId) id = rng.int(V);
    x[i] = id;
  }
  return x;
}

// |k - n p| within 5 binomial standard deviations.
function assertBinomial(k: number, n: number, p: number, what: string) {
  const sd = Math.sqrt(n * p * (1 - p));
  assert.ok(Math.abs(k - n * p) <= 5 * sd + 1e-9, `${what}: ${k} hits of ${n}, expected ~${n * p}`);
}

Deno.test("moveProb() is 1 - exp(-sigma), accurate for tiny sigma", () => {
  assert.equal(moveProb(0), 0);
  assert.ok(Math.abs(moveProb(1e-12) - 1e-12) < 1e-24);
  assert.ok(Math.abs(moveProb(Math.LN2) - 0.5) < 1e-15);
  assert.equal(moveProb(Infinity), 1);
  assert.throws(() => moveProb(-1), /expected sigma >= 0, got -1/);
});

Deno.test("corruptRow('absorb') masks at rate p and copies every other token", () => {
  const T = 4000, V = 7, p = 0.3;
  const x0 = cleanIds(T, V, new Rng(1));
  const xt = new Int32Array(T);
  const hits = corruptRow("absorb", xt, x0, 0, T, p, new Rng(2), V);
  assert.equal(hits, countMasked(xt, V - 1));
  assertBinomial(hits, T, p, "absorb");
  for (let i = 0; i < T; i++) assert.ok(xt[i] === V - 1 || xt[i] === x0[i], `position ${i}`);
  // p = 0 changes nothing, p = 1 masks everything.
  assert.equal(corruptRow("absorb", xt, x0, 0, T, 0, new Rng(3), V), 0);
  assert.deepEqual(xt, x0);
  assert.equal(corruptRow("absorb", xt, x0, 0, T, 1, new Rng(3), V), T);
});

Deno.test("corruptRow('seed') is the notebook's bernoulli(t): one uniform per position, masked iff u < t", () => {
  const T = 16, V = 5, t = 0.6;
  const x0 = cleanIds(T, V, new Rng(4));
  const xt = new Int32Array(T);
  corruptRow("seed", xt, x0, 0, T, t, new Rng(9), V, 4);
  const r = new Rng(9);
  for (let i = 0; i < T; i++) assert.equal(xt[i], r.uniform() < t ? 4 : x0[i], `position ${i}`);
});

Deno.test("corruptRow('uniform') resamples at rate p over the real tokens only, sometimes to itself", () => {
  const T = 6000, V = 4, p = 0.5;
  const x0 = new Int32Array(T); // all token 0
  const xt = new Int32Array(T);
  const hits = corruptRow("uniform", xt, x0, 0, T, p, new Rng(5), V);
  assertBinomial(hits, T, p, "uniform hits");
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < T; i++) counts[xt[i]]++;
  assert.equal(counts[3], 0, "the mask never appears");
  // Changed with probability p (V-2)/(V-1) = 1/3; each other token with p/(V-1) = 1/6.
  assertBinomial(T - counts[0], T, 1 / 3, "changed");
  assertBinomial(counts[1], T, 1 / 6, "token 1");
  assertBinomial(counts[2], T, 1 / 6, "token 2");
  // A mask id that is not last is skipped too.
  const y0 = new Int32Array(3000).fill(1);
  const yt = new Int32Array(3000);
  corruptRow("uniform", yt, y0, 0, 3000, 1, new Rng(6), 4, 0);
  assert.ok(yt.every((id) => id >= 1 && id <= 3), "mask id 0 never drawn");
  assert.ok(yt.some((id) => id === 3), "the last id is reachable when the mask is 0");
});

Deno.test("corruptBatch() with per-sequence generators is invariant to sharding", () => {
  const B = 4, T = 10, V = 9;
  const x0 = cleanIds(B * T, V, new Rng(7));
  const probs = [0.1, 0.5, 0.9, 0.3];
  for (const kind of ["absorb", "uniform", "seed"] as const) {
    const whole = new Int32Array(B * T);
    corruptBatch(kind, whole, x0, probs, [0, 1, 2, 3].map((j) => sequenceRng(1, 2, j)), B, T, V);
    const shard = new Int32Array(2 * T);
    corruptBatch(
      kind,
      shard,
      x0.slice(2 * T),
      probs.slice(2),
      [2, 3].map((j) => sequenceRng(1, 2, j)),
      2,
      T,
      V,
    );
    assert.deepEqual(shard, whole.slice(2 * T), kind);
  }
});

Deno.test("corruptRow() rejects a mask in x0, bad p, bad kinds and short arrays", () => {
  const xt = new Int32Array(3);
  assert.throws(
    () => corruptRow("absorb", xt, new Int32Array([0, 4, 1]), 0, 3, 0.5, new Rng(1), 5),
    /other than the mask 4, got 4 at position 1/,
  );
  assert.throws(
    () => corruptRow("absorb", xt, new Int32Array(3), 0, 3, 1.5, new Rng(1), 5),
    /0 <= p <= 1, got 1.5/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => corruptRow("gaussian" as any, xt, new Int32Array(3), 0, 3, 0.5, new Rng(1), 5),
    /Unknown corruption/,
  );
  assert.throws(
    () => corruptRow("absorb", xt, new Int32Array(3), 1, 3, 0.5, new Rng(1), 5),
    /hold row 1/,
  );
  assert.throws(
    () => corruptBatch("absorb", xt, new Int32Array(3), [0.5], [], 1, 3, 5),
    /1 probabilities and 1 generators, got 1 and 0/,
  );
});

Deno.test("seedLossWeights() makes sum_i w_i CE_i equal the notebook's masked mean", () => {
  const B = 2, T = 8, MASK = 5;
  const xt = new Int32Array([0, 5, 5, 1, 5, 2, 5, 5, 3, 5, 4, 4, 4, 4, 4, 4]);
  const w = new Float32Array(B * T);
  const count = seedLossWeights(w, xt, MASK, B, T);
  assert.equal(count, 6);
  const ce = Array.from({ length: B * T }, (_, i) => 0.1 * i + 0.5); // any per-position losses
  let weighted = 0, maskedSum = 0;
  for (let i = 0; i < B * T; i++) {
    weighted += w[i] * ce[i];
    if (xt[i] === MASK) maskedSum += ce[i];
  }
  const notebook = maskedSum / (count + 1e-6);
  assert.ok(Math.abs(weighted - notebook) <= 1e-6 * notebook, `${weighted} vs ${notebook}`);
  for (let i = 0; i < B * T; i++) if (xt[i] !== MASK) assert.equal(w[i], 0);
  // No mask at all: weights are zero, not NaN.
  seedLossWeights(w, new Int32Array(B * T), MASK, B, T);
  assert.ok(w.every((v) => v === 0));
  assert.throws(() => seedLossWeights(w, new Int32Array(3), MASK, B, T), /B\*T = 16/);
});
