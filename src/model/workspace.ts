/**
 * The workspace: every buffer one forward/backward pass needs (saved activations, logits,
 * backward scratch), sized for a config and a batch capacity, and where it lives (the wasm
 * kernels' memory or plain typed arrays).
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { buildLayout, TIME_EMBED_DIM } from "./layout.ts";
import { ropeTables } from "../nn/attention.ts";
import {
  type BackendName,
  defaultBackend,
  type NNBackend,
  tsBackend,
  wasmBackend,
  wasmBackendBuffers,
} from "../nn/backend.ts";
import { createWasmKernels, type WasmKernels } from "../kernels/wasm.ts";
import { type BlasLibrary, type BlasOptions, loadBlas, withBlas } from "../kernels/blas.ts";

/** Activations one layer saves for the backward pass. */
export interface LayerActs {
  ln1: Float32Array; // (N,C) norm1(x) (pre-norm) or norm1(r1) (post-norm)
  ln1Mean: Float32Array; // (N)
  ln1Rstd: Float32Array; // (N)
  qkv: Float32Array; // (N,3C), after RoPE
  att: Float32Array; // (B,NH,T,T) probabilities
  heads: Float32Array; // (B,NH,3,T,HS) q, k, v per head (wasm backend; empty otherwise)
  attY: Float32Array; // (N,C) heads concatenated
  r1: Float32Array; // (N,C) first residual sum
  ln2: Float32Array; // (N,C) norm2(r1), pre-norm only (empty otherwise)
  ln2Mean: Float32Array; // (N) of norm2 (post-norm: of its input r2)
  ln2Rstd: Float32Array; // (N)
  fch: Float32Array; // (N,F) before the activation (GELU: its derivative there, after forward)
  fh: Float32Array; // (N,F) after activation and dropout
  r2: Float32Array; // (N,C) second residual sum (post-norm only; empty otherwise)
  maskAtt: Float32Array | null; // (B,NH,T,T)
  mask1: Float32Array | null; // (N,C)
  maskF: Float32Array | null; // (N,F)
  mask2: Float32Array | null; // (N,C)
  // time conditioning only (empty otherwise):
  mod: Float32Array; // (B,6C) shift1, scale1, gate1, shift2, scale2, gate2
  m1: Float32Array; // (N,C) modulated norm1 output (attention input)
  m2: Float32Array; // (N,C) modulated norm2 output (MLP input)
  projD: Float32Array; // (N,C) attention branch after out_proj and dropout
  foD: Float32Array; // (N,C) MLP branch after linear2 and dropout
}

/**
 * Gradients of one layer's activations, each named after its activation (`dln1` is the gradient
 * of the loss with respect to `ln1`). One set serves every layer (the backward pass runs one
 * layer at a time). Where the config has no such activation the buffer is empty, and where an
 * activation is another under a second name (no dropout: `proj` is `projD`) the backward pass
 * uses the other's buffer.
 */
export interface LayerGrads {
  dr2: Float32Array; // (N,C) post-norm: second residual sum
  dfoD: Float32Array; // (N,C) time conditioning: MLP branch after dropout
  dfo: Float32Array; // (N,C) dropout: MLP branch before dropout (linear2 output)
  dfh: Float32Array; // (N,F)
  dfch: Float32Array; // (N,F)
  dm2: Float32Array; // (N,C) time conditioning
  dln2: Float32Array; // (N,C) pre-norm
  dr1: Float32Array; // (N,C)
  dprojD: Float32Array; // (N,C) time conditioning: attention branch after dropout
  dproj: Float32Array; // (N,C) dropout: attention branch before dropout (out_proj output)
  dattY: Float32Array; // (N,C)
  dqkv: Float32Array; // (N,3C) of qkv after RoPE, then (RoPE backward, in place) before it
  dm1: Float32Array; // (N,C) time conditioning
  dln1: Float32Array; // (N,C)
}

/** Time-conditioning activations and their gradients (SEDD's sigma_map and final modulation). */
export interface TimeActs {
  temb: Float32Array; // (B,256) sinusoidal sigma embedding
  h1: Float32Array; // (B,C) mlp.0 output
  a1: Float32Array; // (B,C) silu(h1)
  h2: Float32Array; // (B,C) mlp.2 output
  cond: Float32Array; // (B,C) c = silu(h2)
  finalMod: Float32Array; // (B,2C) shift, scale of the final norm
  mf: Float32Array; // (N,C) modulated final norm output (head input)
  dmf: Float32Array; // (N,C)
  dfinalMod: Float32Array; // (B,2C)
  dmod: Float32Array; // (B,6C) of the layer being differentiated
  dcond: Float32Array; // (B,C) summed over the final modulation and every layer's
  dh2: Float32Array; // (B,C)
  da1: Float32Array; // (B,C)
  dh1: Float32Array; // (B,C)
}

/**
 * Everything one forward/backward pass needs for batches up to `B` sequences of up to `T`
 * tokens: saved activations, logits, their gradients. Reusable across steps; holds the state
 * of the last {@linkcode modelForward} for {@linkcode modelBackward}.
 */
export interface Workspace {
  /** The config it was sized for. */
  readonly config: ModelConfig;
  /** Capacity: most sequences per batch. */
  readonly B: number;
  /** Capacity: longest sequence. */
  readonly T: number;
  /** Logits of the last forward pass, `(B,T,V)` at capacity. */
  readonly logits: Float32Array;
  /** Scratch for the loss gradient, `(B,T,V)`. */
  readonly dlogits: Float32Array;
  /** Per-position weighted losses, `(B*T)`. */
  readonly losses: Float32Array;
  /** @internal Shape of the last (or the running) forward pass (0 before any). */
  lastB: number;
  /** @internal */
  lastT: number;
  /** @internal Whether the last forward pass applied dropout. */
  lastDropout: boolean;
  /**
   * @internal Rows the last forward pass computed logits for, when it computed only the rows a
   * weighted loss reads (`lossAndGrad`): their indices are in `headRowIds`; -1 for every row.
   */
  lastHeadRows: number;
  /** @internal Token ids of the last forward pass, `(B*T)`. */
  readonly tokens: Int32Array;
  /** @internal Log-sum-exp per position, `(B*T)`. */
  readonly lse: Float32Array;
  /** @internal Residual stream entering each layer, and leaving the last: L+1 of `(N,C)`. */
  readonly resid: Float32Array[];
  /** @internal */
  readonly layers: LayerActs[];
  /** @internal Final LayerNorm output and statistics (pre-norm). */
  readonly lnf: Float32Array;
  /** @internal */
  readonly lnfMean: Float32Array;
  /** @internal */
  readonly lnfRstd: Float32Array;
  /**
   * @internal Forward scratch `(N,C)`: a block's branch output (out_proj or linear2, after
   * dropout) before its residual add, where the backward pass does not read it (no time
   * conditioning).
   */
  readonly branch: Float32Array;
  /**
   * @internal Gradient of the residual stream `(N,C)`: of `resid[l+1]` when layer `l`'s
   * backward pass starts, of `resid[l]` when it ends.
   */
  readonly dresid: Float32Array;
  /** @internal Gradient of `lnf` (pre-norm). */
  readonly dlnf: Float32Array;
  /** @internal Gradients of a layer's activations. */
  readonly d: LayerGrads;
  /** @internal Attention backward scratch `(T)` (ts backend; else empty). */
  readonly rowT: Float32Array;
  /**
   * @internal wasm only, the head on the rows a weighted loss reads (else empty): the head
   * inputs of those rows `(n,C)`, gathered by the forward pass (or the backward pass), ...
   */
  readonly headIn: Float32Array;
  /** @internal ... their gradients `(n,C)`, scattered back into the full one, ... */
  readonly dheadIn: Float32Array;
  /** @internal ... and their rows of dlogits `(n,V)` (gathered by the backward pass). */
  readonly dlogitRows: Float32Array;
  /** @internal wasm only: the indices of those rows, `(N)`. */
  readonly headRowIds: Int32Array;
  /** @internal wasm only: targets and weights of those rows, `(N)` each. */
  readonly headTargets: Int32Array;
  /** @internal */
  readonly headWeights: Float32Array;
  /** @internal Time conditioning, or `null`. */
  readonly time: TimeActs | null;
  /** Which backend runs linear and attention: `"blas"`, `"wasm"` or `"ts"`. */
  readonly backend: BackendName;
  /** @internal The ops of that backend. */
  readonly nn: NNBackend;
  /**
   * @internal wasm only: the parameters copied into the kernels' memory at each forward pass
   * (the backward pass reads the same copy), or `null`.
   */
  readonly wParams: Float32Array | null;
  /** @internal wasm only: gradient accumulator, added into the caller's gradients once. */
  readonly wGrads: Float32Array | null;
  /**
   * @internal wasm only: the arena bytes it took, measured by the allocator (0 on ts); equal
   * to {@linkcode workspaceBytes}.
   */
  readonly arenaBytes: number;
  /**
   * @internal Set by a gradient worker for one forward pass whose parameters are still being
   * written (the main thread's AdamW of the step before): called with part `j` of
   * `forwardParts` before the pass reads it, and returns once that part is final. `null`: the
   * parameters are final.
   */
  paramGate: ((part: number) => void) | null;
  /** @internal RoPE tables `(T,HS/2)`, or empty. */
  readonly cos: Float64Array;
  /** @internal */
  readonly sin: Float64Array;
}

/** Options of {@linkcode createWorkspace}. */
export interface WorkspaceOptions {
  /**
   * `"wasm"`: linear and attention through the WebAssembly SIMD kernels, activations, a
   * parameter copy and the gradient accumulator in the kernels' memory (zero-copy calls).
   * `"blas"`: the same, with the matmuls through the system's `cblas_sgemm` on that memory
   * (FFI: Deno with `--allow-ffi`, or Bun); an error where no library loads.
   * `"ts"`: the plain TypeScript reference. Default: `"wasm"` where WebAssembly SIMD
   * validates, else `"ts"`; always `"ts"` with `float64`.
   */
  backend?: BackendName;
  /** Float64 buffers for finite-difference gradient checks (TS backend only). */
  float64?: boolean;
  /** `"blas"`: where the library is (default: see `loadBlas`). */
  blas?: BlasOptions;
}

/** Throws a `RangeError` unless `v` is a positive integer. */
export function checkDim(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`Invalid ${name}: expected a positive integer, got ${v}`);
  }
}

/** The checks of {@linkcode createWorkspace} on its arguments; returns the backend to use. */
function checkWorkspaceArgs(
  config: ModelConfig,
  B: number,
  T: number,
  options: Pick<WorkspaceOptions, "backend" | "float64">,
): BackendName {
  checkDim("batch size", B);
  checkDim("sequence length", T);
  if (T > config.context) {
    throw new RangeError(
      `Sequence too long: expected T <= context ${config.context}, got ${T}`,
    );
  }
  const backend = options.backend ?? (options.float64 ? "ts" : defaultBackend());
  if (backend !== "ts" && backend !== "wasm" && backend !== "blas") {
    throw new TypeError(`Invalid backend: expected "blas", "wasm" or "ts", got ${backend}`);
  }
  if (backend !== "ts" && options.float64) {
    throw new TypeError(
      `Invalid backend for a float64 workspace: expected "ts" (the ${backend} kernels are float32), got "${backend}"`,
    );
  }
  return backend;
}

/** The wasm32 address space: 65536 pages of 64 KiB. */
const WASM32_BYTES = 2 ** 32;
/** The wasm arena's alignment of every buffer (that of `src/kernels/wasm.ts`). */
const ARENA_ALIGN = 64;

/** Bytes `n` floats take in the wasm arena: aligned up to {@linkcode ARENA_ALIGN}. */
function arenaFloatBytes(n: number): number {
  return Math.ceil((4 * n) / ARENA_ALIGN) * ARENA_ALIGN;
}

/**
 * The bytes a workspace takes, computed without allocating anything: for `"wasm"` and `"blas"`
 * the arena bytes {@linkcode createWorkspace} takes in the kernels' memory (every float buffer,
 * the parameter copy and gradient accumulator, the attention scratch; each aligned to 64
 * bytes), which must fit in the wasm32 memory next to the kernels' own 2 MiB or so; for `"ts"`
 * the bytes of all its typed arrays.
 *
 * @param config The model config.
 * @param B Most sequences per batch.
 * @param T Longest sequence, at most `config.context`.
 * @param options `backend` and `float64` as for {@linkcode createWorkspace}.
 * @returns The bytes.
 *
 * @example The default run's workspace
 * ```ts
 * import { workspaceBytes } from "./workspace.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const config = resolveConfig("small", { vocabSize: 512 });
 * const bytes = workspaceBytes(config, 16, 128, { backend: "wasm" });
 * assert.ok(bytes > 16 * 128 * 512 * 4 * 2); // at least logits and their gradient
 * assert.ok(bytes < 2 ** 32);
 * ```
 */
export function workspaceBytes(
  config: ModelConfig,
  B: number,
  T: number,
  options: Pick<WorkspaceOptions, "backend" | "float64"> = {},
): number {
  const backend = checkWorkspaceArgs(config, B, T, options);
  return sizeWorkspace(config, B, T, backend, options.float64 === true);
}

function sizeWorkspace(
  config: ModelConfig,
  B: number,
  T: number,
  backend: BackendName,
  float64: boolean,
): number {
  let bytes = 0;
  const f32 = new Float32Array(0), i32 = new Int32Array(0), f64 = new Float64Array(0);
  if (backend === "ts") {
    const fb = float64 ? 8 : 4;
    workspaceBuffers(config, B, T, {
      f32: (n) => (bytes += fb * n, f32),
      i32: (n) => (bytes += 4 * n, i32),
      f64: (n) => (bytes += 8 * n, f64),
    }, false);
    return bytes;
  }
  workspaceBuffers(config, B, T, {
    f32: (n) => (bytes += arenaFloatBytes(n), f32),
    i32: () => i32, // JS heap, not the arena
    f64: () => f64,
  }, true);
  const HS = config.dModel / config.nHeads;
  // the parameter copy and the gradient accumulator
  bytes += 2 * arenaFloatBytes(buildLayout(config).size);
  // the wasm backend's scratch (see wasmBackend): q, k, v, y heads and their gradients, (T,HS)
  // each, two (T,T) tiles, the GELU tables and the token ids
  for (const n of wasmBackendBuffers(T, HS, B * T)) bytes += arenaFloatBytes(n);
  return bytes;
}

/**
 * Allocates a workspace for batches of up to `B` sequences of up to `T` tokens.
 *
 * On the wasm and blas backends it first checks {@linkcode workspaceBytes} against the room
 * the wasm32 memory leaves, and throws a `RangeError` naming both (and `T`, `B`) before
 * reserving anything when it does not fit.
 *
 * @param config The model config.
 * @param B Most sequences per batch.
 * @param T Longest sequence, at most `config.context`.
 * @param options `backend`: `"wasm"` (WebAssembly SIMD kernels, buffers in wasm memory; the
 *   default where SIMD validates) or `"ts"` (plain TypeScript reference). `float64: true`
 *   allocates every buffer as a `Float64Array` (typed as `Float32Array`) so that
 *   finite-difference gradient checks can run the very same code in double precision, with
 *   parameters and gradients in `Float64Array`s too; TS backend only. Not for training.
 * @returns The workspace.
 *
 * @example Sized for the notebook's batch
 * ```ts
 * import { createWorkspace } from "./workspace.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const ws = createWorkspace(resolveConfig("seed", { vocabSize: 37 }), 2, 8);
 * assert.equal(ws.logits.length, 2 * 8 * 37);
 * ```
 */
export function createWorkspace(
  config: ModelConfig,
  B: number,
  T: number,
  options: WorkspaceOptions = {},
): Workspace {
  const backend = checkWorkspaceArgs(config, B, T, options);
  const { dModel: C, nHeads: NH, vocabSize: V } = config;
  const HS = C / NH;
  if (backend === "ts") {
    const f32 = options.float64
      ? (n: number) => new Float64Array(n) as unknown as Float32Array
      : (n: number) => new Float32Array(n);
    const bufs = workspaceBuffers(config, B, T, { ...onHeap, f32 }, false);
    if (config.positions === "rotary") ropeTables(bufs.cos, bufs.sin, T, HS);
    return {
      ...bufs,
      backend,
      nn: tsBackend,
      wParams: null,
      wGrads: null,
      arenaBytes: 0,
      paramGate: null,
    };
  }
  // wasm: every float buffer in the kernels' memory, reserved in one go before any view is
  // taken (the growth rule of src/kernels/wasm.ts), plus a parameter copy and a gradient
  // accumulator so that every kernel call is zero-copy.
  const bytes = sizeWorkspace(config, B, T, backend, false);
  const { wk, k, start } = arenaKernels(
    backend,
    bytes,
    options.blas,
    (room) =>
      `Workspace too large for the wasm32 memory: expected at most ${room} ` +
      `bytes, got ${bytes} for context ${T} × batch ${B} (dModel ${C}, ${config.nLayers} ` +
      `layers, vocabulary ${V})`,
  );
  const bufs = workspaceBuffers(config, B, T, { ...onHeap, f32: (n) => k.alloc(n) }, true);
  if (config.positions === "rotary") ropeTables(bufs.cos, bufs.sin, T, HS);
  const size = buildLayout(config).size;
  const wParams = k.alloc(size);
  const wGrads = k.alloc(size);
  const nn = wasmBackend(k, T, HS, backend, B * T);
  return { ...bufs, backend, nn, wParams, wGrads, arenaBytes: wk.mark() - start, paramGate: null };
}

/**
 * Fresh wasm kernels with `bytes` of their memory reserved in one go (the growth rule of
 * `src/kernels/wasm.ts`), their matmuls on the system's BLAS for `"blas"`: the memory every
 * buffer of a wasm or blas workspace (or DiT runner) is allocated from.
 *
 * @param backend `"wasm"` or `"blas"`.
 * @param bytes The bytes to reserve (a multiple of 4).
 * @param blas Where the BLAS library is, for `"blas"`.
 * @param tooLarge The message of the `RangeError` thrown, before anything is reserved, when
 *   `bytes` does not fit in the wasm32 memory next to the kernels' own; given the room there is.
 * @returns `wk` the kernels that own the arena, `k` the ones to run (`wk` with BLAS matmuls for
 *   `"blas"`), and `start`, the arena's mark before any allocation.
 * @throws Error when `"blas"` cannot load.
 */
export function arenaKernels(
  backend: "wasm" | "blas",
  bytes: number,
  blas: BlasOptions | undefined,
  tooLarge: (room: number) => string,
): { wk: WasmKernels; k: WasmKernels; start: number } {
  const wk = createWasmKernels();
  const start = wk.mark();
  if (bytes > WASM32_BYTES - start) throw new RangeError(tooLarge(WASM32_BYTES - start));
  let lib: BlasLibrary | undefined;
  if (backend === "blas") {
    const load = loadBlas(blas);
    if (!load.ok) {
      throw new Error(
        `BLAS backend unavailable: expected a working CBLAS library, got ${load.reason}`,
      );
    }
    lib = load.blas;
  }
  wk.reserve(bytes / 4);
  return { wk, k: lib ? withBlas(wk, lib) : wk, start };
}

/** @internal Where {@linkcode workspaceBuffers} takes its arrays from. */
export interface Allocator {
  f32(n: number): Float32Array;
  i32(n: number): Int32Array;
  f64(n: number): Float64Array;
}

/** The integer and double arrays: on the JS heap on every backend. */
const onHeap: Omit<Allocator, "f32"> = {
  i32: (n) => new Int32Array(n),
  f64: (n) => new Float64Array(n),
};

/**
 * The arrays of a workspace, from `alloc` (the RoPE tables unfilled). `packedHeads`: the wasm
 * and blas backends' buffers (saved attention heads, the compacted head). Also the sizing of the
 * WebGPU backend's workspace, whose allocator makes GPU tensors.
 *
 * @internal
 */
export function workspaceBuffers(
  config: ModelConfig,
  B: number,
  T: number,
  alloc: Allocator,
  packedHeads: boolean,
): Omit<Workspace, "backend" | "nn" | "wParams" | "wGrads" | "arenaBytes" | "paramGate"> {
  const { dModel: C, dFF: F, nHeads: NH, nLayers: L, vocabSize: V } = config;
  const f = alloc.f32;
  const N = B * T;
  const drop = config.dropout > 0;
  const tc = config.timeConditioning === true;
  const pre = config.normFirst;
  const nTC = tc ? N * C : 0;
  const layers: LayerActs[] = [];
  for (let l = 0; l < L; l++) {
    layers.push({
      ln1: f(N * C),
      ln1Mean: f(N),
      ln1Rstd: f(N),
      qkv: f(N * 3 * C),
      att: f(B * NH * T * T),
      heads: f(packedHeads ? 3 * N * C : 0),
      attY: f(N * C),
      r1: f(N * C),
      ln2: f(pre ? N * C : 0), // post-norm: norm2's output is resid[l+1]
      ln2Mean: f(N),
      ln2Rstd: f(N),
      fch: f(N * F),
      fh: f(N * F),
      r2: f(config.normFirst ? 0 : N * C),
      maskAtt: drop ? f(B * NH * T * T) : null,
      mask1: drop ? f(N * C) : null,
      maskF: drop ? f(N * F) : null,
      mask2: drop ? f(N * C) : null,
      mod: f(tc ? B * 6 * C : 0),
      m1: f(nTC),
      m2: f(nTC),
      projD: f(nTC),
      foD: f(nTC),
    });
  }
  const nRope = config.positions === "rotary" ? T * (C / NH) / 2 : 0;
  return {
    config,
    B,
    T,
    logits: f(N * V),
    dlogits: f(N * V),
    losses: f(N),
    lastB: 0,
    lastT: 0,
    lastDropout: false,
    lastHeadRows: -1,
    tokens: alloc.i32(N),
    lse: f(N),
    resid: Array.from({ length: L + 1 }, () => f(N * C)),
    layers,
    lnf: f(config.normFirst ? N * C : 0),
    lnfMean: f(pre ? N : 0),
    lnfRstd: f(pre ? N : 0),
    branch: f(tc ? 0 : N * C),
    dresid: f(N * C),
    dlnf: f(pre ? N * C : 0),
    d: {
      dr2: f(pre ? 0 : N * C),
      dfoD: f(nTC),
      dfo: f(drop ? N * C : 0),
      dfh: f(N * F),
      dfch: f(N * F),
      dm2: f(nTC),
      dln2: f(pre ? N * C : 0),
      dr1: f(N * C),
      dprojD: f(nTC),
      dproj: f(drop ? N * C : 0),
      dattY: f(N * C),
      dqkv: f(N * 3 * C),
      dm1: f(nTC),
      dln1: f(N * C),
    },
    rowT: f(packedHeads ? 0 : T), // the wasm attention has its own
    headIn: f(packedHeads ? N * C : 0),
    dheadIn: f(packedHeads ? N * C : 0),
    dlogitRows: f(packedHeads ? N * V : 0),
    headRowIds: alloc.i32(packedHeads ? N : 0),
    headTargets: alloc.i32(packedHeads ? N : 0),
    headWeights: f(packedHeads ? N : 0),
    time: tc
      ? {
        temb: f(B * TIME_EMBED_DIM),
        h1: f(B * C),
        a1: f(B * C),
        h2: f(B * C),
        cond: f(B * C),
        finalMod: f(B * 2 * C),
        mf: f(N * C),
        dmf: f(N * C),
        dfinalMod: f(B * 2 * C),
        dmod: f(B * 6 * C),
        dcond: f(B * C),
        dh2: f(B * C),
        da1: f(B * C),
        dh1: f(B * C),
      }
      : null,
    cos: alloc.f64(nRope),
    sin: alloc.f64(nRope),
  };
}
