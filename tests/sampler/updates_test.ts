// Distribution tests of the update rules: the empirical distribution of ONE position after ONE
// step over a fixed set of seeds matches the analytic one (chi-square, p > 0.001). The expected
// distributions are computed here independently of the implementation, from the forward rate
// matrix Q and its matrix exponential:
// - Euler: the reverse rate x -> y is dsigma * Q[y][x] * s_y (SEDD), so P(y) = dt dsigma Q[y][x] s_y.
// - Tweedie: p_s = p_t exp(-D Q), so P(y | x_t = x) = (sum_z s_z exp(-D Q)[z][y]) exp(D Q)[y][x].
// - Ancestral (MDLM): alpha = 1 - maskProb; q(x_s = x0 | MASK) = (alpha_s - alpha_t) / (1 - alpha_t).
import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import { createSchedule } from "../../src/diffusion/schedule.ts";
import { gumbelArgmax } from "../../src/sampler/gumbel.ts";
import {
  ancestralUpdate,
  argmaxUpdate,
  createScratch,
  positionScores,
  type SeddRule,
  seddUpdate,
  type UpdateContext,
} from "../../src/sampler/updates.ts";
import { chiSquare } from "./chi_square.ts";

const V = 5;
const MASK = 4;
const N = V - 1;
const SEEDS = 4000;
const P_MIN = 0.001;

/** Forward rate matrix over V states (absorb) or over the N real states (uniform, MASK row 0). */
function rateMatrix(graph: "absorb" | "uniform"): number[][] {
  const Q = Array.from({ length: V }, () => new Array(V).fill(0));
  for (let y = 0; y < V; y++) {
    if (y === MASK) continue;
    if (graph === "absorb") {
      Q[y][MASK] = 1;
      Q[y][y] = -1;
    } else {
      for (let z = 0; z < V; z++) if (z !== MASK) Q[y][z] = z === y ? -(N - 1) / N : 1 / N;
    }
  }
  return Q;
}

function matmul(A: number[][], B: number[][]): number[][] {
  const n = A.length;
  const C = Array.from({ length: n }, () => new Array(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) for (let j = 0; j < n; j++) C[i][j] += A[i][k] * B[k][j];
  }
  return C;
}

/** exp(a Q) by scaling and squaring a 20-term Taylor series. */
function expm(Q: number[][], a: number): number[][] {
  const n = Q.length;
  const sq = 10;
  const M = Q.map((r) => r.map((v) => (v * a) / 2 ** sq));
  let R = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => +(i === j)));
  let term = R;
  for (let k = 1; k <= 20; k++) {
    term = matmul(term, M).map((r) => r.map((v) => v / k));
    R = R.map((r, i) => r.map((v, j) => v + term[i][j]));
  }
  for (let i = 0; i < sq; i++) R = matmul(R, R);
  return R;
}

/** Counts of the token at position 0 (B = T = 1) after one update, over SEEDS seeds. */
function histogram(x: number, step: (ids: Int32Array, rng: Rng) => void): number[] {
  const counts = new Array(V).fill(0);
  for (let seed = 0; seed < SEEDS; seed++) {
    const ids = new Int32Array([x]);
    step(ids, new Rng(seed, 77));
    counts[ids[0]]++;
  }
  return counts;
}

function assertFits(counts: number[], expected: number[], what: string): void {
  const r = chiSquare(counts, expected);
  assert.ok(
    r.p > P_MIN,
    `${what}: chi-square ${r.stat.toFixed(2)} on ${r.df} df, p = ${r.p.toExponential(2)}; ` +
      `counts ${counts}, expected ${expected.map((e) => (e * SEEDS).toFixed(1))}`,
  );
}

// p_x0 of the stub (over the 4 real tokens) and its logits; the MASK logit is large on purpose:
// SUBS must ignore it.
const P0 = [0.1, 0.2, 0.3, 0.4];
const LOGITS = new Float32Array([...P0.map(Math.log), 3]);
// Raw log-scores for SEDD outputs.
const RAW = new Float32Array([-0.7, 0.1, 0.4, -1.2, 2]);

function scoresFromRaw(x: number, shift: number): number[] {
  const s = [...RAW].map((l, y) => (y === MASK ? 0 : Math.exp(l - shift)));
  s[x] = 1;
  return s;
}

Deno.test("positionScores() turns p_x0 into the absorb ratio p_t(y) / p_t(MASK) = p_x0(y) / expm1(sigma)", () => {
  const ctx: UpdateContext = {
    V,
    maskId: MASK,
    graph: "absorb",
    output: "logits",
    scaleBySigma: true,
  };
  const s = new Float64Array(V);
  for (const sigma of [1e-4, 0.3, 2, 7]) {
    positionScores(s, LOGITS, 0, MASK, sigma, ctx);
    // Forward process of one position: p_t(y) = e^-sigma p_x0(y), p_t(MASK) = 1 - e^-sigma.
    for (let y = 0; y < N; y++) {
      const ratio = (Math.exp(-sigma) * P0[y]) / (1 - Math.exp(-sigma));
      assert.ok(
        Math.abs(s[y] - ratio) <= 1e-6 * ratio,
        `sigma ${sigma}, y ${y}: ${s[y]} vs ${ratio}`,
      );
    }
    assert.equal(s[MASK], 1);
  }
});

Deno.test("positionScores() applies SEDD's scale-by-sigma to absorb log-scores and sets s[x] = 1", () => {
  const s = new Float64Array(V);
  const sigma = 0.8;
  positionScores(s, RAW, 0, MASK, sigma, {
    V,
    maskId: MASK,
    graph: "absorb",
    output: "logScore",
    scaleBySigma: true,
  });
  const want = scoresFromRaw(MASK, Math.log(Math.expm1(sigma)) + Math.log(N));
  for (let y = 0; y < V; y++) assert.ok(Math.abs(s[y] - want[y]) < 1e-9 * (1 + want[y]));
  positionScores(s, RAW, 0, 2, sigma, {
    V,
    maskId: MASK,
    graph: "uniform",
    output: "logScore",
    scaleBySigma: true,
  });
  const u = scoresFromRaw(2, 0);
  for (let y = 0; y < V; y++) assert.ok(Math.abs(s[y] - u[y]) < 1e-9 * (1 + u[y]));
});

Deno.test("chiSquare() rejects samples drawn from a different distribution (the tests can fail)", () => {
  const w = new Float64Array([0.1, 0.2, 0.3, 0.4]);
  const counts = new Array(4).fill(0);
  for (let seed = 0; seed < SEEDS; seed++) counts[gumbelArgmax(w, 0, 4, new Rng(seed), 0)]++;
  assert.ok(chiSquare(counts, [0.1, 0.2, 0.3, 0.4]).p > P_MIN);
  assert.ok(chiSquare(counts, [0.1, 0.2, 0.33, 0.37]).p < P_MIN);
  assert.ok(chiSquare(counts, [0.14, 0.16, 0.3, 0.4]).p < P_MIN);
  assert.equal(chiSquare([1, 5], [0, 1]).p, 0);
});

const sched = createSchedule("loglinear");
const t = 1;
const s = 0.5;
const sigmaT = sched.sigma(t);
const sigmaS = sched.sigma(s);
const dt = t - s;

type Case = {
  graph: "absorb" | "uniform";
  output: "logits" | "logScore";
  x: number;
  sigma: number;
  scores: number[];
};

const CASES: Case[] = [
  {
    graph: "absorb",
    output: "logits",
    x: MASK,
    sigma: sigmaT,
    scores: [...P0.map((p) => p / Math.expm1(sigmaT)), 1],
  },
  {
    graph: "absorb",
    output: "logScore",
    x: MASK,
    sigma: sigmaT,
    scores: scoresFromRaw(MASK, Math.log(Math.expm1(sigmaT)) + Math.log(N)),
  },
  { graph: "uniform", output: "logScore", x: 1, sigma: 1.5, scores: scoresFromRaw(1, 0) },
];

function ctxOf(c: Case): UpdateContext {
  return { V, maskId: MASK, graph: c.graph, output: c.output, scaleBySigma: true };
}

function runRule(c: Case, rule: SeddRule): number[] {
  const scratch = createScratch(V);
  const out = c.output === "logits" ? LOGITS : RAW;
  return histogram(c.x, (ids, rng) => {
    seddUpdate(ids, out, null, 1, 1, c.sigma, rule, ctxOf(c), rng, scratch);
  });
}

for (const c of CASES) {
  const label = `${c.graph}/${c.output}`;
  const Q = rateMatrix(c.graph);

  Deno.test(`seddUpdate() Euler step (${label}) moves x -> y with probability dt dsigma Q[y][x] s_y`, () => {
    // Uniform: a larger dsigma so that moves are common; absorb: loglinear from t = 1 to 0.5.
    const rate = c.graph === "absorb" ? dt * sched.dsigma(t) : 0.9;
    const want = new Array(V).fill(0);
    let moved = 0;
    for (let y = 0; y < V; y++) {
      if (y === c.x) continue;
      want[y] = rate * Q[y][c.x] * c.scores[y];
      moved += want[y];
    }
    want[c.x] = 1 - moved;
    assert.ok(moved > 0.3 && moved < 1, `test setup: moved mass ${moved}`);
    assertFits(runRule(c, { kind: "euler", rate }), want, `Euler ${label}`);
  });

  Deno.test(`seddUpdate() Tweedie step (${label}) samples p_t exp(-D Q) times exp(D Q)`, () => {
    const D = c.graph === "absorb" ? sigmaT - sigmaS : 0.7;
    const back = expm(Q, -D);
    const fwd = expm(Q, D);
    const want = new Array(V).fill(0);
    for (let y = 0; y < V; y++) {
      let stag = 0;
      for (let z = 0; z < V; z++) stag += c.scores[z] * back[z][y];
      want[y] = Math.max(0, stag * fwd[y][c.x]);
    }
    if (c.graph === "absorb") {
      // Under loglinear this is MDLM's ancestral step: (t - s) / t * p_x0(y).
      const total = want.reduce((a, b) => a + b, 0);
      if (c.output === "logits") {
        for (let y = 0; y < N; y++) {
          assert.ok(Math.abs(want[y] / total - ((t - s) / t) * P0[y]) < 1e-3);
        }
      }
    }
    assertFits(runRule(c, { kind: "tweedie", dsig: D }), want, `Tweedie ${label}`);
  });

  Deno.test(`seddUpdate() final denoise (${label}) samples the Tweedie step to t = 0 without MASK`, () => {
    const sigma = c.graph === "absorb" ? c.sigma : 0.9;
    const back = expm(Q, -sigma);
    const fwd = expm(Q, sigma);
    const want = new Array(V).fill(0);
    for (let y = 0; y < V; y++) {
      if (y === MASK) continue;
      let stag = 0;
      for (let z = 0; z < V; z++) stag += c.scores[z] * back[z][y];
      want[y] = Math.max(0, stag * fwd[y][c.x]);
    }
    assertFits(runRule(c, { kind: "denoise", sigma }), want, `denoise ${label}`);
  });
}

for (const output of ["logits", "logScore"] as const) {
  Deno.test(`ancestralUpdate() (${output}) unmasks to x0 w.p. (alpha_s - alpha_t) / (1 - alpha_t) times p_x0`, () => {
    const ctx: UpdateContext = { V, maskId: MASK, graph: "absorb", output, scaleBySigma: true };
    const out = output === "logits" ? LOGITS : RAW;
    const p0 = output === "logits" ? P0 : (() => {
      const e = [...RAW].slice(0, N).map(Math.exp);
      const z = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / z);
    })();
    const tt = 0.8;
    const ss = 0.3;
    const alphaT = 1 - sched.maskProb(tt);
    const alphaS = 1 - sched.maskProb(ss);
    const unmask = (alphaS - alphaT) / (1 - alphaT);
    const want = [...p0.map((p) => p * unmask), 1 - unmask];
    const scratch = createScratch(V);
    const counts = histogram(MASK, (ids, rng) => {
      ancestralUpdate(
        ids,
        out,
        null,
        1,
        1,
        sched.maskProb(tt),
        sched.maskProb(ss),
        ctx,
        rng,
        scratch,
      );
    });
    assertFits(counts, want, `ancestral ${output}`);
  });
}

Deno.test("seddUpdate() and ancestralUpdate() never touch unmasked or fixed positions under absorb", () => {
  const ctx: UpdateContext = {
    V,
    maskId: MASK,
    graph: "absorb",
    output: "logits",
    scaleBySigma: true,
  };
  const out = new Float32Array(3 * V);
  for (let i = 0; i < 3; i++) out.set(LOGITS, i * V);
  const fixed = new Uint8Array([0, 0, 1]);
  const scratch = createScratch(V);
  for (let seed = 0; seed < 50; seed++) {
    const rng = new Rng(seed);
    const ids = new Int32Array([2, MASK, 0]);
    seddUpdate(ids, out, fixed, 1, 3, 1, { kind: "denoise", sigma: 1 }, ctx, rng, scratch);
    assert.equal(ids[0], 2);
    assert.notEqual(ids[1], MASK);
    assert.equal(ids[2], 0);
    const ids2 = new Int32Array([2, MASK, MASK]);
    ancestralUpdate(ids2, out, fixed, 1, 3, 0.5, 0, ctx, rng, scratch);
    assert.deepEqual([ids2[0], ids2[2]], [2, MASK]);
    assert.notEqual(ids2[1], MASK);
  }
});

Deno.test("argmaxUpdate() takes the most likely real token even when the MASK logit is largest", () => {
  const ids = new Int32Array([MASK, 1]);
  const out = new Float32Array(2 * V);
  out.set(LOGITS, 0);
  out.set(LOGITS, V);
  assert.equal(argmaxUpdate(ids, out, null, 1, 2, V, MASK), true);
  assert.deepEqual([...ids], [3, 1]);
});
