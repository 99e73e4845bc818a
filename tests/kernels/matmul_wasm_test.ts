// Wasm matmul kernels vs the plain TypeScript reference (src/kernels/matmul_ref.ts).
//
// Tolerance: both sides sum K float32 products in different orders (blocked, SIMD lanes,
// fused multiply-add in the relaxed build). The standard bound for a recursive float32 sum
// of n terms is gamma_n = n u / (1 - n u) times the sum of the terms' magnitudes, u = 2^-24,
// so two such sums differ by at most about 2 (K + 2) u (|C0| + |bias| + sum_k |a b|) (K + 2
// terms: the products, C0 and bias). A wrong index or a dropped term misses by a whole term,
// orders of magnitude above that. Integer inputs small enough to be exact are compared bit
// for bit.

import assert from "node:assert/strict";
import { refKernels } from "../../src/kernels/matmul_ref.ts";
import {
  createWasmKernels,
  loadWasmKernels,
  wasmSupport,
  type WasmVariant,
} from "../../src/kernels/wasm.ts";
import {
  assertClose,
  assertMatchesRef,
  intArray,
  magnitudes,
  randomArray,
  run,
  seeded,
} from "./matmul_check.ts";

const support = wasmSupport();
const variants: WasmVariant[] = [];
if (support.simd) variants.push("simd");
if (support.relaxed) variants.push("relaxed-simd");

const SIZES = [1, 3, 4, 7, 8, 12, 17, 33, 65, 129];

function shapes(rand: () => number, count: number): [number, number, number][] {
  const out: [number, number, number][] = [
    [1, 1, 1],
    [4, 8, 8],
    [129, 65, 33],
    [5, 300, 9],
    [130, 16, 4],
    [16, 300, 12],
    // N = 4, the narrow path: every row and k remainder, and a seed model's shapes
    [1, 1, 4],
    [3, 7, 4],
    [13, 2050, 4],
    [2051, 17, 4],
    [16, 4, 4],
    // K = 4, the small-K path: odd rows and column remainders, and a seed model's shapes
    [1, 4, 9],
    [7, 4, 13],
    [16, 4, 2048],
    // M = 4 (AB, AtB), the small-M path: column remainders past the blocks of 8, and a seed shape
    [4, 9, 13],
    [4, 7, 1],
    [4, 16, 2048],
  ];
  while (out.length < count) {
    const pick = () => SIZES[Math.floor(rand() * SIZES.length)];
    out.push([pick(), pick(), pick()]);
  }
  return out;
}

for (const variant of variants) {
  const name = variant;
  const kernels = createWasmKernels({ variant });

  for (const kind of ["AB", "ABt", "AtB"] as const) {
    Deno.test(`wasm matmul${kind}() (${name}) matches the reference on random odd shapes, overwrite and accumulate${kind === "ABt" ? ", with and without bias" : ""}`, () => {
      const rand = seeded(kind.length * 1000 + variant.length);
      for (const [M, K, N] of shapes(rand, 35)) {
        for (const accumulate of [false, true]) {
          for (const withBias of kind === "ABt" ? [false, true] : [false]) {
            const a = randomArray(M * K, rand);
            const b = randomArray(K * N, rand);
            const bias = withBias ? randomArray(N, rand) : null;
            const call = { kind, a, b, bias, M, K, N, accumulate };
            assertMatchesRef(
              kernels,
              call,
              randomArray(M * N, rand),
              `${kind} M=${M} K=${K} N=${N} acc=${accumulate} bias=${withBias}`,
            );
          }
        }
      }
    });

    Deno.test(`wasm matmul${kind}() (${name}) is exact on small integer inputs across cache blocks (K > 256, M > 128, N > 2048)`, () => {
      const rand = seeded(99 + kind.length);
      for (
        const [M, K, N] of [[37, 300, 21], [4, 513, 8], [130, 17, 70], [5, 9, 2053], [64, 20, 4], [
          9,
          4,
          2053,
        ], [
          8,
          300,
          12,
        ]]
      ) {
        const a = intArray(M * K, rand);
        const b = intArray(K * N, rand);
        const bias = kind === "ABt" ? intArray(N, rand) : null;
        const c0 = intArray(M * N, rand);
        const call = { kind, a, b, bias, M, K, N, accumulate: true };
        const want = c0.slice();
        run(refKernels, call, want);
        const got = c0.slice();
        run(kernels, call, got);
        assert.deepEqual(got, want, `${kind} M=${M} K=${K} N=${N}`);
      }
    });
  }

  Deno.test(`wasm kernels (${name}): zero-copy buffers from alloc() give the same result as copied arrays and stay in place`, () => {
    const rand = seeded(5);
    const [M, K, N] = [33, 17, 65];
    const m = kernels.mark();
    const a = kernels.alloc(M * K), b = kernels.alloc(N * K), bias = kernels.alloc(N);
    const c = kernels.alloc(M * N);
    a.set(intArray(M * K, rand));
    b.set(intArray(N * K, rand));
    bias.set(intArray(N, rand));
    assert.ok(kernels.inMemory(a) && kernels.inMemory(c));
    const want = new Float32Array(M * N);
    refKernels.matmulABt(want, a, b, bias, M, K, N);
    kernels.matmulABt(c, a, b, bias, M, K, N);
    assert.deepEqual(c, want);
    // a mixed call: C in memory, A and B copied in
    kernels.matmulABt(c, a.slice(), b.slice(), null, M, K, N, true);
    refKernels.matmulABt(want, a, b, null, M, K, N, true);
    assert.deepEqual(kernels.floats(c.byteOffset, M * N), want);
    kernels.release(m);
    assert.equal(kernels.mark(), m);
  });
}

Deno.test("wasm kernels: K = 0 gives C = bias (or C + bias with accumulate), M = 0 and N = 0 do nothing", () => {
  const k = createWasmKernels();
  const c = new Float32Array([1, 2, 3, 4]);
  k.matmulABt(c, new Float32Array(0), new Float32Array(0), new Float32Array([10, 20]), 2, 0, 2);
  assert.deepEqual([...c], [10, 20, 10, 20]);
  k.matmulABt(c, new Float32Array(0), new Float32Array(0), new Float32Array([1, 1]), 2, 0, 2, true);
  assert.deepEqual([...c], [11, 21, 11, 21]);
  k.matmulAB(c, new Float32Array(0), new Float32Array(0), 2, 0, 2);
  assert.deepEqual([...c], [0, 0, 0, 0]);
  const d = new Float32Array([5]);
  k.matmulAtB(d, new Float32Array(0), new Float32Array(3), 0, 3, 1);
  assert.deepEqual([...d], [5]);
});

Deno.test("wasm kernels: a short buffer or a bad dimension throws a RangeError saying expected and got", () => {
  const k = createWasmKernels();
  assert.throws(
    () => k.matmulAB(new Float32Array(3), new Float32Array(4), new Float32Array(4), 2, 2, 2),
    (e: unknown) =>
      e instanceof RangeError &&
      /expected at least 4 floats \(C is \(2,2\)\), got 3/.test(e.message),
  );
  assert.throws(
    () => k.matmulAtB(new Float32Array(4), new Float32Array(4), new Float32Array(4), 2, 1.5, 2),
    (e: unknown) => e instanceof RangeError && /expected an integer >= 0, got 1.5/.test(e.message),
  );
});

Deno.test("wasm kernels: alloc() growing a plain memory detaches earlier views, floats() rebuilds them", () => {
  const k = createWasmKernels({ variant: "simd", initialPages: 40 });
  const x = k.alloc(4);
  x.set([1, 2, 3, 4]);
  const offset = x.byteOffset;
  const pages = k.memory.buffer.byteLength / 65536;
  k.alloc(65536 * 4); // 1 MiB more: must grow past 40 pages
  assert.ok(k.memory.buffer.byteLength / 65536 > pages);
  assert.equal(x.length, 0, "the old view is detached");
  assert.deepEqual([...k.floats(offset, 4)], [1, 2, 3, 4]);
});

Deno.test("wasm kernels: reserve() grows once so later alloc() keeps views attached", () => {
  const k = createWasmKernels({ variant: "simd", initialPages: 40 });
  k.reserve(1 << 20);
  const x = k.alloc(4);
  k.alloc((1 << 20) - 64);
  assert.equal(x.length, 4);
});

Deno.test("loadWasmKernels() (async) picks relaxed-simd exactly when the runtime validates it", async () => {
  const k = await loadWasmKernels();
  assert.equal(k.variant, support.relaxed ? "relaxed-simd" : "simd");
  const y = new Float32Array(1);
  k.matmulABt(y, new Float32Array([2]), new Float32Array([3]), null, 1, 1, 1);
  assert.equal(y[0], 6);
});

Deno.test("wasmSupport(): this runtime (Deno) validates both builds, so every variant above was tested", () => {
  assert.deepEqual(support, { simd: true, relaxed: true });
});

Deno.test("wasm kernels: a mixed call (C in memory, large A and B outside) never grows the memory, so C's view stays attached", () => {
  const k = createWasmKernels({ variant: "simd", initialPages: 40 });
  const [M, K, N] = [4, 1 << 16, 4]; // A and B: 1 MiB each, more than the free pages
  const c = k.alloc(M * N);
  const bytes = k.memory.buffer.byteLength;
  const a = new Float32Array(M * K).fill(1), b = new Float32Array(K * N).fill(0.5);
  k.matmulAB(c, a, b, M, K, N);
  assert.equal(k.memory.buffer.byteLength, bytes);
  assert.equal(c.length, M * N);
  assert.deepEqual([...c], new Array(M * N).fill(K / 2));
});

Deno.test("wasm kernels: a view detached by growth is refused with a RangeError, not read as zeros", () => {
  const k = createWasmKernels({ variant: "simd", initialPages: 40 });
  const c = k.alloc(4);
  k.alloc(1 << 20); // grows: c is detached
  assert.throws(
    () => k.matmulAB(c, new Float32Array(4), new Float32Array(4), 2, 2, 2),
    (e: unknown) => e instanceof RangeError && /buffer c too short.*got 0/.test(e.message),
  );
});

Deno.test("wasm kernels: fractional, negative or NaN dimensions and a short bias are refused with their messages", () => {
  const k = createWasmKernels({ variant: "simd" });
  const x = new Float32Array(16);
  for (const [M, K, N, name] of [[1.5, 2, 2, "M"], [2, -1, 2, "K"], [2, 2, NaN, "N"]] as const) {
    assert.throws(
      () => k.matmulAB(x, x, x, M, K, N),
      new RegExp(
        `Matmul dimension ${name}: expected an integer >= 0, got ${
          M === 1.5 ? 1.5 : K === -1 ? -1 : NaN
        }`,
      ),
    );
  }
  assert.throws(
    () => k.matmulABt(x, x, x, new Float32Array(3), 2, 2, 4),
    /buffer bias too short: expected at least 4 floats \(bias is \(4\)\), got 3/,
  );
});

Deno.test("assertClose() (the tolerance used above) rejects a result that drops one product term", () => {
  const rand = seeded(3);
  const [M, K, N] = [7, 129, 9];
  const a = randomArray(M * K, rand), b = randomArray(K * N, rand);
  const want = new Float32Array(M * N);
  refKernels.matmulAB(want, a, b, M, K, N);
  const got = want.slice();
  got[10] -= a[1 * K + 5] * b[5 * N + 1]; // element (1,1) without its k = 5 term
  const call = { kind: "AB" as const, a, b, bias: null, M, K, N, accumulate: false };
  const mag = magnitudes(call, new Float32Array(M * N));
  assert.throws(() => assertClose(got, want, mag, K, "dropped term"), /element 10/);
  assertClose(want, want, mag, K, "identical");
});

Deno.test("wasm kernels: two instances on one memory with disjoint base/limit arenas see each other's buffers", () => {
  const memory = new WebAssembly.Memory({ initial: 160, maximum: 1024 });
  const MiB = 1 << 20;
  const k1 = createWasmKernels({ memory, base: 1 * MiB, limit: 5 * MiB });
  const k2 = createWasmKernels({ memory, base: 5 * MiB, limit: 9 * MiB });
  assert.equal(k1.memory, k2.memory);
  const w = k1.alloc(4); // owned by instance 1, e.g. parameters
  w.set([1, 2, 3, 4]);
  assert.ok(w.byteOffset >= MiB && w.byteOffset < 5 * MiB);
  const x = k2.alloc(2), y = k2.alloc(2);
  assert.ok(x.byteOffset >= 5 * MiB);
  x.set([1, 1]);
  const wIn2 = k2.floats(w.byteOffset, 4); // the same floats, seen through instance 2
  k2.matmulABt(y, x, wIn2, null, 1, 2, 2);
  assert.deepEqual([...y], [3, 7]);
  assert.throws(() => k1.alloc(MiB), /Wasm arena full/);
});

Deno.test("wasm kernels: a shared memory is refused with a one-line TypeError", () => {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
  assert.throws(() => createWasmKernels({ memory }), {
    name: "TypeError",
    message: /expected a plain WebAssembly.Memory, got a shared one/,
  });
});
