import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import {
  createSchedule,
  sampleTimes,
  type ScheduleName,
  sequenceRng,
  stepRng,
} from "../../src/diffusion/schedule.ts";

const close = (got: number, want: number, tol: number, what: string) =>
  assert.ok(
    Math.abs(got - want) <= tol * Math.max(1, Math.abs(want)),
    `${what}: expected ${want}, got ${got}`,
  );

Deno.test("createSchedule('loglinear') matches hand-computed values", () => {
  const s = createSchedule("loglinear"); // eps 1e-3
  // t = 0.5: (1-eps)t = 0.4995, sigma = -ln(0.5005) = 0.692148...
  close(s.sigma(0.5), -Math.log(0.5005), 1e-14, "sigma(0.5)");
  close(s.dsigma(0.5), 0.999 / 0.5005, 1e-14, "dsigma(0.5)");
  // t = 1: sigma = -ln(eps) = ln(1000)
  close(s.sigma(1), Math.log(1000), 1e-13, "sigma(1)");
  close(s.dsigma(1), 999, 1e-12, "dsigma(1)");
  assert.equal(s.sigma(0), 0);
  // dsigma / expm1(sigma) = 1/t for loglinear (MDLM's weight)
  for (const t of [0.01, 0.3, 0.77, 1]) {
    close(s.dsigma(t) / Math.expm1(s.sigma(t)), 1 / t, 1e-12, `w(${t})`);
  }
});

Deno.test("createSchedule('geometric') matches hand-computed values with SEDD's defaults", () => {
  const s = createSchedule("geometric"); // 1e-4 .. 20
  close(s.sigma(0), 1e-4, 1e-12, "sigma(0)");
  close(s.sigma(1), 20, 1e-12, "sigma(1)");
  // t = 0.5: sqrt(1e-4 * 20) = sqrt(2e-3)
  close(s.sigma(0.5), Math.sqrt(2e-3), 1e-12, "sigma(0.5)");
  close(s.dsigma(0.5), Math.sqrt(2e-3) * Math.log(20 / 1e-4), 1e-12, "dsigma(0.5)");
});

Deno.test("createSchedule('linear') masks with probability t and diverges at t = 1", () => {
  const s = createSchedule("linear");
  close(s.sigma(0.75), Math.log(4), 1e-14, "sigma(0.75)");
  close(s.dsigma(0.75), 4, 1e-14, "dsigma(0.75)");
  assert.equal(s.maskProb(0.3), 0.3);
  assert.equal(s.sigma(1), Infinity);
  assert.equal(s.maskProb(1), 1);
});

Deno.test("NoiseSchedule.dsigma() matches central differences of sigma()", () => {
  for (const name of ["loglinear", "geometric", "linear"] as ScheduleName[]) {
    const s = createSchedule(name);
    for (const t of [0.05, 0.2, 0.5, 0.8, 0.95]) {
      const h = 1e-6;
      const fd = (s.sigma(t + h) - s.sigma(t - h)) / (2 * h);
      close(s.dsigma(t), fd, 1e-6, `${name} dsigma(${t})`);
    }
  }
});

Deno.test("NoiseSchedule.maskProb() equals 1 - exp(-sigma)", () => {
  for (const name of ["loglinear", "geometric", "linear"] as ScheduleName[]) {
    const s = createSchedule(name);
    for (const t of [0, 0.1, 0.5, 0.9, 0.999]) {
      close(s.maskProb(t), -Math.expm1(-s.sigma(t)), 1e-13, `${name} maskProb(${t})`);
    }
  }
});

Deno.test("createSchedule() rejects bad names, options and times", () => {
  // deno-lint-ignore no-explicit-any
  assert.throws(() => createSchedule("cosine" as any), /expected "loglinear"/);
  assert.throws(() => createSchedule("loglinear", { eps: 0 }), RangeError);
  assert.throws(() => createSchedule("geometric", { sigmaMin: 2, sigmaMax: 1 }), RangeError);
  assert.throws(() => createSchedule("loglinear").sigma(1.5), /expected 0 <= t <= 1, got 1.5/);
  assert.throws(() => createSchedule("linear").dsigma(NaN), RangeError);
});

Deno.test("sampleTimes() draws t in [eps, 1] from each sequence's own generator", () => {
  const B = 64;
  const rngs = Array.from({ length: B }, (_, j) => sequenceRng(3, 5, j));
  const t = sampleTimes(new Float32Array(B), rngs, { eps: 0.1 });
  let mean = 0;
  for (let j = 0; j < B; j++) {
    assert.ok(t[j] >= 0.1 && t[j] <= 1, `t[${j}] = ${t[j]}`);
    // Sequence j's time depends only on its own generator.
    close(t[j], 0.1 + 0.9 * sequenceRng(3, 5, j).uniform(), 1e-7, `t[${j}]`);
    mean += t[j] / B;
  }
  assert.ok(Math.abs(mean - 0.55) < 0.1, `mean ${mean}`);
  // A single generator is drawn in order.
  const a = sampleTimes(new Float32Array(3), new Rng(1));
  const r = new Rng(1);
  for (let j = 0; j < 3; j++) close(a[j], 1e-3 + 0.999 * r.uniform(), 1e-7, `single ${j}`);
});

Deno.test("sampleTimes() antithetic puts exactly one t in each 1/B stratum, shard-invariant", () => {
  const B = 8;
  const u = stepRng(11, 2).uniform();
  const t = sampleTimes(new Float32Array(B), [], { antithetic: true, u, eps: 0 });
  const seen = new Set<number>();
  for (let j = 0; j < B; j++) seen.add(Math.floor(t[j] * B));
  assert.equal(seen.size, B);
  close(t[0], u / B, 1e-7, "t[0]");
  const shard = sampleTimes(new Float32Array(3), [], {
    antithetic: true,
    u,
    eps: 0,
    offset: 5,
    total: 8,
  });
  assert.deepEqual([...shard], [...t.subarray(5)]);
  assert.throws(
    () => sampleTimes(new Float32Array(2), [new Rng(1), new Rng(2)], { antithetic: true }),
    /Missing antithetic u/,
  );
  assert.throws(
    () => sampleTimes(new Float32Array(3), [], { antithetic: true, u, offset: 6, total: 8 }),
    RangeError,
  );
  assert.throws(() => sampleTimes(new Float32Array(3), [new Rng(1)]), /expected one per sequence/);
});
