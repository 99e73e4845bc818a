// The element-wise and row ops of asm/ops.as against their TypeScript references, on odd shapes
// (lengths that are not multiples of the 4 SIMD lanes exercise the scalar tails).
//
// Tolerance, op by op, in units of u = 2^-24 (float32's half ulp):
// - exact (the same bits): the ops whose reference rounds once what the module also rounds once
//   (ReLU, dropout, residual, embedding, the GELU inside its table, the multiply-adds of
//   scaleBackward and dropoutBackward, AdamW).
// - layer norm: both compute the row statistics and the outputs in double and round once; the
//   double sums differ in order only (an error near 1e-16), so a result is within one float32
//   rounding of the reference: 2u times its magnitude.
// - softmax, log-sum-exp and the softmax gradient rows: the module's float32 exp is within a few
//   u of e^x (checked below), a row of n terms summed in float32 lanes adds n u, so a value is
//   within (8 + n) u of the double reference relative to its terms' magnitude.
// A wrong index, a dropped term or a lane mix-up misses by a whole term: far above these bounds.
// Every op is also checked to have run in the module (not the TypeScript fallback).

import assert from "node:assert/strict";
import { createWasmKernels, type WasmKernels, type WasmOps } from "../../src/kernels/wasm.ts";
import {
  type NNBackend,
  tsBackend,
  wasmBackend,
  wasmBackendBuffers,
} from "../../src/nn/backend.ts";
import { Rng } from "../../src/rng.ts";
import { adamwStep, createAdamW, createWasmAdamW } from "../../src/optim/adamw.ts";
import { U } from "./matmul_check.ts";
import { ropeTables } from "../../src/nn/attention.ts";

/** Kernels with room for the test's buffers (no growth: views stay valid), counting op calls. */
function counted(): { k: WasmKernels; calls: Map<string, number> } {
  const base = createWasmKernels({ initialPages: 64 });
  const calls = new Map<string, number>();
  const ops = Object.fromEntries(
    Object.entries(base.ops).map(([name, f]) => [name, (...a: number[]) => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return (f as (...a: number[]) => number)(...a);
    }]),
  ) as unknown as WasmOps;
  return { k: { ...base, ops }, calls };
}

function setup(rows = 64): {
  k: WasmKernels;
  nn: NNBackend;
  calls: Map<string, number>;
  put: (x: Float32Array) => Float32Array;
} {
  const { k, calls } = counted();
  const nn = wasmBackend(k, 16, 8, "wasm", rows);
  const put = (x: Float32Array) => {
    const v = k.alloc(x.length);
    v.set(x);
    return v;
  };
  return { k, nn, calls, put };
}

function uniform(n: number, rng: Rng, lo = -1, hi = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng.uniform();
  return x;
}

/** Asserts |got - want| <= bound[i] for every element (and the same NaNs). */
function assertWithin(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: (i: number) => number,
  label: string,
): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(want[i])) {
      assert.ok(Number.isNaN(got[i]), `${label}[${i}]: got ${got[i]}, expected NaN`);
      continue;
    }
    const d = Math.abs(got[i] - want[i]), b = bound(i);
    assert.ok(d <= b, `${label}[${i}]: got ${got[i]}, expected ${want[i]} (|diff| ${d} > ${b})`);
  }
}

function assertRan(calls: Map<string, number>, name: string, times = 1): void {
  assert.equal(calls.get(name) ?? 0, times, `${name}: expected ${times} call(s) into the module`);
  calls.clear();
}

const SHAPES: [number, number][] = [[1, 1], [3, 5], [2, 7], [5, 33], [4, 130]];

for (const [N, C] of SHAPES) {
  Deno.test(`wasm layernormForward/Backward match the TS reference within one rounding (N ${N}, C ${C})`, () => {
    const rng = new Rng(7, N, C);
    const { nn, calls, put } = setup();
    const inp = uniform(N * C, rng, -3, 5), w = uniform(C, rng), b = uniform(C, rng);
    const out = put(new Float32Array(N * C)), mean = put(new Float32Array(N));
    const rstd = put(new Float32Array(N));
    nn.layernormForward(out, mean, rstd, put(inp), put(w), put(b), N, C);
    assertRan(calls, "layernormForward");
    const wOut = new Float32Array(N * C), wMean = new Float32Array(N), wRstd = new Float32Array(N);
    tsBackend.layernormForward(wOut, wMean, wRstd, inp, w, b, N, C);
    assertWithin(mean, wMean, (i) => 2 * U * Math.abs(wMean[i]) + 1e-30, "mean");
    assertWithin(rstd, wRstd, (i) => 2 * U * wRstd[i], "rstd");
    assertWithin(out, wOut, (i) => {
      const c = i % C, n = (i - c) / C;
      return 4 * U * (Math.abs((inp[i] - wMean[n]) * wRstd[n] * w[c]) + Math.abs(b[c])) + 1e-30;
    }, "out");

    const dout = uniform(N * C, rng), d0 = uniform(N * C, rng);
    const dw0 = uniform(C, rng), db0 = uniform(C, rng);
    const dinp = put(d0), dw = put(dw0), db = put(db0);
    nn.layernormBackward(dinp, dw, db, put(dout), put(inp), put(w), put(wMean), put(wRstd), N, C);
    assertRan(calls, "layernormBackward");
    const wd = d0.slice(), wdw = dw0.slice(), wdb = db0.slice();
    tsBackend.layernormBackward(wd, wdw, wdb, dout, inp, w, wMean, wRstd, N, C);
    // magnitudes: |dinp0| + rstd (|d w| + |mean(g)| + |xhat mean(g xhat)|), bounded by the sums
    // of absolute values; column sums |dw0| + sum_n |d xhat|, |db0| + sum_n |d|
    const colAbs = (f: (n: number, c: number) => number) =>
      Array.from({ length: C }, (_, c) => {
        let s = 0;
        for (let n = 0; n < N; n++) s += Math.abs(f(n, c));
        return s;
      });
    const xhat = (n: number, c: number) => (inp[n * C + c] - wMean[n]) * wRstd[n];
    const sdw = colAbs((n, c) => dout[n * C + c] * xhat(n, c));
    const sdb = colAbs((n, c) => dout[n * C + c]);
    assertWithin(dw, wdw, (c) => 4 * U * (Math.abs(dw0[c]) + sdw[c]) + 1e-30, "dweight");
    assertWithin(db, wdb, (c) => 4 * U * (Math.abs(db0[c]) + sdb[c]) + 1e-30, "dbias");
    assertWithin(dinp, wd, (i) => {
      const c = i % C, n = (i - c) / C;
      let g = 0, gx = 0;
      for (let j = 0; j < C; j++) {
        g += Math.abs(dout[n * C + j] * w[j]);
        gx += Math.abs(dout[n * C + j] * w[j] * xhat(n, j));
      }
      const term = wRstd[n] *
        (Math.abs(dout[i] * w[c]) + g / C + Math.abs(xhat(n, c)) * gx / C);
      return 4 * U * (Math.abs(d0[i]) + term) + 1e-30;
    }, "dinp");
  });
}

// (n, range): GELU inputs across the table [-8, 8], its edges and both tails; and all inside
// it, where the module takes four at a time
for (const [n, r] of [[1, 12], [3, 12], [4, 12], [37, 12], [1001, 12], [1003, 7.99]]) {
  Deno.test(`wasm GELU, ReLU, dropout and residual give the TS reference's bits (n ${n}, inputs within ±${r})`, () => {
    const rng = new Rng(11, n);
    const { nn, calls, put } = setup();
    const x = uniform(n, rng, -r, r);
    for (const [i, v] of [-8, 8, 0, -7.999, 7.999, 30].entries()) if (i < n) x[i] = v;
    const mask = uniform(n, rng, 0, 1).map((u) => u < 0.3 ? 0 : 1 / 0.7);
    const dout = uniform(n, rng), dinp0 = uniform(n, rng), other = uniform(n, rng);
    for (const m of [null, mask]) {
      const out = put(new Float32Array(n)), xin = put(x);
      nn.geluForwardKeepGrad(out, xin, n, m && put(m));
      assertRan(calls, "geluForward");
      const wOut = new Float32Array(n), wx = x.slice();
      tsBackend.geluForwardKeepGrad(wOut, wx, n, m);
      // the tails go through each runtime's Math.exp: one rounding of the float32 result
      assertWithin(out, wOut, (i) => Math.abs(x[i]) < 8 ? 0 : 2 * U * Math.abs(wOut[i]), "gelu");
      assertWithin(xin, wx, (i) => Math.abs(x[i]) < 8 ? 0 : 2 * U * Math.abs(wx[i]), "gelu'");

      // the backward ops and ReLU: the same bits as the reference
      const cases: [string, (nn: NNBackend, out: Float32Array) => void, Float32Array][] = [
        [
          "mulAddBackward",
          (b, d) =>
            b.scaleBackward(
              d,
              b === nn ? put(dout) : dout,
              b === nn ? put(wx) : wx,
              n,
              b === nn && m ? put(m) : m,
            ),
          dinp0,
        ],
        [
          "reluForward",
          (b, r) => b.reluForward(r, b === nn ? put(x) : x, n, b === nn && m ? put(m) : m),
          new Float32Array(n),
        ],
        [
          "reluBackward",
          (b, d) =>
            b.reluBackward(
              d,
              b === nn ? put(dout) : dout,
              b === nn ? put(x) : x,
              n,
              b === nn && m ? put(m) : m,
            ),
          dinp0,
        ],
      ];
      for (const [op, f, init] of cases) {
        const got = put(init), want = init.slice();
        f(nn, got);
        assertRan(calls, op);
        f(tsBackend, want);
        assert.deepEqual(got, want, op);
      }
    }
    const o = put(new Float32Array(n));
    nn.dropoutForward(o, put(x), put(mask), n);
    assertRan(calls, "mulForward");
    const wo = new Float32Array(n);
    tsBackend.dropoutForward(wo, x, mask, n);
    assert.deepEqual(o, wo, "dropoutForward");
    const dd = put(dinp0);
    nn.dropoutBackward(dd, put(dout), put(mask), n);
    assertRan(calls, "mulAddBackward");
    const wdd = dinp0.slice();
    tsBackend.dropoutBackward(wdd, dout, mask, n);
    assert.deepEqual(dd, wdd, "dropoutBackward");
    const s = put(new Float32Array(n));
    nn.residualForward(s, put(x), put(other), n);
    assertRan(calls, "addForward");
    const ws = new Float32Array(n);
    tsBackend.residualForward(ws, x, other, n);
    assert.deepEqual(s, ws, "residualForward");
  });
}

for (
  const [B, T, C, V, pos] of [[1, 1, 1, 2, false], [2, 5, 3, 7, true], [3, 9, 13, 5, true]] as const
) {
  Deno.test(`wasm embedding gather/scatter gives the TS reference's bits (B ${B}, T ${T}, C ${C}, V ${V}${pos ? ", positions" : ""})`, () => {
    const rng = new Rng(13, B, T, C);
    const { nn, calls, put } = setup(B * T);
    const ids = new Int32Array(B * T).map(() => Math.floor(rng.uniform() * V));
    const wte = uniform(V * C, rng), wpe = pos ? uniform(T * C, rng) : null;
    const out = put(new Float32Array(B * T * C));
    nn.embeddingForward(out, ids, put(wte), wpe && put(wpe), B, T, C);
    assertRan(calls, "embeddingForward");
    const want = new Float32Array(B * T * C);
    tsBackend.embeddingForward(want, ids, wte, wpe, B, T, C);
    assert.deepEqual(out, want);
    const dout = uniform(B * T * C, rng), dwte0 = uniform(V * C, rng), dwpe0 = uniform(T * C, rng);
    const dwte = put(dwte0), dwpe = pos ? put(dwpe0) : null;
    nn.embeddingBackward(dwte, dwpe, put(dout), ids, B, T, C);
    assertRan(calls, "embeddingBackward");
    const wdwte = dwte0.slice(), wdwpe = pos ? dwpe0.slice() : null;
    tsBackend.embeddingBackward(wdwte, wdwpe, dout, ids, B, T, C);
    assert.deepEqual(dwte, wdwte);
    assert.deepEqual(dwpe, wdwpe);
    // an id outside the table never reaches the module (the reference's behaviour instead)
    const bad = ids.slice();
    bad[bad.length - 1] = V;
    nn.embeddingForward(put(new Float32Array(B * T * C)), bad, put(wte), null, B, T, C);
    assertRan(calls, "embeddingForward", 0);
  });
}

Deno.test("the module's float32 exp is within 3u of e^x on [-86, 1], 0 below -86.6, NaN for NaN", () => {
  const { k } = counted();
  let worst = 0;
  for (let i = 0; i <= 20000; i++) {
    const x = Math.fround(-86 + 87 * i / 20000);
    const want = Math.exp(x);
    worst = Math.max(worst, Math.abs(k.ops.expF32(x) - want) / want);
  }
  assert.ok(worst <= 3 * U, `worst relative error ${worst} (${worst / U} u)`);
  assert.equal(k.ops.expF32(-87), 0);
  assert.equal(k.ops.expF32(-1e30), 0);
  assert.equal(k.ops.expF32(0), 1);
  assert.ok(Number.isNaN(k.ops.expF32(NaN)));
});

for (const [rows, n] of [[1, 1], [3, 3], [2, 4], [5, 17], [3, 130]]) {
  Deno.test(`wasm softmax rows and their gradient match a double reference (rows ${rows}, n ${n})`, () => {
    const rng = new Rng(17, rows, n);
    const { k, put } = setup();
    const scale = 0.37;
    const x = uniform(rows * n, rng, -20, 20);
    if (n > 2) x[1] = -500; // underflows to 0
    const s = put(x);
    k.ops.softmaxRows(s.byteOffset, rows, n, scale);
    const want = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++) {
      const row = x.subarray(r * n, (r + 1) * n);
      const m = Math.max(...row) * scale;
      let sum = 0;
      for (let j = 0; j < n; j++) sum += want[r * n + j] = Math.exp(row[j] * scale - m);
      for (let j = 0; j < n; j++) want[r * n + j] /= sum;
    }
    // relative to the value, plus 2.5e-38 for the flush below e^-86.6
    assertWithin(s, want, (i) => (8 + n) * U * want[i] + 2.5e-38, "softmax");

    const p = Float32Array.from(want), g = uniform(rows * n, rng), mask = uniform(rows * n, rng);
    for (const m of [null, mask]) {
      const d = put(g);
      k.ops.softmaxBackwardRows(
        d.byteOffset,
        put(p).byteOffset,
        m ? put(m).byteOffset : 0,
        rows,
        n,
        scale,
      );
      const wd = new Float64Array(rows * n), mag = new Float64Array(rows * n);
      for (let r = 0; r < rows; r++) {
        let dot = 0, dotAbs = 0;
        for (let j = 0; j < n; j++) {
          const gj = g[r * n + j] * (m ? m[r * n + j] : 1);
          dot += p[r * n + j] * gj;
          dotAbs += Math.abs(p[r * n + j] * gj);
        }
        for (let j = 0; j < n; j++) {
          const i = r * n + j, gj = g[i] * (m ? m[i] : 1);
          wd[i] = scale * p[i] * (gj - dot);
          mag[i] = scale * p[i] * (Math.abs(gj) + dotAbs);
        }
      }
      assertWithin(d, wd, (i) => (8 + n) * U * mag[i] + 1e-30, m ? "dsoftmax (mask)" : "dsoftmax");
    }
  });
}

for (const [N, V] of [[1, 1], [3, 5], [4, 64], [7, 301]]) {
  Deno.test(`wasm cross-entropy rows match the TS reference (N ${N}, V ${V})`, () => {
    const rng = new Rng(19, N, V);
    const { nn, calls, put } = setup();
    const logits = uniform(N * V, rng, -6, 9);
    const targets = new Int32Array(N).map(() => Math.floor(rng.uniform() * V));
    const weights = uniform(N, rng, 0, 1);
    weights[0] = 0; // skipped row
    const losses = put(new Float32Array(N)), lse = put(new Float32Array(N));
    const l = put(logits);
    const total = nn.crossEntropyForward(losses, lse, l, targets, weights, N, V);
    assertRan(calls, "logSumExpRow", N - 1);
    const wLosses = new Float32Array(N), wLse = new Float32Array(N);
    const wTotal = tsBackend.crossEntropyForward(wLosses, wLse, logits, targets, weights, N, V);
    // lse = max + log(sum): the sum within (8 + V) u relative, so lse within that absolutely,
    // plus the rounding of (x - max) in float32 that each exp argument carries
    const span = (r: number) => {
      const row = logits.subarray(r * V, (r + 1) * V);
      return Math.max(...row) - Math.min(...row);
    };
    const lseBound = (r: number) => (8 + V) * U * (1 + span(r)) + 2 * U * Math.abs(wLse[r]);
    assertWithin(lse, wLse, lseBound, "lse");
    assertWithin(losses, wLosses, (r) => weights[r] * lseBound(r) + 2 * U * wLosses[r], "losses");
    let totalBound = 0;
    for (let r = 0; r < N; r++) totalBound += weights[r] * lseBound(r) + 2 * U * wLosses[r];
    assert.ok(Math.abs(total - wTotal) <= totalBound, `total ${total} vs ${wTotal}`);

    const d0 = uniform(N * V, rng), dl = put(d0);
    nn.crossEntropyBackward(dl, 0.7, l, put(wLse), targets, weights, N, V);
    assertRan(calls, "addScaledExpRow", N - 1);
    const wdl = d0.slice();
    tsBackend.crossEntropyBackward(wdl, 0.7, logits, wLse, targets, weights, N, V);
    assertWithin(dl, wdl, (i) => {
      const r = Math.floor(i / V), g = 0.7 * weights[r];
      const e = g * Math.exp(logits[i] - wLse[r]);
      return 4 * U * (Math.abs(d0[i]) + e * (2 + Math.abs(logits[i] - wLse[r])) + g) + 1e-30;
    }, "dlogits");
  });
}

Deno.test("an op given buffers outside the kernels' memory runs the TS reference, with its result", () => {
  const { nn, calls } = setup();
  const x = new Float32Array([1, -2, 3]), out = new Float32Array(3);
  nn.reluForward(out, x, 3);
  assertRan(calls, "reluForward", 0);
  assert.deepEqual([...out], [1, 0, 3]);
});

for (const n of [1, 3, 4, 37, 16384 + 5]) {
  Deno.test(`createWasmAdamW gives adamwStep's bits over 3 steps, whole or in parts out of order (n ${n})`, () => {
    const rng = new Rng(23, n);
    const p1 = uniform(n, rng), p2 = new Float32Array(new SharedArrayBuffer(4 * n));
    p2.set(p1);
    const p3 = p1.slice();
    const s1 = createAdamW(n), s2 = createAdamW(n), s3 = createAdamW(n);
    const step = createWasmAdamW();
    // three parts, the last range first: [h, n), then [0, q) with [q, h) in one part
    const q = n >> 2, h = n >> 1;
    const parts: [number, number][][] = [[[h, n]], [[0, q]], [[q, h]]];
    const seen: number[] = [];
    for (let t = 0; t < 3; t++) {
      const g = uniform(n, rng, -0.1, 0.1);
      const options = { lr: 0.01 * (t + 1), weightDecay: 0.05 };
      adamwStep(p1, g, s1, options);
      step(p2, g, s2, options);
      step(p3, g, s3, options, parts, (j) => {
        seen.push(j);
        // part j is final when announced: its values already equal the reference's
        for (const [a, b] of parts[j]) assert.deepEqual(p3.subarray(a, b), p1.subarray(a, b));
      });
    }
    for (const [p, st] of [[p2, s2], [p3, s3]] as const) {
      assert.deepEqual(p, p1);
      assert.deepEqual(st.m, s1.m);
      assert.deepEqual(st.v, s1.v);
      assert.equal(st.step, 3);
    }
    assert.deepEqual(seen, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    assert.throws(
      () => step(p2, new Float32Array(n + 1), s2),
      /AdamW buffers disagree: expected/,
    );
    assert.throws(() => step(p2, p1, s2, {}, [[[0, n - 1]]]), /AdamW parts: expected ranges/);
    assert.equal(s2.step, 3, "a refused call takes no step");
  });
}

// from 256 draws on in four lanes (dropoutMaskLanes): with no remainder, remainders 1 and 3, and
// a p whose limit p 2^32 rounds up to 2^32 (every element dropped)
const MASKS = [[1, 0, 0.5], [7, 3, 0.1], [255, 0, 0.1], [256, 0, 0.1], [1001, 5, 0.9], [
  16387,
  1,
  0.1,
], [512, 2, 1 - 2 ** -33]] as const;
for (const [n, offset, p] of MASKS) {
  Deno.test(`wasm dropoutMask draws the TS reference's masks and leaves the generator where it does (n ${n}, offset ${offset}, p ${p})`, () => {
    const { nn, calls, put } = setup();
    const mask = put(new Float32Array(offset + n + 2).fill(-1));
    const want = new Float32Array(offset + n + 2).fill(-1);
    const r1 = new Rng(29, n), r2 = new Rng(29, n);
    nn.dropoutMask(mask, r1, p, n, offset);
    assertRan(calls, n >= 256 ? "dropoutMaskLanes" : "dropoutMask");
    tsBackend.dropoutMask(want, r2, p, n, offset);
    assert.deepEqual(mask, want);
    assert.deepEqual(r1.getState(), r2.getState());
    assert.ok(mask.some((m) => m === 0) || n < 8, "some elements dropped");
  });
}

for (const [N, IC, OC] of [[1, 1, 1], [5, 3, 7], [9, 4, 33]]) {
  Deno.test(`wasm linearBackward sums the bias gradient in the module with the TS reference's bits (N ${N}, IC ${IC}, OC ${OC})`, () => {
    const rng = new Rng(31, N, OC);
    const { nn, calls, put } = setup();
    const dout = uniform(N * OC, rng), inp = uniform(N * IC, rng), w = uniform(OC * IC, rng);
    const db0 = uniform(OC, rng);
    const db = put(db0), dw = put(new Float32Array(OC * IC));
    nn.linearBackward(null, dw, db, put(dout), put(inp), put(w), N, IC, OC);
    assertRan(calls, "biasBackward");
    const wdb = db0.slice();
    tsBackend.linearBackward(null, new Float32Array(OC * IC), wdb, dout, inp, w, N, IC, OC);
    assert.deepEqual(db, wdb);
  });
}

for (const [T, HS, LD] of [[1, 1, 3], [5, 3, 7], [9, 6, 18]]) {
  Deno.test(`wasm copyRows copies and adds strided rows as the plain loop does (T ${T}, HS ${HS}, LD ${LD})`, () => {
    const rng = new Rng(37, T, HS);
    const { k, put } = setup();
    const src = uniform(T * LD + 2, rng), dst0 = uniform(T * HS + 1, rng);
    for (const add of [0, 1]) {
      const dst = put(dst0), want = dst0.slice();
      k.ops.copyRows(dst.byteOffset + 4, HS, put(src).byteOffset + 8, LD, T, HS, add);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < HS; i++) {
          const v = src[2 + t * LD + i];
          want[1 + t * HS + i] = add ? Math.fround(want[1 + t * HS + i] + v) : v;
        }
      }
      assert.deepEqual(dst, want, add ? "add" : "copy");
    }
  });
}

Deno.test("wasmBackend allocates exactly wasmBackendBuffers; with rows 0 only the attention scratch, and GELU, dropout masks and embedding run in TypeScript", () => {
  for (const rows of [0, 24]) {
    const { k, calls } = counted();
    const before = k.mark();
    const nn = wasmBackend(k, 7, 3, "wasm", rows);
    const want = wasmBackendBuffers(7, 3, rows).reduce((t, n) => t + Math.ceil(n / 16) * 64, 0);
    assert.equal(k.mark() - before, want, `rows ${rows}: arena bytes`);
    if (rows > 0) continue;
    assert.equal(wasmBackendBuffers(7, 3, 0).length, 10, "8 heads and 2 tiles");
    const x = k.alloc(5), out = k.alloc(5), mask = k.alloc(5);
    x.set([-1, 0, 0.5, 2, 9]);
    nn.geluForwardKeepGrad(out, x, 5);
    nn.dropoutMask(mask, new Rng(1), 0.5, 5);
    assert.equal(calls.size, 0, "no op ran in the module");
    assert.ok(Math.abs(out[3] - 1.9544997361036416) < 1e-6, "GELU(2) by the reference");
  }
});

for (const [B, T, C, NH] of [[1, 1, 2, 1], [2, 5, 12, 2], [3, 7, 24, 3]]) {
  Deno.test(`wasm RoPE forward and backward give the TS reference's bits (B ${B}, T ${T}, C ${C}, NH ${NH})`, () => {
    const rng = new Rng(41, B, T, C);
    const { nn, calls, put } = setup();
    const half = C / NH / 2;
    const cos = new Float64Array(T * half), sin = new Float64Array(T * half);
    ropeTables(cos, sin, T, 2 * half);
    const qkv = uniform(B * T * 3 * C, rng);
    for (const op of ["ropeForward", "ropeBackward"] as const) {
      const got = put(qkv), want = qkv.slice();
      nn[op](got, cos, sin, B, T, C, NH);
      assertRan(calls, "ropeForward");
      tsBackend[op](want, cos, sin, B, T, C, NH);
      assert.deepEqual(got, want, op);
    }
  });
}

for (const n of [1, 7, 16384 * 2 + 5]) {
  Deno.test(`wasm accumulate adds into buffers in and out of the kernels' memory with the TS reference's bits (n ${n})`, () => {
    const rng = new Rng(41, n);
    const { nn, calls, put } = setup();
    const src = uniform(n, rng), dst0 = uniform(n + 1, rng);
    const want = dst0.slice();
    tsBackend.accumulate(want, src, n);
    const inside = put(dst0);
    nn.accumulate(inside, put(src), n);
    assertRan(calls, "addForward");
    assert.deepEqual(inside, want);
    // outside: by chunks of the scratch, the element past n untouched
    const outside = dst0.slice();
    nn.accumulate(outside, put(src), n);
    assertRan(calls, "addForward", Math.ceil(n / 16384));
    assert.deepEqual(outside, want);
    assert.equal(outside[n], dst0[n]);
  });
}

for (const [K, B, T, C] of [[2, 1, 1, 1], [6, 2, 3, 5], [6, 3, 2, 8], [2, 2, 5, 33]]) {
  Deno.test(`wasm adaLN modulation and gated residual give the TS reference's bits (K ${K}, B ${B}, T ${T}, C ${C})`, () => {
    const rng = new Rng(43, K, C);
    const { nn, calls, put } = setup();
    const shape = { K, B, T, C }, NC = B * T * C, KC = B * K * C;
    const inp = uniform(NC, rng, -3, 3), y = uniform(NC, rng), dout = uniform(NC, rng);
    const mod = uniform(KC, rng, -2, 2);
    const [sh, sc, g] = [K - 2, K - 1, K > 2 ? 2 : 0];

    const out = put(new Float32Array(NC)), want = new Float32Array(NC);
    nn.modulateForward(out, put(inp), put(mod), sh, sc, shape);
    assertRan(calls, "modulateForward");
    tsBackend.modulateForward(want, inp, mod, sh, sc, shape);
    assert.deepEqual(out, want, "modulateForward");

    const dinp0 = uniform(NC, rng), dmod0 = uniform(KC, rng);
    const dinp = put(dinp0), dmod = put(dmod0);
    const wdinp = dinp0.slice(), wdmod = dmod0.slice();
    nn.modulateBackward(dinp, dmod, put(dout), put(inp), put(mod), sh, sc, shape);
    assertRan(calls, "modulateBackward");
    tsBackend.modulateBackward(wdinp, wdmod, dout, inp, mod, sh, sc, shape);
    assert.deepEqual(dinp, wdinp, "modulateBackward dinp");
    assert.deepEqual(dmod, wdmod, "modulateBackward dmod");

    const r = put(new Float32Array(NC)), wr = new Float32Array(NC);
    nn.gatedResidualForward(r, put(inp), put(y), put(mod), g, shape);
    assertRan(calls, "gatedResidualForward");
    tsBackend.gatedResidualForward(wr, inp, y, mod, g, shape);
    assert.deepEqual(r, wr, "gatedResidualForward");

    for (const withDx of [true, false]) {
      const dx0 = uniform(NC, rng), dy0 = uniform(NC, rng), dm0 = uniform(KC, rng);
      const dx = withDx ? put(dx0) : null, dy = put(dy0), dm = put(dm0);
      const wdx = withDx ? dx0.slice() : null, wdy = dy0.slice(), wdm = dm0.slice();
      nn.gatedResidualBackward(dx, dy, dm, put(dout), put(y), put(mod), g, shape);
      assertRan(calls, "gatedResidualBackward");
      tsBackend.gatedResidualBackward(wdx, wdy, wdm, dout, y, mod, g, shape);
      if (withDx) assert.deepEqual(dx, wdx, "gatedResidualBackward dx");
      assert.deepEqual(dy, wdy, "gatedResidualBackward dy");
      assert.deepEqual(dm, wdm, "gatedResidualBackward dmod");
    }
  });
}

for (const [drop, keepHeads] of [[false, false], [true, false], [false, true], [true, true]]) {
  Deno.test(`wasm attention runs a whole batch in one module call, with the per-head loop's bits (${drop ? "dropout" : "no dropout"}, ${keepHeads ? "heads kept" : "heads gathered again"})`, () => {
    const B = 2, T = 13, C = 12, NH = 3;
    const rng = new Rng(5, T, drop ? 1 : 0);
    const { k, nn, calls, put } = setup();
    const qkv = uniform(3 * B * T * C, rng, -2, 2), dout = uniform(B * T * C, rng);
    const dqkv0 = uniform(3 * B * T * C, rng);
    const mask = drop ? uniform(B * NH * T * T, rng, 0, 1).map((u) => u < 0.2 ? 0 : 1.25) : null;
    // in the module's memory: one call each way
    const out = put(new Float32Array(B * T * C)), att = put(new Float32Array(B * NH * T * T));
    const heads = keepHeads ? put(new Float32Array(3 * B * T * C)) : null;
    const mIn = mask && put(mask), qIn = put(qkv), dIn = put(dqkv0);
    nn.attentionForward(out, att, qIn, mIn, B, T, C, NH, heads);
    assertRan(calls, "attentionForward");
    nn.attentionBackward(dIn, put(dout), qIn, att, mIn, new Float32Array(T), B, T, C, NH, heads);
    assertRan(calls, "attentionBackward");
    // the per-head loop on the same kernels (a backend named blas over k keeps it; k's own
    // matmuls run): the same ops call for call, so the same bits
    const loop = wasmBackend(k, 16, 8, "blas", 64);
    const out2 = put(new Float32Array(B * T * C)), att2 = put(new Float32Array(B * NH * T * T));
    const heads2 = keepHeads ? put(new Float32Array(3 * B * T * C)) : null, d2 = put(dqkv0);
    loop.attentionForward(out2, att2, qIn, mIn, B, T, C, NH, heads2);
    loop.attentionBackward(d2, put(dout), qIn, att2, mIn, new Float32Array(T), B, T, C, NH, heads2);
    assert.equal(calls.get("attentionForward") ?? 0, 0);
    assert.ok((calls.get("softmaxRows") ?? 0) === B * NH, "the loop's softmax calls");
    assert.deepEqual(att, att2);
    assert.deepEqual(out, out2);
    assert.deepEqual(dIn, d2);
    if (heads) assert.deepEqual(heads, heads2);
    // and against the TypeScript reference
    const want = new Float32Array(B * T * C), wantAtt = new Float32Array(B * NH * T * T);
    tsBackend.attentionForward(want, wantAtt, qkv, mask, B, T, C, NH);
    assertWithin(out, want, (i) => 1e-5 * (1 + Math.abs(want[i])), "out");
  });
}

Deno.test("on blas the attention keeps its per-head loop (the heads' products go to the library)", () => {
  const { k, calls } = counted();
  const nn = wasmBackend(k, 8, 4, "blas", 0);
  const B = 1, T = 8, C = 8, NH = 2;
  const qkv = k.alloc(3 * B * T * C).fill(0.5), out = k.alloc(B * T * C);
  nn.attentionForward(out, k.alloc(B * NH * T * T), qkv, null, B, T, C, NH);
  assert.equal(calls.get("softmaxRows"), B * NH, "one softmax call per head");
  assertRan(calls, "attentionForward", 0);
});
