import assert from "node:assert/strict";
import { ignoreBlas } from "../kernels/blas_available.ts";
import { type DenoiseFn, evaluate } from "../../src/eval/elbo.ts";
import { lossForward, type LossName } from "../../src/diffusion/losses.ts";
import type { GraphName } from "../../src/diffusion/corrupt.ts";
import { createSchedule, type NoiseSchedule } from "../../src/diffusion/schedule.ts";
import { presets } from "../../src/model/config.ts";
import {
  createModel,
  createWorkspace,
  type Model,
  modelForward,
  type Workspace,
} from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import { trainTokenizer } from "../../src/tokenizer/tokenizer.ts";

// A tiny model with every parameter random (adaLN included), so outputs depend on context and
// sigma: V = 5 (4 real tokens + MASK).
function randomModel(timeConditioning: boolean, V = 5, seed = 3): Model {
  const model = createModel({ ...presets.tiny, timeConditioning }, { vocabSize: V, seed });
  const rng = new Rng(seed, 99);
  for (let i = 0; i < model.params.length; i++) model.params[i] = 0.5 * rng.normal();
  return model;
}

/** The per-position -log p(x0_i | x_t) (SUBS) of every mask pattern of `x0`, for one sigma. */
function maskTable(
  model: Model,
  x0: Int32Array,
  sigma: number,
): { ce: number[][]; xts: Int32Array[] } {
  const T = x0.length, V = model.config.vocabSize, M = V - 1;
  const ws = createWorkspace(model.config, 1, T, { float64: false });
  const ce: number[][] = [];
  const xts: Int32Array[] = [];
  for (let m = 0; m < 1 << T; m++) {
    const xt = x0.map((id, i) => (m >> i) & 1 ? M : id);
    const logits = modelForward(model, ws, xt, 1, T, { sigma: new Float64Array([sigma]) });
    const row: number[] = [];
    for (let i = 0; i < T; i++) {
      if (!((m >> i) & 1)) {
        row.push(0);
        continue;
      }
      let mx = -Infinity;
      for (let y = 0; y < M; y++) mx = Math.max(mx, logits[i * V + y]);
      let s = 0;
      for (let y = 0; y < M; y++) s += Math.exp(logits[i * V + y] - mx);
      row.push(mx + Math.log(s) - logits[i * V + x0[i]]);
    }
    ce.push(row);
    xts.push(xt);
  }
  return { ce, xts };
}

/** The unscaled loss of one window `(1,T)` of the model's output at `xt` and one noise level. */
function lossAt(
  model: Model,
  ws: Workspace,
  x0: Int32Array,
  xt: Int32Array,
  sigma: number,
  dsigma: number,
  loss: LossName,
  graph: GraphName,
): number {
  const T = xt.length, V = model.config.vocabSize;
  const logits = modelForward(model, ws, xt, 1, T, { sigma: new Float64Array([sigma]) });
  const inputs = { loss, graph, x0, xt, sigma: [sigma], dsigma: [dsigma], B: 1, T, V, scale: 1 };
  return lossForward(logits, inputs);
}

/** E over masks at time t of the window's loss, by enumerating all 2^T masks. */
function exactAtT(
  model: Model,
  x0: Int32Array,
  t: number,
  schedule: NoiseSchedule,
  loss: "elbo" | "score-entropy" = "elbo",
): number {
  const T = x0.length, V = model.config.vocabSize;
  const sigma = schedule.sigma(t), dsigma = schedule.dsigma(t);
  const p = -Math.expm1(-sigma);
  const ws = createWorkspace(model.config, 1, T);
  let e = 0;
  for (let m = 0; m < 1 << T; m++) {
    let j = 0;
    for (let i = 0; i < T; i++) j += (m >> i) & 1;
    const xt = x0.map((id, i) => (m >> i) & 1 ? V - 1 : id);
    e += p ** j * (1 - p) ** (T - j) * lossAt(model, ws, x0, xt, sigma, dsigma, loss, "absorb");
  }
  return e;
}

/** Simpson's rule over [a, b] with n (even) intervals. */
function simpson(f: (t: number) => number, a: number, b: number, n = 400): number {
  const h = (b - a) / n;
  let s = f(a) + f(b);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * f(a + i * h);
  return s * h / 3;
}

/** E_t E_mask for t ~ U[eps, 1] and a model that ignores sigma (mask table reused over t). */
function exactExpectation(
  model: Model,
  x0: Int32Array,
  schedule: NoiseSchedule,
  eps: number,
): number {
  const T = x0.length;
  const { ce } = maskTable(model, x0, 0);
  const f = (t: number) => {
    const sigma = schedule.sigma(t), w = schedule.dsigma(t) / Math.expm1(sigma);
    const p = -Math.expm1(-sigma);
    let e = 0;
    for (let m = 1; m < 1 << T; m++) {
      let j = 0, c = 0;
      for (let i = 0; i < T; i++) {
        j += (m >> i) & 1;
        c += ce[m][i];
      }
      e += p ** j * (1 - p) ** (T - j) * w * c;
    }
    return e;
  };
  return simpson(f, eps, 1) / (1 - eps);
}

function factorial(n: number): number {
  return n <= 1 ? 1 : n * factorial(n - 1);
}

function permutations(n: number): number[][] {
  if (n === 0) return [[]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) {
    for (let i = 0; i <= p.length; i++) out.push([...p.slice(0, i), n - 1, ...p.slice(i)]);
  }
  return out;
}

const x0 = new Int32Array([2, 0, 3, 1]);

// The toy window, and a stream of R copies of it (context 4) for estimates with many windows.
const R = 50;
const stream = new Int32Array(R * x0.length).map((_, i) => x0[i % x0.length]);

Deno.test("evaluate() at a fixed t matches the enumeration over all masks (time-conditioned model)", () => {
  const model = randomModel(true);
  const schedule = createSchedule("loglinear");
  for (const t of [0.3, 0.85]) {
    const exact = exactAtT(model, x0, t, schedule);
    const r = evaluate(model, x0, { t, samples: 3000, batch: 100, seed: 5 });
    const se = r.standardError * r.tokens; // of totalNats
    const z = (r.totalNats - exact) / se;
    assert.ok(Math.abs(z) < 4, `t ${t}: estimate ${r.totalNats} vs exact ${exact}, z ${z}`);
    assert.ok(se < 0.05 * exact, `s.e. ${se}`); // small enough to catch a wrong weight
  }
});

Deno.test("evaluate() score entropy at a fixed t matches the enumeration over all masks", () => {
  const model = randomModel(true);
  const t = 0.5;
  const exact = exactAtT(model, x0, t, createSchedule("loglinear"), "score-entropy");
  const r = evaluate(model, x0, { t, samples: 2000, batch: 100, seed: 6, loss: "score-entropy" });
  const z = (r.totalNats - exact) / (r.standardError * r.tokens);
  assert.ok(Math.abs(z) < 4, `estimate ${r.totalNats} vs exact ${exact}, z ${z}`);
});

Deno.test("evaluate() score entropy on the uniform graph at a fixed t matches the enumeration over all x_t", () => {
  // Each position is resampled uniformly over the N = 4 real tokens with probability p (possibly
  // to itself): P(x_t,i | x0_i) = (1 - p) [x_t,i = x0_i] + p / N. Enumerate all N^T states.
  const model = randomModel(true);
  const schedule = createSchedule("loglinear");
  const t = 0.4, N = 4, T = x0.length;
  const sigma = schedule.sigma(t), dsigma = schedule.dsigma(t), p = -Math.expm1(-sigma);
  const ws = createWorkspace(model.config, 1, T);
  let exact = 0;
  for (let s = 0; s < N ** T; s++) {
    const xt = new Int32Array(T).map((_, i) => Math.floor(s / N ** i) % N);
    let prob = 1;
    for (let i = 0; i < T; i++) prob *= (xt[i] === x0[i] ? 1 - p : 0) + p / N;
    exact += prob * lossAt(model, ws, x0, xt, sigma, dsigma, "score-entropy", "uniform");
  }
  const r = evaluate(model, x0, {
    t,
    samples: 2000,
    batch: 100,
    seed: 10,
    loss: "score-entropy",
    graph: "uniform",
  });
  const z = (r.totalNats - exact) / (r.standardError * r.tokens);
  assert.ok(Math.abs(z) < 4, `estimate ${r.totalNats} vs exact ${exact}, z ${z}`);
});

Deno.test("evaluate() is unbiased over t and masks: i.i.d. and antithetic draws match the exact integral", () => {
  const model = randomModel(false);
  const exact = exactExpectation(model, x0, createSchedule("loglinear"), 1e-3) / x0.length;
  const opts = { context: 4, samples: 60, batch: 200, seed: 7 };
  const iid = evaluate(model, stream, opts);
  const anti = evaluate(model, stream, { ...opts, antithetic: true });
  assert.equal(iid.windows, R);
  for (const [name, r] of [["iid", iid], ["antithetic", anti]] as const) {
    const z = (r.natsPerToken - exact) / r.standardError;
    assert.ok(Math.abs(z) < 4, `${name}: estimate ${r.natsPerToken} vs exact ${exact}, z ${z}`);
  }
  // Spreading t over each half of the draws removes the variance that comes from t.
  assert.ok(
    anti.standardError < 0.8 * iid.standardError,
    `${anti.standardError} vs ${iid.standardError}`,
  );
});

Deno.test("evaluate(): the bound is above the exact NLL of the model's any-order generative process", () => {
  // Without time conditioning, the reverse process unmasks one position at a time in a uniformly
  // random order, drawing it from p(. | x_t): p(x) = mean over orders of prod_k p(x_k | revealed).
  const model = randomModel(false);
  const T = x0.length;
  const { ce } = maskTable(model, x0, 0);
  const logPs: number[] = [];
  for (const order of permutations(T)) {
    let m = (1 << T) - 1, lp = 0;
    for (const i of order) {
      lp -= ce[m][i];
      m &= ~(1 << i);
    }
    logPs.push(lp);
  }
  const mx = Math.max(...logPs);
  const nll = -(mx + Math.log(logPs.reduce((s, lp) => s + Math.exp(lp - mx), 0) / logPs.length));
  const anyOrderElbo = -logPs.reduce((s, lp) => s + lp, 0) / logPs.length;
  // The continuous-time ELBO (eps -> 0) is exactly the any-order ELBO: masks of size j weigh
  // B(j, T - j + 1) = (j - 1)! (T - j)! / T!.
  let limit = 0;
  for (let m = 1; m < 1 << T; m++) {
    let j = 0, c = 0;
    for (let i = 0; i < T; i++) {
      j += (m >> i) & 1;
      c += ce[m][i];
    }
    limit += factorial(j - 1) * factorial(T - j) / factorial(T) * c;
  }
  assert.ok(Math.abs(limit - anyOrderElbo) < 1e-9, `${limit} vs ${anyOrderElbo}`);
  assert.ok(anyOrderElbo - nll > 0.05, `Jensen gap ${anyOrderElbo - nll}`);
  // The default estimator's expectation and its estimate sit above the NLL.
  const exact = exactExpectation(model, x0, createSchedule("loglinear"), 1e-3);
  assert.ok(Math.abs(exact - limit) < 2e-3 * limit, `${exact} vs ${limit}`);
  assert.ok(exact > nll);
  const r = evaluate(model, stream, {
    context: 4,
    samples: 400,
    batch: 500,
    seed: 8,
    antithetic: true,
  });
  assert.ok(
    r.natsPerToken - 4 * r.standardError > nll / T,
    `${r.natsPerToken} +- ${r.standardError} vs NLL/token ${nll / T}`,
  );
});

Deno.test("evaluate() of a context-free stub: the bound is tight, (1 - eps) NLL for loglinear", () => {
  // p(x0_i | x_t) = q for every masked position: the generative model is i.i.d. q, NLL exact.
  const q = [0.7, 0.1, 0.1, 0.1];
  const V = 5;
  const stub: DenoiseFn = (ids) => {
    const out = new Float32Array(ids.length * V);
    for (let i = 0; i < ids.length; i++) {
      for (let y = 0; y < 4; y++) out[i * V + y] = Math.log(q[y]);
    }
    return out;
  };
  const tokens = new Int32Array([0, 1, 0, 3, 0, 0, 2, 0, 3, 0, 0, 0]);
  const nll = tokens.reduce((s, id) => s - Math.log(q[id]), 0) / tokens.length;
  const opts = { samples: 2000, batch: 500, seed: 9, antithetic: true, vocabSize: V, context: 8 };
  const exactBound = evaluate(stub, tokens, { ...opts, schedule: "linear", eps: 1e-6 });
  const z1 = (exactBound.natsPerToken - nll) / exactBound.standardError;
  assert.ok(Math.abs(z1) < 4, `linear: ${exactBound.natsPerToken} vs ${nll}, z ${z1}`);
  const mdlm = evaluate(stub, tokens, opts);
  const z2 = (mdlm.natsPerToken - (1 - 1e-3) * nll) / mdlm.standardError;
  assert.ok(Math.abs(z2) < 4, `loglinear: ${mdlm.natsPerToken} vs ${(1 - 1e-3) * nll}, z ${z2}`);
  // A worse stub (uniform over the 4 tokens): its bound, (1 - eps) ln 4, is above q's NLL.
  const uniform: DenoiseFn = (ids) => new Float32Array(ids.length * V);
  const u = evaluate(uniform, tokens, { ...opts, samples: 200 });
  assert.ok(u.natsPerToken - 4 * u.standardError > nll, `${u.natsPerToken} vs ${nll}`);
  const z3 = (u.natsPerToken - (1 - 1e-3) * Math.log(4)) / u.standardError;
  assert.ok(Math.abs(z3) < 4, `uniform: ${u.natsPerToken}, z ${z3}`);
});

Deno.test("evaluate(): the standard error shrinks like 1/sqrt(samples)", () => {
  const model = randomModel(false, 9, 4);
  const tokens = new Int32Array(64).map((_, i) => (i * 7 + (i >> 3)) % 8);
  const a = evaluate(model, tokens, { samples: 16, seed: 1, batch: 64 });
  const b = evaluate(model, tokens, { samples: 64, seed: 2, batch: 64 });
  const ratio = b.standardError / a.standardError;
  assert.ok(ratio > 0.35 && ratio < 0.7, `ratio ${ratio}`);
  assert.ok(
    Math.abs(a.natsPerToken - b.natsPerToken) < 4 * Math.hypot(a.standardError, b.standardError),
  );
});

Deno.test("evaluate() is deterministic per seed and independent of batch; the last window may be short", () => {
  const model = randomModel(false, 9, 4);
  const tokens = new Int32Array(37).map((_, i) => (i * 3) % 8);
  // Bitwise on wasm; a BLAS blocks products by their row count, so there it is up to rounding.
  const o = { samples: 4, antithetic: true, backend: "wasm" } as const;
  const a = evaluate(model, tokens, { ...o, seed: 11, batch: 5 });
  const b = evaluate(model, tokens, { ...o, seed: 11, batch: 16 });
  const c = evaluate(model, tokens, { ...o, seed: 12, batch: 5 });
  assert.deepEqual(a, b);
  if (!ignoreBlas) {
    const d = evaluate(model, tokens, { ...o, backend: "blas", seed: 11, batch: 16 });
    assert.ok(Math.abs(d.natsPerToken - a.natsPerToken) < 1e-6 * a.natsPerToken);
  }
  assert.notEqual(a.natsPerToken, c.natsPerToken);
  assert.equal(a.windows, 3); // 16 + 16 + 5
  assert.equal(a.evaluations, 12);
  assert.equal(a.tokens, 37);
  assert.equal(a.perplexity, Math.exp(a.natsPerToken));
  assert.equal(a.natsPerToken, a.totalNats / 37);
  assert.ok(Number.isNaN(evaluate(model, tokens, { samples: 1 }).standardError));
});

Deno.test("evaluate() reports bits per character of the decoded text", () => {
  const text = "abcab cabba";
  const tokenizer = trainTokenizer([text], { kind: "seed", numMerges: 0 }); // one id per character
  const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 2 });
  const tokens = new Int32Array([...text].map((ch) => tokenizer.tokens.indexOf(ch)));
  const r = evaluate(model, tokens, { samples: 4, seed: 1, tokenizer });
  assert.equal(r.characters, text.length);
  assert.ok(Math.abs(r.bitsPerChar! - r.natsPerToken / Math.LN2) < 1e-12);
  assert.ok(Math.abs(r.bitsPerCharError! - r.standardError / Math.LN2) < 1e-12);
  // An end-of-text id counts as one character, not as the text of its marker.
  const withEot = new Int32Array([...tokens, tokenizer.eotId, ...tokens, tokenizer.eotId]);
  const r2 = evaluate(model, withEot, { samples: 4, seed: 1, tokenizer });
  assert.equal(r2.characters, 2 * text.length + 2);
  assert.ok(Math.abs(r2.bitsPerChar! - r2.totalNats / Math.LN2 / r2.characters!) < 1e-12);
});

Deno.test("evaluate() rejects bad input with clear errors", () => {
  const model = createModel("tiny", { vocabSize: 5 });
  const ok = new Int32Array([0, 1, 2]);
  const cases: [() => unknown, string, RegExp][] = [
    [
      () => evaluate(model, [0, 1] as unknown as Int32Array),
      "TypeError",
      /expected an Int32Array, got Array/,
    ],
    [() => evaluate(model, new Int32Array(0)), "RangeError", /at least one token, got 0/],
    [() => evaluate(model, new Int32Array([0, 7])), "RangeError", /got 7 at index 1/],
    [() => evaluate(model, ok, { context: 17 }), "RangeError", /at most the model's 16, got 17/],
    [
      () => evaluate(model, ok, { samples: 0 }),
      "RangeError",
      /samples: expected an integer >= 1, got 0/,
    ],
    [() => evaluate(model, ok, { samples: 3, antithetic: true }), "RangeError", /even number/],
    [() => evaluate(model, ok, { seed: -1 }), "RangeError", /32-bit unsigned integer, got -1/],
    [() => evaluate(model, ok, { t: 0 }), "RangeError", /0 < t <= 1, got 0/],
    [
      () => evaluate(model, ok, { graph: "uniform" }),
      "RangeError",
      /"elbo" bound: expected "absorb"/,
    ],
    [
      () => evaluate(model, ok, { loss: "seed" as "elbo" }),
      "RangeError",
      /expected one of elbo, score-entropy, got "seed"/,
    ],
    [
      () =>
        evaluate(model, ok, {
          tokenizer: trainTokenizer(["abcdef"], { kind: "seed", numMerges: 0 }),
        }),
      "RangeError",
      /vocabulary of 5 like the model, got 8/,
    ],
  ];
  for (const [fn, name, message] of cases) assert.throws(fn, { name, message });
});
