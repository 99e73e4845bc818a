/**
 * Compute backends of the model's ops: the two heavy ones, linear and attention, and the
 * element-wise and row ops around them (RoPE, layer norm, GELU, ReLU, dropout, residual, adaLN
 * modulation and gated residual, embedding gather/scatter, the cross-entropy rows, a gradient
 * added into another). The plain TypeScript reference (`ts`, the functions
 * of `linear.ts`, `attention.ts`, `layernorm.ts`, ...) and the WebAssembly SIMD kernels of
 * `src/kernels/wasm.ts` (`wasm`: the matmuls of `asm/matmul.as`, the other ops of `asm/ops.as`;
 * `blas` is the same with its matmuls on the system's BLAS). Both compute the same math; the
 * model picks one per workspace.
 *
 * Dimensions: `N` rows (B*T), `IC`/`OC` input/output channels, `B` batch, `T` sequence,
 * `C` channels, `NH` heads, `HS = C / NH` head size.
 *
 * The wasm backend runs zero-copy when every buffer lives in its kernels' memory (the model's
 * workspace puts activations, a parameter copy and a gradient accumulator there); any other
 * buffer goes through the kernels' copying convenience path, which is correct but slower. An
 * element-wise or row op given a buffer outside the kernels' memory (or too short for the shape)
 * runs its TypeScript reference instead, with the same result up to rounding.
 *
 * - linear: forward `y = x W^T + b` is one `matmulABt` with bias; backward `dX += dY W` is
 *   `matmulAB` and `dW += dY^T X` is `matmulAtB`, both accumulating; `db` sums columns. No
 *   materialised transposes.
 * - attention, per (batch, head): q, k, v heads are gathered into contiguous `(T,HS)` scratch,
 *   `S = q k^T` (`matmulABt`) goes straight into the saved probabilities, softmax runs in place
 *   over each row, `y = P v` (`matmulAB`); backward `dP = dy v^T`, `dv = P^T dy`,
 *   `dS = P * (dP - rowsum(P * dP))`, `dq = dS k`, `dk = dS^T q`, each one matmul.
 *
 * @module
 */

import type { WasmKernels } from "../kernels/wasm.ts";
import { wasmSupport } from "../kernels/wasm.ts";
import { type BlasOptions, loadBlas } from "../kernels/blas.ts";
import { linearBackward, linearForward } from "./linear.ts";
import { attentionBackward, attentionForward, ropeBackward, ropeForward } from "./attention.ts";
import { expScaledInPlace } from "./fast_exp.ts";
import { layernormBackward, layernormForward } from "./layernorm.ts";
import {
  geluForwardKeepGrad,
  geluTables,
  reluBackward,
  reluForward,
  scaleBackward,
} from "./activations.ts";
import { dropoutBackward, dropoutForward, dropoutMask, xoshiroJump } from "./dropout.ts";
import { accumulate, residualForward } from "./residual.ts";
import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
} from "./adaln.ts";
import { embeddingBackward, embeddingForward } from "./embedding.ts";
import {
  crossEntropyBackward,
  crossEntropyForward,
  type crossEntropyRowBackward,
} from "./cross_entropy.ts";

/**
 * Which implementation runs the linear and attention ops: `"blas"` (the wasm backend with its
 * matmuls on the system's BLAS through FFI, Deno and Bun), `"wasm"` or `"ts"`.
 */
export type BackendName = "blas" | "wasm" | "ts";

/**
 * A backend name, `"webgpu"` (the whole model on the GPU: `train()` and the CLI's `train`,
 * resolved by `resolveAnyBackend` of `src/kernels/webgpu/select.ts`), or `"auto"`: see
 * {@linkcode resolveBackend}.
 */
export type BackendChoice = BackendName | "webgpu" | "auto";

/** The backend names accepted by `--backend` and the `backend` options. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "webgpu", "blas", "wasm", "ts"];

/**
 * The heavy ops, with the signatures of `linear.ts` and `attention.ts`. The attention pair takes
 * one more, optional buffer `heads` `(B,NH,3,T,HS)`: where the wasm forward pass keeps the q, k, v
 * heads it gathers, so that the backward pass of the same batch reads them instead of gathering
 * again (pass the same buffer to both, or `null`; the ts backend ignores it). The linear pair's
 * optional last argument (the matmul kernels) is the backend's own: callers leave it out.
 */
export interface NNBackend extends ElementOps {
  /** `"blas"`, `"wasm"` or `"ts"`. */
  readonly name: BackendName;
  /** See {@linkcode linearForward}. */
  linearForward: typeof linearForward;
  /** See {@linkcode linearBackward}. ADDS into `dinp`, `dweight`, `dbias`. */
  linearBackward: typeof linearBackward;
  /** See {@linkcode attentionForward}; then the optional `heads` buffer. */
  attentionForward(
    ...args: [...Parameters<typeof attentionForward>, heads?: Float32Array | null]
  ): void;
  /** See {@linkcode attentionBackward}; then the optional `heads` buffer. ADDS into `dqkv`. */
  attentionBackward(
    ...args: [...Parameters<typeof attentionBackward>, heads?: Float32Array | null]
  ): void;
}

/**
 * The element-wise and row ops of a backend (adaLN's modulation and gated residual among them),
 * with the signatures (and the ADD-into contracts) of their TypeScript references in `src/nn/`.
 */
export interface ElementOps {
  /** See {@linkcode ropeForward}. */
  ropeForward: typeof ropeForward;
  /** See {@linkcode ropeBackward}. */
  ropeBackward: typeof ropeBackward;
  /** See {@linkcode layernormForward}. */
  layernormForward: typeof layernormForward;
  /** See {@linkcode layernormBackward}. ADDS. */
  layernormBackward: typeof layernormBackward;
  /** See {@linkcode geluForwardKeepGrad}. */
  geluForwardKeepGrad: typeof geluForwardKeepGrad;
  /** See {@linkcode scaleBackward}. ADDS. */
  scaleBackward: typeof scaleBackward;
  /** See {@linkcode reluForward}. */
  reluForward: typeof reluForward;
  /** See {@linkcode reluBackward}. ADDS. */
  reluBackward: typeof reluBackward;
  /** See {@linkcode dropoutMask}. */
  dropoutMask: typeof dropoutMask;
  /** See {@linkcode dropoutForward}. */
  dropoutForward: typeof dropoutForward;
  /** See {@linkcode dropoutBackward}. ADDS. */
  dropoutBackward: typeof dropoutBackward;
  /** See {@linkcode residualForward}. */
  residualForward: typeof residualForward;
  /** See {@linkcode accumulate}. ADDS. */
  accumulate: typeof accumulate;
  /** See {@linkcode modulateForward}. */
  modulateForward: typeof modulateForward;
  /** See {@linkcode modulateBackward}. ADDS. */
  modulateBackward: typeof modulateBackward;
  /** See {@linkcode gatedResidualForward}. */
  gatedResidualForward: typeof gatedResidualForward;
  /** See {@linkcode gatedResidualBackward}. ADDS. */
  gatedResidualBackward: typeof gatedResidualBackward;
  /** See {@linkcode embeddingForward}. */
  embeddingForward: typeof embeddingForward;
  /** See {@linkcode embeddingBackward}. ADDS. */
  embeddingBackward: typeof embeddingBackward;
  /** See {@linkcode crossEntropyForward}. */
  crossEntropyForward: typeof crossEntropyForward;
  /** See {@linkcode crossEntropyBackward}. ADDS. */
  crossEntropyBackward: typeof crossEntropyBackward;
}

/** The TypeScript references of the element-wise and row ops. */
const tsElementOps: ElementOps = {
  ropeForward,
  ropeBackward,
  layernormForward,
  layernormBackward,
  geluForwardKeepGrad,
  scaleBackward,
  reluForward,
  reluBackward,
  dropoutMask,
  dropoutForward,
  dropoutBackward,
  residualForward,
  accumulate,
  modulateForward,
  modulateBackward,
  gatedResidualForward,
  gatedResidualBackward,
  embeddingForward,
  embeddingBackward,
  crossEntropyForward,
  crossEntropyBackward,
};

/** The plain TypeScript reference: the functions of `linear.ts`, `attention.ts` and the rest. */
export const tsBackend: NNBackend = Object.freeze({
  name: "ts" as const,
  linearForward,
  linearBackward,
  attentionForward,
  attentionBackward,
  ...tsElementOps,
});

let supported: boolean | undefined;

/**
 * The default backend of this runtime: `"wasm"` when WebAssembly SIMD validates, else `"ts"`.
 *
 * @returns The backend name.
 *
 * @example Deno runs WebAssembly SIMD
 * ```ts
 * import { defaultBackend } from "./backend.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultBackend(), "wasm");
 * ```
 */
export function defaultBackend(): BackendName {
  if (supported === undefined) {
    try {
      const s = wasmSupport();
      supported = s.simd || s.relaxed;
    } catch {
      supported = false;
    }
  }
  return supported ? "wasm" : "ts";
}

/** What {@linkcode resolveBackend} chose, and why when it is not what was asked. */
export interface ResolvedBackend {
  /** The backend to run. */
  backend: BackendName;
  /** One line on the choice: the library used, or why `auto` fell back. */
  note: string;
}

/**
 * Turns a choice into a backend that runs here. `"auto"`: `"blas"` where WebAssembly SIMD
 * validates, FFI is allowed and the system's BLAS loads and passes its self-check, else the
 * {@linkcode defaultBackend}. An explicit
 * `"blas"` that cannot load is an error (say `"auto"` to fall back).
 *
 * @param choice `"auto"`, `"blas"`, `"wasm"` or `"ts"`.
 * @param options Where the BLAS library is (`path`).
 * @returns The backend and a one-line note.
 * @throws RangeError for an unknown name; Error for `"blas"` without a usable library, and for
 *   `"webgpu"` (resolved asynchronously by `resolveAnyBackend`, which `train()` uses).
 *
 * @example Explicit names pass through
 * ```ts
 * import { resolveBackend } from "./backend.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(resolveBackend("ts").backend, "ts");
 * assert.throws(() => resolveBackend("gpu" as never), RangeError);
 * ```
 */
export function resolveBackend(choice: BackendChoice, options: BlasOptions = {}): ResolvedBackend {
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new RangeError(
      `Unknown backend: expected one of ${BACKEND_CHOICES.join(", ")}, got ${
        JSON.stringify(choice)
      }`,
    );
  }
  if (choice === "webgpu") {
    throw new Error(
      "The webgpu backend is chosen asynchronously (it needs a device): expected train() or " +
        `resolveAnyBackend("webgpu"), got resolveBackend("webgpu")`,
    );
  }
  if (choice === "wasm" || choice === "ts") return { backend: choice, note: choice };
  if (defaultBackend() === "ts") {
    // the blas backend is the wasm kernels with their matmuls on the library: no SIMD, no blas
    const reason = "the wasm kernels it runs on need WebAssembly SIMD, which this runtime lacks";
    if (choice === "blas") {
      throw new Error(`BLAS backend unavailable: expected WebAssembly SIMD, got ${reason}`);
    }
    return { backend: "ts", note: `ts (no BLAS: ${reason})` };
  }
  const lib = loadBlas(options);
  if (lib.ok) {
    return { backend: "blas", note: `blas: ${lib.blas.description}; ${lib.blas.threads}` };
  }
  if (choice === "blas") {
    throw new Error(
      `BLAS backend unavailable: expected a working CBLAS library, got ${lib.reason}`,
    );
  }
  const fallback = defaultBackend();
  return { backend: fallback, note: `${fallback} (no BLAS: ${lib.reason})` };
}

/**
 * Floats the wasm backend allocates in its kernels' memory (see {@linkcode wasmBackend}): the
 * attention scratch `8 T HS + 2 T T`; with `rows > 0` also the GELU tables (and 16 floats to
 * align them to 64 bytes), `rows` token ids,
 * a generator's state and its jump matrix (512 words, for the dropout masks' four lanes), and
 * the RoPE tables (`T HS / 2` doubles each).
 *
 * @param T Longest sequence.
 * @param HS Head size.
 * @param rows Token ids its embedding copies in at once (the workspace's `B T`), or 0.
 * @returns Buffer lengths in floats, one per allocation.
 */
export function wasmBackendBuffers(T: number, HS: number, rows: number): number[] {
  const TH = T * HS;
  const attention = [...Array(8).fill(TH), T * T, T * T];
  const elementOps = [4 * geluTables().value.length + 16, rows, 4, 512, TH, TH];
  return rows > 0 ? [...attention, ...elementOps] : attention;
}

/**
 * The wasm backend over `k`. Allocates its scratch in `k`'s memory NOW (so the caller can
 * reserve the memory beforehand and the growth rule holds): the buffers of
 * {@linkcode wasmBackendBuffers}, as the model's `workspaceBytes` counts them.
 *
 * Every op runs in the module where its buffers are in `k`'s memory and long enough for the
 * shape (the matmuls otherwise copy through `k`'s scratch instance, the other ops run their
 * TypeScript reference). The embedding copies its ids into the module first, at most `rows` of
 * them (more: the TypeScript reference). With `rows` 0 there is no scratch for the embedding, the
 * GELU tables, the dropout masks or RoPE, and those run their TypeScript references.
 *
 * @param k The wasm kernels (their memory holds the workspace).
 * @param T Longest sequence.
 * @param HS Head size.
 * @param name What to call it: `"blas"` when `k`'s matmuls run on a BLAS (see `withBlas`).
 * @param rows Token ids the embedding takes in one call (default 0: embedding, GELU, dropout
 *   masks and RoPE in TypeScript).
 * @returns The backend.
 */
export function wasmBackend(
  k: WasmKernels,
  T: number,
  HS: number,
  name: "wasm" | "blas" = "wasm",
  rows = 0,
): NNBackend {
  const TH = T * HS;
  const qh = k.alloc(TH), kh = k.alloc(TH), vh = k.alloc(TH), yh = k.alloc(TH); // (T,HS)
  const dqh = k.alloc(TH), dkh = k.alloc(TH), dvh = k.alloc(TH), dyh = k.alloc(TH); // (T,HS)
  const pm = k.alloc(T * T); // (T,T) probabilities times the dropout mask
  const dp = k.alloc(T * T); // (T,T) gradient of the probabilities, then of the scores
  const el = wasmElementOps(k, rows, T * HS / 2);
  // The views above are taken once; a kernel call on a detached view throws, so a memory
  // that grew behind our back fails loudly instead of computing on stale buffers.

  /** {@linkcode copyRowsTs} in the module where both buffers are in `k`'s memory. */
  const copyRows: typeof copyRowsTs = (dst, dOff, dLD, src, sOff, sLD, T, HS, add = false) => {
    const inModule = T > 0 && dOff + (T - 1) * dLD + HS <= dst.length &&
      sOff + (T - 1) * sLD + HS <= src.length && k.inMemory(dst) && k.inMemory(src);
    if (inModule) {
      k.ops.copyRows(
        dst.byteOffset + 4 * dOff,
        dLD,
        src.byteOffset + 4 * sOff,
        sLD,
        T,
        HS,
        add ? 1 : 0,
      );
    } else copyRowsTs(dst, dOff, dLD, src, sOff, sLD, T, HS, add);
  };

  /** The q, k, v heads `(T,HS)` of (b, h): slices of `heads` when given, else the scratch. */
  function headsOf(
    heads: Float32Array | null,
    b: number,
    h: number,
    NH: number,
    TH: number,
  ): Float32Array[] {
    if (heads === null) return [qh.subarray(0, TH), kh.subarray(0, TH), vh.subarray(0, TH)];
    const o = (b * NH + h) * 3 * TH;
    return [0, 1, 2].map((part) => heads.subarray(o + part * TH, o + (part + 1) * TH));
  }

  /** Copies the q, k, v heads `h` of sequence `b` of `qkv` `(B,T,3C)` into `dst`. */
  function gatherHeads(
    dst: Float32Array[],
    qkv: Float32Array,
    b: number,
    h: number,
    T: number,
    C: number,
    HS: number,
  ): void {
    for (let part = 0; part < 3; part++) {
      copyRows(dst[part], 0, HS, qkv, b * T * 3 * C + part * C + h * HS, 3 * C, T, HS);
    }
  }

  /**
   * Whether a whole attention call runs in the module (its `attentionForward` or
   * `attentionBackward`, the per-head loop below in one call): only when the module's own
   * matmuls run (`name` wasm: on blas the heads' products go to the library), the shape fits the
   * scratch, and every buffer is in `k`'s memory and long enough.
   */
  function wholeInModule(
    B: number,
    T: number,
    C: number,
    NH: number,
    sized: [Float32Array, number][],
    mask: Float32Array | null,
    heads: Float32Array | null,
  ): boolean {
    const HS = C / NH, TT = T * T;
    if (name !== "wasm" || !(Number.isInteger(HS) && T * HS <= qh.length && TT <= pm.length)) {
      return false;
    }
    const all: [Float32Array, number][] = [...sized];
    if (mask !== null) all.push([mask, B * NH * TT]);
    if (heads !== null) all.push([heads, 3 * B * T * C]);
    return all.every(([x, n]) => x.length >= n && k.inMemory(x));
  }

  /** `att * mask` for one (T,T) tile at `a0` (the scratch tile), or `att` itself without a mask. */
  function masked(
    s: Float32Array,
    mask: Float32Array | null,
    a0: number,
    TT: number,
  ): Float32Array {
    if (mask === null) return s;
    const p = pm.subarray(0, TT);
    el.dropoutForward(p, s, mask.subarray(a0, a0 + TT), TT);
    return p;
  }

  return {
    name,
    ...el,
    linearForward: (out, inp, weight, bias, N, IC, OC) =>
      linearForward(out, inp, weight, bias, N, IC, OC, k),
    linearBackward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC) {
      // the bias gradient's column sums in the module where its buffers are there
      const inModule = dbias !== null && 8 * OC <= k.scratchBytes && dbias.length >= OC &&
        k.inMemory(dbias) && dout.length >= N * OC && k.inMemory(dout);
      linearBackward(dinp, dweight, inModule ? null : dbias, dout, inp, weight, N, IC, OC, k);
      if (inModule) k.ops.biasBackward(dbias!.byteOffset, dout.byteOffset, N, OC, k.scratch);
    },
    attentionForward(out, att, qkv, mask, B, T, C, NH, heads = null) {
      const HS = C / NH;
      const scale = 1 / Math.sqrt(HS);
      const TT = T * T;
      const TH = T * HS;
      const keep = heads != null && heads.length >= 3 * B * NH * TH ? heads : null;
      if (
        wholeInModule(
          B,
          T,
          C,
          NH,
          [[out, B * T * C], [att, B * NH * TT], [qkv, 3 * B * T * C]],
          mask,
          keep,
        )
      ) {
        k.ops.attentionForward(
          out.byteOffset,
          att.byteOffset,
          qkv.byteOffset,
          mask?.byteOffset ?? 0,
          keep?.byteOffset ?? 0,
          B,
          T,
          C,
          NH,
          scale,
          qh.byteOffset,
          kh.byteOffset,
          vh.byteOffset,
          yh.byteOffset,
          pm.byteOffset,
          k.scratch,
        );
        return;
      }
      const y = yh.subarray(0, TH);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          const [q, kk, v] = headsOf(keep, b, h, NH, TH);
          gatherHeads([q, kk, v], qkv, b, h, T, C, HS);
          const a0 = (b * NH + h) * TT;
          const s = att.subarray(a0, a0 + TT); // (T,T)
          // att = softmax(scale * q k^T) per row
          k.matmulABt(s, q, kk, null, T, HS, T, false);
          if (k.inMemory(s)) k.ops.softmaxRows(s.byteOffset, T, T, scale);
          else softmaxRowsTs(s, T, scale);
          // y = (att * mask) v
          k.matmulAB(y, masked(s, mask, a0, TT), v, T, T, HS, false);
          copyRows(out, b * T * C + h * HS, C, y, 0, HS, T, HS);
        }
      }
    },
    attentionBackward(dqkv, dout, qkv, att, mask, _scratch, B, T, C, NH, heads = null) {
      const HS = C / NH;
      const scale = 1 / Math.sqrt(HS);
      const TT = T * T, TH = T * HS;
      const kept = heads != null && heads.length >= 3 * B * NH * TH ? heads : null;
      const sizes: [Float32Array, number][] = [[dqkv, 3 * B * T * C], [dout, B * T * C], [
        qkv,
        3 * B * T * C,
      ], [att, B * NH * TT]];
      if (wholeInModule(B, T, C, NH, sizes, mask, kept)) {
        k.ops.attentionBackward(
          dqkv.byteOffset,
          dout.byteOffset,
          qkv.byteOffset,
          att.byteOffset,
          mask?.byteOffset ?? 0,
          kept?.byteOffset ?? 0,
          B,
          T,
          C,
          NH,
          scale,
          qh.byteOffset,
          kh.byteOffset,
          vh.byteOffset,
          dqh.byteOffset,
          dkh.byteOffset,
          dvh.byteOffset,
          dyh.byteOffset,
          pm.byteOffset,
          dp.byteOffset,
          k.scratch,
        );
        return;
      }
      const dq = dqh.subarray(0, TH), dk = dkh.subarray(0, TH), dv = dvh.subarray(0, TH);
      const dy = dyh.subarray(0, TH);
      const d = dp.subarray(0, TT);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          // the heads the forward pass gathered (same batch, same qkv), or gathered again
          const [q, kk, v] = headsOf(kept, b, h, NH, TH);
          if (kept === null) gatherHeads([q, kk, v], qkv, b, h, T, C, HS);
          copyRows(dy, 0, HS, dout, b * T * C + h * HS, C, T, HS);
          const a0 = (b * NH + h) * TT;
          const s = att.subarray(a0, a0 + TT); // (T,T) probabilities
          const pv = masked(s, mask, a0, TT);
          // y = (att * mask) v:  dv = (att * mask)^T dy,  datt = (dy v^T) * mask
          k.matmulAtB(dv, pv, dy, T, T, HS, false);
          k.matmulABt(d, dy, v, null, T, HS, T, false);
          // att = softmax(scale * q k^T):  ds = scale * att * (datt - sum_j att * datt)
          const mt = mask ? mask.subarray(a0, a0 + TT) : null;
          if (k.inMemory(s) && (mt === null || k.inMemory(mt))) {
            k.ops.softmaxBackwardRows(d.byteOffset, s.byteOffset, mt?.byteOffset ?? 0, T, T, scale);
          } else softmaxBackwardRowsTs(d, s, mt, T, scale);
          // dq = ds k,  dk = ds^T q
          k.matmulAB(dq, d, kk, T, T, HS, false);
          k.matmulAtB(dk, d, q, T, T, HS, false);
          for (const [part, g] of [dq, dk, dv].entries()) {
            copyRows(dqkv, b * T * 3 * C + part * C + h * HS, 3 * C, g, 0, HS, T, HS, true);
          }
        }
      }
    },
  };
}

/**
 * Copies `T` rows of `HS` floats, `dst[dOff + t dLD + i] = src[sOff + t sLD + i]`, or ADDS them
 * with `add`: a head between a packed `(B,T,LD)` buffer and a contiguous `(T,HS)` one.
 */
function copyRowsTs(
  dst: Float32Array,
  dOff: number,
  dLD: number,
  src: Float32Array,
  sOff: number,
  sLD: number,
  T: number,
  HS: number,
  add = false,
): void {
  for (let t = 0, d = dOff, s = sOff; t < T; t++, d += dLD, s += sLD) {
    if (add) { for (let i = 0; i < HS; i++) dst[d + i] += src[s + i]; }
    else for (let i = 0; i < HS; i++) dst[d + i] = src[s + i];
  }
}

/** In place over the `(T,T)` tile `s`: `s = softmax(scale s)` per row (the TypeScript rows). */
function softmaxRowsTs(s: Float32Array, T: number, scale: number): void {
  for (let t = 0; t < T; t++) {
    const r = t * T;
    let max = -Infinity;
    for (let j = 0; j < T; j++) if (s[r + j] > max) max = s[r + j];
    const inv = 1 / expScaledInPlace(s, r, T, scale, max * scale);
    for (let j = 0; j < T; j++) s[r + j] *= inv;
  }
}

/**
 * In place over the `(T,T)` tile `d`, the gradient of the masked probabilities: `g = d * mask`,
 * then `d = scale P (g - sum_j P g)` per row, `P` the tile `s` (the TypeScript rows).
 */
function softmaxBackwardRowsTs(
  d: Float32Array,
  s: Float32Array,
  mask: Float32Array | null,
  T: number,
  scale: number,
): void {
  for (let t = 0; t < T; t++) {
    const r = t * T;
    let dot = 0;
    if (mask) {
      for (let j = 0; j < T; j++) {
        const g = d[r + j] * mask[r + j];
        d[r + j] = g;
        dot += s[r + j] * g;
      }
    } else {
      for (let j = 0; j < T; j++) dot += s[r + j] * d[r + j];
    }
    for (let j = 0; j < T; j++) d[r + j] = s[r + j] * (d[r + j] - dot) * scale;
  }
}

/** Draws from which a wasm dropout mask runs in four lanes (below, its three jumps cost more). */
const LANE_DRAWS = 256;

/**
 * The element-wise and row ops on `k`'s module (`asm/ops.as`), each falling back to its
 * TypeScript reference when a buffer is outside `k`'s memory or shorter than the shape (or, for
 * the embedding, when there are more than `rows` ids or one is out of the table's range).
 * Allocates the GELU tables and `rows` token ids in `k`'s memory now.
 */
function wasmElementOps(k: WasmKernels, rows: number, ropeSize: number): ElementOps {
  const ops = k.ops;
  // the GELU tables, the ids and a generator's four words (for the dropout masks), with rows > 0
  const { value, derivative } = geluTables();
  let tab = 0;
  let ids: Int32Array = new Int32Array(0), state: Uint32Array = new Uint32Array(0);
  // the jump matrix of the draws per lane loaded there (-1: none yet)
  let jump: Uint32Array = new Uint32Array(0), jumpDraws = -1;
  let ropeCos: Float64Array = new Float64Array(0), ropeSin: Float64Array = new Float64Array(0);
  if (rows > 0) {
    // interleaved per cell, a cache line each: the value's four coefficients, the derivative's
    const tabFloats = k.alloc(2 * (value.length + derivative.length) + 16);
    tab = (tabFloats.byteOffset + 63) & ~63;
    const cells = new Float64Array(tabFloats.buffer, tab, value.length + derivative.length);
    for (let c = 0; c < value.length; c += 4) {
      cells.set(value.subarray(c, c + 4), 2 * c);
      cells.set(derivative.subarray(c, c + 4), 2 * c + 4);
    }
    const idFloats = k.alloc(rows);
    ids = new Int32Array(idFloats.buffer, idFloats.byteOffset, rows);
    const stateFloats = k.alloc(4);
    state = new Uint32Array(stateFloats.buffer, stateFloats.byteOffset, 4);
    const jumpFloats = k.alloc(512);
    jump = new Uint32Array(jumpFloats.buffer, jumpFloats.byteOffset, 512);
    const c = k.alloc(2 * ropeSize), sn = k.alloc(2 * ropeSize);
    ropeCos = new Float64Array(c.buffer, c.byteOffset, ropeSize);
    ropeSin = new Float64Array(sn.buffer, sn.byteOffset, ropeSize);
  }
  /** RoPE in the module: the tables copied in (T HS/2 values each), the rotation in place. */
  const rope = (inverse: boolean): typeof ropeForward => (qkv, cos, sin, B, T, C, NH) => {
    const n = T * C / NH / 2;
    if (
      n <= ropeSize && cos.length >= n && sin.length >= n && fits(qkv, B * T * 3 * C) &&
      (C / NH) % 2 === 0
    ) {
      ropeCos.set(cos.subarray(0, n));
      ropeSin.set(sin.subarray(0, n));
      const sign = inverse ? -1 : 1;
      ops.ropeForward(at(qkv), ropeCos.byteOffset, ropeSin.byteOffset, B, T, C, NH, sign);
    } else (inverse ? ropeBackward : ropeForward)(qkv, cos, sin, B, T, C, NH);
  };
  // accumulate's chunk buffer: the matmuls' scratch, free between kernel calls
  const chunk = Math.min(16384, k.scratchBytes >> 2);
  const sum = k.floats(k.scratch, chunk);
  /** Whether chunks `i` and `j` are among a modulation row's `K` (the module reads no further). */
  const chunks = (K: number, i: number, j: number) =>
    Number.isInteger(i) && Number.isInteger(j) && i >= 0 && j >= 0 && i < K && j < K;
  /** Whether the module may read or write `x` as `n` values: in `k`'s memory, long enough. */
  const fits = (x: Float32Array, n: number) => x.length >= n && k.inMemory(x);
  /** As `fits`, for an optional operand (`null`: absent). */
  const fitsOpt = (x: Float32Array | null, n: number) => x === null || fits(x, n);
  const at = (x: Float32Array | null) => x === null ? 0 : x.byteOffset;
  /** Copies the `n` ids into the module; false when they do not fit or one is not a row of wte. */
  const idsIn = (inp: Int32Array, n: number, wte: Float32Array, C: number) => {
    if (n > rows || inp.length < n || !fits(wte, C)) return false;
    const V = Math.floor(wte.length / C);
    for (let i = 0; i < n; i++) {
      const id = inp[i];
      if (!(id >= 0 && id < V)) return false;
      ids[i] = id;
    }
    return true;
  };
  const lseRow = (logits: Float32Array, o: number, n: number) =>
    ops.logSumExpRow(logits.byteOffset + 4 * o, n);
  const rowBackward: typeof crossEntropyRowBackward = (dl, l, o, n, lse, target, g) => {
    ops.addScaledExpRow(dl.byteOffset + 4 * o, l.byteOffset + 4 * o, n, lse, g);
    dl[o + target] -= g;
  };
  return {
    ropeForward: rope(false),
    ropeBackward: rope(true),
    layernormForward(out, mean, rstd, inp, weight, bias, N, C) {
      const NC = N * C;
      if (
        fits(out, NC) && fits(mean, N) && fits(rstd, N) && fits(inp, NC) && fits(weight, C) &&
        fits(bias, C)
      ) {
        ops.layernormForward(at(out), at(mean), at(rstd), at(inp), at(weight), at(bias), N, C);
      } else layernormForward(out, mean, rstd, inp, weight, bias, N, C);
    },
    layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C) {
      const NC = N * C;
      if (
        16 * C <= k.scratchBytes && fits(dinp, NC) && fits(dweight, C) && fits(dbias, C) &&
        fits(dout, NC) && fits(inp, NC) && fits(weight, C) && fits(mean, N) && fits(rstd, N)
      ) {
        ops.layernormBackward(
          at(dinp),
          at(dweight),
          at(dbias),
          at(dout),
          at(inp),
          at(weight),
          at(mean),
          at(rstd),
          N,
          C,
          k.scratch,
        );
      } else layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
    },
    geluForwardKeepGrad(out, inp, N, mask = null) {
      if (tab !== 0 && fits(out, N) && fits(inp, N) && fitsOpt(mask, N)) {
        ops.geluForward(at(out), at(inp), N, at(mask), tab);
      } else geluForwardKeepGrad(out, inp, N, mask);
    },
    scaleBackward(dinp, dout, dsaved, N, mask = null) {
      if (fits(dinp, N) && fits(dout, N) && fits(dsaved, N) && fitsOpt(mask, N)) {
        ops.mulAddBackward(at(dinp), at(dout), at(dsaved), N, at(mask));
      } else scaleBackward(dinp, dout, dsaved, N, mask);
    },
    reluForward(out, inp, N, mask = null) {
      if (fits(out, N) && fits(inp, N) && fitsOpt(mask, N)) {
        ops.reluForward(at(out), at(inp), N, at(mask));
      } else reluForward(out, inp, N, mask);
    },
    reluBackward(dinp, dout, inp, N, mask = null) {
      if (fits(dinp, N) && fits(dout, N) && fits(inp, N) && fitsOpt(mask, N)) {
        ops.reluBackward(at(dinp), at(dout), at(inp), N, at(mask));
      } else reluBackward(dinp, dout, inp, N, mask);
    },
    dropoutMask(mask, rng, p, N, offset = 0) {
      if (state.length === 4 && fits(mask, offset + N)) {
        state.set(rng.s);
        const m = at(mask) + 4 * offset, limit = p * 4294967296, scale = 1 / (1 - p);
        if (N >= LANE_DRAWS) {
          // four runs of one stream at once, each started by the jump to its first draw
          const q = N >> 2;
          if (q !== jumpDraws) {
            jump.set(xoshiroJump(q));
            jumpDraws = q;
          }
          ops.dropoutMaskLanes(m, N, limit, scale, state.byteOffset, jump.byteOffset);
        } else ops.dropoutMask(m, N, limit, scale, state.byteOffset);
        rng.s.set(state);
      } else dropoutMask(mask, rng, p, N, offset);
    },
    dropoutForward(out, inp, mask, N) {
      if (fits(out, N) && fits(inp, N) && fits(mask, N)) {
        ops.mulForward(at(out), at(inp), at(mask), N);
      } else dropoutForward(out, inp, mask, N);
    },
    dropoutBackward(dinp, dout, mask, N) {
      if (fits(dinp, N) && fits(dout, N) && fits(mask, N)) {
        ops.mulAddBackward(at(dinp), at(dout), at(mask), N, 0);
      } else dropoutBackward(dinp, dout, mask, N);
    },
    residualForward(out, a, b, N) {
      if (fits(out, N) && fits(a, N) && fits(b, N)) ops.addForward(at(out), at(a), at(b), N);
      else residualForward(out, a, b, N);
    },
    accumulate(dst, src, N) {
      if (!fits(src, N) || dst.length < N) accumulate(dst, src, N);
      else if (k.inMemory(dst)) ops.addForward(at(dst), at(dst), at(src), N);
      else {
        // dst outside the memory (the caller's gradient): through the matmul scratch, by chunks
        for (let i = 0; i < N; i += chunk) {
          const n = Math.min(chunk, N - i);
          sum.set(dst.subarray(i, i + n));
          ops.addForward(sum.byteOffset, sum.byteOffset, src.byteOffset + 4 * i, n);
          dst.set(sum.subarray(0, n), i);
        }
      }
    },
    modulateForward(out, inp, mod, sh, sc, shape) {
      const { K, B, T, C } = shape, NC = B * T * C;
      if (fits(out, NC) && fits(inp, NC) && fits(mod, B * K * C) && chunks(K, sh, sc)) {
        ops.modulateForward(at(out), at(inp), at(mod), sh, sc, K, B, T, C);
      } else modulateForward(out, inp, mod, sh, sc, shape);
    },
    modulateBackward(dinp, dmod, dout, inp, mod, sh, sc, shape) {
      const { K, B, T, C } = shape, NC = B * T * C, KC = B * K * C;
      if (
        fits(dinp, NC) && fits(dmod, KC) && fits(dout, NC) && fits(inp, NC) && fits(mod, KC) &&
        chunks(K, sh, sc)
      ) {
        ops.modulateBackward(at(dinp), at(dmod), at(dout), at(inp), at(mod), sh, sc, K, B, T, C);
      } else modulateBackward(dinp, dmod, dout, inp, mod, sh, sc, shape);
    },
    gatedResidualForward(out, x, y, mod, g, shape) {
      const { K, B, T, C } = shape, NC = B * T * C;
      if (fits(out, NC) && fits(x, NC) && fits(y, NC) && fits(mod, B * K * C) && chunks(K, g, g)) {
        ops.gatedResidualForward(at(out), at(x), at(y), at(mod), g, K, B, T, C);
      } else gatedResidualForward(out, x, y, mod, g, shape);
    },
    gatedResidualBackward(dx, dy, dmod, dout, y, mod, g, shape) {
      const { K, B, T, C } = shape, NC = B * T * C, KC = B * K * C;
      if (
        fitsOpt(dx, NC) && fits(dy, NC) && fits(dmod, KC) && fits(dout, NC) && fits(y, NC) &&
        fits(mod, KC) && chunks(K, g, g)
      ) {
        ops.gatedResidualBackward(
          at(dx),
          at(dy),
          at(dmod),
          at(dout),
          at(y),
          at(mod),
          g,
          K,
          B,
          T,
          C,
        );
      } else gatedResidualBackward(dx, dy, dmod, dout, y, mod, g, shape);
    },
    embeddingForward(out, inp, wte, wpe, B, T, C) {
      const n = B * T;
      if (fits(out, n * C) && fitsOpt(wpe, T * C) && idsIn(inp, n, wte, C)) {
        ops.embeddingForward(at(out), ids.byteOffset, at(wte), at(wpe), n, T, C);
      } else embeddingForward(out, inp, wte, wpe, B, T, C);
    },
    embeddingBackward(dwte, dwpe, dout, inp, B, T, C) {
      const n = B * T;
      if (fits(dout, n * C) && fitsOpt(dwpe, T * C) && idsIn(inp, n, dwte, C)) {
        ops.embeddingBackward(at(dwte), at(dwpe), at(dout), ids.byteOffset, n, T, C);
      } else embeddingBackward(dwte, dwpe, dout, inp, B, T, C);
    },
    crossEntropyForward(losses, lse, logits, targets, weights, N, V) {
      const row = fits(logits, N * V) ? lseRow : undefined;
      return crossEntropyForward(losses, lse, logits, targets, weights, N, V, row);
    },
    crossEntropyBackward(dlogits, dloss, logits, lse, targets, weights, N, V) {
      const row = fits(logits, N * V) && fits(dlogits, N * V) ? rowBackward : undefined;
      crossEntropyBackward(dlogits, dloss, logits, lse, targets, weights, N, V, row);
    },
  };
}
