import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import * as diffusion from "../../src/diffusion/mod.ts";
import { crossEntropyBackward, crossEntropyForward } from "../../src/nn/cross_entropy.ts";

const { absorbLogScore, createSchedule, lossBackward, lossForward, lossScale, seedLossWeights } =
  diffusion;
type LossInputs = diffusion.LossInputs;
type Fwd = diffusion.NoisyLossForward;
type Bwd = diffusion.NoisyLossBackward;

// seed's signature has no noise; adapt it to the common one.
const seedF: Fwd = (l, x0, xt, _s, _d, B, T, V, sc) =>
  diffusion.seedForward(l, x0, xt, B, T, V, sc);
const seedB: Bwd = (dl, l, x0, xt, _s, _d, B, T, V, sc) =>
  diffusion.seedBackward(dl, l, x0, xt, B, T, V, sc);

const LOSSES: [string, Fwd, Bwd, "absorb" | "uniform"][] = [
  ["seed", seedF, seedB, "absorb"],
  ["elbo", diffusion.elboForward, diffusion.elboBackward, "absorb"],
  [
    "scoreEntropyAbsorb",
    diffusion.scoreEntropyAbsorbForward,
    diffusion.scoreEntropyAbsorbBackward,
    "absorb",
  ],
  [
    "scoreEntropyUniform",
    diffusion.scoreEntropyUniformForward,
    diffusion.scoreEntropyUniformBackward,
    "uniform",
  ],
];

/** A random batch: x0 real tokens; xt masked (absorb) or resampled (uniform) about half the time. */
function randomBatch(B: number, T: number, V: number, graph: "absorb" | "uniform", seed: number) {
  const rng = new Rng(seed);
  const logits = new Float32Array(B * T * V);
  for (let i = 0; i < logits.length; i++) logits[i] = 2 * rng.normal();
  const x0 = new Int32Array(B * T);
  const xt = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) {
    x0[i] = rng.int(V - 1);
    const hit = rng.uniform() < 0.6;
    xt[i] = !hit ? x0[i] : graph === "absorb" ? V - 1 : rng.int(V - 1);
  }
  const sched = createSchedule("loglinear");
  const sigma = new Float64Array(B);
  const dsigma = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const t = 0.05 + 0.9 * rng.uniform();
    sigma[b] = sched.sigma(t);
    dsigma[b] = sched.dsigma(t);
  }
  return { logits, x0, xt, sigma, dsigma };
}

for (const [name, fwd, bwd, graph] of LOSSES) {
  Deno.test(`${name}Backward() matches finite differences`, () => {
    const B = 2, T = 3, V = 5;
    const { logits, x0, xt, sigma, dsigma } = randomBatch(B, T, V, graph, 17);
    const scale = 0.37; // a random upstream gradient of the scalar loss
    const d = new Float32Array(B * T * V);
    bwd(d, logits, x0, xt, sigma, dsigma, B, T, V, scale);
    let maxErr = 0;
    let nonzero = 0;
    for (let k = 0; k < logits.length; k++) {
      const orig = logits[k];
      logits[k] = orig + 1e-3;
      const up = logits[k]; // the float32 value actually used
      const fUp = fwd(logits, x0, xt, sigma, dsigma, B, T, V, scale);
      logits[k] = orig - 1e-3;
      const dn = logits[k];
      const fDn = fwd(logits, x0, xt, sigma, dsigma, B, T, V, scale);
      logits[k] = orig;
      const fd = (fUp - fDn) / (up - dn);
      const err = Math.abs(fd - d[k]) / Math.max(1e-2, Math.abs(fd));
      maxErr = Math.max(maxErr, err);
      assert.ok(Number.isFinite(d[k]), `dlogits[${k}] = ${d[k]}`);
      if (d[k] !== 0) nonzero++;
    }
    assert.ok(nonzero > 5, `only ${nonzero} non-zero gradients: the check would be vacuous`);
    assert.ok(maxErr < 1e-4, `max relative error ${maxErr}`);
  });

  Deno.test(`${name}Backward() adds into dlogits instead of overwriting`, () => {
    const B = 1, T = 2, V = 4;
    const { logits, x0, xt, sigma, dsigma } = randomBatch(B, T, V, graph, 5);
    xt[0] = graph === "absorb" ? V - 1 : (x0[0] + 1) % (V - 1); // at least one contributing position
    const once = new Float32Array(B * T * V);
    bwd(once, logits, x0, xt, sigma, dsigma, B, T, V, 1);
    const twice = new Float32Array(B * T * V).fill(0.5);
    bwd(twice, logits, x0, xt, sigma, dsigma, B, T, V, 1);
    bwd(twice, logits, x0, xt, sigma, dsigma, B, T, V, 1);
    for (let k = 0; k < once.length; k++) {
      assert.ok(Math.abs(twice[k] - (0.5 + 2 * once[k])) < 1e-5, `k ${k}`);
    }
    assert.ok(once.some((v) => v !== 0));
  });

  Deno.test(`${name}Forward() and Backward() stay finite and non-negative at logits of +-80`, () => {
    const B = 2, T = 4, V = 6;
    const { logits, x0, xt, sigma, dsigma } = randomBatch(B, T, V, graph, 23);
    for (let i = 0; i < logits.length; i++) logits[i] = i % 3 === 0 ? 80 : -80;
    // Also the ends of the loglinear range.
    const s = createSchedule("loglinear");
    for (const t of [1e-3, 1]) {
      sigma.fill(s.sigma(t));
      dsigma.fill(s.dsigma(t));
      const loss = fwd(logits, x0, xt, sigma, dsigma, B, T, V, 1 / (B * T));
      assert.ok(Number.isFinite(loss) && loss >= 0, `loss ${loss} at t ${t}`);
      const d = new Float32Array(B * T * V);
      bwd(d, logits, x0, xt, sigma, dsigma, B, T, V, 1 / (B * T));
      assert.ok(d.every(Number.isFinite), `non-finite gradient at t ${t}`);
    }
  });

  Deno.test(`${name}Forward() is non-negative on random logits and additive over shards`, () => {
    const B = 4, T = 5, V = 7;
    const { logits, x0, xt, sigma, dsigma } = randomBatch(B, T, V, graph, 31);
    const scale = 1 / (B * T);
    const whole = fwd(logits, x0, xt, sigma, dsigma, B, T, V, scale);
    assert.ok(whole > 0, `loss ${whole}`);
    const half = (a: { length: number; slice(s: number, e?: number): unknown }, n: number) => [
      a.slice(0, n),
      a.slice(n),
    ];
    const [l1, l2] = half(logits, 2 * T * V) as Float32Array[];
    const [a1, a2] = half(x0, 2 * T) as Int32Array[];
    const [b1, b2] = half(xt, 2 * T) as Int32Array[];
    const [s1, s2] = half(sigma, 2) as Float64Array[];
    const [d1, d2] = half(dsigma, 2) as Float64Array[];
    const shards = fwd(l1, a1, b1, s1, d1, 2, T, V, scale) +
      fwd(l2, a2, b2, s2, d2, 2, T, V, scale);
    assert.ok(Math.abs(shards - whole) < 1e-12 * whole, `${shards} vs ${whole}`);
  });
}

Deno.test("seedForward() matches a hand-computed cross-entropy (V = 3)", () => {
  // Logits [0, ln 2, ln 5] give softmax [1, 2, 5] / 8. Target 1 at a masked position:
  // CE = -ln(2/8) = ln 4. The unmasked second position contributes nothing.
  const logits = new Float32Array([0, Math.log(2), Math.log(5), 9, 9, 9]);
  const loss = diffusion.seedForward(
    logits,
    new Int32Array([1, 0]),
    new Int32Array([2, 0]),
    1,
    2,
    3,
    1,
  );
  assert.ok(Math.abs(loss - Math.log(4)) < 1e-6, `${loss}`);
  // A mask id that is not last: position 1's x0 may then be V - 1.
  const l2 = diffusion.seedForward(
    logits,
    new Int32Array([1, 2]),
    new Int32Array([1, 0]),
    1,
    2,
    3,
    1,
    0,
  );
  assert.ok(Math.abs(l2 - (Math.log(3 * Math.exp(9)) - 9)) < 1e-6, `${l2}`); // ln 3, uniform
});

Deno.test("elboForward() matches a hand-computed value and weighs by 1/t under loglinear", () => {
  // V = 4, MASK = 3. Logits [ln 1, ln 3, 0, 50]: SUBS ignores the 50, p = [1, 3, 1] / 5.
  // x0 = 1: -log p = ln(5/3). At loglinear t = 0.25 the weight is 1/t = 4...
  const logits = new Float32Array([0, Math.log(3), 0, 50]);
  const x0 = new Int32Array([1]), masked = new Int32Array([3]);
  // ... and under the notebook's linear schedule the weight is also 1/t.
  for (const s of [createSchedule("loglinear"), createSchedule("linear")]) {
    const loss = diffusion.elboForward(
      logits,
      x0,
      masked,
      [s.sigma(0.25)],
      [s.dsigma(0.25)],
      1,
      1,
      4,
      1,
    );
    assert.ok(Math.abs(loss - 4 * Math.log(5 / 3)) < 1e-6, `${s.name}: ${loss}`);
  }
  // Unmasked positions are carried over: zero loss whatever the logits say.
  const l3 = diffusion.elboForward(
    logits,
    new Int32Array([1]),
    new Int32Array([1]),
    [1],
    [1],
    1,
    1,
    4,
    1,
  );
  assert.equal(l3, 0);
  const d = new Float32Array(4);
  diffusion.elboBackward(d, logits, new Int32Array([1]), new Int32Array([3]), [1], [1], 1, 1, 4, 1);
  assert.equal(d[3], 0, "the mask column gets no gradient");
});

Deno.test("scoreEntropyAbsorbForward() at zero logits totals 1/expm1(sigma) and equals r ln(V-1) dsigma", () => {
  // Scaled s_y = -ln e - ln(V-1): sum over V-1 tokens of exp(s_y) = 1/e = r (the true total),
  // so L = r - r s_x0 + r(ln r - 1) = r (ln e + ln(V-1)) - r ln e = r ln(V-1).
  for (const sigma of [0.01, 0.5, 3, 6.9]) {
    for (const V of [3, 4, 10]) {
      const r = 1 / Math.expm1(sigma);
      const logits = new Float32Array(V);
      const x0 = new Int32Array([1]), xt = new Int32Array([V - 1]);
      const loss = diffusion.scoreEntropyAbsorbForward(logits, x0, xt, [sigma], [2.5], 1, 1, V, 1);
      const want = 2.5 * r * Math.log(V - 1);
      assert.ok(Math.abs(loss - want) <= 1e-12 * want, `sigma ${sigma} V ${V}: ${loss} vs ${want}`);
      // d/ds_y = exp(s_y) - r[y = x0] sums to 1/e - r = 0: the total is already right.
      const d = new Float32Array(V);
      diffusion.scoreEntropyAbsorbBackward(d, logits, x0, xt, [sigma], [1], 1, 1, V, 1);
      const total = d.reduce((a, v) => a + v, 0);
      assert.ok(Math.abs(total) <= 1e-6 * r, `gradient total ${total}`);
    }
  }
});

Deno.test("scoreEntropyUniformForward() matches hand-computed values (N = 3)", () => {
  // V = 4 (N = 3 real tokens, column 3 unused). sigma = ln 4: e = 3, rho = e/(e+N) = 1/2.
  // Logits s = [0, ln 2, 0]:
  // xt = x0 = 0: pos = (2 + 1)/3 = 1; neg = rho (ln 2 + 0)/3 = ln2/6;
  //   const = (2/3)(1/2)(ln(1/2) - 1) = -(ln 2 + 1)/3.  L = 1 - ln2/6 - (ln2 + 1)/3 = 2/3 - ln2/2.
  // xt = 2, x0 = 0: pos = (1 + 2)/3 = 1; neg = s_0/e + (0 + ln 2)/3 = ln2/3;
  //   const = ((ln 2 - 1)/(1/2) - 1)/3 = (2 ln 2 - 3)/3.  L = 1 - ln2/3 + (2 ln2 - 3)/3 = ln2/3.
  const logits = new Float32Array([0, Math.log(2), 0, 7, 0, Math.log(2), 0, -7]);
  const sigma = [Math.log(4)];
  const same = diffusion.scoreEntropyUniformForward(
    logits.subarray(0, 4),
    new Int32Array([0]),
    new Int32Array([0]),
    sigma,
    [1],
    1,
    1,
    4,
    1,
  );
  assert.ok(Math.abs(same - (2 / 3 - Math.LN2 / 2)) < 1e-7, `${same}`);
  const moved = diffusion.scoreEntropyUniformForward(
    logits.subarray(4),
    new Int32Array([0]),
    new Int32Array([2]),
    sigma,
    [1],
    1,
    1,
    4,
    1,
  );
  assert.ok(Math.abs(moved - Math.LN2 / 3) < 1e-7, `${moved}`);
});

/** exp(A) for a small dense matrix: scaling and squaring with a Taylor series. */
function expm(A: number[][]): number[][] {
  const n = A.length;
  const k = 12;
  const S = A.map((row) => row.map((v) => v / 2 ** k));
  let term: number[][] = S.map((_, i) => S.map((_, j) => (i === j ? 1 : 0)));
  let E = term.map((r) => r.slice());
  for (let m = 1; m <= 20; m++) {
    term = term.map((_, i) =>
      S.map((_, j) => {
        let s = 0;
        for (let l = 0; l < n; l++) s += term[i][l] * S[l][j];
        return s / m;
      })
    );
    E = E.map((r, i) => r.map((v, j) => v + term[i][j]));
  }
  for (let q = 0; q < k; q++) {
    E = E.map((_, i) =>
      E.map((_, j) => {
        let s = 0;
        for (let l = 0; l < n; l++) s += E[i][l] * E[l][j];
        return s;
      })
    );
  }
  return E;
}

/**
 * The paper's DWDSE at one position, straight from the definition: sum over y != xt of
 * rate(y -> xt) [exp(s_y) - R_y s_y + K(R_y)], R_y = p_t(y|x0) / p_t(xt|x0), K(a) = a(log a - 1),
 * with p_t = expm(sigma Q) (rows: from, columns: to) and s the log-scores.
 */
function directDwdse(s: number[], xt: number, x0: number, Q: number[][], sigma: number): number {
  const P = expm(Q.map((row) => row.map((v) => sigma * v)));
  let L = 0;
  for (let y = 0; y < s.length; y++) {
    if (y === xt) continue;
    const w = Q[y][xt];
    if (w === 0) continue;
    const R = P[x0][y] / P[x0][xt];
    const K = R > 0 ? R * (Math.log(R) - 1) : 0;
    L += w * (Math.exp(s[y]) - R * s[y] + K);
  }
  return L;
}

Deno.test("scoreEntropyUniformForward() equals the direct DWDSE sum over y (N = 2..5)", () => {
  const rng = new Rng(99);
  for (const N of [2, 3, 4, 5]) {
    const V = N + 1;
    // Uniform rates: 1/N to every other token, -(N-1)/N on the diagonal.
    const Q = Array.from(
      { length: N },
      (_, i) => Array.from({ length: N }, (_, j) => (i === j ? -(N - 1) / N : 1 / N)),
    );
    for (const sigma of [0.05, 0.7, 2.5]) {
      for (let x0 = 0; x0 < N; x0++) {
        for (let xt = 0; xt < N; xt++) {
          const logits = new Float32Array(V);
          for (let y = 0; y < V; y++) logits[y] = rng.normal();
          const got = diffusion.scoreEntropyUniformForward(
            logits,
            new Int32Array([x0]),
            new Int32Array([xt]),
            [sigma],
            [1],
            1,
            1,
            V,
            1,
          );
          const want = directDwdse([...logits.subarray(0, N)], xt, x0, Q, sigma);
          assert.ok(
            Math.abs(got - want) <= 1e-11 * Math.max(1, Math.abs(want)),
            `N ${N} sigma ${sigma} x0 ${x0} xt ${xt}: closed form ${got}, direct ${want}`,
          );
        }
      }
    }
  }
});

Deno.test("scoreEntropyUniformForward() is zero, with zero gradient, at the true log-ratios", () => {
  const N = 4, V = 5, sigma = 1.3;
  const e = Math.expm1(sigma), rho = e / (e + N);
  // xt = x0 = 2: every other ratio is rho. xt = 1, x0 = 2: ratio 1/rho at x0, 1 elsewhere.
  for (const [x0, xt, R] of [[2, 2, [rho, rho, 1, rho]], [2, 1, [1, 1, 1 / rho, 1]]] as const) {
    const logits = new Float32Array(V);
    for (let y = 0; y < N; y++) logits[y] = Math.log(R[y]);
    const args = [new Int32Array([x0]), new Int32Array([xt]), [sigma], [1], 1, 1, V, 1] as const;
    const loss = diffusion.scoreEntropyUniformForward(logits, ...args);
    assert.ok(Math.abs(loss) < 1e-7, `loss ${loss} for x0 ${x0}, xt ${xt}`);
    const d = new Float32Array(V);
    diffusion.scoreEntropyUniformBackward(d, logits, ...args);
    assert.ok(d.every((v) => Math.abs(v) < 1e-6), `gradient ${[...d]}`);
  }
});

Deno.test("scoreEntropyAbsorbForward() equals the direct DWDSE sum over y with scale-by-sigma", () => {
  const rng = new Rng(7);
  for (const V of [3, 4, 6]) {
    const M = V - 1;
    // Absorbing rates: every real token jumps to MASK at rate 1; MASK stays.
    const Q = Array.from(
      { length: V },
      (_, i) => Array.from({ length: V }, (_, j) => (i === M ? 0 : j === M ? 1 : i === j ? -1 : 0)),
    );
    for (const sigma of [0.05, 0.9, 4]) {
      for (let x0 = 0; x0 < M; x0++) {
        const logits = new Float32Array(V);
        for (let y = 0; y < V; y++) logits[y] = rng.normal();
        for (const xt of [M, x0]) {
          const got = diffusion.scoreEntropyAbsorbForward(
            logits,
            new Int32Array([x0]),
            new Int32Array([xt]),
            [sigma],
            [1],
            1,
            1,
            V,
            1,
          );
          // SEDD's model output: s = l - log(expm1(sigma)) - log(V-1), then s[xt] = 0.
          const s = [...logits].map((l) => l - Math.log(Math.expm1(sigma)) - Math.log(V - 1));
          s[xt] = 0;
          const want = directDwdse(s, xt, x0, Q, sigma);
          assert.ok(
            Math.abs(got - want) <= 1e-11 * Math.max(1, Math.abs(want)),
            `V ${V} sigma ${sigma} x0 ${x0} xt ${xt}: ${got} vs direct ${want}`,
          );
        }
      }
    }
  }
});

Deno.test("lossForward() and lossBackward() dispatch to the named loss and graph", () => {
  const B = 2, T = 3, V = 5;
  for (
    const [loss, graph, fwd, bwd] of [
      ["seed", undefined, seedF, seedB],
      ["elbo", "absorb", diffusion.elboForward, diffusion.elboBackward],
      [
        "score-entropy",
        undefined,
        diffusion.scoreEntropyAbsorbForward,
        diffusion.scoreEntropyAbsorbBackward,
      ],
      [
        "score-entropy",
        "uniform",
        diffusion.scoreEntropyUniformForward,
        diffusion.scoreEntropyUniformBackward,
      ],
    ] as const
  ) {
    const { logits, x0, xt, sigma, dsigma } = randomBatch(B, T, V, graph ?? "absorb", 3);
    const inputs: LossInputs = { loss, graph, x0, xt, sigma, dsigma, B, T, V, scale: 0.2 };
    assert.equal(lossForward(logits, inputs), fwd(logits, x0, xt, sigma, dsigma, B, T, V, 0.2));
    const a = new Float32Array(B * T * V), b = new Float32Array(B * T * V);
    lossBackward(a, logits, inputs);
    bwd(b, logits, x0, xt, sigma, dsigma, B, T, V, 0.2);
    assert.deepEqual(a, b, `${loss} ${graph}`);
  }
});

Deno.test("lossForward() and the losses reject bad inputs with expected-vs-got messages", () => {
  const { logits, x0, xt, sigma, dsigma } = randomBatch(1, 2, 4, "absorb", 1);
  const base: LossInputs = { loss: "elbo", x0, xt, sigma, dsigma, B: 1, T: 2, V: 4, scale: 1 };
  assert.throws(() => lossForward(logits, { ...base, graph: "uniform" }), /expected "absorb"/);
  assert.throws(() => lossForward(logits, { ...base, sigma: undefined }), /Missing noise levels/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => lossForward(logits, { ...base, loss: "mse" as any }), /Unknown loss/);
  assert.throws(() => lossForward(logits.subarray(1), base), /B\*T\*V = 8, got 7/);
  assert.throws(
    () => lossForward(logits, { ...base, x0: new Int32Array([3, 0]) }),
    /other than the mask 3, got 3 at position 0/,
  );
  assert.throws(() => lossForward(logits, { ...base, sigma: [0] }), /finite sigma > 0/);
  assert.throws(
    () =>
      lossForward(logits, {
        ...base,
        loss: "score-entropy",
        graph: "uniform",
        xt: new Int32Array([3, 0]),
      }),
    /got the mask 3 at position 0/,
  );
  assert.equal(lossScale("score-entropy", { B: 2, T: 5 }), 0.1);
  assert.throws(() => lossScale("seed", { B: 2, T: 5 }), /masked count/);
});

Deno.test("absorbLogScore() gives the log-scores that scoreEntropyAbsorbForward() scores", () => {
  const B = 2, T = 3, V = 5;
  const { logits, x0, xt, sigma } = randomBatch(B, T, V, "absorb", 41);
  const s = absorbLogScore(new Float32Array(B * T * V), logits, xt, sigma, B, T, V);
  // Recompute the loss from s with the formula, dsigma = 1, scale = 1.
  let want = 0;
  for (let i = 0; i < B * T; i++) {
    assert.equal(s[i * V + xt[i]], 0, `s[xt] at ${i}`);
    if (xt[i] !== V - 1) continue;
    const r = 1 / Math.expm1(sigma[Math.floor(i / T)]);
    for (let y = 0; y < V - 1; y++) want += Math.exp(s[i * V + y]);
    want += -r * s[i * V + x0[i]] + r * (Math.log(r) - 1);
  }
  const got = diffusion.scoreEntropyAbsorbForward(logits, x0, xt, sigma, [1, 1], B, T, V, 1);
  assert.ok(Math.abs(got - want) < 1e-5 * Math.abs(want), `${got} vs ${want}`);
});

Deno.test("lossForward() passes a non-last mask id to the seed loss only", () => {
  const logits = new Float32Array([1, 2, 3, 0, 0, 0]);
  const x0 = new Int32Array([2, 1]), xt = new Int32Array([0, 1]);
  const base: LossInputs = { loss: "seed", x0, xt, B: 1, T: 2, V: 3, scale: 1, maskId: 0 };
  // Position 0 is masked (id 0): CE = lse(1,2,3) - 3.
  const want = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3;
  assert.ok(Math.abs(lossForward(logits, base) - want) < 1e-6);
  assert.throws(
    () => lossForward(logits, { ...base, loss: "elbo", sigma: [1], dsigma: [1] }),
    /expected V - 1 = 2, got 0/,
  );
});

Deno.test("lossForward('seed') and lossBackward('seed') equal the model's cross-entropy path", () => {
  // Training's seed loss is crossEntropyForward over the logits with seedLossWeights; the
  // diffusion loss must be the same function of the logits, to float rounding.
  for (const seed of [1, 2, 3, 4]) {
    const B = 3, T = 7, V = 11;
    const { logits, x0, xt } = randomBatch(B, T, V, "absorb", seed);
    for (let i = 0; i < logits.length; i++) logits[i] *= 1 + seed; // wider spreads too
    const weights = new Float32Array(B * T);
    const count = seedLossWeights(weights, xt, V - 1, B, T);
    assert.ok(count > 0 && count < B * T, `count ${count}`);
    // the float32 weight the model reads, and the double scale lossScale gives
    const w32 = weights[xt.indexOf(V - 1)];
    const scale = lossScale("seed", { B, T, maskedCount: count });
    assert.ok(Math.abs(w32 / scale - 1) < 2 ** -24);
    const inputs: LossInputs = { loss: "seed", x0, xt, B, T, V, scale: w32 };
    const got = lossForward(logits, inputs);
    const want = crossEntropyForward(
      new Float32Array(B * T),
      new Float32Array(B * T),
      logits,
      x0,
      weights,
      B * T,
      V,
    );
    assert.ok(Math.abs(got - want) <= 1e-14 * want, `seed ${seed}: ${got} vs ${want}`);
    // the hand-written definition, with Math.exp: the shared path is within its 1e-8 relative
    let direct = 0;
    for (let i = 0; i < B * T; i++) {
      if (xt[i] !== V - 1) continue;
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(logits[i * V + v]);
      direct += Math.log(s) - logits[i * V + x0[i]];
    }
    direct *= scale;
    assert.ok(Math.abs(lossForward(logits, { ...inputs, scale }) - direct) < 1e-8 * direct);
    const lse = new Float32Array(B * T);
    crossEntropyForward(new Float32Array(B * T), lse, logits, x0, weights, B * T, V);
    const dWant = new Float32Array(B * T * V).fill(0.25);
    crossEntropyBackward(dWant, 1, logits, lse, x0, weights, B * T, V);
    const dGot = new Float32Array(B * T * V).fill(0.25);
    lossBackward(dGot, logits, inputs);
    let worst = 0;
    for (let k = 0; k < dGot.length; k++) worst = Math.max(worst, Math.abs(dGot[k] - dWant[k]));
    // the two saved log-sum-exps differ only by lse's float32 rounding
    assert.ok(worst < 1e-7, `seed ${seed}: gradients differ by ${worst}`);
    assert.ok(dGot.some((d) => d !== 0.25));
  }
});
