/**
 * Compute backends of the model's two heavy ops, linear and attention: the plain TypeScript
 * reference (`ts`, the functions of `linear.ts` and `attention.ts`) and the WebAssembly SIMD
 * matmul kernels of `src/kernels/wasm.ts` (`wasm`). Both compute the same math; the model picks
 * one per workspace.
 *
 * Dimensions: `N` rows (B*T), `IC`/`OC` input/output channels, `B` batch, `T` sequence,
 * `C` channels, `NH` heads, `HS = C / NH` head size.
 *
 * The wasm backend runs zero-copy when every buffer lives in its kernels' memory (the model's
 * workspace puts activations, a parameter copy and a gradient accumulator there); any other
 * buffer goes through the kernels' copying convenience path, which is correct but slower.
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
import { attentionBackward, attentionForward } from "./attention.ts";
import { expScaledInPlace } from "./fast_exp.ts";

/**
 * Which implementation runs the linear and attention ops: `"blas"` (the wasm backend with its
 * matmuls on the system's BLAS through FFI, Deno and Bun), `"wasm"` or `"ts"`.
 */
export type BackendName = "blas" | "wasm" | "ts";

/** A backend name, or `"auto"`: see {@linkcode resolveBackend}. */
export type BackendChoice = BackendName | "auto";

/** The backend names {@linkcode resolveBackend} accepts. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "blas", "wasm", "ts"];

/**
 * The heavy ops, with the signatures of `linear.ts` and `attention.ts`. The attention pair's
 * last, optional buffer `heads` `(B,NH,3,T,HS)` is where the wasm forward pass keeps the q, k, v
 * heads it gathers, so that the backward pass of the same batch reads them instead of gathering
 * again (pass the same buffer to both, or `null`; the ts backend ignores it). The linear pair's
 * optional last argument (the matmul kernels) is the backend's own: callers leave it out.
 */
export interface NNBackend {
  /** `"blas"`, `"wasm"` or `"ts"`. */
  readonly name: BackendName;
  /** See {@linkcode linearForward}. */
  linearForward: typeof linearForward;
  /** See {@linkcode linearBackward}. ADDS into `dinp`, `dweight`, `dbias`. */
  linearBackward: typeof linearBackward;
  /** See {@linkcode attentionForward}. */
  attentionForward: typeof attentionForward;
  /** See {@linkcode attentionBackward}. ADDS into `dqkv`. */
  attentionBackward: typeof attentionBackward;
}

/** The plain TypeScript reference: the functions of `linear.ts` and `attention.ts`. */
export const tsBackend: NNBackend = Object.freeze({
  name: "ts" as const,
  linearForward,
  linearBackward,
  attentionForward,
  attentionBackward,
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
 * Turns a choice into a backend that runs here. `"auto"`: `"blas"` where FFI is allowed and the
 * system's BLAS loads and passes its self-check, else the {@linkcode defaultBackend}. An explicit
 * `"blas"` that cannot load is an error (say `"auto"` to fall back).
 *
 * @param choice `"auto"`, `"blas"`, `"wasm"` or `"ts"`.
 * @param options Where the BLAS library is (`path`).
 * @returns The backend and a one-line note.
 * @throws RangeError for an unknown name; Error for `"blas"` without a usable library.
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
  if (choice === "wasm" || choice === "ts") return { backend: choice, note: choice };
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

/** Floats of scratch {@linkcode wasmBackend} allocates for sequences up to `T` and head size `HS`. */
export function wasmBackendFloats(T: number, HS: number): number {
  // q, k, v, y heads and their gradients (8 x T*HS), two (T,T) tiles, 64-byte alignment slack.
  return 8 * T * HS + 2 * T * T + 10 * 16;
}

/**
 * The wasm backend over `k`. Allocates its attention scratch in `k`'s memory NOW (so the
 * caller can reserve the memory beforehand and the growth rule holds): `8 T HS + 2 T T`
 * floats, see {@linkcode wasmBackendFloats}.
 *
 * @param k The wasm kernels (their memory holds the workspace).
 * @param T Longest sequence.
 * @param HS Head size.
 * @param name What to call it: `"blas"` when `k`'s matmuls run on a BLAS (see `withBlas`).
 * @returns The backend.
 */
export function wasmBackend(
  k: WasmKernels,
  T: number,
  HS: number,
  name: "wasm" | "blas" = "wasm",
): NNBackend {
  const TH = T * HS;
  const qh = k.alloc(TH), kh = k.alloc(TH), vh = k.alloc(TH), yh = k.alloc(TH); // (T,HS)
  const dqh = k.alloc(TH), dkh = k.alloc(TH), dvh = k.alloc(TH), dyh = k.alloc(TH); // (T,HS)
  const pm = k.alloc(T * T); // (T,T) probabilities times the dropout mask
  const dp = k.alloc(T * T); // (T,T) gradient of the probabilities, then of the scores
  // The views above are taken once; a kernel call on a detached view throws, so a memory
  // that grew behind our back fails loudly instead of computing on stale buffers.

  /** Copies head `h` of part `part` (0 q, 1 k, 2 v) of sequence `b` into `dst` `(T,HS)`. */
  function gather(
    dst: Float32Array,
    qkv: Float32Array,
    part: number,
    b: number,
    h: number,
    T: number,
    C: number,
    HS: number,
  ): void {
    const C3 = 3 * C;
    let s = b * T * C3 + part * C + h * HS;
    for (let t = 0, d = 0; t < T; t++, s += C3, d += HS) {
      for (let i = 0; i < HS; i++) dst[d + i] = qkv[s + i];
    }
  }

  /** Adds `src` `(T,HS)` into head `h` of part `part` of sequence `b` of `(B,T,LD)`. */
  function scatterAdd(
    dst: Float32Array,
    src: Float32Array,
    LD: number,
    off: number,
    b: number,
    T: number,
    HS: number,
  ): void {
    let o = b * T * LD + off;
    for (let t = 0, s = 0; t < T; t++, o += LD, s += HS) {
      for (let i = 0; i < HS; i++) dst[o + i] += src[s + i];
    }
  }

  return {
    name,
    linearForward: (out, inp, weight, bias, N, IC, OC) =>
      linearForward(out, inp, weight, bias, N, IC, OC, k),
    linearBackward: (dinp, dweight, dbias, dout, inp, weight, N, IC, OC) =>
      linearBackward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, k),
    attentionForward(out, att, qkv, mask, B, T, C, NH, heads = null) {
      const HS = C / NH;
      const scale = 1 / Math.sqrt(HS);
      const TT = T * T;
      const TH = T * HS;
      const keep = heads != null && heads.length >= 3 * B * NH * TH;
      let q = qh.subarray(0, TH), kk = kh.subarray(0, TH), v = vh.subarray(0, TH);
      const y = yh.subarray(0, TH);
      const p = pm.subarray(0, TT);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          if (keep) {
            const o = (b * NH + h) * 3 * TH;
            q = heads.subarray(o, o + TH);
            kk = heads.subarray(o + TH, o + 2 * TH);
            v = heads.subarray(o + 2 * TH, o + 3 * TH);
          }
          gather(q, qkv, 0, b, h, T, C, HS);
          gather(kk, qkv, 1, b, h, T, C, HS);
          gather(v, qkv, 2, b, h, T, C, HS);
          const a0 = (b * NH + h) * TT;
          const s = att.subarray(a0, a0 + TT); // (T,T)
          // att = softmax(scale * q k^T) per row
          k.matmulABt(s, q, kk, null, T, HS, T, false);
          for (let t = 0; t < T; t++) {
            const r = t * T;
            let max = -Infinity;
            for (let j = 0; j < T; j++) if (s[r + j] > max) max = s[r + j];
            const inv = 1 / expScaledInPlace(s, r, T, scale, max * scale);
            for (let j = 0; j < T; j++) s[r + j] *= inv;
          }
          // y = (att * mask) v
          let pv = s;
          if (mask) {
            for (let j = 0; j < TT; j++) p[j] = s[j] * mask[a0 + j];
            pv = p;
          }
          k.matmulAB(y, pv, v, T, T, HS, false);
          let o = b * T * C + h * HS;
          for (let t = 0, r = 0; t < T; t++, o += C, r += HS) {
            for (let i = 0; i < HS; i++) out[o + i] = y[r + i];
          }
        }
      }
    },
    attentionBackward(dqkv, dout, qkv, att, mask, _scratch, B, T, C, NH, heads = null) {
      const HS = C / NH;
      const scale = 1 / Math.sqrt(HS);
      const TT = T * T, TH = T * HS;
      const kept = heads != null && heads.length >= 3 * B * NH * TH;
      let q = qh.subarray(0, TH), kk = kh.subarray(0, TH), v = vh.subarray(0, TH);
      const dq = dqh.subarray(0, TH), dk = dkh.subarray(0, TH), dv = dvh.subarray(0, TH);
      const dy = dyh.subarray(0, TH);
      const p = pm.subarray(0, TT), d = dp.subarray(0, TT);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          if (kept) {
            // the heads the forward pass gathered (same batch, same qkv)
            const o = (b * NH + h) * 3 * TH;
            q = heads.subarray(o, o + TH);
            kk = heads.subarray(o + TH, o + 2 * TH);
            v = heads.subarray(o + 2 * TH, o + 3 * TH);
          } else {
            gather(q, qkv, 0, b, h, T, C, HS);
            gather(kk, qkv, 1, b, h, T, C, HS);
            gather(v, qkv, 2, b, h, T, C, HS);
          }
          let o = b * T * C + h * HS;
          for (let t = 0, r = 0; t < T; t++, o += C, r += HS) {
            for (let i = 0; i < HS; i++) dy[r + i] = dout[o + i];
          }
          const a0 = (b * NH + h) * TT;
          const s = att.subarray(a0, a0 + TT); // (T,T) probabilities
          let pv = s;
          if (mask) {
            for (let j = 0; j < TT; j++) p[j] = s[j] * mask[a0 + j];
            pv = p;
          }
          // y = (att * mask) v:  dv = (att * mask)^T dy,  datt = (dy v^T) * mask
          k.matmulAtB(dv, pv, dy, T, T, HS, false);
          k.matmulABt(d, dy, v, null, T, HS, T, false);
          // att = softmax(scale * q k^T):  ds = scale * att * (datt - sum_j att * datt)
          for (let t = 0; t < T; t++) {
            const r = t * T;
            let dot = 0;
            if (mask) {
              for (let j = 0; j < T; j++) {
                const g = d[r + j] * mask[a0 + r + j];
                d[r + j] = g;
                dot += s[r + j] * g;
              }
            } else {
              for (let j = 0; j < T; j++) dot += s[r + j] * d[r + j];
            }
            for (let j = 0; j < T; j++) d[r + j] = s[r + j] * (d[r + j] - dot) * scale;
          }
          // dq = ds k,  dk = ds^T q
          k.matmulAB(dq, d, kk, T, T, HS, false);
          k.matmulAtB(dk, d, q, T, T, HS, false);
          scatterAdd(dqkv, dq, 3 * C, h * HS, b, T, HS);
          scatterAdd(dqkv, dk, 3 * C, C + h * HS, b, T, HS);
          scatterAdd(dqkv, dv, 3 * C, 2 * C + h * HS, b, T, HS);
        }
      }
    },
  };
}
