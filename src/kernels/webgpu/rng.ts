/**
 * The library's generator, xoshiro128** of `src/rng.ts`, in WGSL, with jump-ahead: an invocation
 * can start at any position of a stream, so a kernel draws exactly the numbers a sequential CPU
 * loop would, each invocation from its own offset.
 *
 * Jump-ahead. The xoshiro128** state transition is linear over GF(2): 128 state bits in, 128
 * out. Advancing a state by `n` draws is the matrix `M^n`; {@linkcode rngJumpTable} holds
 * `M^(2^k)` for `k = 0 .. 31` (the image of each of the 128 basis states), so `jump(s, n)`
 * applies one matrix per set bit of `n` (at most 32 x 128 four-word XORs). Offsets are u32: one
 * call draws fewer than 2^32 numbers from a stream.
 *
 * Uniforms. The CPU's `uniformOpen()` is `(x + 0.5) / 2^32` in float64, and the samplers use
 * `-log(u)` (Gumbel-max keys) and `-log(-log(u))` (Gumbel noise). In float32 `u` rounds to 1
 * for the top 2^7 values of `x`, so `expDraw(x)` computes `E = -log(u)` without forming `u` near
 * 1: `-log1p(-v)` with `v = (2^32 - 1 - x + 0.5) / 2^32` for `u >= 1/2`. Both logarithms are
 * our own (`lnF`, `ln1pF`: exponent split and the atanh series, to about 2 ulp), because WGSL
 * only guarantees `log` to an absolute 2^-21 near 1.
 *
 * @module
 */

import { Rng } from "../../rng.ts";
import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

/** Bits of a jump offset: one table level per bit. */
const JUMP_LEVELS = 32;

/** Applies a 128 x 128 GF(2) matrix (columns `m[col*4 ..]`) to the state `v`. */
function applyJump(m: Uint32Array, v: Uint32Array): Uint32Array {
  const o = new Uint32Array(4);
  for (let b = 0; b < 128; b++) {
    if (((v[b >>> 5] >>> (b & 31)) & 1) === 0) continue;
    for (let w = 0; w < 4; w++) o[w] ^= m[b * 4 + w];
  }
  return o;
}

let table: Uint32Array | null = null;

/**
 * The jump table: for `k = 0 .. 31` and each basis state `e_b` (`b = 0 .. 127`, bit `b & 31` of
 * word `b >> 5`), the four words of `M^(2^k) e_b` at `(k * 128 + b) * 4`. Level 0 is one step of
 * `Rng.nextU32` (computed by the `Rng` itself); each further level squares the last.
 *
 * @returns 16384 words (computed once, then shared).
 */
export function rngJumpTable(): Uint32Array {
  if (table !== null) return table;
  const t = new Uint32Array(JUMP_LEVELS * 128 * 4);
  const rng = new Rng(0);
  for (let b = 0; b < 128; b++) {
    const e = new Uint32Array(4);
    e[b >>> 5] = 1 << (b & 31);
    rng.setState(e);
    rng.nextU32();
    t.set(rng.getState(), b * 4);
  }
  for (let k = 1; k < JUMP_LEVELS; k++) {
    const prev = t.subarray((k - 1) * 512, k * 512);
    for (let b = 0; b < 128; b++) {
      t.set(applyJump(prev, prev.subarray(b * 4, b * 4 + 4)), k * 512 + b * 4);
    }
  }
  table = t;
  return t;
}

/**
 * WGSL: the generator and the float helpers the sampling kernels share. Expects a binding
 * `jumpTable: array<vec4u>` holding {@linkcode rngJumpTable}. Defines `rngNext(&s)` (the next
 * u32, advancing `s`, as `Rng.nextU32`), `rngJump(s, n)` (the state `n` draws later),
 * `expDraw(x)` (`-log((x + 0.5) / 2^32)`), `lnF(x)` (log of a positive normal float) and
 * `ln1pF(y)` (`log(1 + y)` for `-1/2 <= y <= 1/2`).
 */
export const RNG_WGSL = `
fn rotl(x: u32, k: u32) -> u32 { return (x << k) | (x >> (32u - k)); }
fn rngNext(s: ptr<function, vec4u>) -> u32 {
  var v = *s;
  let r = rotl(v.y * 5u, 7u) * 9u;
  let t = v.y << 9u;
  v.z ^= v.x; v.w ^= v.y; v.y ^= v.z; v.x ^= v.w; v.z ^= t; v.w = rotl(v.w, 11u);
  *s = v;
  return r;
}
fn rngJump(s: vec4u, n: u32) -> vec4u {
  var v = s;
  for (var k = 0u; k < 32u && (n >> k) != 0u; k++) {
    if (((n >> k) & 1u) == 0u) { continue; }
    var o = vec4u(0u);
    for (var b = 0u; b < 128u; b++) {
      if (((v[b >> 5u] >> (b & 31u)) & 1u) != 0u) { o ^= jumpTable[k * 128u + b]; }
    }
    v = o;
  }
  return v;
}
// 2 atanh(z) for |z| <= 1/3 (series to z^15)
fn atanh2(z: f32) -> f32 {
  let q = z * z;
  return 2.0 * z * (1.0 + q * (0.33333334 + q * (0.2 + q * (0.14285715 + q * (0.11111111
    + q * (0.09090909 + q * (0.07692308 + q * 0.06666667)))))));
}
fn lnF(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  var e = i32((bits >> 23u) & 0xffu) - 127;
  var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
  if (m > 1.4142135) { m = m * 0.5; e = e + 1; }
  let fe = f32(e);
  return fe * 0.693145751953125 + (atanh2((m - 1.0) / (m + 1.0)) + fe * 1.4286068e-6);
}
fn ln1pF(y: f32) -> f32 { return atanh2(y / (2.0 + y)); }
fn expDraw(x: u32) -> f32 {
  if (x < 0x80000000u) { return -lnF((f32(x) + 0.5) * 2.3283064365386963e-10); }
  return -ln1pF(-((f32(0xffffffffu - x) + 0.5) * 2.3283064365386963e-10));
}
`;

/**
 * Test kernel of the generator: for each of `n` offsets, the raw u32 the stream starting at
 * `state` draws at that offset (`words[i]`, as i32 bits) and `-log(u)` of it (`exps[i]`).
 *
 * @param ctx The context of every tensor.
 * @param words Output, `(n)` i32: the u32 draws.
 * @param exps Output, `(n)` f32: `expDraw` of each draw.
 * @param state The stream's state, 4 words (i32 bits).
 * @param offsets Draw positions, `(n)` i32 read as u32.
 * @param jumpTable {@linkcode rngJumpTable}, uploaded (16384 words, i32 bits).
 * @param n Draws.
 */
export function gpuRngDraws(
  ctx: GpuContext,
  words: GpuTensor,
  exps: GpuTensor,
  state: GpuTensor,
  offsets: GpuTensor,
  jumpTable: GpuTensor,
  n: number,
): void {
  checkDims("gpuRngDraws", { n });
  checkTensor("gpuRngDraws words (n)", words, n, "i32");
  checkTensor("gpuRngDraws exps (n)", exps, n);
  checkTensor("gpuRngDraws state (4)", state, 4, "i32");
  checkTensor("gpuRngDraws offsets (n)", offsets, n, "i32");
  checkTensor("gpuRngDraws jumpTable", jumpTable, JUMP_LEVELS * 512, "i32");
  const pipeline = ctx.pipeline(
    "rngDraws",
    () =>
      `struct Params { n: u32 }
@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> exps: array<f32>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read> jumpTable: array<vec4u>;
@group(0) @binding(5) var<uniform> p: Params;
${RNG_WGSL}
${entry(64)}
  let i = group * 64u + l;
  if (i >= p.n) { return; }
  var s = rngJump(vec4u(state[0], state[1], state[2], state[3]), offsets[i]);
  let x = rngNext(&s);
  words[i] = x;
  exps[i] = expDraw(x);
}`,
  );
  ctx.dispatch(pipeline, [words, exps, state, offsets, jumpTable], [n], grid(Math.ceil(n / 64)));
}
