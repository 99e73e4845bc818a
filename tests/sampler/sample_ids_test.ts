import assert from "node:assert/strict";
import { type Denoiser, sampleIds, type SampleOptions } from "../../src/sampler/sample_ids.ts";
import { chiSquare } from "./chi_square.ts";

const V = 6;
const MASK = 5;

/** A deterministic stub whose logits depend on every id and position (like a real network). */
function mixingStub(Vs = V): Denoiser & { calls: number } {
  const f: Denoiser & { calls: number } = Object.assign((ids: Int32Array): Float32Array => {
    f.calls++;
    const out = new Float32Array(ids.length * Vs);
    let h = 0;
    for (let i = 0; i < ids.length; i++) h = (h * 31 + ids[i] + 7) % 1009;
    for (let i = 0; i < ids.length; i++) {
      for (let y = 0; y < Vs; y++) out[i * Vs + y] = Math.sin(h * 0.37 + i * 1.3 + y * 2.1) * 2;
    }
    return out;
  }, { calls: 0 });
  return f;
}

/** A stub with the same logits at every position, whatever the input, reusing one buffer. */
function constantStub(logits: number[], counter = { calls: 0 }): Denoiser {
  let buf = new Float32Array(0);
  return (ids) => {
    counter.calls++;
    if (buf.length !== ids.length * logits.length) {
      buf = new Float32Array(ids.length * logits.length);
    }
    for (let i = 0; i < ids.length; i++) buf.set(logits, i * logits.length);
    return buf;
  };
}

const METHODS = [
  { method: "confidence", graph: "absorb", output: "logits" },
  { method: "euler", graph: "absorb", output: "logits" },
  { method: "euler", graph: "absorb", output: "logScore" },
  { method: "tweedie", graph: "absorb", output: "logits" },
  { method: "tweedie", graph: "absorb", output: "logScore" },
  { method: "ancestral", graph: "absorb", output: "logits" },
  { method: "ancestral", graph: "absorb", output: "logScore" },
  { method: "euler", graph: "uniform", output: "logScore" },
  { method: "tweedie", graph: "uniform", output: "logScore" },
] as const;

for (const m of METHODS) {
  const label = `${m.method} ${m.graph}/${m.output}`;
  Deno.test(`sampleIds() ${label}: fixed positions never change and no MASK survives`, () => {
    const fixed = { positions: [0, 1, 6, 9], ids: [3, 0, 4, 2] };
    for (const seed of [1, 2, 3]) {
      let calls = 0;
      const { ids } = sampleIds(mixingStub(), V, MASK, {
        ...m,
        steps: 5,
        length: 10,
        batch: 3,
        seed,
        fixed,
        onStep: (cur, step) => {
          calls++;
          assert.equal(step, calls);
          for (let b = 0; b < 3; b++) {
            for (let j = 0; j < 4; j++) {
              assert.equal(cur[b * 10 + fixed.positions[j]], fixed.ids[j]);
            }
          }
        },
      });
      assert.ok(calls >= 1);
      assert.equal(ids.length, 30);
      assert.ok(!ids.includes(MASK), `MASK left in ${[...ids]}`);
      for (let b = 0; b < 3; b++) {
        for (let j = 0; j < 4; j++) assert.equal(ids[b * 10 + fixed.positions[j]], fixed.ids[j]);
      }
    }
  });

  Deno.test(`sampleIds() ${label}: same seed gives the same ids, another seed other ids`, () => {
    const opts: SampleOptions = { ...m, steps: 4, length: 12, batch: 2, seed: 9 };
    const a = sampleIds(mixingStub(), V, MASK, opts).ids;
    const b = sampleIds(mixingStub(), V, MASK, opts).ids;
    const c = sampleIds(mixingStub(), V, MASK, { ...opts, seed: 10 }).ids;
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });
}

// End to end: with a stub whose p_x0 is the same everywhere, each absorb method's final token at
// a position is distributed as p_x0 (every unmasking draws from p_x0; ancestral's final argmax
// only sees the ~1e-5 chance of a mask that survived all steps).
const P0 = [0.05, 0.15, 0.2, 0.25, 0.35];
for (const method of ["euler", "tweedie", "ancestral"] as const) {
  Deno.test(`sampleIds() ${method}: the final token is distributed as the stub's p_x0`, () => {
    const denoise = constantStub([...P0.map(Math.log), 0]);
    const counts = new Array(V).fill(0);
    for (let seed = 0; seed < 2000; seed++) {
      const { ids } = sampleIds(denoise, V, MASK, { method, steps: 3, length: 1, seed });
      counts[ids[0]]++;
    }
    const r = chiSquare(counts, [...P0, 0]);
    assert.ok(r.p > 0.001, `counts ${counts}: p = ${r.p}`);
  });
}

Deno.test("sampleIds() confidence: k = T // steps per step, stops when nothing is masked", () => {
  // The notebook's setting: T = 8, a 4-token prefix, 4 steps -> k = 2: two steps, then done.
  const stub = mixingStub();
  const masked: number[] = [];
  const { ids, evaluations } = sampleIds(stub, V, MASK, {
    method: "confidence",
    steps: 4,
    length: 8,
    seed: 0,
    fixed: { positions: [0, 1, 2, 3], ids: [4, 0, 1, 3] },
    onStep: (cur) => masked.push(cur.filter((x) => x === MASK).length),
  });
  assert.deepEqual(masked, [2, 0]);
  assert.equal(evaluations, 2);
  assert.equal(stub.calls, 2);
  assert.deepEqual([...ids.subarray(0, 4)], [4, 0, 1, 3]);
  // T = 10, 4 steps: k = 2 for three steps, then the last step unmasks the 4 left.
  const left: number[] = [];
  sampleIds(mixingStub(), V, MASK, {
    method: "confidence",
    steps: 4,
    length: 10,
    seed: 0,
    onStep: (cur) => left.push(cur.filter((x) => x === MASK).length),
  });
  assert.deepEqual(left, [8, 6, 4, 0]);
  // More steps than tokens: k = max(1, 0) = 1.
  const one: number[] = [];
  sampleIds(mixingStub(), V, MASK, {
    method: "confidence",
    steps: 20,
    length: 3,
    seed: 0,
    onStep: (cur) => one.push(cur.filter((x) => x === MASK).length),
  });
  assert.deepEqual(one, [2, 1, 0]);
});

Deno.test("sampleIds() confidence: each position takes its argmax, picked by max prob + Gumbel", () => {
  // Position 0: p_x0 peaked on token 2 (max prob c0); position 1: flat over 5 tokens (c1 = 0.2).
  // With k = 1 the first pick is position 0 iff c0 + G0 > c1 + G1, which for independent
  // Gumbels has probability sigmoid(c0 - c1) (their difference is logistic).
  const row0 = [0, 0, Math.log(8), 0, 0, 10]; // MASK logit 10: ignored unless allowMask
  const c0 = 8 / 12;
  const c1 = 0.2;
  const denoise: Denoiser = (ids) => {
    const out = new Float32Array(ids.length * V);
    out.set(row0, 0);
    out[V + MASK] = 10; // a large MASK logit: ignored unless allowMask
    return out;
  };
  const counts = [0, 0];
  for (let seed = 0; seed < 2000; seed++) {
    let first = -1;
    const { ids } = sampleIds(denoise, V, MASK, {
      method: "confidence",
      steps: 2,
      length: 2,
      seed,
      onStep: (cur, step) => {
        if (step === 1) first = cur[0] !== MASK ? 0 : 1;
      },
    });
    assert.equal(ids[0], 2);
    assert.equal(ids[1], 0); // flat: the first of the tied tokens, never MASK
    counts[first]++;
  }
  const p0 = 1 / (1 + Math.exp(-(c0 - c1)));
  const r = chiSquare(counts, [p0, 1 - p0]);
  assert.ok(r.p > 0.001, `counts ${counts}, expected p0 = ${p0}: p = ${r.p}`);
  // allowMask: true is the notebook: the argmax may be MASK, which stays masked.
  const { ids } = sampleIds(denoise, V, MASK, {
    method: "confidence",
    steps: 2,
    length: 2,
    seed: 0,
    allowMask: true,
  });
  assert.deepEqual([...ids], [MASK, MASK]); // both rows have MASK as their largest logit
});

Deno.test("sampleIds() ancestral: caching saves evaluations and changes nothing", () => {
  for (const seed of [0, 1, 2]) {
    const on = { calls: 0 };
    const off = { calls: 0 };
    const logits = [0.3, -0.2, 0.5, 0.1, 0, 1];
    const opts = { method: "ancestral", steps: 64, length: 4, batch: 2, seed } as const;
    const a = sampleIds(constantStub(logits, on), V, MASK, opts);
    const b = sampleIds(constantStub(logits, off), V, MASK, { ...opts, cache: false });
    const c = sampleIds(constantStub(logits), V, MASK, { ...opts, timeConditioned: true });
    assert.deepEqual(a.ids, b.ids);
    assert.deepEqual(a.ids, c.ids);
    assert.ok(a.savedEvaluations > 0, `saved ${a.savedEvaluations}`);
    assert.equal(a.evaluations, on.calls);
    assert.equal(b.evaluations, off.calls);
    assert.equal(b.savedEvaluations, 0);
    assert.equal(c.savedEvaluations, 0);
    assert.equal(a.evaluations + a.savedEvaluations, 65);
    assert.equal(b.evaluations, 65);
  }
});

Deno.test("sampleIds() passes sigma(t) of the time grid linspace(1, 1e-5) to the denoiser", () => {
  const seen: number[] = [];
  sampleIds(
    (ids, sigma) => {
      seen.push(sigma[0]);
      return new Float32Array(ids.length * V);
    },
    V,
    MASK,
    { method: "euler", steps: 2, length: 2, seed: 0 },
  );
  const sig = (t: number) => -Math.log1p(-(1 - 1e-3) * t);
  const want = [sig(1), sig(1 - (1 - 1e-5) / 2), sig(1e-5)];
  assert.equal(seen.length, 3);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(seen[i] - want[i]) <= 1e-6 * want[i]);
});

Deno.test("sampleIds() rejects unsupported combinations and bad input with expected vs got", () => {
  const d = mixingStub();
  const base = { steps: 2, length: 4, seed: 0 };
  assert.throws(
    () =>
      sampleIds(d, V, MASK, { ...base, method: "ancestral", graph: "uniform", output: "logScore" }),
    { name: "RangeError", message: /needs the absorb graph.*got graph "uniform"/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { ...base, method: "euler", graph: "uniform" }),
    { name: "RangeError", message: /uniform graph needs output "logScore".*got "logits"/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { ...base, method: "tweedie", schedule: "linear" }),
    { name: "RangeError", message: /finite sigma\(1\).*got Infinity/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { ...base, method: "euler", fixed: { positions: [4], ids: [0] } }),
    { name: "RangeError", message: /expected 0 <= p < 4, got 4/ },
  );
  assert.throws(
    () =>
      sampleIds(d, V, MASK, { ...base, method: "euler", fixed: { positions: [1], ids: [MASK] } }),
    { name: "RangeError", message: /not MASK \(5\), got 5/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { ...base, method: "sde" as "euler" }),
    { name: "RangeError", message: /Invalid method: expected one of .*got "sde"/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { ...base, method: "euler", steps: 0 }),
    { name: "RangeError", message: /Invalid steps: expected an integer >= 1, got 0/ },
  );
  assert.throws(
    () => sampleIds(() => new Float32Array(3), V, MASK, { ...base, method: "euler" }),
    { name: "TypeError", message: /expected a Float32Array of length B\*T\*V = 24, got length 3/ },
  );
  assert.throws(
    () => sampleIds(d, V, MASK, { method: "euler", steps: 2, length: 4 }),
    { name: "TypeError", message: /Missing randomness/ },
  );
});
