/**
 * WebAssembly SIMD matmul kernels (compiled from `asm/matmul.as`) behind the same signatures
 * as the plain TypeScript reference in `matmul_ref.ts`, plus the arena that places buffers in
 * the module's memory so the kernels read them without a copy.
 *
 * Dimension names: `M` rows of C, `N` columns of C, `K` the summed dimension. Row-major,
 * PyTorch layout; C must not overlap A, B or bias.
 *
 * Variant: the relaxed-SIMD build (f32x4.relaxed_madd) when `WebAssembly.validate` accepts
 * it, else the plain SIMD build. Some runtimes reject a whole module for one unknown opcode,
 * hence two separate modules instead of a runtime branch.
 *
 * Memory: the module IMPORTS its memory (`env.memory`). By default a fresh memory is made;
 * pass `{ memory }` to bring your own (several instances on one memory each take their own
 * `base`/`limit` region: instances that share a memory must own disjoint arenas).
 *
 * Two ways to call a kernel:
 * - zero-copy: allocate every operand with `alloc(nFloats)`; views into the wasm memory are
 *   used in place. This is the fast path the model uses.
 * - convenience: pass any Float32Arrays. When any operand is outside the wasm memory, all
 *   operands are copied into a private scratch instance (its own memory, made on first use),
 *   the product runs there and C is copied back. Correct, but it costs the copies.
 *
 * THE GROWTH RULE. This memory grows only inside `alloc()` and `reserve()`, never inside a
 * kernel call. Growing the memory DETACHES every Float32Array view into it
 * (length 0 afterwards). So: `reserve()` the total up front (or allocate everything first),
 * then take and keep views; if memory may have grown since, rebuild a view with
 * `floats(byteOffset, length)` from the offsets you recorded. A kernel given a detached view
 * throws a RangeError (it is too short).
 *
 * @example Convenience and zero-copy calls
 * ```ts
 * import assert from "node:assert/strict";
 * import { createWasmKernels } from "./wasm.ts";
 * const k = createWasmKernels();
 * // convenience: plain arrays, copied in and out
 * const c = new Float32Array(4);
 * k.matmulAB(c, new Float32Array([1, 2, 3, 4]), new Float32Array([1, 1, 0, 1]), 2, 2, 2);
 * assert.deepEqual([...c], [1, 3, 3, 7]);
 * // zero-copy: buffers in the wasm memory
 * const x = k.alloc(2), w = k.alloc(4), y = k.alloc(2);
 * x.set([1, 2]);
 * w.set([3, 4, 5, 6]);
 * k.matmulABt(y, x, w, null, 1, 2, 2);
 * assert.deepEqual([...y], [11, 17]);
 * ```
 *
 * @module
 */

import { checkMatmulArgs, type MatmulKernels } from "./matmul_ref.ts";
import { RELAXED_WASM_BASE64, SIMD_WASM_BASE64 } from "./wasm_bytes.ts";

/** Which compiled module runs. */
export type WasmVariant = "relaxed-simd" | "simd";

/** Options of {@link createWasmKernels}. */
export interface WasmKernelOptions {
  /** Force a variant; default: "relaxed-simd" when the runtime validates it, else "simd". */
  variant?: WasmVariant;
  /** Bring your own memory (not a shared one: the modules import a plain memory). */
  memory?: WebAssembly.Memory;
  /** Pages (64 KiB) of a new memory. Default: enough for the workspace plus 1 MiB. */
  initialPages?: number;
  /** Maximum pages of a new memory. Default 65536 (4 GiB, the wasm32 limit). */
  maximumPages?: number;
  /** First byte of this instance's arena. Default: the module's heap base. */
  base?: number;
  /** End (exclusive byte) of this instance's arena. Default: 4 GiB. */
  limit?: number;
}

/** adaLN's modulation shape in the module's calls: `K` chunks of `C` per row of `mod`, `B` sequences of `T`. */
type Mod = [K: number, B: number, T: number, C: number];

/**
 * The element-wise and row ops of `asm/ops.as`, as the module exports them: every pointer is a
 * byte address in the kernels' memory (0 for an absent optional operand: `mask`, `wpe`), every
 * count an element count. No checks: the caller (the wasm backend of `src/nn/backend.ts`) checks
 * that each operand is in the memory and long enough. Each op mirrors a TypeScript reference of
 * `src/nn/` or `src/optim/adamw.ts`; see `asm/ops.as` for which and how closely.
 */
export interface WasmOps {
  /** `layernormForward` of `src/nn/layernorm.ts`. */
  layernormForward(
    out: number,
    mean: number,
    rstd: number,
    inp: number,
    w: number,
    b: number,
    N: number,
    C: number,
  ): void;
  /** `layernormBackward` (ADDS); `ws` is 16 C bytes of scratch (the kernels' {@linkcode WasmKernels.scratch}). */
  layernormBackward(
    dinp: number,
    dw: number,
    db: number,
    dout: number,
    inp: number,
    w: number,
    mean: number,
    rstd: number,
    N: number,
    C: number,
    ws: number,
  ): void;
  /** `out = a + b` (`residualForward`). */
  addForward(out: number, a: number, b: number, n: number): void;
  /** `out = a * b` (`dropoutForward`). */
  mulForward(out: number, a: number, b: number, n: number): void;
  /** `dinp += (mask ? dout mask : dout) * s` (`scaleBackward`, `dropoutBackward`). */
  mulAddBackward(dinp: number, dout: number, s: number, n: number, mask: number): void;
  /** `reluForward`. */
  reluForward(out: number, inp: number, n: number, mask: number): void;
  /** `reluBackward` (ADDS). */
  reluBackward(dinp: number, dout: number, inp: number, n: number, mask: number): void;
  /**
   * `geluForwardKeepGrad`, with the reference's tables at `tab`, interleaved a cell (64 bytes)
   * each: the value's four coefficients, then the derivative's (see `geluTables`).
   */
  geluForward(out: number, inp: number, n: number, mask: number, tab: number): void;
  /** `embeddingForward` over `n` rows of int32 `ids`, position `r mod T`. */
  embeddingForward(
    out: number,
    ids: number,
    wte: number,
    wpe: number,
    n: number,
    T: number,
    C: number,
  ): void;
  /** `embeddingBackward` (ADDS). */
  embeddingBackward(
    dwte: number,
    dwpe: number,
    dout: number,
    ids: number,
    n: number,
    T: number,
    C: number,
  ): void;
  /** In place, per row of `n`: `s = softmax(scale s)`. */
  softmaxRows(s: number, rows: number, n: number, scale: number): void;
  /** In place, per row: `g = d mask`, `d = scale P (g - sum_j P g)`, P at `s`. */
  softmaxBackwardRows(
    d: number,
    s: number,
    mask: number,
    rows: number,
    n: number,
    scale: number,
  ): void;
  /**
   * The wasm backend's `attentionForward` over a batch: per sequence and head, q, k, v gathered
   * out of `qkv` (into `heads`, or the scratch `q`, `k`, `v` when it is 0), the scores, their
   * softmax into `att`, the mask's product (into `pm`, when `mask` is not 0) and the product with
   * v (through `y`) into `out`.
   */
  attentionForward(
    out: number,
    att: number,
    qkv: number,
    mask: number,
    heads: number,
    B: number,
    T: number,
    C: number,
    NH: number,
    scale: number,
    q: number,
    k: number,
    v: number,
    y: number,
    pm: number,
    ws: number,
  ): void;
  /** Its backward pass, ADDING into `dqkv`; `heads` 0: q, k, v gathered again. */
  attentionBackward(
    dqkv: number,
    dout: number,
    qkv: number,
    att: number,
    mask: number,
    heads: number,
    B: number,
    T: number,
    C: number,
    NH: number,
    scale: number,
    q: number,
    k: number,
    v: number,
    dq: number,
    dk: number,
    dv: number,
    dy: number,
    pm: number,
    d: number,
    ws: number,
  ): void;
  /** `logSumExp` of one row of `n` floats. */
  logSumExpRow(p: number, n: number): number;
  /** `dl += g e^(l - lse)` over one row (`addScaledExp`). */
  addScaledExpRow(dl: number, l: number, n: number, lse: number, g: number): void;
  /** One AdamW update of `n` parameters in float32 (`adamwStep`'s loop, the same bits). */
  adamw(
    p: number,
    g: number,
    m: number,
    v: number,
    n: number,
    beta1: number,
    oneMinusBeta1: number,
    beta2: number,
    oneMinusBeta2: number,
    lr: number,
    bc1: number,
    invBc2Sqrt: number,
    eps: number,
    decay: number,
  ): void;
  /** `modulateForward` (adaLN): `out = inp (1 + mod[sc]) + mod[sh]`, chunks of `K C` rows of `mod`. */
  modulateForward(out: number, inp: number, mod: number, sh: number, sc: number, ...s: Mod): void;
  /** `modulateBackward` (ADDS into `dinp` and `dmod`). */
  modulateBackward(
    dinp: number,
    dmod: number,
    dout: number,
    inp: number,
    mod: number,
    sh: number,
    sc: number,
    ...s: Mod
  ): void;
  /** `gatedResidualForward`: `out = x + mod[g] y`. */
  gatedResidualForward(out: number, x: number, y: number, mod: number, g: number, ...s: Mod): void;
  /** `gatedResidualBackward` (ADDS into `dx` (0: none), `dy`, `dmod`). */
  gatedResidualBackward(
    dx: number,
    dy: number,
    dmod: number,
    dout: number,
    y: number,
    mod: number,
    g: number,
    ...s: Mod
  ): void;
  /** `dropoutMask`'s draws from the four xoshiro128** words at `state` (updated in place). */
  dropoutMask(mask: number, n: number, limit: number, scale: number, state: number): void;
  /**
   * The same draws in four lanes: runs of `n / 4` started by the jump matrix at `jump` (that of
   * `xoshiroJump(n >> 2)`, 512 words), the remainder after them.
   */
  dropoutMaskLanes(
    mask: number,
    n: number,
    limit: number,
    scale: number,
    state: number,
    jump: number,
  ): void;
  /** `db += sum_n dout[n]` over `N` rows of `OC` (a linear layer's bias gradient); `ws`: 8 OC bytes. */
  biasBackward(db: number, dout: number, N: number, OC: number, ws: number): void;
  /** `T` rows of `HS` floats, `dst[t dLD + i] = src[t sLD + i]` (`add` 1: `+=`), leading dimensions in floats. */
  copyRows(
    dst: number,
    dLD: number,
    src: number,
    sLD: number,
    T: number,
    HS: number,
    add: number,
  ): void;
  /** `ropeForward` over `qkv` with the double tables at `cos`, `sin`; `sign` -1: the inverse. */
  ropeForward(
    qkv: number,
    cos: number,
    sin: number,
    B: number,
    T: number,
    C: number,
    NH: number,
    sign: number,
  ): void;
  /** The float32 exp of the softmax rows on one value (for tests of its accuracy). */
  expF32(x: number): number;
}

/** The wasm kernels: the {@link MatmulKernels} signatures plus the arena over the memory. */
export interface WasmKernels extends MatmulKernels {
  /** The module's (imported) memory. */
  readonly memory: WebAssembly.Memory;
  /** Which build runs. */
  readonly variant: WasmVariant;
  /**
   * Allocates `nFloats` zero-filled floats in the wasm memory, 64-byte aligned, and returns a
   * view. May grow the memory, detaching earlier views (see the growth rule
   * in the module doc).
   */
  alloc(nFloats: number): Float32Array;
  /** Grows the memory now so that `nFloats` more floats can be allocated without growth. */
  reserve(nFloats: number): void;
  /** The current top of the arena, to hand back to `release`. */
  mark(): number;
  /** Frees everything allocated since `mark` was taken (stack discipline). */
  release(mark: number): void;
  /** A fresh view of `length` floats at `byteOffset` of the current memory buffer. */
  floats(byteOffset: number, length: number): Float32Array;
  /** True when `arr` is a view into this memory's current buffer (usable without a copy). */
  inMemory(arr: Float32Array | Int32Array): boolean;
  /** The element-wise and row ops, on byte addresses in {@linkcode WasmKernels.memory}. */
  readonly ops: WasmOps;
  /**
   * Byte address of the kernels' own scratch (the matmuls' workspace, {@linkcode
   * WasmKernels.scratchBytes} long): free to an op between kernel calls.
   */
  readonly scratch: number;
  /** Bytes of {@linkcode WasmKernels.scratch}. */
  readonly scratchBytes: number;
}

/** A product export without bias: byte addresses of C, A, B, the shape, accumulate, workspace. */
type ProductExport = (
  c: number,
  a: number,
  b: number,
  M: number,
  K: number,
  N: number,
  acc: number,
  ws: number,
) => void;

/** What the exports of the compiled module look like. */
interface Exports extends WasmOps {
  workspaceBytes(): number;
  heapBase(): number;
  isRelaxed(): number;
  matmulAB: ProductExport;
  /** As {@linkcode ProductExport}, with the bias address (0 for none) after B. */
  matmulABt(
    c: number,
    a: number,
    b: number,
    bias: number,
    M: number,
    K: number,
    N: number,
    acc: number,
    ws: number,
  ): void;
  matmulAtB: ProductExport;
}

const PAGE = 65536;
const ALIGN = 64;
const MAX_BYTES = 65536 * PAGE;

function decode(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const byteCache = new Map<WasmVariant, Uint8Array<ArrayBuffer>>();
const moduleCache = new Map<WasmVariant, WebAssembly.Module>();

function bytesOf(variant: WasmVariant): Uint8Array<ArrayBuffer> {
  let bytes = byteCache.get(variant);
  if (bytes === undefined) {
    bytes = decode(variant === "relaxed-simd" ? RELAXED_WASM_BASE64 : SIMD_WASM_BASE64);
    byteCache.set(variant, bytes);
  }
  return bytes;
}

/**
 * Which builds this runtime accepts, by `WebAssembly.validate` on the embedded modules.
 *
 * @returns `simd` for the SIMD build, `relaxed` for the relaxed-SIMD one
 *
 * @example Deno and Bun run the plain SIMD build
 * ```ts
 * import assert from "node:assert/strict";
 * import { wasmSupport } from "./wasm.ts";
 * assert.equal(wasmSupport().simd, true);
 * ```
 */
export function wasmSupport(): { simd: boolean; relaxed: boolean } {
  if (typeof WebAssembly === "undefined") return { simd: false, relaxed: false };
  return {
    simd: WebAssembly.validate(bytesOf("simd")),
    relaxed: WebAssembly.validate(bytesOf("relaxed-simd")),
  };
}

/** Checks the options and picks the build: the forced one, else relaxed-SIMD where it validates. */
function chooseVariant(options: WasmKernelOptions): WasmVariant {
  const { memory, variant: forced } = options;
  if (
    memory !== undefined && typeof SharedArrayBuffer !== "undefined" &&
    memory.buffer instanceof SharedArrayBuffer
  ) {
    throw new TypeError(
      "Wasm memory: expected a plain WebAssembly.Memory, got a shared one (the kernels import a plain memory)",
    );
  }
  if (forced !== undefined) {
    if (forced !== "simd" && forced !== "relaxed-simd") {
      throw new TypeError(`Wasm variant: expected "simd" or "relaxed-simd", got ${forced}`);
    }
    if (!WebAssembly.validate(bytesOf(forced))) {
      throw new Error(
        `Wasm variant "${forced}": expected this runtime to validate it, got a rejection`,
      );
    }
    return forced;
  }
  if (WebAssembly.validate(bytesOf("relaxed-simd"))) return "relaxed-simd";
  if (WebAssembly.validate(bytesOf("simd"))) return "simd";
  throw new Error(
    "WebAssembly SIMD: expected the runtime to support it, got a rejection of both builds " +
      "(use refKernels from matmul_ref.ts instead)",
  );
}

function compiled(variant: WasmVariant): WebAssembly.Module {
  let mod = moduleCache.get(variant);
  if (mod === undefined) {
    mod = new WebAssembly.Module(bytesOf(variant));
    moduleCache.set(variant, mod);
  }
  return mod;
}

/**
 * Instantiates the wasm kernels synchronously (the module is ~4 KB, compiled once per
 * process and cached). For an async variant, see {@link loadWasmKernels}.
 *
 * @param options variant, memory and arena placement; see {@link WasmKernelOptions}
 * @returns the kernels with their arena
 * @throws Error when the runtime lacks WebAssembly SIMD (fall back to `refKernels`)
 *
 * @example The same numbers as the reference
 * ```ts
 * import assert from "node:assert/strict";
 * import { createWasmKernels } from "./wasm.ts";
 * import { refKernels } from "./matmul_ref.ts";
 * const k = createWasmKernels({ variant: "simd" });
 * const a = new Float32Array([1, 2, 3, 4, 5, 6]); // (2,3)
 * const b = new Float32Array([1, 0, -1, 2, 1, 0]); // (3,2)
 * const got = new Float32Array(4), want = new Float32Array(4);
 * k.matmulAB(got, a, b, 2, 3, 2);
 * refKernels.matmulAB(want, a, b, 2, 3, 2);
 * assert.deepEqual(got, want);
 * ```
 */
export function createWasmKernels(options: WasmKernelOptions = {}): WasmKernels {
  const variant = chooseVariant(options);
  return buildKernels(compiled(variant), variant, options);
}

/**
 * Instantiates the wasm kernels with async compilation (for browsers' main thread, where
 * large synchronous compiles are refused). Same result as {@link createWasmKernels}.
 *
 * @param options variant, memory and arena placement; see {@link WasmKernelOptions}
 * @returns the kernels with their arena
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadWasmKernels } from "./wasm.ts";
 * const k = await loadWasmKernels();
 * const y = new Float32Array(1);
 * k.matmulABt(y, new Float32Array([2]), new Float32Array([3]), new Float32Array([1]), 1, 1, 1);
 * assert.equal(y[0], 7);
 * ```
 */
export async function loadWasmKernels(options: WasmKernelOptions = {}): Promise<WasmKernels> {
  const variant = chooseVariant(options);
  let mod = moduleCache.get(variant);
  if (mod === undefined) {
    mod = await WebAssembly.compile(bytesOf(variant));
    moduleCache.set(variant, mod);
  }
  return buildKernels(mod, variant, options);
}

function buildKernels(
  mod: WebAssembly.Module,
  variant: WasmVariant,
  options: WasmKernelOptions,
): WasmKernels {
  const maximumPages = options.maximumPages ?? 65536;
  // 3 MiB: the 2.2 MB workspace, the heap base and 1 MiB for the caller.
  const initial = options.initialPages ?? 48;
  const mem = options.memory ??
    new WebAssembly.Memory({ initial, maximum: maximumPages });
  const ex = new WebAssembly.Instance(mod, { env: { memory: mem } }).exports as unknown as Exports;

  const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;
  const base = alignUp(options.base ?? ex.heapBase());
  const limit = options.limit ?? MAX_BYTES;
  if (!(base >= ex.heapBase() && limit > base && limit <= MAX_BYTES)) {
    throw new RangeError(
      `Wasm arena: expected heapBase ${ex.heapBase()} <= base < limit <= ${MAX_BYTES}, ` +
        `got base ${base}, limit ${limit}`,
    );
  }
  let top = base;

  function ensure(end: number): void {
    if (end > limit) {
      throw new RangeError(
        `Wasm arena full: expected at most ${limit - base} bytes in this arena, got a request ` +
          `reaching ${end - base}`,
      );
    }
    const have = mem.buffer.byteLength;
    if (end > have) {
      mem.grow(Math.ceil((end - have) / PAGE));
    }
  }

  function allocBytes(nFloats: number): number {
    if (!Number.isInteger(nFloats) || nFloats < 0) {
      throw new RangeError(`Wasm alloc: expected an integer number of floats >= 0, got ${nFloats}`);
    }
    const ptr = top;
    const end = alignUp(ptr + nFloats * 4);
    ensure(end);
    top = end;
    return ptr;
  }

  const ws = allocBytes(ex.workspaceBytes() / 4);

  function floats(byteOffset: number, length: number): Float32Array {
    return new Float32Array(mem.buffer, byteOffset, length);
  }
  function alloc(nFloats: number): Float32Array {
    const ptr = allocBytes(nFloats);
    const view = floats(ptr, nFloats);
    view.fill(0);
    return view;
  }
  const heapBase = ex.heapBase();
  function inMemory(arr: Float32Array | Int32Array): boolean {
    // Offsets below the heap base are never arena memory (and 0 means "no bias" to the kernel).
    // Views from before a growth hold the old, detached buffer, so they never count.
    return arr.byteOffset >= heapBase && arr.buffer === mem.buffer;
  }

  /** Whether every operand (a null bias counts) is in this memory. */
  const allIn = (c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null) =>
    inMemory(c) && inMemory(a) && inMemory(b) && (bias === null || inMemory(bias));

  // Convenience calls copy through a private scratch instance with its own memory, so this
  // memory never grows behind the caller's back (growth would detach the caller's views).
  let scratch: WasmKernels | undefined;
  function viaScratch(
    ops: [Float32Array | null, number][],
    run: (s: WasmKernels, copies: (Float32Array | null)[]) => void,
  ): void {
    if (scratch === undefined) {
      scratch = buildKernels(compiled(variant), variant, {});
    }
    const s = scratch;
    const m = s.mark();
    try {
      s.reserve(ops.reduce((t, [x, n]) => t + (x === null ? 0 : n + ALIGN / 4), 0));
      const copies = ops.map(([x, n]) => {
        if (x === null) return null;
        const v = s.alloc(n);
        v.set(x.length === n ? x : x.subarray(0, n));
        return v;
      });
      run(s, copies);
      const [c, n] = ops[0];
      c!.set(copies[0]!.subarray(0, n));
    } finally {
      s.release(m);
    }
  }

  const kernels: WasmKernels = {
    memory: mem,
    variant,
    alloc,
    reserve(nFloats: number): void {
      if (!Number.isInteger(nFloats) || nFloats < 0) {
        throw new RangeError(`Wasm reserve: expected an integer >= 0, got ${nFloats}`);
      }
      ensure(alignUp(top + nFloats * 4));
    },
    mark: () => top,
    release(m: number): void {
      if (!(Number.isInteger(m) && m >= base && m <= top && m % ALIGN === 0)) {
        throw new RangeError(`Wasm release: expected a mark in [${base}, ${top}], got ${m}`);
      }
      top = m;
    },
    floats,
    inMemory,
    ops: ex,
    scratch: ws,
    scratchBytes: ex.workspaceBytes(),
    matmulAB(c, a, b, M, K, N, accumulate = false) {
      checkMatmulArgs("AB", c, a, b, null, M, K, N);
      if (allIn(c, a, b, null)) {
        ex.matmulAB(c.byteOffset, a.byteOffset, b.byteOffset, M, K, N, accumulate ? 1 : 0, ws);
      } else {
        viaScratch([[c, M * N], [a, M * K], [b, K * N]], (s, [c2, a2, b2]) => {
          s.matmulAB(c2!, a2!, b2!, M, K, N, accumulate);
        });
      }
    },
    matmulABt(c, a, b, bias, M, K, N, accumulate = false) {
      checkMatmulArgs("ABt", c, a, b, bias, M, K, N);
      if (allIn(c, a, b, bias)) {
        const pbias = bias === null ? 0 : bias.byteOffset;
        ex.matmulABt(
          c.byteOffset,
          a.byteOffset,
          b.byteOffset,
          pbias,
          M,
          K,
          N,
          accumulate ? 1 : 0,
          ws,
        );
      } else {
        viaScratch([[c, M * N], [a, M * K], [b, K * N], [bias, N]], (s, [c2, a2, b2, bias2]) => {
          s.matmulABt(c2!, a2!, b2!, bias2, M, K, N, accumulate);
        });
      }
    },
    matmulAtB(c, a, b, M, K, N, accumulate = false) {
      checkMatmulArgs("AtB", c, a, b, null, M, K, N);
      if (allIn(c, a, b, null)) {
        ex.matmulAtB(c.byteOffset, a.byteOffset, b.byteOffset, M, K, N, accumulate ? 1 : 0, ws);
      } else {
        viaScratch([[c, M * N], [a, M * K], [b, K * N]], (s, [c2, a2, b2]) => {
          s.matmulAtB(c2!, a2!, b2!, M, K, N, accumulate);
        });
      }
    },
  };
  return kernels;
}
