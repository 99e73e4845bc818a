// Matmul kernels: wasm SIMD (relaxed and plain builds) against the plain TypeScript reference.
//
//   deno bench bench/matmul_bench.ts                    # groups per shape, reference = baseline
//   deno run bench/matmul_bench.ts --gflops [--big]     # prints a GFLOP/s table of medians
//
// The table gives GFLOP/s from the median wall time and from the median process CPU time
// (user + system): on a shared, loaded machine the CPU-time figure is the steadier one.
//
// Shapes: the `small` model's linear layers (B*T = 2048 rows, d 128, 3d 384, dFF 512) in the
// three products a training step uses (forward A B^T, input gradient A B, weight gradient
// A^T B), plus square 512^3 and 1024^3. Buffers live in the wasm memory (zero-copy calls).

import process from "node:process";
import { type MatmulKernels, refKernels } from "../src/kernels/matmul_ref.ts";
import {
  createWasmKernels,
  type WasmKernels,
  wasmSupport,
  type WasmVariant,
} from "../src/kernels/wasm.ts";
import { Rng } from "../src/rng.ts";

type Kind = "AB" | "ABt" | "AtB";
interface Shape {
  label: string;
  kind: Kind;
  M: number;
  K: number;
  N: number;
}

const SHAPES: Shape[] = [
  { label: "qkv forward x W^T", kind: "ABt", M: 2048, K: 128, N: 384 },
  { label: "ffn up forward x W^T", kind: "ABt", M: 2048, K: 128, N: 512 },
  { label: "ffn down input grad dy W", kind: "AB", M: 2048, K: 512, N: 128 },
  { label: "ffn up weight grad dy^T x", kind: "AtB", M: 512, K: 2048, N: 128 },
  { label: "attention scores q k^T, one head", kind: "ABt", M: 128, K: 32, N: 128 },
  { label: "seed preset linear1 forward", kind: "ABt", M: 16, K: 4, N: 2048 },
  { label: "seed preset linear1 weight grad", kind: "AtB", M: 2048, K: 16, N: 4 },
  { label: "square 512", kind: "AB", M: 512, K: 512, N: 512 },
  { label: "square 512", kind: "ABt", M: 512, K: 512, N: 512 },
  { label: "square 512", kind: "AtB", M: 512, K: 512, N: 512 },
  { label: "square 1024", kind: "AB", M: 1024, K: 1024, N: 1024 },
];

const support = wasmSupport();
const wasm: { name: string; variant: WasmVariant }[] = [{ name: "wasm simd", variant: "simd" }];
if (support.relaxed) wasm.push({ name: "wasm relaxed-simd", variant: "relaxed-simd" });

function fill(x: Float32Array, rng: Rng): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] = rng.uniform() * 2 - 1;
  return x;
}

/**
 * One call of `kind`: on plain arrays with the reference (variant null), or on buffers in the
 * arena of a fresh wasm instance, reserved up front so no later growth detaches them.
 */
function prepare(s: Shape, variant: WasmVariant | null): () => void {
  const rng = new Rng(1);
  let k: WasmKernels | null = null;
  if (variant !== null) {
    k = createWasmKernels({ variant });
    k.reserve(s.M * s.K + s.K * s.N + s.M * s.N + s.N + 64);
  }
  const kernels: MatmulKernels = k ?? refKernels;
  const make = (n: number) => fill(k ? k.alloc(n) : new Float32Array(n), rng);
  const a = make(s.M * s.K), b = make(s.K * s.N), c = make(s.M * s.N), bias = make(s.N);
  const { M, K, N } = s;
  if (s.kind === "AB") return () => kernels.matmulAB(c, a, b, M, K, N);
  if (s.kind === "ABt") return () => kernels.matmulABt(c, a, b, bias, M, K, N);
  return () => kernels.matmulAtB(c, a, b, M, K, N, true);
}

const flops = (s: Shape) => 2 * s.M * s.K * s.N;
const title = (s: Shape) =>
  `${s.kind} M=${s.M} K=${s.K} N=${s.N} (${s.label}, ${(flops(s) / 1e6).toFixed(0)} MFLOP)`;

for (const s of SHAPES) {
  const group = title(s);
  const big = flops(s) > 1e9;
  // The plain-loop reference is slow at a billion multiply-adds per call: a few samples only.
  const few = big ? { n: 3, warmup: 1 } : {};
  Deno.bench({
    name: `ts reference ${s.kind} ${s.M}x${s.K}x${s.N}`,
    group,
    baseline: true,
    ...few,
    fn: prepare(s, null),
  });
  for (const { name, variant } of wasm) {
    Deno.bench({
      name: `${name} ${s.kind} ${s.M}x${s.K}x${s.N}`,
      group,
      ...(big ? { n: 20, warmup: 3 } : {}),
      fn: prepare(s, variant),
    });
  }
}

/** Median wall and CPU milliseconds of `reps` calls (each call repeated to last >= 2 ms). */
function medianMs(fn: () => void, reps: number): { wall: number; cpu: number } {
  fn();
  let inner = 1;
  const start = performance.now();
  while (performance.now() - start < 2) {
    fn();
    inner++;
  }
  const wall: number[] = [], cpu: number[] = [];
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) fn();
    wall.push((performance.now() - t0) / inner);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000 / inner);
  }
  const median = (x: number[]) => x.sort((p, q) => p - q)[Math.floor(x.length / 2)];
  return { wall: median(wall), cpu: median(cpu) };
}

if (import.meta.main && Deno.args.includes("--gflops")) {
  const big = Deno.args.includes("--big");
  console.log("shape | kernel | median ms | GFLOP/s (wall) | GFLOP/s (CPU time)");
  for (const s of SHAPES) {
    if (flops(s) > 1e9 && !big) continue;
    const rows: [string, () => void, number][] = [
      ["ts reference", prepare(s, null), flops(s) > 1e9 ? 3 : 5],
      ...wasm.map(({ name, variant }) =>
        [name, prepare(s, variant), 21] as [string, () => void, number]
      ),
    ];
    for (const [name, fn, reps] of rows) {
      const { wall, cpu } = medianMs(fn, reps);
      const gf = (ms: number) => (flops(s) / ms / 1e6).toFixed(1);
      console.log(`${title(s)} | ${name} | ${wall.toFixed(3)} | ${gf(wall)} | ${gf(cpu)}`);
    }
  }
}
