// AssemblyScript source of the element-wise and row ops of @sedd/core: every non-matmul op of
// a training step that the wasm backend runs in the module (layer norm, GELU, ReLU, dropout,
// residual, embedding gather/scatter, the attention softmax rows, the cross-entropy rows, AdamW).
//
// tools/build_wasm.ts appends this file to asm/matmul.as and compiles the two as one module, so
// the ops share its memory, its arena and the workspace `ws` of the matmuls (a call of one op
// never runs beside a matmul call, so the scratch is free).
//
// Layout: row-major float32, byte addresses into the imported memory, as in asm/matmul.as.
// Each op mirrors the TypeScript reference of src/nn/ (or src/optim/adamw.ts) named in its
// comment. Where the reference computes in double and rounds once (sums of a row, AdamW, the
// gradient accumulations), the op computes in f64x2 lanes and rounds once too: the results
// differ from the reference only by the order of the double sums, or not at all. Where the
// reference result is a float32 anyway and the op is hot (the softmax rows), the op computes in
// f32x4 lanes with its own exp (below).

// ---------------------------------------------------------------------------------------
// Lane helpers: four floats to two pairs of doubles and back.

// @ts-ignore: decorator
@inline function lo64(x: v128): v128 {
  return f64x2.promote_low_f32x4(x);
}

// @ts-ignore: decorator
@inline function hi64(x: v128): v128 {
  return f64x2.promote_low_f32x4(i32x4.shuffle(x, x, 2, 3, 0, 1));
}

/** Two pairs of doubles to four floats (each rounded once). */
// @ts-ignore: decorator
@inline function to32(a: v128, b: v128): v128 {
  return i64x2.shuffle(f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 2);
}

// @ts-ignore: decorator
@inline function sum64(a: v128): f64 {
  return f64x2.extract_lane(a, 0) + f64x2.extract_lane(a, 1);
}

/** The sum of the n floats at p, in double (two f64x2 accumulators, then the tail). */
function rowSum64(p: usize, n: i32): f64 {
  let a = f64x2.splat(0), b = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const x = v128.load(p + <usize>(i << 2));
    a = f64x2.add(a, lo64(x));
    b = f64x2.add(b, hi64(x));
  }
  let s = sum64(f64x2.add(a, b));
  for (; i < n; i++) s += <f64>load<f32>(p + <usize>(i << 2));
  return s;
}

// ---------------------------------------------------------------------------------------
// exp in float32 lanes: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-5 minimax polynomial in r
// (relative error about 1e-7 before rounding), times 2^n built in the exponent bits. Arguments
// are clamped to [-86.6, 88.7]: below -86.6 the result is 0 (e^-86.6 is 2.4e-38, near the
// smallest normal float, so every 2^(n-1) below is a normal float), above 88.7 it is e^88.7
// (every caller passes arguments <= 0, a row maximum or log-sum-exp subtracted); NaN stays NaN.

const EXP_LOG2E: f32 = 1.44269504;
const EXP_LN2_HI: f32 = 0.693359375; // ln2 to 10 bits: n * EXP_LN2_HI is exact for |n| < 2^13
const EXP_LN2_LO: f32 = -2.12194440e-4; // ln2 - EXP_LN2_HI
const EXP_MIN: f32 = -86.6;
const EXP_MAX: f32 = 88.7;
const EXP_ROUND: f32 = 12582912; // 1.5 2^23
const EXP_ROUND_BITS: i32 = 0x4b400000; // its float bits

// The constants as four-lane vectors in memory, read where they are used: V8 builds a
// v128.const from immediates in several instructions each time, where a load from memory is
// one operand of the arithmetic.
const EXP_C: usize = memory.data<f32>([
  EXP_MIN, EXP_MIN, EXP_MIN, EXP_MIN,
  EXP_MAX, EXP_MAX, EXP_MAX, EXP_MAX,
  EXP_LOG2E, EXP_LOG2E, EXP_LOG2E, EXP_LOG2E,
  EXP_ROUND, EXP_ROUND, EXP_ROUND, EXP_ROUND,
  EXP_LN2_HI, EXP_LN2_HI, EXP_LN2_HI, EXP_LN2_HI,
  EXP_LN2_LO, EXP_LN2_LO, EXP_LN2_LO, EXP_LN2_LO,
  1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4,
  1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3,
  8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3,
  4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2,
  1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1,
  5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1,
  1, 1, 1, 1,
  2, 2, 2, 2,
], 16);
const EXP_BITS: usize = memory.data<i32>([
  EXP_ROUND_BITS - 126, EXP_ROUND_BITS - 126, EXP_ROUND_BITS - 126, EXP_ROUND_BITS - 126,
], 16);

// @ts-ignore: decorator
@inline function exp4(x: v128): v128 {
  const c = EXP_C;
  const under = f32x4.lt(x, v128.load(c));
  // pmax/pmin (x86's maxps/minps) with x first keep a NaN x, as max/min would, without their
  // longer NaN and signed-zero sequences
  const xc = f32x4.pmin(f32x4.pmax(x, v128.load(c)), v128.load(c, 16));
  // n = nearest(xc log2e) by adding and subtracting 1.5 2^23 (round half to even, as
  // f32x4.nearest): |xc log2e| < 2^22, so the sum's low mantissa bits hold n + 2^22
  const big = f32x4.add(f32x4.mul(xc, v128.load(c, 32)), v128.load(c, 48));
  const n = f32x4.sub(big, v128.load(c, 48));
  let r = f32x4.sub(xc, f32x4.mul(n, v128.load(c, 64)));
  r = f32x4.sub(r, f32x4.mul(n, v128.load(c, 80)));
  const z = f32x4.mul(r, r);
  let p = v128.load(c, 96);
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 112));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 128));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 144));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 160));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 176));
  p = f32x4.add(f32x4.add(f32x4.mul(p, z), r), v128.load(c, 192));
  // 2^n as 2^(n-1) * 2, 2^(n-1) from its float bits (n + 126) << 23: n is in [-125, 128] after
  // the clamp, and 2^128 itself is not a float. n + 126 is big's bits less (1.5 2^23's - 126).
  const pow = i32x4.shl(i32x4.sub(big, v128.load(EXP_BITS)), 23);
  const e = f32x4.mul(f32x4.mul(p, pow), v128.load(c, 208));
  return v128.andnot(e, under);
}

/** The scalar lane of exp4, for row tails. */
function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

/** e^x within float32 rounding (exp4 on one lane), for the tests of the polynomial. */
export function expF32(x: f32): f32 {
  return exp1(x);
}

// ---------------------------------------------------------------------------------------
// Layer norm (src/nn/layernorm.ts), eps 1e-5, biased variance: row sums and the output in
// double, as the reference.

const LN_EPS: f64 = 1e-5;

/** out = (inp - mean) rstd weight + bias per row of C; saves mean and rstd (N) as floats. */
export function layernormForward(
  out: usize, mean: usize, rstd: usize, inp: usize, w: usize, b: usize, N: i32, C: i32,
): void {
  const rowBytes = <usize>(C << 2);
  for (let n = 0; n < N; n++) {
    const x = inp + <usize>n * rowBytes;
    const y = out + <usize>n * rowBytes;
    const m = rowSum64(x, C) / <f64>C;
    const mm = f64x2.splat(m);
    let va = f64x2.splat(0), vb = f64x2.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const v = v128.load(x + <usize>(c << 2));
      const d0 = f64x2.sub(lo64(v), mm), d1 = f64x2.sub(hi64(v), mm);
      va = f64x2.add(va, f64x2.mul(d0, d0));
      vb = f64x2.add(vb, f64x2.mul(d1, d1));
    }
    let vs = sum64(f64x2.add(va, vb));
    for (; c < C; c++) {
      const d = <f64>load<f32>(x + <usize>(c << 2)) - m;
      vs += d * d;
    }
    const s = 1 / Math.sqrt(vs / <f64>C + LN_EPS);
    const ss = f64x2.splat(s);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>(c << 2);
      const v = v128.load(x + o), wv = v128.load(w + o), bv = v128.load(b + o);
      const y0 = f64x2.add(f64x2.mul(f64x2.mul(f64x2.sub(lo64(v), mm), ss), lo64(wv)), lo64(bv));
      const y1 = f64x2.add(f64x2.mul(f64x2.mul(f64x2.sub(hi64(v), mm), ss), hi64(wv)), hi64(bv));
      v128.store(y + o, to32(y0, y1));
    }
    for (; c < C; c++) {
      const o = <usize>(c << 2);
      const v = (<f64>load<f32>(x + o) - m) * s * <f64>load<f32>(w + o) + <f64>load<f32>(b + o);
      store<f32>(y + o, <f32>v);
    }
    store<f32>(mean + <usize>(n << 2), <f32>m);
    store<f32>(rstd + <usize>(n << 2), <f32>s);
  }
}

/**
 * Backward of layernormForward, ADDING into dinp, dw, db. The column sums of dw and db run in
 * double in the scratch at ws (16 C bytes), added into dw and db once.
 */
export function layernormBackward(
  dinp: usize, dw: usize, db: usize, dout: usize, inp: usize, w: usize,
  mean: usize, rstd: usize, N: i32, C: i32, ws: usize,
): void {
  const sdb = ws, sdw = ws + <usize>(C << 3);
  memory.fill(ws, 0, <usize>(C << 4));
  const rowBytes = <usize>(C << 2);
  for (let n = 0; n < N; n++) {
    const x = inp + <usize>n * rowBytes;
    const g = dout + <usize>n * rowBytes;
    const dx = dinp + <usize>n * rowBytes;
    const m = <f64>load<f32>(mean + <usize>(n << 2));
    const s = <f64>load<f32>(rstd + <usize>(n << 2));
    const mm = f64x2.splat(m), ss = f64x2.splat(s);
    let ga = f64x2.splat(0), gb = f64x2.splat(0), ha = f64x2.splat(0), hb = f64x2.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>(c << 2);
      const v = v128.load(x + o), d = v128.load(g + o), wv = v128.load(w + o);
      const x0 = f64x2.mul(f64x2.sub(lo64(v), mm), ss), x1 = f64x2.mul(f64x2.sub(hi64(v), mm), ss);
      const g0 = f64x2.mul(lo64(d), lo64(wv)), g1 = f64x2.mul(hi64(d), hi64(wv));
      ga = f64x2.add(ga, g0);
      gb = f64x2.add(gb, g1);
      ha = f64x2.add(ha, f64x2.mul(g0, x0));
      hb = f64x2.add(hb, f64x2.mul(g1, x1));
    }
    let gMean = sum64(f64x2.add(ga, gb)), gxMean = sum64(f64x2.add(ha, hb));
    for (; c < C; c++) {
      const o = <usize>(c << 2);
      const xh = (<f64>load<f32>(x + o) - m) * s;
      const gg = <f64>load<f32>(g + o) * <f64>load<f32>(w + o);
      gMean += gg;
      gxMean += gg * xh;
    }
    gMean /= <f64>C;
    gxMean /= <f64>C;
    const gm = f64x2.splat(gMean), gx = f64x2.splat(gxMean);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>(c << 2), o8 = <usize>(c << 3);
      const v = v128.load(x + o), d = v128.load(g + o), wv = v128.load(w + o);
      const x0 = f64x2.mul(f64x2.sub(lo64(v), mm), ss), x1 = f64x2.mul(f64x2.sub(hi64(v), mm), ss);
      const d0 = lo64(d), d1 = hi64(d);
      v128.store(sdb + o8, f64x2.add(v128.load(sdb + o8), d0));
      v128.store(sdb + o8, f64x2.add(v128.load(sdb + o8, 16), d1), 16);
      v128.store(sdw + o8, f64x2.add(v128.load(sdw + o8), f64x2.mul(d0, x0)));
      v128.store(sdw + o8, f64x2.add(v128.load(sdw + o8, 16), f64x2.mul(d1, x1)), 16);
      // dinp += s (d w - gMean - xhat gxMean)
      const e0 = f64x2.mul(ss, f64x2.sub(f64x2.sub(f64x2.mul(d0, lo64(wv)), gm), f64x2.mul(x0, gx)));
      const e1 = f64x2.mul(ss, f64x2.sub(f64x2.sub(f64x2.mul(d1, hi64(wv)), gm), f64x2.mul(x1, gx)));
      const dv = v128.load(dx + o);
      v128.store(dx + o, to32(f64x2.add(lo64(dv), e0), f64x2.add(hi64(dv), e1)));
    }
    for (; c < C; c++) {
      const o = <usize>(c << 2), o8 = <usize>(c << 3);
      const xh = (<f64>load<f32>(x + o) - m) * s;
      const d = <f64>load<f32>(g + o);
      store<f64>(sdb + o8, load<f64>(sdb + o8) + d);
      store<f64>(sdw + o8, load<f64>(sdw + o8) + d * xh);
      const e = s * (d * <f64>load<f32>(w + o) - gMean - xh * gxMean);
      store<f32>(dx + o, <f32>(<f64>load<f32>(dx + o) + e));
    }
  }
  for (let c = 0; c < C; c++) {
    const o = <usize>(c << 2), o8 = <usize>(c << 3);
    store<f32>(db + o, <f32>(<f64>load<f32>(db + o) + load<f64>(sdb + o8)));
    store<f32>(dw + o, <f32>(<f64>load<f32>(dw + o) + load<f64>(sdw + o8)));
  }
}

// ---------------------------------------------------------------------------------------
// Element-wise ops (src/nn/activations.ts, dropout.ts, residual.ts). `mask` 0 means none.

/** out = a + b (residualForward). out may alias a or b. */
export function addForward(out: usize, a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

/** out = a * b (dropoutForward: b the mask). out may alias a. */
export function mulForward(out: usize, a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    v128.store(out + o, f32x4.mul(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    store<f32>(out + o, load<f32>(a + o) * load<f32>(b + o));
  }
}

/**
 * dinp += (mask ? float32(dout mask) : dout) * s, the product and sum in double and rounded
 * once (scaleBackward, and dropoutBackward with s the mask and no second mask).
 */
export function mulAddBackward(dinp: usize, dout: usize, s: usize, n: i32, mask: usize): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    let d = v128.load(dout + o);
    if (mask != 0) d = f32x4.mul(d, v128.load(mask + o));
    const sv = v128.load(s + o), dv = v128.load(dinp + o);
    const r0 = f64x2.add(lo64(dv), f64x2.mul(lo64(d), lo64(sv)));
    const r1 = f64x2.add(hi64(dv), f64x2.mul(hi64(d), hi64(sv)));
    v128.store(dinp + o, to32(r0, r1));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    let d = load<f32>(dout + o);
    if (mask != 0) d *= load<f32>(mask + o);
    store<f32>(dinp + o, <f32>(<f64>load<f32>(dinp + o) + <f64>d * <f64>load<f32>(s + o)));
  }
}

/** out = max(inp, 0) (times mask) (reluForward); NaN stays NaN. out may alias inp. */
export function reluForward(out: usize, inp: usize, n: i32, mask: usize): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    const x = v128.load(inp + o);
    // (x + |x|) / 2, the reference's formula: exact, and NaN stays NaN
    let y = f32x4.mul(f32x4.add(x, f32x4.abs(x)), f32x4.splat(0.5));
    if (mask != 0) y = f32x4.mul(y, v128.load(mask + o));
    v128.store(out + o, y);
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    const x = load<f32>(inp + o);
    let y = (x + Mathf.abs(x)) * 0.5;
    if (mask != 0) y *= load<f32>(mask + o);
    store<f32>(out + o, y);
  }
}

/**
 * dinp += (mask ? dout mask : dout) where inp > 0 (reluBackward: the step is 0 at 0). The
 * reference's branch-free step is NaN at NaN and at +Infinity; this one is 0 and 1 there.
 */
export function reluBackward(dinp: usize, dout: usize, inp: usize, n: i32, mask: usize): void {
  const zero = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    let d = v128.load(dout + o);
    if (mask != 0) d = f32x4.mul(d, v128.load(mask + o));
    const on = f32x4.gt(v128.load(inp + o), zero);
    v128.store(dinp + o, f32x4.add(v128.load(dinp + o), v128.and(d, on)));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    let d = load<f32>(dout + o);
    if (mask != 0) d *= load<f32>(mask + o);
    if (load<f32>(inp + o) > 0) store<f32>(dinp + o, load<f32>(dinp + o) + d);
  }
}

// GELU (geluForwardKeepGrad of src/nn/activations.ts): the reference's own cubic Hermite
// tables over [-8, 8] at spacing 1/64, handed in at `tab` interleaved, a 64-byte cell each
// (the value polynomial's 4 doubles, then the derivative's), evaluated in double exactly as the
// reference does; outside
// the table, x Phi(x) and Phi(x) + x phi(x) by the continued fraction of erfc.

const GELU_STEPS: f64 = 64;
const GELU_END: f64 = 8;
const INV_SQRT_PI: f64 = 0.5641895835477563;
const INV_SQRT2: f64 = 0.7071067811865476;
const INV_SQRT_2PI: f64 = 0.3989422804014327;

/** erfc(a) for a >= 3 (the continued fraction of the reference's erfcFraction, 80 levels). */
function erfcFraction(a: f64): f64 {
  let f = a;
  for (let k = 80; k >= 1; k--) f = a + (<f64>k / 2) / f;
  return (INV_SQRT_PI * Math.exp(-a * a)) / f;
}

/** Phi(x) for |x| >= 8 (or NaN), as the reference's normalCdfExact there. */
function normalCdfTail(x: f64): f64 {
  const a = Math.abs(x) * INV_SQRT2; // >= 5.66: erfc by the fraction, 0 from 27
  const e = a < 27 ? erfcFraction(a) : 0;
  return x >= 0 ? 1 - 0.5 * e : 0.5 * e;
}

/** The vector constants of geluForward (as exp4's, read from memory): -8, 8 (f32), 8, 64 (f64). */
const GELU_C: usize = memory.data<f32>([-8, -8, -8, -8, 8, 8, 8, 8], 16);
const GELU_D: usize = memory.data<f64>([GELU_END, GELU_END, GELU_STEPS, GELU_STEPS], 16);

/** The four Horner coefficients of cells j0 and j1 of the table at p, a lane each. */
// @ts-ignore: decorator
@inline function cellPoly(p0: usize, p1: usize, t: v128): v128 {
  const a0 = v128.load64_lane(p1, v128.load64_zero(p0), 1);
  const a1 = v128.load64_lane(p1, v128.load64_zero(p0, 8), 1, 8);
  const a2 = v128.load64_lane(p1, v128.load64_zero(p0, 16), 1, 16);
  const a3 = v128.load64_lane(p1, v128.load64_zero(p0, 24), 1, 24);
  return f64x2.add(a0, f64x2.mul(t, f64x2.add(a1, f64x2.mul(t, f64x2.add(a2, f64x2.mul(t, a3))))));
}

/**
 * Two cells' value and derivative at x (two doubles, both inside the table), as the scalar
 * loop computes them: u = (x + 8) 64, j = trunc(u), t = u - j, the cubics by Horner. Returns
 * the values demoted to float32 in the low two lanes; the derivatives go to `g`.
 */
// @ts-ignore: decorator
@inline function geluPair(x: v128, tab: usize, der: usize, gOut: usize): v128 {
  const u = f64x2.mul(f64x2.add(x, v128.load(GELU_D)), v128.load(GELU_D, 16));
  const jv = i32x4.trunc_sat_f64x2_s_zero(u);
  const t = f64x2.sub(u, f64x2.convert_low_i32x4_s(jv));
  const o0 = <usize>(i32x4.extract_lane(jv, 0) << 6);
  const o1 = <usize>(i32x4.extract_lane(jv, 1) << 6);
  const y = cellPoly(tab + o0, tab + o1, t);
  const g = cellPoly(der + o0, der + o1, t);
  v128.store64_lane(gOut, f32x4.demote_f64x2_zero(g), 0);
  return f32x4.demote_f64x2_zero(y);
}

/** out = gelu(inp) (times mask, as float32(gelu) * mask); inp becomes gelu'(inp). */
export function geluForward(out: usize, inp: usize, n: i32, mask: usize, tab: usize): void {
  const der = tab + 32;
  let i = 0;
  // Four at a time in two f64x2 pairs (the table reads a lane at a time) while all four are
  // inside the table: the same double operations as the scalar loop below, so the same bits.
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    const x4 = v128.load(inp + o);
    const inside = v128.and(f32x4.gt(x4, v128.load(GELU_C)), f32x4.lt(x4, v128.load(GELU_C, 16)));
    if (!i32x4.all_true(inside)) {
      geluScalar(out + o, inp + o, 4, mask != 0 ? mask + o : 0, tab, der);
      continue;
    }
    const lo = geluPair(f64x2.promote_low_f32x4(x4), tab, der, inp + o);
    const hi = geluPair(f64x2.promote_low_f32x4(i64x2.shuffle(x4, x4, 1, 0)), tab, der, inp + o + 8);
    let y = i64x2.shuffle(lo, hi, 0, 2);
    if (mask != 0) y = f32x4.mul(y, v128.load(mask + o));
    v128.store(out + o, y);
  }
  geluScalar(out + <usize>(i << 2), inp + <usize>(i << 2), n - i, mask != 0 ? mask + <usize>(i << 2) : 0, tab, der);
}

/** geluForward one element at a time (tails, and groups with an element outside the table). */
function geluScalar(out: usize, inp: usize, n: i32, mask: usize, tab: usize, der: usize): void {
  for (let i = 0; i < n; i++) {
    const o = <usize>(i << 2);
    const x = <f64>load<f32>(inp + o);
    let y: f64, g: f64;
    if (x > -GELU_END && x < GELU_END) {
      const u = (x + GELU_END) * GELU_STEPS;
      const j = <i32>u;
      const t = u - <f64>j;
      const c = tab + <usize>(j << 6), d = der + <usize>(j << 6);
      y = load<f64>(c) + t * (load<f64>(c, 8) + t * (load<f64>(c, 16) + t * load<f64>(c, 24)));
      g = load<f64>(d) + t * (load<f64>(d, 8) + t * (load<f64>(d, 16) + t * load<f64>(d, 24)));
    } else {
      const cdf = normalCdfTail(x);
      y = x * cdf;
      g = cdf + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    }
    if (mask != 0) store<f32>(out + o, <f32>y * load<f32>(mask + o));
    else store<f32>(out + o, <f32>y);
    store<f32>(inp + o, <f32>g);
  }
}

// ---------------------------------------------------------------------------------------
// Embedding (src/nn/embedding.ts): ids (int32, n of them, validated by the caller), out rows
// of C. Position t of a row is its index modulo T.

/** out[r] = wte[ids[r]] (+ wpe[r mod T] when wpe != 0). */
export function embeddingForward(
  out: usize, ids: usize, wte: usize, wpe: usize, n: i32, T: i32, C: i32,
): void {
  const rowBytes = <usize>(C << 2);
  for (let r = 0; r < n; r++) {
    const y = out + <usize>r * rowBytes;
    const e = wte + <usize>load<i32>(ids + <usize>(r << 2)) * rowBytes;
    if (wpe != 0) addForward(y, e, wpe + <usize>(r % T) * rowBytes, C);
    else memory.copy(y, e, rowBytes);
  }
}

/** dwte[ids[r]] += dout[r] (and dwpe[r mod T] += dout[r] when dwpe != 0). */
export function embeddingBackward(
  dwte: usize, dwpe: usize, dout: usize, ids: usize, n: i32, T: i32, C: i32,
): void {
  const rowBytes = <usize>(C << 2);
  for (let r = 0; r < n; r++) {
    const g = dout + <usize>r * rowBytes;
    const e = dwte + <usize>load<i32>(ids + <usize>(r << 2)) * rowBytes;
    addForward(e, e, g, C);
    if (dwpe != 0) {
      const p = dwpe + <usize>(r % T) * rowBytes;
      addForward(p, p, g, C);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Softmax rows (the attention of src/nn/backend.ts, the cross-entropy of src/nn/cross_entropy.ts).

/** The largest of the n floats at p (-Infinity for n = 0; NaN when one is NaN). */
function rowMax(p: usize, n: i32): f32 {
  // pmax (x86's maxps) in two chains, and the NaNs seen kept aside: pmax alone can drop one
  let m0 = f32x4.splat(-Infinity), m1 = m0;
  let nan = i32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const x0 = v128.load(p + <usize>(i << 2));
    const x1 = v128.load(p + <usize>(i << 2), 16);
    m0 = f32x4.pmax(m0, x0);
    m1 = f32x4.pmax(m1, x1);
    nan = v128.or(nan, v128.or(f32x4.ne(x0, x0), f32x4.ne(x1, x1)));
  }
  for (; i + 4 <= n; i += 4) {
    const x = v128.load(p + <usize>(i << 2));
    m0 = f32x4.pmax(m0, x);
    nan = v128.or(nan, f32x4.ne(x, x));
  }
  const mv = f32x4.pmax(m0, m1);
  let m = Mathf.max(
    Mathf.max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)),
    Mathf.max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)),
  );
  if (v128.any_true(nan)) m = NaN;
  for (; i < n; i++) m = Mathf.max(m, load<f32>(p + <usize>(i << 2)));
  return m;
}

/** In place over `rows` rows of n at s: s = softmax(scale s) per row. */
export function softmaxRows(s: usize, rows: i32, n: i32, scale: f32): void {
  const sc = f32x4.splat(scale);
  for (let r = 0; r < rows; r++) {
    const p = s + <usize>r * <usize>(n << 2);
    const shift = rowMax(p, n) * scale;
    const sh = f32x4.splat(shift);
    let acc = f32x4.splat(0);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>(i << 2);
      const e = exp4(f32x4.sub(f32x4.mul(v128.load(p + o), sc), sh));
      v128.store(p + o, e);
      acc = f32x4.add(acc, e);
    }
    let sum = <f64>f32x4.extract_lane(acc, 0) + <f64>f32x4.extract_lane(acc, 1) +
      <f64>f32x4.extract_lane(acc, 2) + <f64>f32x4.extract_lane(acc, 3);
    for (; i < n; i++) {
      const o = <usize>(i << 2);
      const e = exp1(load<f32>(p + o) * scale - shift);
      store<f32>(p + o, e);
      sum += <f64>e;
    }
    const inv = f32x4.splat(<f32>(1 / sum));
    i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>(i << 2);
      v128.store(p + o, f32x4.mul(v128.load(p + o), inv));
    }
    const inv1 = <f32>(1 / sum);
    for (; i < n; i++) store<f32>(p + <usize>(i << 2), load<f32>(p + <usize>(i << 2)) * inv1);
  }
}

/**
 * The softmax backward in place over `rows` rows of n: with P at s, d the gradient of the
 * (masked) probabilities: g = d mask (when mask != 0), then d = scale P (g - sum_j P g).
 */
export function softmaxBackwardRows(d: usize, s: usize, mask: usize, rows: i32, n: i32, scale: f32): void {
  const sc = f32x4.splat(scale);
  for (let r = 0; r < rows; r++) {
    const ro = <usize>r * <usize>(n << 2);
    const dp = d + ro, sp = s + ro, mp = mask + ro;
    let a0 = f64x2.splat(0), a1 = f64x2.splat(0);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>(i << 2);
      let g = v128.load(dp + o);
      if (mask != 0) {
        g = f32x4.mul(g, v128.load(mp + o));
        v128.store(dp + o, g);
      }
      const pg = v128.load(sp + o);
      a0 = f64x2.add(a0, f64x2.mul(lo64(pg), lo64(g)));
      a1 = f64x2.add(a1, f64x2.mul(hi64(pg), hi64(g)));
    }
    let dot = sum64(f64x2.add(a0, a1));
    for (; i < n; i++) {
      const o = <usize>(i << 2);
      let g = load<f32>(dp + o);
      if (mask != 0) {
        g *= load<f32>(mp + o);
        store<f32>(dp + o, g);
      }
      dot += <f64>load<f32>(sp + o) * <f64>g;
    }
    const dt = f32x4.splat(<f32>dot);
    i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>(i << 2);
      const g = f32x4.sub(v128.load(dp + o), dt);
      v128.store(dp + o, f32x4.mul(f32x4.mul(v128.load(sp + o), g), sc));
    }
    const dot1 = <f32>dot;
    for (; i < n; i++) {
      const o = <usize>(i << 2);
      store<f32>(dp + o, load<f32>(sp + o) * (load<f32>(dp + o) - dot1) * scale);
    }
  }
}

/** log sum_i e^(x_i) over the n floats at p, shifted by the row maximum, summed in double. */
export function logSumExpRow(p: usize, n: i32): f64 {
  const m = rowMax(p, n);
  if (n <= 0) return -Infinity;
  const sh = f32x4.splat(m);
  let a0 = f64x2.splat(0), a1 = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const e = exp4(f32x4.sub(v128.load(p + <usize>(i << 2)), sh));
    a0 = f64x2.add(a0, lo64(e));
    a1 = f64x2.add(a1, hi64(e));
  }
  let sum = sum64(f64x2.add(a0, a1));
  for (; i < n; i++) sum += <f64>exp1(load<f32>(p + <usize>(i << 2)) - m);
  return <f64>m + Math.log(sum);
}

/** dl += g e^(l - lse) over the n floats at l and dl: a softmax row's gradient term. */
export function addScaledExpRow(dl: usize, l: usize, n: i32, lse: f32, g: f32): void {
  const sh = f32x4.splat(lse), gv = f32x4.splat(g);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    const e = exp4(f32x4.sub(v128.load(l + o), sh));
    v128.store(dl + o, f32x4.add(v128.load(dl + o), f32x4.mul(gv, e)));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    store<f32>(dl + o, load<f32>(dl + o) + g * exp1(load<f32>(l + o) - lse));
  }
}

// ---------------------------------------------------------------------------------------
// AdamW (src/optim/adamw.ts): float32 lanes, the reference's operations in its order, each
// rounded once (no fused multiply-add): the same bits.

/**
 * One AdamW update of n parameters at p with gradients g and moments m, v, in float32:
 * m = b1 m + c1 g, v = b2 v + (c2 g) g, p = p decay - lr (m / ((sqrt(v) ib + eps) bc1)).
 */
export function adamw(
  p: usize, g: usize, m: usize, v: usize, n: i32,
  beta1: f32, c1: f32, beta2: f32, c2: f32, lr: f32, bc1: f32, invBc: f32, eps: f32, decay: f32,
): void {
  const b1 = f32x4.splat(beta1), k1 = f32x4.splat(c1);
  const b2 = f32x4.splat(beta2), k2 = f32x4.splat(c2);
  const lv = f32x4.splat(lr), b1c = f32x4.splat(bc1);
  const ib = f32x4.splat(invBc), ep = f32x4.splat(eps);
  const de = f32x4.splat(decay);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>(i << 2);
    const gv = v128.load(g + o);
    const mv = f32x4.add(f32x4.mul(b1, v128.load(m + o)), f32x4.mul(k1, gv));
    const vv = f32x4.add(f32x4.mul(b2, v128.load(v + o)), f32x4.mul(f32x4.mul(k2, gv), gv));
    v128.store(m + o, mv);
    v128.store(v + o, vv);
    const den = f32x4.add(f32x4.mul(f32x4.sqrt(vv), ib), ep);
    const u = f32x4.mul(lv, f32x4.div(mv, f32x4.mul(den, b1c)));
    v128.store(p + o, f32x4.sub(f32x4.mul(v128.load(p + o), de), u));
  }
  for (; i < n; i++) {
    const o = <usize>(i << 2);
    const gi = load<f32>(g + o);
    const mi: f32 = beta1 * load<f32>(m + o) + c1 * gi;
    const vi: f32 = beta2 * load<f32>(v + o) + (c2 * gi) * gi;
    store<f32>(m + o, mi);
    store<f32>(v + o, vi);
    const den: f32 = Mathf.sqrt(vi) * invBc + eps;
    store<f32>(p + o, load<f32>(p + o) * decay - lr * (mi / (den * bc1)));
  }
}

// ---------------------------------------------------------------------------------------
// Dropout masks (dropoutMask of src/nn/dropout.ts) and the bias gradient of a linear layer.

/**
 * mask[i] = (next xoshiro128** word < limit) ? 0 : scale for i < n, the generator's four state
 * words at `state` (those of src/rng.ts's Rng, updated in place): the same draws, the same bits.
 */
export function dropoutMask(mask: usize, n: i32, limit: f64, scale: f32, state: usize): void {
  let s0 = load<u32>(state), s1 = load<u32>(state, 4);
  let s2 = load<u32>(state, 8), s3 = load<u32>(state, 12);
  for (let i = 0; i < n; i++) {
    const r = rotl<u32>(s1 * 5, 7) * 9;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl<u32>(s3, 11);
    store<f32>(mask + <usize>(i << 2), <f64>r < limit ? 0 : scale);
  }
  store<u32>(state, s0);
  store<u32>(state, s1, 4);
  store<u32>(state, s2, 8);
  store<u32>(state, s3, 12);
}

/** The 128-bit state x (four words in lanes) times the GF(2) matrix at jump: 128 columns of 16 bytes. */
// @ts-ignore: decorator
@inline function jumpState(jump: usize, x: v128): v128 {
  let acc = i32x4.splat(0);
  for (let w = 0; w < 4; w++) {
    const word = i32x4.extract_lane(x, 0);
    x = i32x4.shuffle(x, x, 1, 2, 3, 0);
    const col = jump + <usize>(w << 9);
    for (let b = 0; b < 32; b++) {
      const bit = i32x4.splat(-((word >>> b) & 1));
      acc = v128.xor(acc, v128.and(v128.load(col + <usize>(b << 4)), bit));
    }
  }
  return acc;
}

/**
 * dropoutMask's draws (the same words, the same bits, the generator left in the same state) in
 * four lanes: the n draws cut into four runs of q = n / 4, the generator of run j started at
 * J^j s (J the transition matrix to the power q, at `jump`: column c is where bit c of the
 * state goes), the last n - 4q drawn on from where run 3 ends.
 */
export function dropoutMaskLanes(
  mask: usize, n: i32, limit: f64, scale: f32, state: usize, jump: usize,
): void {
  const q = n >> 2;
  const l0 = v128.load(state);
  const l1 = jumpState(jump, l0);
  const l2 = jumpState(jump, l1);
  const l3 = jumpState(jump, l2);
  // word w of the four lanes' generators in one vector
  const t0 = i32x4.shuffle(l0, l1, 0, 4, 1, 5), t1 = i32x4.shuffle(l2, l3, 0, 4, 1, 5);
  const t2 = i32x4.shuffle(l0, l1, 2, 6, 3, 7), t3 = i32x4.shuffle(l2, l3, 2, 6, 3, 7);
  let s0 = i64x2.shuffle(t0, t1, 0, 2), s1 = i64x2.shuffle(t0, t1, 1, 3);
  let s2 = i64x2.shuffle(t2, t3, 0, 2), s3 = i64x2.shuffle(t2, t3, 1, 3);
  // r < limit for a whole number r is r < ceil(limit); ceil(limit) = 2^32 drops every element
  const lim = Math.ceil(limit);
  const all = lim >= 4294967296.0;
  const L = i32x4.splat(all ? 0 : <i32><u32>lim);
  const ones = i32x4.splat(-1);
  const keep = f32x4.splat(scale);
  const stride = <usize>(q << 2);
  for (let i = 0; i < q; i++) {
    const x5 = i32x4.add(s1, i32x4.shl(s1, 2));
    const rr = v128.or(i32x4.shl(x5, 7), i32x4.shr_u(x5, 25));
    const r = i32x4.add(rr, i32x4.shl(rr, 3));
    const t = i32x4.shl(s1, 9);
    s2 = v128.xor(s2, s0);
    s3 = v128.xor(s3, s1);
    s1 = v128.xor(s1, s2);
    s0 = v128.xor(s0, s3);
    s2 = v128.xor(s2, t);
    s3 = v128.or(i32x4.shl(s3, 11), i32x4.shr_u(s3, 21));
    const drop = all ? ones : i32x4.lt_u(r, L);
    const out = v128.andnot(keep, drop);
    const p = mask + <usize>(i << 2);
    v128.store32_lane(p, out, 0);
    v128.store32_lane(p + stride, out, 1);
    v128.store32_lane(p + 2 * stride, out, 2);
    v128.store32_lane(p + 3 * stride, out, 3);
  }
  store<u32>(state, i32x4.extract_lane(s0, 3));
  store<u32>(state, i32x4.extract_lane(s1, 3), 4);
  store<u32>(state, i32x4.extract_lane(s2, 3), 8);
  store<u32>(state, i32x4.extract_lane(s3, 3), 12);
  dropoutMask(mask + 4 * stride, n - (q << 2), limit, scale, state);
}

/**
 * db[o] += sum_n dout[n, o] over N rows of OC, the column sums in double (row by row, as the
 * reference in src/nn/linear.ts: the same bits) in the scratch at ws (8 OC bytes).
 */
export function biasBackward(db: usize, dout: usize, N: i32, OC: i32, ws: usize): void {
  memory.fill(ws, 0, <usize>(OC << 3));
  for (let n = 0; n < N; n++) {
    const g = dout + <usize>n * <usize>(OC << 2);
    let o = 0;
    for (; o + 4 <= OC; o += 4) {
      const d = v128.load(g + <usize>(o << 2));
      const p = ws + <usize>(o << 3);
      v128.store(p, f64x2.add(v128.load(p), lo64(d)));
      v128.store(p, f64x2.add(v128.load(p, 16), hi64(d)), 16);
    }
    for (; o < OC; o++) {
      const p = ws + <usize>(o << 3);
      store<f64>(p, load<f64>(p) + <f64>load<f32>(g + <usize>(o << 2)));
    }
  }
  for (let o = 0; o < OC; o++) {
    const p = db + <usize>(o << 2);
    store<f32>(p, <f32>(<f64>load<f32>(p) + load<f64>(ws + <usize>(o << 3))));
  }
}

/**
 * T rows of HS floats between strided buffers: dst[t dLD + i] = src[t sLD + i] (add: +=), the
 * leading dimensions in floats (the attention's heads between qkv and contiguous (T,HS) tiles).
 */
export function copyRows(dst: usize, dLD: i32, src: usize, sLD: i32, T: i32, HS: i32, add: i32): void {
  const dStep = <usize>(dLD << 2), sStep = <usize>(sLD << 2), bytes = <usize>(HS << 2);
  for (let t = 0; t < T; t++) {
    const d = dst + <usize>t * dStep, s = src + <usize>t * sStep;
    if (add != 0) addForward(d, d, s, HS);
    else memory.copy(d, s, bytes);
  }
}

// ---------------------------------------------------------------------------------------
// RoPE (ropeForward of src/nn/attention.ts): q and k of every head rotated in place by the
// tables cos, sin (T, HS/2) in double, the reference's operations in double lanes: the same bits.

/**
 * Over qkv (B, T, 3C): for q and k of each head, [z1, z2] = [z1 cos - z2 s, z2 cos + z1 s] with
 * s = sign sin (sign -1: the inverse rotation, the backward pass).
 */
export function ropeForward(
  qkv: usize, cos: usize, sin: usize, B: i32, T: i32, C: i32, NH: i32, sign: f64,
): void {
  const half = C / NH / 2;
  const sg = f64x2.splat(sign);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = qkv + <usize>((b * T + t) * 3 * C) * 4;
      const tc = cos + <usize>(t * half) * 8, ts = sin + <usize>(t * half) * 8;
      for (let part = 0; part < 2; part++) {
        for (let h = 0; h < NH; h++) {
          const o = row + <usize>(part * C + h * 2 * half) * 4;
          const o2 = o + <usize>(half * 4);
          let i = 0;
          for (; i + 2 <= half; i += 2) {
            const z1 = f64x2.promote_low_f32x4(v128.load64_zero(o + <usize>(i << 2)));
            const z2 = f64x2.promote_low_f32x4(v128.load64_zero(o2 + <usize>(i << 2)));
            const c = v128.load(tc + <usize>(i << 3));
            const s = f64x2.mul(sg, v128.load(ts + <usize>(i << 3)));
            const y1 = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(z1, c), f64x2.mul(z2, s)));
            const y2 = f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(z2, c), f64x2.mul(z1, s)));
            v128.store64_lane(o + <usize>(i << 2), y1, 0);
            v128.store64_lane(o2 + <usize>(i << 2), y2, 0);
          }
          for (; i < half; i++) {
            const z1 = <f64>load<f32>(o + <usize>(i << 2)), z2 = <f64>load<f32>(o2 + <usize>(i << 2));
            const c = load<f64>(tc + <usize>(i << 3)), s = sign * load<f64>(ts + <usize>(i << 3));
            store<f32>(o + <usize>(i << 2), <f32>(z1 * c - z2 * s));
            store<f32>(o2 + <usize>(i << 2), <f32>(z2 * c + z1 * s));
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// adaLN (src/nn/adaln.ts): modulation x (1 + scale) + shift and the gated residual x + gate y,
// per position of B sequences of T, the chunks of row b of mod (K chunks of C). Every expression
// of the reference in double, rounded once to float32 as its store rounds: the same bits.

/** out = inp (1 + mod[scale]) + mod[shift] (modulateForward). */
export function modulateForward(
  out: usize, inp: usize, mod: usize, sh: i32, sc: i32, K: i32, B: i32, T: i32, C: i32,
): void {
  const one = f64x2.splat(1);
  for (let b = 0; b < B; b++) {
    const row = mod + <usize>(b * K * C) * 4;
    const ps = row + <usize>(sh * C) * 4, pc = row + <usize>(sc * C) * 4;
    for (let t = 0; t < T; t++) {
      const o = <usize>((b * T + t) * C) * 4;
      let c = 0;
      for (; c + 4 <= C; c += 4) {
        const q = <usize>(c << 2);
        const x = v128.load(inp + o + q), s = v128.load(pc + q), h = v128.load(ps + q);
        const y0 = f64x2.add(f64x2.mul(lo64(x), f64x2.add(one, lo64(s))), lo64(h));
        const y1 = f64x2.add(f64x2.mul(hi64(x), f64x2.add(one, hi64(s))), hi64(h));
        v128.store(out + o + q, to32(y0, y1));
      }
      for (; c < C; c++) {
        const q = <usize>(c << 2);
        const y = <f64>load<f32>(inp + o + q) * (1 + <f64>load<f32>(pc + q)) + <f64>load<f32>(ps + q);
        store<f32>(out + o + q, <f32>y);
      }
    }
  }
}

/** modulateBackward: dinp += dout (1 + scale), dmod[shift] += dout, dmod[scale] += dout inp. */
export function modulateBackward(
  dinp: usize, dmod: usize, dout: usize, inp: usize, mod: usize,
  sh: i32, sc: i32, K: i32, B: i32, T: i32, C: i32,
): void {
  const one = f64x2.splat(1);
  for (let b = 0; b < B; b++) {
    const row = <usize>(b * K * C) * 4;
    const ms = mod + row + <usize>(sc * C) * 4;
    const ds = dmod + row + <usize>(sh * C) * 4, dc = dmod + row + <usize>(sc * C) * 4;
    for (let t = 0; t < T; t++) {
      const o = <usize>((b * T + t) * C) * 4;
      let c = 0;
      for (; c + 4 <= C; c += 4) {
        const q = <usize>(c << 2);
        const d = v128.load(dout + o + q), s = v128.load(ms + q), x = v128.load(inp + o + q);
        const di = v128.load(dinp + o + q), dv = v128.load(dc + q);
        const d0 = lo64(d), d1 = hi64(d);
        v128.store(dinp + o + q, to32(
          f64x2.add(lo64(di), f64x2.mul(d0, f64x2.add(one, lo64(s)))),
          f64x2.add(hi64(di), f64x2.mul(d1, f64x2.add(one, hi64(s)))),
        ));
        v128.store(ds + q, f32x4.add(v128.load(ds + q), d));
        v128.store(dc + q, to32(
          f64x2.add(lo64(dv), f64x2.mul(d0, lo64(x))),
          f64x2.add(hi64(dv), f64x2.mul(d1, hi64(x))),
        ));
      }
      for (; c < C; c++) {
        const q = <usize>(c << 2);
        const d = <f64>load<f32>(dout + o + q);
        store<f32>(dinp + o + q, <f32>(<f64>load<f32>(dinp + o + q) + d * (1 + <f64>load<f32>(ms + q))));
        store<f32>(ds + q, load<f32>(ds + q) + load<f32>(dout + o + q));
        store<f32>(dc + q, <f32>(<f64>load<f32>(dc + q) + d * <f64>load<f32>(inp + o + q)));
      }
    }
  }
}

/** out = x + mod[gate] y (gatedResidualForward). */
export function gatedResidualForward(
  out: usize, x: usize, y: usize, mod: usize, g: i32, K: i32, B: i32, T: i32, C: i32,
): void {
  for (let b = 0; b < B; b++) {
    const pg = mod + <usize>(b * K * C + g * C) * 4;
    for (let t = 0; t < T; t++) {
      const o = <usize>((b * T + t) * C) * 4;
      let c = 0;
      for (; c + 4 <= C; c += 4) {
        const q = <usize>(c << 2);
        const xv = v128.load(x + o + q), m = v128.load(pg + q), yv = v128.load(y + o + q);
        v128.store(out + o + q, to32(
          f64x2.add(lo64(xv), f64x2.mul(lo64(m), lo64(yv))),
          f64x2.add(hi64(xv), f64x2.mul(hi64(m), hi64(yv))),
        ));
      }
      for (; c < C; c++) {
        const q = <usize>(c << 2);
        const r = <f64>load<f32>(x + o + q) + <f64>load<f32>(pg + q) * <f64>load<f32>(y + o + q);
        store<f32>(out + o + q, <f32>r);
      }
    }
  }
}

/** gatedResidualBackward: dx += dout (dx 0: none), dy += gate dout, dmod[gate] += dout y. */
export function gatedResidualBackward(
  dx: usize, dy: usize, dmod: usize, dout: usize, y: usize, mod: usize,
  g: i32, K: i32, B: i32, T: i32, C: i32,
): void {
  for (let b = 0; b < B; b++) {
    const off = <usize>(b * K * C + g * C) * 4;
    const pg = mod + off, dg = dmod + off;
    for (let t = 0; t < T; t++) {
      const o = <usize>((b * T + t) * C) * 4;
      let c = 0;
      for (; c + 4 <= C; c += 4) {
        const q = <usize>(c << 2);
        const d = v128.load(dout + o + q), m = v128.load(pg + q), yv = v128.load(y + o + q);
        const dyv = v128.load(dy + o + q), dm = v128.load(dg + q);
        const d0 = lo64(d), d1 = hi64(d);
        if (dx != 0) v128.store(dx + o + q, f32x4.add(v128.load(dx + o + q), d));
        v128.store(dy + o + q, to32(
          f64x2.add(lo64(dyv), f64x2.mul(lo64(m), d0)),
          f64x2.add(hi64(dyv), f64x2.mul(hi64(m), d1)),
        ));
        v128.store(dg + q, to32(
          f64x2.add(lo64(dm), f64x2.mul(d0, lo64(yv))),
          f64x2.add(hi64(dm), f64x2.mul(d1, hi64(yv))),
        ));
      }
      for (; c < C; c++) {
        const q = <usize>(c << 2);
        const d = <f64>load<f32>(dout + o + q);
        if (dx != 0) store<f32>(dx + o + q, load<f32>(dx + o + q) + load<f32>(dout + o + q));
        store<f32>(dy + o + q, <f32>(<f64>load<f32>(dy + o + q) + <f64>load<f32>(pg + q) * d));
        store<f32>(dg + q, <f32>(<f64>load<f32>(dg + q) + d * <f64>load<f32>(y + o + q)));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Attention over a batch (the wasm backend's attentionForward / attentionBackward of
// src/nn/backend.ts, whose per-head loop this is, call for call): for each sequence b and head
// h, its q, k, v (T, HS) gathered out of qkv (B, T, 3C), then the products by the matmuls'
// gemm, the softmax rows and the dropout mask's product, in the loop's order: the same bits.
// `heads` (3 B NH T HS floats, or 0) keeps each head's gathered q, k, v for the backward pass;
// without it they go to the scratch q, k, v (T HS each). mask (B NH T T, or 0) scales the
// probabilities. ws: the matmuls' workspace.

/** The q, k, v of head h of sequence b: copied out of qkv into dst (3 consecutive T HS). */
function gatherQkv(q: usize, k: usize, v: usize, qkv: usize, b: i32, h: i32, T: i32, C: i32, HS: i32): void {
  const base = qkv + <usize>(b * T * 3 * C + h * HS) * 4;
  copyRows(q, HS, base, 3 * C, T, HS, 0);
  copyRows(k, HS, base + <usize>(C * 4), 3 * C, T, HS, 0);
  copyRows(v, HS, base + <usize>(C * 8), 3 * C, T, HS, 0);
}

/**
 * out (B, T, C) = per head softmax(scale q k^T) (times mask) v; att (B, NH, T, T) keeps the
 * probabilities. Scratch: q, k, v, y (T HS each), pm (T T).
 */
export function attentionForward(
  out: usize, att: usize, qkv: usize, mask: usize, heads: usize,
  B: i32, T: i32, C: i32, NH: i32, scale: f32,
  q0: usize, k0: usize, v0: usize, y: usize, pm: usize, ws: usize,
): void {
  const HS = C / NH;
  const TH = <usize>(T * HS) * 4, TT = T * T;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      let q = q0, k = k0, v = v0;
      if (heads != 0) {
        q = heads + <usize>((b * NH + h) * 3) * TH;
        k = q + TH;
        v = k + TH;
      }
      gatherQkv(q, k, v, qkv, b, h, T, C, HS);
      const a0 = <usize>((b * NH + h) * TT) * 4;
      const s = att + a0;
      gemm(ABT, s, q, k, 0, T, HS, T, false, ws);
      softmaxRows(s, T, T, scale);
      let p = s;
      if (mask != 0) {
        mulForward(pm, s, mask + a0, TT);
        p = pm;
      }
      gemm(AB, y, p, v, 0, T, T, HS, false, ws);
      copyRows(out + <usize>(b * T * C + h * HS) * 4, C, y, HS, T, HS, 0);
    }
  }
}

/**
 * The backward pass of attentionForward: ADDS into dqkv (B, T, 3C) from dout (B, T, C), with
 * att the forward pass's probabilities and heads its kept q, k, v (or 0: gathered again).
 * Scratch: q, k, v, dq, dk, dv, dy (T HS each), pm, d (T T each).
 */
export function attentionBackward(
  dqkv: usize, dout: usize, qkv: usize, att: usize, mask: usize, heads: usize,
  B: i32, T: i32, C: i32, NH: i32, scale: f32,
  q0: usize, k0: usize, v0: usize, dq: usize, dk: usize, dv: usize, dy: usize,
  pm: usize, d: usize, ws: usize,
): void {
  const HS = C / NH;
  const TH = <usize>(T * HS) * 4, TT = T * T;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      let q = q0, k = k0, v = v0;
      if (heads != 0) {
        q = heads + <usize>((b * NH + h) * 3) * TH;
        k = q + TH;
        v = k + TH;
      } else gatherQkv(q, k, v, qkv, b, h, T, C, HS);
      copyRows(dy, HS, dout + <usize>(b * T * C + h * HS) * 4, C, T, HS, 0);
      const a0 = <usize>((b * NH + h) * TT) * 4;
      const s = att + a0;
      let p = s;
      if (mask != 0) {
        mulForward(pm, s, mask + a0, TT);
        p = pm;
      }
      // y = p v: dv = p^T dy, dp = dy v^T (times mask, in the softmax backward)
      gemm(ATB, dv, p, dy, 0, T, T, HS, false, ws);
      gemm(ABT, d, dy, v, 0, T, HS, T, false, ws);
      softmaxBackwardRows(d, s, mask != 0 ? mask + a0 : 0, T, T, scale);
      // scores = scale q k^T (scale inside d): dq = d k, dk = d^T q
      gemm(AB, dq, d, k, 0, T, T, HS, false, ws);
      gemm(ATB, dk, d, q, 0, T, T, HS, false, ws);
      const g = dqkv + <usize>(b * T * 3 * C + h * HS) * 4;
      copyRows(g, 3 * C, dq, HS, T, HS, 1);
      copyRows(g + <usize>(C * 4), 3 * C, dk, HS, T, HS, 1);
      copyRows(g + <usize>(C * 8), 3 * C, dv, HS, T, HS, 1);
    }
  }
}
