/**
 * The samplers' per-position update rules of `src/sampler/` in WGSL, over ids and network outputs
 * that stay on the GPU, drawing the very random numbers the CPU rules draw.
 *
 * The CPU rules consume one sequential stream: position after position (`b` outer, `t` inner),
 * one `uniformOpen()` per positive weight (Gumbel-max, `gumbelArgmax` in `src/sampler/gumbel.ts`),
 * or one Gumbel draw per masked position (`confidenceStep`). So the draws of a position start at
 * the count of positive weights of every position before it. Each rule runs as:
 *
 * 1. **stats** (a workgroup of 64 per position): the row statistics the weights need (maximum,
 *    log-sum-exp, the leftover weight of MASK or of the current token) and the position's count
 *    of positive weights;
 * 2. **scan** (one workgroup): the exclusive prefix sum of the counts, the stream offset of each
 *    position, and the step's total;
 * 3. **draw** (a workgroup of 64 per position): each invocation takes a contiguous chunk of the
 *    vocabulary (at least 128 wide), jumps the generator to its first draw (`rngJump`, `rng.ts`), draws for its
 *    positive weights in order, and the chunks' best keys combine in order (the first maximum
 *    wins, as the CPU's strict `>`);
 * 4. **advance** (one invocation): the stream's base state jumps past the step's total.
 *
 * Weights are computed as logarithms in float32 (`log w_y`, keys `log w_y - log(-log U_y)`), so
 * nothing underflows where the CPU's float64 weights are positive; a weight counts as positive
 * where its float64 value would be (see the module doc of `sampler.ts` for where float32 and
 * float64 can disagree). Stats and draws run in one shader (a `phase` uniform), so both count with
 * the same compiled code.
 *
 * The random stream lives on the GPU in a {@linkcode GpuSampleWorkspace} (four state words); the
 * host reads it back only at the end ({@linkcode readRngState}).
 *
 * @module
 */

import { Rng } from "../../rng.ts";
import type { SeddRule, UpdateContext } from "../../sampler/updates.ts";
import { seddShift } from "../../diffusion/shift.ts";
import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { RNG_WGSL, rngJumpTable } from "./rng.ts";
import { entry, reductions } from "./wgsl.ts";

const WG = 64;
const SCAN_WG = 256;
/**
 * Least chunk of a row one invocation draws for: each invocation with draws first jumps the
 * generator (up to 32 x 128 XORs), so rows narrower than 64 chunks of this use fewer invocations
 * rather than 64 that each jump for a handful of draws.
 */
const DRAW_CHUNK = 128;
/** Below this, float64 `exp` is 0 (the smallest subnormal is e^-744.44). */
const LOG_MIN_EXP = -745.1332;
/** Below this, a float64 product is 0. */
const LOG_MIN = -744.4401;
/** Words of the state tensor: base state (4), the step's total draws, the changed flag. */
const STATE_WORDS = 8;
const TOTAL = 4;
const CHANGED = 5;

/** GPU buffers of the sampling kernels for up to `N` positions, and the random stream's state. */
export interface GpuSampleWorkspace {
  /** Positions (B*T) the buffers hold. */
  readonly N: number;
  /** i32 (8): the stream's state (4 words), the last step's draws, a changed flag. */
  readonly state: GpuTensor;
  /** The jump table of `rng.ts`, uploaded (shared by every workspace of the context). */
  readonly table: GpuTensor;
  /** i32 (2N): per position the count of draws, then its stream offset. */
  readonly scan: GpuTensor;
  /** f32 (4N): per position the row statistics of the rule. */
  readonly stats: GpuTensor;
  /** i32 (N): masked positions left per sequence after a confidence step (first B entries). */
  readonly remaining: GpuTensor;
}

const tables = new WeakMap<GpuContext, GpuTensor>();

/**
 * Allocates the sampling buffers for `N` positions and uploads the state of `rng` as the stream
 * the kernels draw from (`rng` itself is not advanced; {@linkcode readRngState} gives the state
 * after the kernels' draws).
 *
 * @param ctx The context.
 * @param N Positions (B*T), >= 1.
 * @param rng The generator whose stream the kernels continue.
 * @returns The workspace; free it with {@linkcode destroyGpuSampleWorkspace}.
 */
export function createGpuSampleWorkspace(ctx: GpuContext, N: number, rng: Rng): GpuSampleWorkspace {
  checkDims("createGpuSampleWorkspace", { N });
  if (N < 1) throw new RangeError(`createGpuSampleWorkspace N: expected >= 1, got ${N}`);
  if (!(rng instanceof Rng)) {
    throw new TypeError(`createGpuSampleWorkspace rng: expected an Rng, got ${typeof rng}`);
  }
  let table = tables.get(ctx);
  if (table === undefined) {
    table = ctx.upload(new Int32Array(rngJumpTable().buffer));
    tables.set(ctx, table);
  }
  const state = new Int32Array(STATE_WORDS);
  state.set(new Int32Array(rng.getState().buffer));
  return {
    N,
    state: ctx.upload(state),
    table,
    scan: ctx.zeros(2 * N, "i32"),
    stats: ctx.zeros(4 * N),
    remaining: ctx.zeros(N, "i32"),
  };
}

/**
 * Frees a workspace's buffers (not the shared jump table).
 *
 * @param ws The workspace.
 */
export function destroyGpuSampleWorkspace(ws: GpuSampleWorkspace): void {
  for (const t of [ws.state, ws.scan, ws.stats, ws.remaining]) t.destroy();
}

/**
 * Reads the stream's state back (after every kernel recorded so far), for `Rng.setState`.
 *
 * @param ctx The context.
 * @param ws The workspace.
 * @returns The four state words.
 */
export async function readRngState(ctx: GpuContext, ws: GpuSampleWorkspace): Promise<Uint32Array> {
  const words = await ctx.read(ws.state);
  return new Uint32Array(words.buffer, 0, 4).slice();
}

/**
 * Reads whether the last SEDD or ancestral update changed any token.
 *
 * @param ctx The context.
 * @param ws The workspace.
 * @returns True when a token changed.
 */
export async function readChanged(ctx: GpuContext, ws: GpuSampleWorkspace): Promise<boolean> {
  const words = await ctx.read(ws.state);
  return words[CHANGED] !== 0;
}

/** The kinds of update shader: how a row's weights are read (see `weightCode`). */
type Mode = "absorbProbs" | "absorbScore" | "uniformEuler" | "uniformTweedie";

// Per mode: the stats phase (sets `st`, may use `wgMax`/`wgSum`, runs in uniform control flow)
// and `weight(y, x, l, st)`: whether w_y > 0 (as float64 would have it) and log w_y.
// Uniform constants c0..c3 per mode are set by `modeConstants`.
const statsCode: Record<Mode, string> = {
  // st = (max, lse) over the real tokens: p_x0 = softmax with the MASK logit at -inf
  absorbProbs: `
  var mx = -3.402823466e38;
  for (var y = a; y < e; y++) { if (y != p.maskId) { mx = max(mx, out[o + y]); } }
  let rowMax = wgMax(mx, l);
  var s = 0.0;
  for (var y = a; y < e; y++) { if (y != p.maskId) { s += exp(out[o + y] - rowMax); } }
  let rowSum = wgSum(s, l);
  st = vec4f(rowMax, rowMax + log(rowSum), 0.0, 0.0);`,
  // st.z = w_MASK = max(0, 1 - sum of the real weights), or 0 for the final denoise (c1 = 0)
  absorbScore: `
  var s = 0.0;
  for (var y = a; y < e; y++) {
    if (y == p.maskId) { continue; }
    let w = weight(y, x, out[o + y], st);
    if (w.ok) { s += exp(w.lw); }
  }
  let total = wgSum(s, l);
  st.z = select(0.0, max(0.0, 1.0 - total), p.c1 > 0.0);`,
  // st.z = w_x = max(0, 1 - sum over real y != x) (also where x is MASK, as on the CPU)
  uniformEuler: `
  var s = 0.0;
  for (var y = a; y < e; y++) {
    if (y == p.maskId || y == x) { continue; }
    let w = weight(y, x, out[o + y], st);
    if (w.ok) { s += exp(w.lw); }
  }
  let total = wgSum(s, l);
  st.z = max(0.0, 1.0 - total);`,
  // st.y = log S, S = 1 + sum over real y != x of exp(l_y) (s_x = 1; x is real on this graph,
  // but a MASK given as input counts as the CPU counts it: not at all)
  uniformTweedie: `
  var mx = 0.0;
  for (var y = a; y < e; y++) { if (y != p.maskId && y != x) { mx = max(mx, out[o + y]); } }
  let m0 = wgMax(mx, l);
  var s = 0.0;
  for (var y = a; y < e; y++) { if (y != p.maskId && y != x) { s += exp(out[o + y] - m0); } }
  let total = wgSum(s, l);
  st.y = m0 + log(select(0.0, exp(-m0), x != p.maskId) + total);`,
};

const weightCode: Record<Mode, string> = {
  // c0 = log a - log expm1(sigma) (SEDD, logits) or log(mT - mS) (ancestral); c1 > 0 where MASK
  // has weight c1 (its log is c2)
  absorbProbs: `
  if (y == p.maskId) { return W(p.c1 > 0.0, p.c2); }
  let lw = l - st.y + p.c0;
  return W(l - st.x > ${LOG_MIN_EXP} && lw > ${LOG_MIN}, lw);`,
  // c0 = log a - shift, c3 = shift; MASK's weight is st.z
  absorbScore: `
  if (y == p.maskId) { return W(st.z > 0.0, lnF(max(st.z, 1e-37))); }
  let lw = l + p.c0;
  return W(l - p.c3 > ${LOG_MIN_EXP} && lw > ${LOG_MIN}, lw);`,
  // c0 = log(rate / N); the current token's weight is st.z
  uniformEuler: `
  if (y == x) { return W(st.z > 0.0, lnF(max(st.z, 1e-37))); }
  if (y == p.maskId) { return W(false, 0.0); }
  let lw = l + p.c0;
  return W(l > ${LOG_MIN_EXP} && lw > ${LOG_MIN}, lw);`,
  // staggered score e^D s_y - expm1(D) S / N > 0 iff log s_y > c0 + log S, c0 = log(expm1(D) / N) - D;
  // log w_y = D + log s_y + log(1 - e^(c0 + log S - log s_y)) + log(move (c1) or stay (c2)); c3 = D
  uniformTweedie: `
  if (y == p.maskId) { return W(false, 0.0); }
  let ls = select(l, 0.0, y == x);
  let lt = p.c0 + st.y;
  if (!(ls > lt)) { return W(false, 0.0); }
  let q = exp(lt - ls);
  var lg = 0.0;
  if (q <= 0.5) { lg = ln1pF(-q); } else { lg = lnF(max(1.0 - q, 1e-30)); }
  return W(true, p.c3 + ls + lg + select(p.c1, p.c2, y == x));`,
};

// WGSL shared by the per-position kernels (a workgroup of WG per position, over `ids`, `fixed`
// and `p` with fields N, T, maskId, hasFixed): the chunk of the row invocation `l` takes, the
// chunks' best (key, index) pairs and their combination in chunk order, and the test whether a
// position is updated at all.
const ROW_WGSL = `
var<workgroup> flag: u32;
var<workgroup> wk: array<f32, ${WG}>;
var<workgroup> wy: array<u32, ${WG}>;
// [start, end) of the contiguous chunk of a row of V that invocation l takes, at least \`least\`
// wide (invocations past the row's end get an empty chunk)
fn chunkOf(V: u32, l: u32, least: u32) -> vec2u {
  let chunk = max((V + ${WG - 1}u) / ${WG}u, least);
  let a = min(l * chunk, V);
  return vec2u(a, min(a + chunk, V));
}
// the best index over the chunks' (wk, wy) in chunk order, the first maximum winning; \`none\`
// where no chunk has one
fn firstBest(none: u32) -> u32 {
  var best = none;
  var found = false;
  var kb = 0.0;
  for (var j = 0u; j < ${WG}u; j++) {
    if (wy[j] != 0xffffffffu && (!found || wk[j] > kb)) { found = true; kb = wk[j]; best = wy[j]; }
  }
  return best;
}
// whether position i is updated: not fixed and (when \`masked\`) MASK; the same in the whole
// workgroup (barrier inside: call from uniform control flow)
fn isActive(i: u32, l: u32, masked: bool) -> bool {
  if (l == 0u) {
    let isFixed = p.hasFixed != 0u && fixed[i % p.T] == 1;
    flag = select(0u, 1u, !isFixed && (!masked || u32(ids[i]) == p.maskId));
  }
  return workgroupUniformLoad(&flag) != 0u;
}`;

function updateShader(mode: Mode): string {
  const absorb = mode === "absorbProbs" || mode === "absorbScore";
  return `struct Params { N: u32, T: u32, V: u32, maskId: u32, phase: u32, hasFixed: u32,
  c0: f32, c1: f32, c2: f32, c3: f32 }
struct W { ok: bool, lw: f32 }
@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> fixed: array<i32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> scan: array<u32>;
@group(0) @binding(5) var<storage, read_write> state: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read> jumpTable: array<vec4u>;
@group(0) @binding(7) var<uniform> p: Params;
${reductions(WG)}
${RNG_WGSL}
${ROW_WGSL}
var<workgroup> wc: array<u32, ${WG}>;
fn weight(y: u32, x: u32, l: f32, st: vec4f) -> W {${weightCode[mode]}
}
${entry(WG)}
  let i = group;
  if (i >= p.N) { return; }
  let x = u32(ids[i]);
  if (!isActive(i, l, ${absorb})) {
    if (p.phase == 0u && l == 0u) { scan[i] = 0u; }
    return;
  }
  let o = i * p.V;
  let ch = chunkOf(p.V, l, ${DRAW_CHUNK}u);
  let a = ch.x;
  let e = ch.y;
  if (p.phase == 0u) {
    var st = vec4f(0.0);
    ${statsCode[mode]}
    var c = 0u;
    for (var y = a; y < e; y++) { if (weight(y, x, out[o + y], st).ok) { c++; } }
    let count = wgSum(f32(c), l);
    if (l == 0u) {
      stats[i] = st;
      scan[i] = u32(count);
    }
    return;
  }
  let st = stats[i];
  var c = 0u;
  for (var y = a; y < e; y++) { if (weight(y, x, out[o + y], st).ok) { c++; } }
  wc[l] = c;
  workgroupBarrier();
  if (l == 0u) {
    var acc = 0u;
    for (var j = 0u; j < ${WG}u; j++) { let v = wc[j]; wc[j] = acc; acc += v; }
  }
  workgroupBarrier();
  var bk = 0.0;
  var by = 0xffffffffu;
  if (c > 0u) {
    let base = vec4u(atomicLoad(&state[0]), atomicLoad(&state[1]), atomicLoad(&state[2]),
      atomicLoad(&state[3]));
    var s = rngJump(base, scan[p.N + i] + wc[l]);
    for (var y = a; y < e; y++) {
      let w = weight(y, x, out[o + y], st);
      if (!w.ok) { continue; }
      let key = w.lw - lnF(expDraw(rngNext(&s)));
      if (by == 0xffffffffu || key > bk) { bk = key; by = y; }
    }
  }
  wk[l] = bk;
  wy[l] = by;
  workgroupBarrier();
  if (l == 0u) {
    let best = firstBest(x);
    ids[i] = i32(best);
    if (best != x) { atomicStore(&state[${CHANGED}], 1u); }
  }
}`;
}

function gpuScan(ctx: GpuContext, ws: GpuSampleWorkspace, N: number): void {
  const pipeline = ctx.pipeline(
    "sampleScan",
    () =>
      `struct Params { N: u32 }
@group(0) @binding(0) var<storage, read_write> scan: array<u32>;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> part: array<u32, ${SCAN_WG}>;
${entry(SCAN_WG)}
  let chunk = (p.N + ${SCAN_WG - 1}u) / ${SCAN_WG}u;
  let a = min(l * chunk, p.N);
  let e = min(a + chunk, p.N);
  var c = 0u;
  for (var i = a; i < e; i++) { c += scan[i]; }
  part[l] = c;
  workgroupBarrier();
  for (var s = 1u; s < ${SCAN_WG}u; s <<= 1u) {
    var v = 0u;
    if (l >= s) { v = part[l - s]; }
    workgroupBarrier();
    part[l] += v;
    workgroupBarrier();
  }
  var off = part[l] - c;
  for (var i = a; i < e; i++) { let ci = scan[i]; scan[p.N + i] = off; off += ci; }
  if (l == ${SCAN_WG - 1}u) { state[${TOTAL}] = part[l]; state[${CHANGED}] = 0u; }
}`,
  );
  ctx.dispatch(pipeline, [ws.scan, ws.state], [N], [1, 1]);
}

function gpuAdvance(ctx: GpuContext, ws: GpuSampleWorkspace): void {
  const pipeline = ctx.pipeline(
    "sampleAdvance",
    () =>
      `struct Params { total: u32 }
@group(0) @binding(0) var<storage, read_write> state: array<u32>;
@group(0) @binding(1) var<storage, read> jumpTable: array<vec4u>;
@group(0) @binding(2) var<uniform> p: Params;
${RNG_WGSL}
${entry(1)}
  let s = rngJump(vec4u(state[0], state[1], state[2], state[3]), state[p.total]);
  state[0] = s.x; state[1] = s.y; state[2] = s.z; state[3] = s.w;
}`,
  );
  ctx.dispatch(pipeline, [ws.state, ws.table], [TOTAL], [1, 1]);
}

function checkUpdate(
  kernel: string,
  ws: GpuSampleWorkspace,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  V: number,
): void {
  checkDims(kernel, { B, T, V });
  const N = B * T;
  if (N > ws.N) {
    throw new RangeError(`${kernel}: expected B*T <= the workspace's ${ws.N} positions, got ${N}`);
  }
  if (N * V > 0xffffffff) {
    throw new RangeError(
      `${kernel}: expected B*T*V < 2^32 (one step's draws are counted in u32), got ${N * V}`,
    );
  }
  checkTensor(`${kernel} ids (B,T)`, ids, N, "i32");
  checkTensor(`${kernel} out (B,T,V)`, out, N * V);
  if (fixed !== null) checkTensor(`${kernel} fixed (T)`, fixed, T, "i32");
}

function runUpdate(
  ctx: GpuContext,
  ws: GpuSampleWorkspace,
  mode: Mode,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  V: number,
  maskId: number,
  c: readonly [number, number, number, number],
): void {
  for (const v of c) {
    if (Number.isNaN(v)) throw new RangeError(`sampling update ${mode}: a step constant is NaN`);
  }
  const N = B * T;
  if (N === 0) return;
  const pipeline = ctx.pipeline(`sampleUpdate:${mode}`, () => updateShader(mode));
  const tensors = [ids, out, fixed ?? ctx.dummy, ws.stats, ws.scan, ws.state, ws.table];
  const params = (phase: number) => [N, T, V, maskId, phase, fixed === null ? 0 : 1, ...c];
  const floats = [6, 7, 8, 9];
  ctx.dispatch(pipeline, tensors, params(0), grid(N), floats);
  gpuScan(ctx, ws, N);
  ctx.dispatch(pipeline, tensors, params(1), grid(N), floats);
  gpuAdvance(ctx, ws);
}

/** Float32-safe log of a positive float64 constant (-3e38 for 0). */
function logC(v: number): number {
  return v > 0 ? Math.log(v) : -3e38;
}

/**
 * {@linkcode seddUpdate} of `src/sampler/updates.ts` on the GPU: one SEDD step (Euler, Tweedie or
 * the final denoise) over the batch, in place on `ids`, drawing from the workspace's stream the
 * numbers the CPU rule draws. Records its dispatches; sets the workspace's changed flag.
 *
 * @param ctx The context of every tensor.
 * @param ws Buffers and stream ({@linkcode createGpuSampleWorkspace}).
 * @param ids Current ids, `(B,T)` i32, updated in place.
 * @param out Network output for `ids`, `(B,T,V)`.
 * @param fixed 1 where a position is fixed, `(T)` i32, or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param sigma Total noise at the current time (> 0).
 * @param rule The rule and its step constant.
 * @param uctx Vocabulary, graph and output kind.
 */
export function gpuSeddUpdate(
  ctx: GpuContext,
  ws: GpuSampleWorkspace,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  sigma: number,
  rule: SeddRule,
  uctx: UpdateContext,
): void {
  const { V, maskId } = uctx;
  checkUpdate("gpuSeddUpdate", ws, ids, out, fixed, B, T, V);
  const N = V - 1;
  if (uctx.graph === "absorb") {
    const a = rule.kind === "euler"
      ? rule.rate
      : rule.kind === "tweedie"
      ? Math.expm1(rule.dsig)
      : 1;
    if (uctx.output === "logits") {
      // w_y = a p_y / expm1(sigma); w_MASK = 1 - a / expm1(sigma) (the p_y sum to 1), or 0 (denoise)
      const e = Math.expm1(sigma);
      const m = rule.kind === "denoise" ? 0 : Math.max(0, 1 - a / e);
      runUpdate(ctx, ws, "absorbProbs", ids, out, fixed, B, T, V, maskId, [
        logC(a) - Math.log(e),
        m,
        logC(m),
        0,
      ]);
    } else {
      const shift = uctx.scaleBySigma ? seddShift(sigma, V) : 0;
      runUpdate(ctx, ws, "absorbScore", ids, out, fixed, B, T, V, maskId, [
        logC(a) - shift,
        rule.kind === "denoise" ? 0 : 1,
        0,
        shift,
      ]);
    }
    return;
  }
  if (rule.kind === "euler") {
    runUpdate(ctx, ws, "uniformEuler", ids, out, fixed, B, T, V, maskId, [
      logC(rule.rate / N),
      0,
      0,
      0,
    ]);
    return;
  }
  const D = rule.kind === "tweedie" ? rule.dsig : rule.sigma;
  const move = -Math.expm1(-D) / N;
  const stay = 1 - (N - 1) * move;
  runUpdate(ctx, ws, "uniformTweedie", ids, out, fixed, B, T, V, maskId, [
    logC(Math.expm1(D) / N) - D,
    logC(move),
    logC(stay),
    D,
  ]);
}

/**
 * {@linkcode ancestralUpdate} of `src/sampler/updates.ts` on the GPU: one MDLM ancestral step from
 * mask probability `mT` down to `mS`, in place on `ids`, with the CPU rule's random numbers.
 * Records its dispatches; sets the workspace's changed flag.
 *
 * @param ctx The context of every tensor.
 * @param ws Buffers and stream ({@linkcode createGpuSampleWorkspace}).
 * @param ids Current ids, `(B,T)` i32, updated in place.
 * @param out Network output for `ids`, `(B,T,V)` (p_x0 = softmax over the real tokens).
 * @param fixed 1 where a position is fixed, `(T)` i32, or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param mT Mask probability at the current time t.
 * @param mS Mask probability at the next time s < t.
 * @param uctx Vocabulary (the graph must be absorb).
 */
export function gpuAncestralUpdate(
  ctx: GpuContext,
  ws: GpuSampleWorkspace,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  mT: number,
  mS: number,
  uctx: UpdateContext,
): void {
  const { V, maskId } = uctx;
  checkUpdate("gpuAncestralUpdate", ws, ids, out, fixed, B, T, V);
  runUpdate(ctx, ws, "absorbProbs", ids, out, fixed, B, T, V, maskId, [
    logC(mT - mS),
    mS > 0 ? mS : 0,
    logC(mS),
    0,
  ]);
}

// WGSL: the first maximum of out[o + y] over y != exclude, the row split into the chunks of
// \`chunkOf\` (needs \`out\` and ROW_WGSL; barriers: call from uniform control flow).
const ARGMAX_WGSL = `
fn rowArgmax(o: u32, V: u32, exclude: u32, l: u32) -> u32 {
  let ch = chunkOf(V, l, 1u);
  var bv = 0.0;
  var bi = 0xffffffffu;
  for (var y = ch.x; y < ch.y; y++) {
    if (y == exclude) { continue; }
    let v = out[o + y];
    if (bi == 0xffffffffu || v > bv) { bv = v; bi = y; }
  }
  wk[l] = bv;
  wy[l] = bi;
  workgroupBarrier();
  if (l == 0u) { wy[0] = firstBest(0xffffffffu); }
  workgroupBarrier();
  let r = wy[0];
  workgroupBarrier();
  return r;
}`;

/**
 * {@linkcode argmaxUpdate} of `src/sampler/updates.ts` on the GPU (MDLM's final step): every
 * masked, free position takes the first argmax of its row, the MASK column excluded. No random
 * numbers. Records one dispatch.
 *
 * @param ctx The context of every tensor.
 * @param ids Current ids, `(B,T)` i32, updated in place.
 * @param out Network output for `ids`, `(B,T,V)`.
 * @param fixed 1 where a position is fixed, `(T)` i32, or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size.
 * @param maskId Id of MASK.
 */
export function gpuArgmaxUpdate(
  ctx: GpuContext,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  V: number,
  maskId: number,
): void {
  checkDims("gpuArgmaxUpdate", { B, T, V, maskId });
  checkTensor("gpuArgmaxUpdate ids (B,T)", ids, B * T, "i32");
  checkTensor("gpuArgmaxUpdate out (B,T,V)", out, B * T * V);
  if (fixed !== null) checkTensor("gpuArgmaxUpdate fixed (T)", fixed, T, "i32");
  const pipeline = ctx.pipeline(
    "sampleArgmax",
    () =>
      `struct Params { N: u32, T: u32, V: u32, maskId: u32, hasFixed: u32 }
@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> fixed: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;
${ROW_WGSL}
${ARGMAX_WGSL}
${entry(WG)}
  let i = group;
  if (i >= p.N) { return; }
  if (!isActive(i, l, true)) { return; }
  let best = rowArgmax(i * p.V, p.V, p.maskId, l);
  if (l == 0u) { ids[i] = i32(best); }
}`,
  );
  ctx.dispatch(
    pipeline,
    [ids, out, fixed ?? ctx.dummy],
    [B * T, T, V, maskId, fixed === null ? 0 : 1],
    grid(B * T),
  );
}

/**
 * {@linkcode confidenceStep} of `src/sampler/confidence.ts` on the GPU: the notebook's confidence
 * step, in place on `ids`. Per masked free position the max probability and its argmax, plus one
 * Gumbel draw from the stream (in position order, as the CPU); then per sequence the `k` most
 * confident masked positions (ties to the lower position, as the CPU's sort) take their argmax:
 * a workgroup per sequence ranks each position against the others. Writes how many positions stay
 * masked per sequence into `ws.remaining`.
 *
 * @param ctx The context of every tensor.
 * @param ws Buffers and stream ({@linkcode createGpuSampleWorkspace}).
 * @param ids Current ids, `(B,T)` i32, updated in place.
 * @param out Logits for `ids`, `(B,T,V)`.
 * @param fixed 1 where a position is fixed, `(T)` i32, or null.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size.
 * @param maskId Id of MASK.
 * @param k How many masked positions to unmask per sequence (capped by the number masked).
 * @param allowMask Whether MASK may be predicted.
 */
export function gpuConfidenceStep(
  ctx: GpuContext,
  ws: GpuSampleWorkspace,
  ids: GpuTensor,
  out: GpuTensor,
  fixed: GpuTensor | null,
  B: number,
  T: number,
  V: number,
  maskId: number,
  k: number,
  allowMask: boolean,
): void {
  checkUpdate("gpuConfidenceStep", ws, ids, out, fixed, B, T, V);
  checkDims("gpuConfidenceStep", { k, maskId });
  const N = B * T;
  if (N === 0) return;
  const prep = ctx.pipeline(
    "confidencePrep",
    () =>
      `struct Params { N: u32, T: u32, V: u32, maskId: u32, hasFixed: u32, allowMask: u32 }
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> fixed: array<i32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> scan: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;
${reductions(WG)}
${ROW_WGSL}
${ARGMAX_WGSL}
${entry(WG)}
  let i = group;
  if (i >= p.N) { return; }
  let act = isActive(i, l, true);
  if (l == 0u) { scan[i] = select(0u, 1u, act); }
  if (!act) { return; }
  let o = i * p.V;
  let excl = select(p.maskId, 0xffffffffu, p.allowMask != 0u);
  let best = rowArgmax(o, p.V, excl, l);
  let mx = out[o + best];
  var s = 0.0;
  for (var y = l; y < p.V; y += ${WG}u) { if (y != excl) { s += exp(out[o + y] - mx); } }
  let total = wgSum(s, l);
  if (l == 0u) { stats[i] = vec4f(1.0 / total, f32(best), 0.0, 0.0); }
}`,
  );
  ctx.dispatch(
    prep,
    [ids, out, fixed ?? ctx.dummy, ws.stats, ws.scan],
    [N, T, V, maskId, fixed === null ? 0 : 1, allowMask ? 1 : 0],
    grid(N),
  );
  gpuScan(ctx, ws, N);
  const draw = ctx.pipeline(
    "confidenceDraw",
    () =>
      `struct Params { N: u32 }
@group(0) @binding(0) var<storage, read_write> stats: array<vec4f>;
@group(0) @binding(1) var<storage, read> scan: array<u32>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read> jumpTable: array<vec4u>;
@group(0) @binding(4) var<uniform> p: Params;
${RNG_WGSL}
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.N || scan[i] == 0u) { return; }
  var s = rngJump(vec4u(state[0], state[1], state[2], state[3]), scan[p.N + i]);
  stats[i].z = stats[i].x - lnF(expDraw(rngNext(&s)));
}`,
  );
  ctx.dispatch(draw, [ws.stats, ws.scan, ws.state, ws.table], [N], grid(Math.ceil(N / WG)));
  const topk = ctx.pipeline(
    "confidenceTopK",
    () =>
      `struct Params { B: u32, T: u32, k: u32, maskId: u32 }
@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read> stats: array<vec4f>;
@group(0) @binding(2) var<storage, read> scan: array<u32>;
@group(0) @binding(3) var<storage, read_write> remaining: array<i32>;
@group(0) @binding(4) var<uniform> p: Params;
${reductions(WG)}
${entry(WG)}
  let b = group;
  if (b >= p.B) { return; }
  let o = b * p.T;
  var c = 0.0;
  for (var t = l; t < p.T; t += ${WG}u) { c += f32(scan[o + t]); }
  let m = u32(wgSum(c, l));
  let n = min(p.k, m);
  var unmasked = 0.0;
  for (var t = l; t < p.T; t += ${WG}u) {
    if (scan[o + t] == 0u) { continue; }
    let ct = stats[o + t].z;
    var rank = 0u;
    for (var u = 0u; u < p.T && rank < n; u++) {
      if (scan[o + u] == 0u) { continue; }
      let cu = stats[o + u].z;
      if (cu > ct || (cu == ct && u < t)) { rank++; }
    }
    if (rank < n) {
      let pred = u32(stats[o + t].y);
      ids[o + t] = i32(pred);
      if (pred != p.maskId) { unmasked += 1.0; }
    }
  }
  let done = u32(wgSum(unmasked, l));
  if (l == 0u) { remaining[b] = i32(m - done); }
}`,
  );
  ctx.dispatch(topk, [ids, ws.stats, ws.scan, ws.remaining], [B, T, k, maskId], grid(B));
  gpuAdvance(ctx, ws);
}
