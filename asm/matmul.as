// AssemblyScript source of the WebAssembly SIMD matmul kernels of @sedd/core.
//
// Compiled by tools/build_wasm.ts (which copies this file to a temporary `.ts` name, because
// asc only reads `.ts` and Deno must not type-check AssemblyScript) into two modules, simd and
// relaxed-simd, each importing its memory. The relaxed build differs only in `madd` below
// (f32x4.relaxed_madd, a fused multiply-add on x86 with FMA).
//
// Layout: row-major float32, PyTorch convention. Dimension names:
//   M rows of C, N columns of C, K the summed dimension.
//   matmulAB : C(M,N) (+)= A(M,K) B(K,N)
//   matmulABt: C(M,N) (+)= A(M,K) B(N,K)^T (+ bias(N))   the linear forward y = x W^T + b
//   matmulAtB: C(M,N) (+)= A(K,M)^T B(K,N)               the weight gradient dW = dy^T x
// Every pointer is a byte address in the (imported) linear memory; `ws` is a workspace of
// workspaceBytes() bytes owned by the caller (packed panels), never shared between two
// concurrent calls.
//
// Method (GotoBLAS/BLIS): C is cut into NC-column blocks, K into KC slices, M into MC-row
// blocks. For each (NC, KC) block the B slice is packed into 8-column panels (kc x 8,
// contiguous), for each MC block the A slice into MR-row panels (kc x MR), then an MR x 8
// register-blocked microkernel (2 MR f32x4 accumulators) runs over every (MR, 8) tile. The
// three products differ only in how A and B are packed. Panels are zero-padded, so any
// M, N, K works; an MR x 4 right-edge tile has its own kernel (narrow outputs, N = 4), other
// tiles on the right and bottom edges go through an MR x 8 scratch tile.
//
// Two small shapes skip the packing, whose cost there is that of the products themselves:
// N = 4 (narrowABt / narrowAtB: dot products, AB through B transposed into the workspace) and
// K = 4 (smallK4: A's four values per row splat once against B's four rows), and M = 4 for AB
// and AtB (smallM4: A's four values per k splat against B's rows).

// Microkernel tile: MR rows x NR columns of C. With fused multiply-adds (the relaxed build)
// the tile is 6 x 8: twelve accumulators, two B vectors and a splat fill fifteen of the
// sixteen SIMD registers V8 allocates on x86-64, and hide the multiply-add's latency better
// than eight; without them a multiply needs a register of its own, and 6 x 8 spills, so the
// plain build keeps 4 x 8.
const MR: i32 = ASC_FEATURE_RELAXED_SIMD ? 6 : 4;
const NR: i32 = 8;
/** Bytes of one k-group of a packed A panel (MR floats). */
const GA: i32 = MR * 4;
// Cache blocks (floats): the A block MC x KC (120-128 KB) stays in L2, one B panel KC x NR
// (8 KB) in L1, the packed B block KC x NC (2 MB) in L2/L3. MC is a multiple of MR.
const KC: i32 = 256;
const MC: i32 = ASC_FEATURE_RELAXED_SIMD ? 120 : 128;
const NC: i32 = 2048;

// Workspace layout in bytes from `ws`: packed A, packed B, the edge tile, the edge bias.
const WS_A: usize = 0;
const WS_B: usize = WS_A + <usize>(MC * KC * 4);
const WS_TILE: usize = WS_B + <usize>(KC * NC * 4);
const WS_BIAS: usize = WS_TILE + <usize>(MR * NR * 4);
const WS_BYTES: usize = WS_BIAS + <usize>(NR * 4);

/** Bytes of workspace every kernel call needs at `ws` (16-byte aligned or not, any works). */
export function workspaceBytes(): usize {
  return WS_BYTES;
}

/** First free byte after the module's static data: the caller's arena starts at or above it. */
export function heapBase(): usize {
  return __heap_base;
}

/** 1 when this build uses f32x4.relaxed_madd, 0 for the plain SIMD build. */
export function isRelaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// @ts-ignore: decorator
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

// ---------------------------------------------------------------------------------------
// Packing. A panel p (rows i0 + 4p .. i0 + 4p + 3) is stored as kc groups of 4 floats:
// dst[(p * kc + k) * 4 + r] = A^(op)[i0 + 4p + r, k0 + k], zero for rows >= mc.
// A B panel q (columns j0 + 8q ..) as kc groups of 8: dst[(q * kc + k) * 8 + c].

/** A is (M,K) row-major with leading dimension lda = K: rows are strided. */
function packARows(dst: usize, a: usize, lda: i32, i0: i32, mc: i32, k0: i32, kc: i32): void {
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = min(MR, mc - ir);
    const panel = dst + <usize>(ir * kc * 4);
    if (rows == MR) {
      const r0 = a + <usize>(((i0 + ir) * lda + k0) * 4);
      const r1 = r0 + <usize>(lda * 4);
      const r2 = r1 + <usize>(lda * 4);
      const r3 = r2 + <usize>(lda * 4);
      const r4 = r3 + <usize>(lda * 4); // rows 4 and 5: read only when MR is 6
      const r5 = r4 + <usize>(lda * 4);
      let k = 0;
      // 4x4 transposes: four row vectors in, four k-groups out (their first four floats); with
      // MR 6, rows 4 and 5 interleaved into the groups' last two.
      for (; k + 4 <= kc; k += 4) {
        const o = <usize>(k * 4);
        const x0 = v128.load(r0 + o);
        const x1 = v128.load(r1 + o);
        const x2 = v128.load(r2 + o);
        const x3 = v128.load(r3 + o);
        const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5); // a0 b0 a1 b1
        const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5); // c0 d0 c1 d1
        const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7); // a2 b2 a3 b3
        const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7); // c2 d2 c3 d3
        const p = panel + <usize>(k * GA);
        v128.store(p, i64x2.shuffle(t0, t1, 0, 2));
        v128.store(p, i64x2.shuffle(t0, t1, 1, 3), GA);
        v128.store(p, i64x2.shuffle(t2, t3, 0, 2), 2 * GA);
        v128.store(p, i64x2.shuffle(t2, t3, 1, 3), 3 * GA);
        if (MR == 6) {
          const x4 = v128.load(r4 + o);
          const x5 = v128.load(r5 + o);
          const u0 = i32x4.shuffle(x4, x5, 0, 4, 1, 5); // e0 f0 e1 f1
          const u1 = i32x4.shuffle(x4, x5, 2, 6, 3, 7); // e2 f2 e3 f3
          store<i64>(p, i64x2.extract_lane(u0, 0), 16);
          store<i64>(p, i64x2.extract_lane(u0, 1), GA + 16);
          store<i64>(p, i64x2.extract_lane(u1, 0), 2 * GA + 16);
          store<i64>(p, i64x2.extract_lane(u1, 1), 3 * GA + 16);
        }
      }
      for (; k < kc; k++) {
        const o = <usize>(k * 4);
        const p = panel + <usize>(k * GA);
        store<f32>(p, load<f32>(r0 + o));
        store<f32>(p, load<f32>(r1 + o), 4);
        store<f32>(p, load<f32>(r2 + o), 8);
        store<f32>(p, load<f32>(r3 + o), 12);
        if (MR == 6) {
          store<f32>(p, load<f32>(r4 + o), 16);
          store<f32>(p, load<f32>(r5 + o), 20);
        }
      }
    } else {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * GA);
        for (let r = 0; r < MR; r++) {
          const v: f32 = r < rows
            ? load<f32>(a + <usize>(((i0 + ir + r) * lda + k0 + k) * 4))
            : 0;
          store<f32>(p + <usize>(r * 4), v);
        }
      }
    }
  }
}

/** A is (K,M) row-major and we want A^T: the MR values of a k-group are contiguous. */
function packACols(dst: usize, a: usize, lda: i32, i0: i32, mc: i32, k0: i32, kc: i32): void {
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = min(MR, mc - ir);
    const panel = dst + <usize>(ir * kc * 4);
    let src = a + <usize>((k0 * lda + i0 + ir) * 4);
    const step = <usize>(lda * 4);
    if (rows == MR) {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * GA);
        v128.store(p, v128.load(src));
        if (MR == 6) store<i64>(p, load<i64>(src, 16), 16);
        src += step;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * GA);
        for (let r = 0; r < MR; r++) {
          store<f32>(p + <usize>(r * 4), r < rows ? load<f32>(src + <usize>(r * 4)) : 0);
        }
        src += step;
      }
    }
  }
}

/** B is (K,N) row-major: the 8 values of a k-group are contiguous. */
function packBRows(dst: usize, b: usize, ldb: i32, j0: i32, nc: i32, k0: i32, kc: i32): void {
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, nc - jr);
    const panel = dst + <usize>(jr * kc * 4);
    let src = b + <usize>((k0 * ldb + j0 + jr) * 4);
    const step = <usize>(ldb * 4);
    if (cols == NR) {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * 32);
        v128.store(p, v128.load(src));
        v128.store(p, v128.load(src, 16), 16);
        src += step;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * 32);
        for (let c = 0; c < NR; c++) {
          store<f32>(p + <usize>(c * 4), c < cols ? load<f32>(src + <usize>(c * 4)) : 0);
        }
        src += step;
      }
    }
  }
}

/** B is (N,K) row-major and we want B^T: gather 8 rows of B, 4 k at a time via transposes. */
function packBCols(dst: usize, b: usize, ldb: i32, j0: i32, nc: i32, k0: i32, kc: i32): void {
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, nc - jr);
    const panel = dst + <usize>(jr * kc * 4);
    if (cols == NR) {
      // Two 4-row halves; each 4x4 block of B (rows j, cols k) transposes into 4 k-groups.
      for (let h = 0; h < 2; h++) {
        const r0 = b + <usize>(((j0 + jr + h * 4) * ldb + k0) * 4);
        const r1 = r0 + <usize>(ldb * 4);
        const r2 = r1 + <usize>(ldb * 4);
        const r3 = r2 + <usize>(ldb * 4);
        const half = panel + <usize>(h * 16);
        let k = 0;
        for (; k + 4 <= kc; k += 4) {
          const o = <usize>(k * 4);
          const x0 = v128.load(r0 + o);
          const x1 = v128.load(r1 + o);
          const x2 = v128.load(r2 + o);
          const x3 = v128.load(r3 + o);
          const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5);
          const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
          const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
          const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
          const p = half + <usize>(k * 32);
          v128.store(p, i64x2.shuffle(t0, t1, 0, 2));
          v128.store(p, i64x2.shuffle(t0, t1, 1, 3), 32);
          v128.store(p, i64x2.shuffle(t2, t3, 0, 2), 64);
          v128.store(p, i64x2.shuffle(t2, t3, 1, 3), 96);
        }
        for (; k < kc; k++) {
          const o = <usize>(k * 4);
          const p = half + <usize>(k * 32);
          store<f32>(p, load<f32>(r0 + o));
          store<f32>(p, load<f32>(r1 + o), 4);
          store<f32>(p, load<f32>(r2 + o), 8);
          store<f32>(p, load<f32>(r3 + o), 12);
        }
      }
    } else {
      for (let k = 0; k < kc; k++) {
        const p = panel + <usize>(k * 32);
        for (let c = 0; c < NR; c++) {
          const v: f32 = c < cols
            ? load<f32>(b + <usize>(((j0 + jr + c) * ldb + k0 + k) * 4))
            : 0;
          store<f32>(p + <usize>(c * 4), v);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Microkernel: C[0:4, 0:8] = (loadC ? C : 0) + (bias ? bias[0:8] : 0) + Apanel Bpanel.
// `a` is a packed 4-row panel (kc x 4), `b` a packed 8-column panel (kc x 8), `c` the top
// left of the tile with row stride ldc bytes, `bias` a byte address or 0.

// @ts-ignore: decorator
@inline function micro(kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize): void {
  const c0 = c;
  const c1 = c0 + ldc;
  const c2 = c1 + ldc;
  const c3 = c2 + ldc;
  let x00 = f32x4.splat(0), x01 = f32x4.splat(0);
  let x10 = f32x4.splat(0), x11 = f32x4.splat(0);
  let x20 = f32x4.splat(0), x21 = f32x4.splat(0);
  let x30 = f32x4.splat(0), x31 = f32x4.splat(0);
  if (loadC) {
    x00 = v128.load(c0); x01 = v128.load(c0, 16);
    x10 = v128.load(c1); x11 = v128.load(c1, 16);
    x20 = v128.load(c2); x21 = v128.load(c2, 16);
    x30 = v128.load(c3); x31 = v128.load(c3, 16);
  }
  if (bias != 0) {
    const y0 = v128.load(bias);
    const y1 = v128.load(bias, 16);
    x00 = f32x4.add(x00, y0); x01 = f32x4.add(x01, y1);
    x10 = f32x4.add(x10, y0); x11 = f32x4.add(x11, y1);
    x20 = f32x4.add(x20, y0); x21 = f32x4.add(x21, y1);
    x30 = f32x4.add(x30, y0); x31 = f32x4.add(x31, y1);
  }
  let pa = a;
  let pb = b;
  let k = 0;
  for (; k + 2 <= kc; k += 2) {
    let b0 = v128.load(pb);
    let b1 = v128.load(pb, 16);
    let s = v128.load32_splat(pa);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01);
    s = v128.load32_splat(pa, 4);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11);
    s = v128.load32_splat(pa, 8);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21);
    s = v128.load32_splat(pa, 12);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31);
    b0 = v128.load(pb, 32);
    b1 = v128.load(pb, 48);
    s = v128.load32_splat(pa, 16);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01);
    s = v128.load32_splat(pa, 20);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11);
    s = v128.load32_splat(pa, 24);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21);
    s = v128.load32_splat(pa, 28);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31);
    pa += 32;
    pb += 64;
  }
  if (k < kc) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let s = v128.load32_splat(pa);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01);
    s = v128.load32_splat(pa, 4);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11);
    s = v128.load32_splat(pa, 8);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21);
    s = v128.load32_splat(pa, 12);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31);
  }
  v128.store(c0, x00); v128.store(c0, x01, 16);
  v128.store(c1, x10); v128.store(c1, x11, 16);
  v128.store(c2, x20); v128.store(c2, x21, 16);
  v128.store(c3, x30); v128.store(c3, x31, 16);
}

/**
 * The 6x8 tile of the relaxed build: micro's contract with six rows (12 accumulators), one k
 * per iteration (unrolling it spills).
 */
// @ts-ignore: decorator
@inline function micro6(kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize): void {
  const c0 = c;
  const c1 = c0 + ldc;
  const c2 = c1 + ldc;
  const c3 = c2 + ldc;
  const c4 = c3 + ldc;
  const c5 = c4 + ldc;
  let x00 = f32x4.splat(0), x01 = f32x4.splat(0);
  let x10 = f32x4.splat(0), x11 = f32x4.splat(0);
  let x20 = f32x4.splat(0), x21 = f32x4.splat(0);
  let x30 = f32x4.splat(0), x31 = f32x4.splat(0);
  let x40 = f32x4.splat(0), x41 = f32x4.splat(0);
  let x50 = f32x4.splat(0), x51 = f32x4.splat(0);
  if (loadC) {
    x00 = v128.load(c0); x01 = v128.load(c0, 16);
    x10 = v128.load(c1); x11 = v128.load(c1, 16);
    x20 = v128.load(c2); x21 = v128.load(c2, 16);
    x30 = v128.load(c3); x31 = v128.load(c3, 16);
    x40 = v128.load(c4); x41 = v128.load(c4, 16);
    x50 = v128.load(c5); x51 = v128.load(c5, 16);
  }
  if (bias != 0) {
    const y0 = v128.load(bias);
    const y1 = v128.load(bias, 16);
    x00 = f32x4.add(x00, y0); x01 = f32x4.add(x01, y1);
    x10 = f32x4.add(x10, y0); x11 = f32x4.add(x11, y1);
    x20 = f32x4.add(x20, y0); x21 = f32x4.add(x21, y1);
    x30 = f32x4.add(x30, y0); x31 = f32x4.add(x31, y1);
    x40 = f32x4.add(x40, y0); x41 = f32x4.add(x41, y1);
    x50 = f32x4.add(x50, y0); x51 = f32x4.add(x51, y1);
  }
  let pa = a;
  let pb = b;
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let s = v128.load32_splat(pa);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01);
    s = v128.load32_splat(pa, 4);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11);
    s = v128.load32_splat(pa, 8);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21);
    s = v128.load32_splat(pa, 12);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31);
    s = v128.load32_splat(pa, 16);
    x40 = madd(s, b0, x40); x41 = madd(s, b1, x41);
    s = v128.load32_splat(pa, 20);
    x50 = madd(s, b0, x50); x51 = madd(s, b1, x51);
    pa += 24;
    pb += 32;
  }
  v128.store(c0, x00); v128.store(c0, x01, 16);
  v128.store(c1, x10); v128.store(c1, x11, 16);
  v128.store(c2, x20); v128.store(c2, x21, 16);
  v128.store(c3, x30); v128.store(c3, x31, 16);
  v128.store(c4, x40); v128.store(c4, x41, 16);
  v128.store(c5, x50); v128.store(c5, x51, 16);
}

/** An MR x 8 tile at c with row stride ldc bytes: micro6 or micro, as MR says. */
// @ts-ignore: decorator
@inline function microTile(kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize): void {
  if (MR == 6) micro6(kc, a, b, c, ldc, loadC, bias);
  else micro(kc, a, b, c, ldc, loadC, bias);
}

/** A full MR x 8 tile, written straight into C. Kept out of line so the loop around it is small. */
function microFull(kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize): void {
  microTile(kc, a, b, c, ldc, loadC, bias);
}

/**
 * An MR x 4 tile (the left half of a B panel): narrow outputs such as N = 4 run here instead of
 * through the scratch tile. Same contract as micro with 4 columns.
 */
function microHalf(kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize): void {
  const c0 = c;
  const c1 = c0 + ldc;
  const c2 = c1 + ldc;
  const c3 = c2 + ldc;
  const c4 = c3 + ldc; // rows 4 and 5: only when MR is 6
  const c5 = c4 + ldc;
  let x0 = f32x4.splat(0), x1 = f32x4.splat(0), x2 = f32x4.splat(0), x3 = f32x4.splat(0);
  let x4 = f32x4.splat(0), x5 = f32x4.splat(0);
  if (loadC) {
    x0 = v128.load(c0); x1 = v128.load(c1); x2 = v128.load(c2); x3 = v128.load(c3);
    if (MR == 6) {
      x4 = v128.load(c4); x5 = v128.load(c5);
    }
  }
  if (bias != 0) {
    const y = v128.load(bias);
    x0 = f32x4.add(x0, y); x1 = f32x4.add(x1, y); x2 = f32x4.add(x2, y); x3 = f32x4.add(x3, y);
    x4 = f32x4.add(x4, y); x5 = f32x4.add(x5, y);
  }
  let pa = a;
  let pb = b;
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb);
    x0 = madd(v128.load32_splat(pa), b0, x0);
    x1 = madd(v128.load32_splat(pa, 4), b0, x1);
    x2 = madd(v128.load32_splat(pa, 8), b0, x2);
    x3 = madd(v128.load32_splat(pa, 12), b0, x3);
    if (MR == 6) {
      x4 = madd(v128.load32_splat(pa, 16), b0, x4);
      x5 = madd(v128.load32_splat(pa, 20), b0, x5);
    }
    pa += GA;
    pb += 32;
  }
  v128.store(c0, x0); v128.store(c1, x1); v128.store(c2, x2); v128.store(c3, x3);
  if (MR == 6) {
    v128.store(c4, x4); v128.store(c5, x5);
  }
}

/** An edge tile of mr x nr (mr <= MR, nr <= 8): computed in the scratch tile, then copied. */
function microEdge(
  kc: i32, a: usize, b: usize, c: usize, ldc: usize, loadC: bool, bias: usize,
  mr: i32, nr: i32, ws: usize,
): void {
  const tile = ws + WS_TILE;
  for (let r = 0; r < MR; r++) {
    for (let j = 0; j < NR; j++) {
      const v: f32 = loadC && r < mr && j < nr ? load<f32>(c + <usize>(r) * ldc + <usize>(j * 4)) : 0;
      store<f32>(tile + <usize>((r * NR + j) * 4), v);
    }
  }
  let tileBias: usize = 0;
  if (bias != 0) {
    tileBias = ws + WS_BIAS;
    for (let j = 0; j < NR; j++) {
      store<f32>(tileBias + <usize>(j * 4), j < nr ? load<f32>(bias + <usize>(j * 4)) : 0);
    }
  }
  microTile(kc, a, b, tile, <usize>(NR * 4), true, tileBias);
  for (let r = 0; r < mr; r++) {
    for (let j = 0; j < nr; j++) {
      store<f32>(c + <usize>(r) * ldc + <usize>(j * 4), load<f32>(tile + <usize>((r * NR + j) * 4)));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Narrow outputs, N = 4 (a 4-wide model's projections, the gradients into it): no packing.
// Each output element is a dot product; the lanes of one accumulator hold four partial sums
// (every fourth k), added at the end, so the order differs from the reference's but stays
// within the same summation bound.

/** [sum(x0), sum(x1), sum(x2), sum(x3)]: the four accumulators' lanes added, transposed. */
// @ts-ignore: decorator
@inline function hsum4(x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const t0 = f32x4.add(i32x4.shuffle(x0, x1, 0, 4, 1, 5), i32x4.shuffle(x0, x1, 2, 6, 3, 7));
  const t1 = f32x4.add(i32x4.shuffle(x2, x3, 0, 4, 1, 5), i32x4.shuffle(x2, x3, 2, 6, 3, 7));
  return f32x4.add(i64x2.shuffle(t0, t1, 0, 2), i64x2.shuffle(t0, t1, 1, 3));
}

/** One row of C (4 floats at c): r plus the bias and the old row where asked. */
// @ts-ignore: decorator
@inline function narrowStore(c: usize, r: v128, bias: usize, loadC: bool): void {
  let x = r;
  if (bias != 0) x = f32x4.add(x, v128.load(bias));
  if (loadC) x = f32x4.add(v128.load(c), x);
  v128.store(c, x);
}

/** C(M,4) (+)= A(M,K) B(4,K)^T (+ bias): two rows of A at a time against the four rows of B. */
function narrowABt(c: usize, a: usize, b: usize, bias: usize, M: i32, K: i32, loadC: bool): void {
  const ld = <usize>(K << 2);
  const b0 = b, b1 = b0 + ld, b2 = b1 + ld, b3 = b2 + ld;
  const K4 = K & ~3;
  let i = 0;
  for (; i + 2 <= M; i += 2) {
    const a0 = a + <usize>i * ld, a1 = a0 + ld;
    let x00 = f32x4.splat(0), x01 = f32x4.splat(0), x02 = f32x4.splat(0), x03 = f32x4.splat(0);
    let x10 = f32x4.splat(0), x11 = f32x4.splat(0), x12 = f32x4.splat(0), x13 = f32x4.splat(0);
    for (let k = 0; k < K4; k += 4) {
      const o = <usize>(k << 2);
      const y0 = v128.load(b0 + o), y1 = v128.load(b1 + o);
      const y2 = v128.load(b2 + o), y3 = v128.load(b3 + o);
      const u = v128.load(a0 + o), w = v128.load(a1 + o);
      x00 = madd(u, y0, x00); x01 = madd(u, y1, x01); x02 = madd(u, y2, x02); x03 = madd(u, y3, x03);
      x10 = madd(w, y0, x10); x11 = madd(w, y1, x11); x12 = madd(w, y2, x12); x13 = madd(w, y3, x13);
    }
    let r0 = hsum4(x00, x01, x02, x03), r1 = hsum4(x10, x11, x12, x13);
    for (let k = K4; k < K; k++) {
      const o = <usize>(k << 2);
      const y = narrowColumn(b0, b1, b2, b3, o);
      r0 = madd(v128.load32_splat(a0 + o), y, r0);
      r1 = madd(v128.load32_splat(a1 + o), y, r1);
    }
    narrowStore(c + <usize>(i << 4), r0, bias, loadC);
    narrowStore(c + <usize>((i + 1) << 4), r1, bias, loadC);
  }
  if (i < M) {
    const a0 = a + <usize>i * ld;
    let x0 = f32x4.splat(0), x1 = f32x4.splat(0), x2 = f32x4.splat(0), x3 = f32x4.splat(0);
    for (let k = 0; k < K4; k += 4) {
      const o = <usize>(k << 2);
      const u = v128.load(a0 + o);
      x0 = madd(u, v128.load(b0 + o), x0); x1 = madd(u, v128.load(b1 + o), x1);
      x2 = madd(u, v128.load(b2 + o), x2); x3 = madd(u, v128.load(b3 + o), x3);
    }
    let r = hsum4(x0, x1, x2, x3);
    for (let k = K4; k < K; k++) {
      const o = <usize>(k << 2);
      r = madd(v128.load32_splat(a0 + o), narrowColumn(b0, b1, b2, b3, o), r);
    }
    narrowStore(c + <usize>(i << 4), r, bias, loadC);
  }
}

/** [B0[k], B1[k], B2[k], B3[k]] of four rows at byte offset o. */
// @ts-ignore: decorator
@inline function narrowColumn(b0: usize, b1: usize, b2: usize, b3: usize, o: usize): v128 {
  let y = v128.load32_splat(b0 + o);
  y = f32x4.replace_lane(y, 1, load<f32>(b1 + o));
  y = f32x4.replace_lane(y, 2, load<f32>(b2 + o));
  return f32x4.replace_lane(y, 3, load<f32>(b3 + o));
}

/** B(K,4) transposed into dst (4,K): 4x4 blocks through shuffles. */
function transposeNarrow(dst: usize, b: usize, K: i32): void {
  const ld = <usize>(K << 2);
  let k = 0;
  for (; k + 4 <= K; k += 4) {
    const s = b + <usize>(k << 4);
    const x0 = v128.load(s), x1 = v128.load(s, 16), x2 = v128.load(s, 32), x3 = v128.load(s, 48);
    const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5);
    const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
    const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
    const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
    const d = dst + <usize>(k << 2);
    v128.store(d, i64x2.shuffle(t0, t1, 0, 2));
    v128.store(d + ld, i64x2.shuffle(t0, t1, 1, 3));
    v128.store(d + 2 * ld, i64x2.shuffle(t2, t3, 0, 2));
    v128.store(d + 3 * ld, i64x2.shuffle(t2, t3, 1, 3));
  }
  for (; k < K; k++) {
    for (let j = 0; j < 4; j++) {
      store<f32>(dst + <usize>j * ld + <usize>(k << 2), load<f32>(b + <usize>((k * 4 + j) << 2)));
    }
  }
}

/** C(M,4) (+)= A(K,M)^T B(K,4): eight columns of A (rows of C) at a time, then four, then one. */
function narrowAtB(c: usize, a: usize, b: usize, M: i32, K: i32, loadC: bool): void {
  const lda = <usize>(M << 2);
  let i = 0;
  for (; i + 8 <= M; i += 8) {
    let x0 = f32x4.splat(0), x1 = f32x4.splat(0), x2 = f32x4.splat(0), x3 = f32x4.splat(0);
    let x4 = f32x4.splat(0), x5 = f32x4.splat(0), x6 = f32x4.splat(0), x7 = f32x4.splat(0);
    let pa = a + <usize>(i << 2);
    for (let k = 0; k < K; k++) {
      const u = v128.load(pa), w = v128.load(pa, 16);
      const y = v128.load(b + <usize>(k << 4));
      x0 = madd(i32x4.shuffle(u, u, 0, 0, 0, 0), y, x0);
      x1 = madd(i32x4.shuffle(u, u, 1, 1, 1, 1), y, x1);
      x2 = madd(i32x4.shuffle(u, u, 2, 2, 2, 2), y, x2);
      x3 = madd(i32x4.shuffle(u, u, 3, 3, 3, 3), y, x3);
      x4 = madd(i32x4.shuffle(w, w, 0, 0, 0, 0), y, x4);
      x5 = madd(i32x4.shuffle(w, w, 1, 1, 1, 1), y, x5);
      x6 = madd(i32x4.shuffle(w, w, 2, 2, 2, 2), y, x6);
      x7 = madd(i32x4.shuffle(w, w, 3, 3, 3, 3), y, x7);
      pa += lda;
    }
    const ci = c + <usize>(i << 4);
    narrowStore(ci, x0, 0, loadC);
    narrowStore(ci + 16, x1, 0, loadC);
    narrowStore(ci + 32, x2, 0, loadC);
    narrowStore(ci + 48, x3, 0, loadC);
    narrowStore(ci + 64, x4, 0, loadC);
    narrowStore(ci + 80, x5, 0, loadC);
    narrowStore(ci + 96, x6, 0, loadC);
    narrowStore(ci + 112, x7, 0, loadC);
  }
  for (; i + 4 <= M; i += 4) {
    let x0 = f32x4.splat(0), x1 = f32x4.splat(0), x2 = f32x4.splat(0), x3 = f32x4.splat(0);
    let pa = a + <usize>(i << 2);
    for (let k = 0; k < K; k++) {
      const u = v128.load(pa);
      const y = v128.load(b + <usize>(k << 4));
      x0 = madd(i32x4.shuffle(u, u, 0, 0, 0, 0), y, x0);
      x1 = madd(i32x4.shuffle(u, u, 1, 1, 1, 1), y, x1);
      x2 = madd(i32x4.shuffle(u, u, 2, 2, 2, 2), y, x2);
      x3 = madd(i32x4.shuffle(u, u, 3, 3, 3, 3), y, x3);
      pa += lda;
    }
    const ci = c + <usize>(i << 4);
    narrowStore(ci, x0, 0, loadC);
    narrowStore(ci + 16, x1, 0, loadC);
    narrowStore(ci + 32, x2, 0, loadC);
    narrowStore(ci + 48, x3, 0, loadC);
  }
  for (; i < M; i++) {
    let x = f32x4.splat(0);
    for (let k = 0; k < K; k++) {
      x = madd(v128.load32_splat(a + <usize>k * lda + <usize>(i << 2)), v128.load(b + <usize>(k << 4)), x);
    }
    narrowStore(c + <usize>(i << 4), x, 0, loadC);
  }
}

// ---------------------------------------------------------------------------------------
// K = 4 (a 4-wide model's inputs into its wide layers): C(M,N) (+)= A B with B (4,N) rows,
// no packing. A's element (i, k) at a + i ai + k ak bytes, so A and A^T share the kernel.

/** C(M,N) (+)= A(M,4) B(4,N) (+ bias): two rows of C at a time, four columns per vector. */
function smallK4(
  c: usize, a: usize, ai: usize, ak: usize, b: usize, bias: usize, M: i32, N: i32, loadC: bool,
): void {
  const ld = <usize>(N << 2);
  const b0 = b, b1 = b0 + ld, b2 = b1 + ld, b3 = b2 + ld;
  const N4 = N & ~3;
  for (let i = 0; i < M; i += 2) {
    const two = i + 1 < M;
    const p0 = a + <usize>i * ai, p1 = two ? p0 + ai : p0;
    const u0 = v128.load32_splat(p0), u1 = v128.load32_splat(p0 + ak);
    const u2 = v128.load32_splat(p0 + 2 * ak), u3 = v128.load32_splat(p0 + 3 * ak);
    const w0 = v128.load32_splat(p1), w1 = v128.load32_splat(p1 + ak);
    const w2 = v128.load32_splat(p1 + 2 * ak), w3 = v128.load32_splat(p1 + 3 * ak);
    const c0 = c + <usize>i * ld, c1 = c0 + ld;
    for (let j = 0; j < N4; j += 4) {
      const o = <usize>(j << 2);
      const y0 = v128.load(b0 + o), y1 = v128.load(b1 + o);
      const y2 = v128.load(b2 + o), y3 = v128.load(b3 + o);
      let r0 = madd(u3, y3, madd(u2, y2, madd(u1, y1, f32x4.mul(u0, y0))));
      let r1 = madd(w3, y3, madd(w2, y2, madd(w1, y1, f32x4.mul(w0, y0))));
      if (bias != 0) {
        const z = v128.load(bias + o);
        r0 = f32x4.add(r0, z);
        r1 = f32x4.add(r1, z);
      }
      if (loadC) {
        r0 = f32x4.add(v128.load(c0 + o), r0);
        r1 = f32x4.add(v128.load(c1 + o), r1);
      }
      v128.store(c0 + o, r0);
      if (two) v128.store(c1 + o, r1);
    }
    for (let j = N4; j < N; j++) {
      const o = <usize>(j << 2);
      const rows: i32 = two ? 2 : 1;
      for (let r = 0; r < rows; r++) {
        const pr = r == 0 ? p0 : p1;
        let x: f32 = load<f32>(pr) * load<f32>(b0 + o) + load<f32>(pr + ak) * load<f32>(b1 + o) +
          load<f32>(pr + 2 * ak) * load<f32>(b2 + o) + load<f32>(pr + 3 * ak) * load<f32>(b3 + o);
        if (bias != 0) x += load<f32>(bias + o);
        const cr = r == 0 ? c0 : c1;
        if (loadC) x = load<f32>(cr + o) + x;
        store<f32>(cr + o, x);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// M = 4 (the weight gradient of a layer out of a 4-wide input, dW = dy^T x with dy (K,4)):
// C(4,N) (+)= A B with B (K,N) rows, no packing; A's element (i, k) at a + i ai + k ak bytes.

/** C(4,N) (+)= A(4,K) B(K,N): eight columns of C at a time, then four, then one. */
function smallM4(c: usize, a: usize, ai: usize, ak: usize, b: usize, K: i32, N: i32, loadC: bool): void {
  const ld = <usize>(N << 2);
  const a1 = a + ai, a2 = a1 + ai, a3 = a2 + ai;
  let j = 0;
  for (; j + 8 <= N; j += 8) {
    let x00 = f32x4.splat(0), x01 = f32x4.splat(0), x10 = f32x4.splat(0), x11 = f32x4.splat(0);
    let x20 = f32x4.splat(0), x21 = f32x4.splat(0), x30 = f32x4.splat(0), x31 = f32x4.splat(0);
    let pb = b + <usize>(j << 2);
    for (let k = 0; k < K; k++) {
      const o = <usize>k * ak;
      const y0 = v128.load(pb), y1 = v128.load(pb, 16);
      let u = v128.load32_splat(a + o);
      x00 = madd(u, y0, x00); x01 = madd(u, y1, x01);
      u = v128.load32_splat(a1 + o);
      x10 = madd(u, y0, x10); x11 = madd(u, y1, x11);
      u = v128.load32_splat(a2 + o);
      x20 = madd(u, y0, x20); x21 = madd(u, y1, x21);
      u = v128.load32_splat(a3 + o);
      x30 = madd(u, y0, x30); x31 = madd(u, y1, x31);
      pb += ld;
    }
    const cj = c + <usize>(j << 2);
    narrowStore(cj, x00, 0, loadC); narrowStore(cj + 16, x01, 0, loadC);
    narrowStore(cj + ld, x10, 0, loadC); narrowStore(cj + ld + 16, x11, 0, loadC);
    narrowStore(cj + 2 * ld, x20, 0, loadC); narrowStore(cj + 2 * ld + 16, x21, 0, loadC);
    narrowStore(cj + 3 * ld, x30, 0, loadC); narrowStore(cj + 3 * ld + 16, x31, 0, loadC);
  }
  for (; j < N; j++) {
    // the last columns one at a time, the four rows of C in the lanes
    let x = f32x4.splat(0);
    for (let k = 0; k < K; k++) {
      const o = <usize>k * ak;
      let u = v128.load32_splat(a + o);
      u = f32x4.replace_lane(u, 1, load<f32>(a1 + o));
      u = f32x4.replace_lane(u, 2, load<f32>(a2 + o));
      u = f32x4.replace_lane(u, 3, load<f32>(a3 + o));
      x = madd(u, v128.load32_splat(b + <usize>k * ld + <usize>(j << 2)), x);
    }
    for (let r = 0; r < 4; r++) {
      const p = c + <usize>r * ld + <usize>(j << 2);
      const v = f32x4.extract_lane(x, 0);
      x = i32x4.shuffle(x, x, 1, 2, 3, 0);
      store<f32>(p, loadC ? load<f32>(p) + v : v);
    }
  }
}

// Which operand is transposed: 0 = A B, 1 = A B^T, 2 = A^T B.
const AB: i32 = 0;
const ABT: i32 = 1;
const ATB: i32 = 2;

/** The blocked driver shared by the three products. */
function gemm(
  kind: i32, c: usize, a: usize, b: usize, bias: usize,
  M: i32, K: i32, N: i32, accumulate: bool, ws: usize,
): void {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    // No products: C = (accumulate ? C : 0) + bias.
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        const p = c + <usize>((i * N + j) * 4);
        let v: f32 = accumulate ? load<f32>(p) : 0;
        if (bias != 0) v += load<f32>(bias + <usize>(j * 4));
        store<f32>(p, v);
      }
    }
    return;
  }
  if (N == 4) {
    // narrow outputs: straight dot products (AB through B transposed into the workspace)
    if (kind == ABT) {
      narrowABt(c, a, b, bias, M, K, accumulate);
      return;
    }
    if (kind == ATB) {
      narrowAtB(c, a, b, M, K, accumulate);
      return;
    }
    if (<usize>K * 16 <= <usize>(KC * NC * 4)) {
      transposeNarrow(ws + WS_B, b, K);
      narrowABt(c, a, ws + WS_B, 0, M, K, accumulate);
      return;
    }
  }
  if (K == 4 && <usize>N * 16 <= <usize>(KC * NC * 4)) {
    // four inputs: A's rows (or columns) splat once, B's four rows (B^T transposed first)
    if (kind == AB) smallK4(c, a, 16, 4, b, bias, M, N, accumulate);
    else if (kind == ATB) smallK4(c, a, 4, <usize>(M << 2), b, bias, M, N, accumulate);
    else {
      transposeNarrow(ws + WS_B, b, N);
      smallK4(c, a, 16, 4, ws + WS_B, bias, M, N, accumulate);
    }
    return;
  }
  if (M == 4 && kind != ABT) {
    // four rows of C: A's four values per k splat against B's rows, no packing
    if (kind == AB) smallM4(c, a, <usize>(K << 2), 4, b, K, N, accumulate);
    else smallM4(c, a, 4, 16, b, K, N, accumulate);
    return;
  }
  const pa = ws + WS_A;
  const pb = ws + WS_B;
  const ldc = <usize>(N * 4);
  for (let jc = 0; jc < N; jc += NC) {
    const nc = min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = min(KC, K - pc);
      if (kind == ABT) packBCols(pb, b, K, jc, nc, pc, kc);
      else packBRows(pb, b, N, jc, nc, pc, kc);
      const loadC = accumulate || pc > 0;
      const withBias = bias != 0 && pc == 0;
      for (let ic = 0; ic < M; ic += MC) {
        const mc = min(MC, M - ic);
        if (kind == ATB) packACols(pa, a, M, ic, mc, pc, kc);
        else packARows(pa, a, K, ic, mc, pc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = min(NR, nc - jr);
          const bPanel = pb + <usize>(jr * kc * 4);
          const biasJ: usize = withBias ? bias + <usize>((jc + jr) * 4) : 0;
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = min(MR, mc - ir);
            const aPanel = pa + <usize>(ir * kc * 4);
            const cTile = c + <usize>(ic + ir) * ldc + <usize>((jc + jr) * 4);
            if (mr == MR && nr == NR) microFull(kc, aPanel, bPanel, cTile, ldc, loadC, biasJ);
            else if (mr == MR && nr == 4) microHalf(kc, aPanel, bPanel, cTile, ldc, loadC, biasJ);
            else microEdge(kc, aPanel, bPanel, cTile, ldc, loadC, biasJ, mr, nr, ws);
          }
        }
      }
    }
  }
}

/** C(M,N) = A(M,K) B(K,N), or C += when accumulate != 0. Byte addresses; ws: workspaceBytes(). */
export function matmulAB(c: usize, a: usize, b: usize, M: i32, K: i32, N: i32, accumulate: i32, ws: usize): void {
  gemm(AB, c, a, b, 0, M, K, N, accumulate != 0, ws);
}

/** C(M,N) = A(M,K) B(N,K)^T + bias(N) (bias 0: none), or C += when accumulate != 0. */
export function matmulABt(
  c: usize, a: usize, b: usize, bias: usize, M: i32, K: i32, N: i32, accumulate: i32, ws: usize,
): void {
  gemm(ABT, c, a, b, bias, M, K, N, accumulate != 0, ws);
}

/** C(M,N) = A(K,M)^T B(K,N), or C += when accumulate != 0. */
export function matmulAtB(c: usize, a: usize, b: usize, M: i32, K: i32, N: i32, accumulate: i32, ws: usize): void {
  gemm(ATB, c, a, b, 0, M, K, N, accumulate != 0, ws);
}
