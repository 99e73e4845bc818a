import assert from "node:assert/strict";
import { type ModelConfig, resolveConfig } from "../../src/model/config.ts";
import {
  createModel,
  createWorkspace,
  lossAndGrad,
  modelBackward,
  modelForward,
} from "../../src/model/model.ts";
import { wasmSupport } from "../../src/kernels/wasm.ts";
import { Rng } from "../../src/rng.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";
import { maxRelErr } from "../rel_err.ts";

/** A model with train-like parameters: adaLN-Zero and zero biases would hide whole paths. */
function trainLike(config: ModelConfig) {
  const model = createModel(config, { seed: 7 });
  const rng = new Rng(9);
  for (let i = 0; i < model.params.length; i++) model.params[i] += 0.05 * (rng.uniform() - 0.5);
  return model;
}

/** lossAndGrad() of one random batch on `backend`, twice on one workspace (the second is returned). */
function lossOn(
  config: ModelConfig,
  B: number,
  T: number,
  timed: boolean,
  backend: "blas" | "wasm" | "ts",
) {
  const model = trainLike(config);
  const V = config.vocabSize;
  const rng = new Rng(4);
  const N = B * T;
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  const weight = Float32Array.from({ length: N }, () => rng.uniform());
  const sigma = timed ? Float64Array.from({ length: B }, (_, b) => 0.2 + b) : undefined;
  const dropout = config.dropout > 0 ? { seed: 1, step: 2, firstRow: 0 } : undefined;
  const workspace = createWorkspace(config, B, T, { backend });
  // twice on one workspace: the second pass must not see the first one's state
  lossAndGrad(model, { input, target, weight }, { batch: B, workspace, dropout, sigma });
  return lossAndGrad(model, { input, target, weight }, { batch: B, workspace, dropout, sigma });
}

const CASES = [
  ["seed preset with dropout", resolveConfig("seed", { vocabSize: 11 }), 3, 8, false],
  [
    "small shape, rotary gelu",
    resolveConfig("small", { vocabSize: 40, context: 24 }),
    2,
    24,
    false,
  ],
  [
    "tiny with time conditioning",
    resolveConfig({ ...resolveConfig("tiny", { vocabSize: 13 }), timeConditioning: true }),
    2,
    5,
    true,
  ],
] as const;

for (const [name, config, B, T, timed] of CASES) {
  for (const backend of ["wasm", "blas"] as const) {
    Deno.test({
      name: `lossAndGrad() on the ${backend} backend equals the ts backend (${name})`,
      ignore: backend === "blas" && ignoreBlas,
      fn() {
        const fast = lossOn(config, B, T, timed, backend);
        const ts = lossOn(config, B, T, timed, "ts");
        assert.ok(
          Math.abs(fast.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss),
          `${fast.loss} vs ${ts.loss}`,
        );
        const rel = maxRelErr(fast.grads, ts.grads, "gradients");
        assert.ok(rel < 1e-4, `gradients: max relative error ${rel}`);
      },
    });
  }
}

/** Whether this runtime validates a WebAssembly SIMD build of the kernels (the real probe). */
function simdValidates(): boolean {
  const s = wasmSupport();
  return s.simd || s.relaxed;
}

Deno.test(`createWorkspace() backends: ${simdValidates() ? "wasm" : "ts"} by default (WebAssembly SIMD ${simdValidates() ? "validates" : "does not validate"} here), ts for float64, wasm + float64 refused`, () => {
  const config = resolveConfig("tiny", { vocabSize: 9 });
  if (simdValidates()) {
    assert.equal(createWorkspace(config, 1, 2).backend, "wasm");
    assert.equal(createWorkspace(config, 1, 2, { backend: "wasm" }).backend, "wasm");
  } else {
    assert.equal(createWorkspace(config, 1, 2).backend, "ts");
    assert.throws(() => createWorkspace(config, 1, 2, { backend: "wasm" }), /WebAssembly SIMD/);
  }
  assert.equal(createWorkspace(config, 1, 2, { backend: "ts" }).backend, "ts");
  assert.equal(createWorkspace(config, 1, 2, { float64: true }).backend, "ts");
  assert.throws(() => createWorkspace(config, 1, 2, { backend: "wasm", float64: true }), TypeError);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => createWorkspace(config, 1, 2, { backend: "gpu" as any }),
    { name: "TypeError", message: 'Invalid backend: expected "blas", "wasm" or "ts", got gpu' },
  );
});

/**
 * The other side of the probe, in a child Deno whose `WebAssembly.validate` rejects every module
 * (a runtime without SIMD, as far as the probe can tell), with FFI allowed so that the system's
 * BLAS loads where it is installed: what the probe, the default and `"auto"` backends, an explicit
 * `"blas"` and an explicit `"wasm"` workspace give there. (The blas backend runs on the wasm
 * kernels, so a BLAS alone must not make `"auto"` choose it.)
 */
async function withoutSimd(): Promise<Record<string, string>> {
  const src = new URL("../../src/", import.meta.url).href;
  const script = `
    WebAssembly.validate = () => false;
    const { wasmSupport } = await import("${src}kernels/wasm.ts");
    const { defaultBackend, resolveBackend } = await import("${src}nn/backend.ts");
    const { createWorkspace } = await import("${src}model/model.ts");
    const { resolveConfig } = await import("${src}model/config.ts");
    const config = resolveConfig("tiny", { vocabSize: 9 });
    const s = wasmSupport();
    const out = {
      probe: String(s.simd || s.relaxed),
      default: defaultBackend(),
      auto: resolveBackend("auto").backend,
      workspace: createWorkspace(config, 1, 2).backend,
    };
    try {
      createWorkspace(config, 1, 2, { backend: "wasm" });
      out.wasm = "created";
    } catch (e) {
      out.wasm = e.message;
    }
    try {
      out.blas = resolveBackend("blas").backend;
    } catch (e) {
      out.blas = e.message;
    }
    console.log(JSON.stringify(out));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", "--allow-read", "--allow-ffi", "--allow-env=CI,SEDD_BLAS", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const err = new TextDecoder().decode(stderr);
  assert.equal(code, 0, `child Deno failed: ${err}`);
  return JSON.parse(new TextDecoder().decode(stdout));
}

Deno.test("where WebAssembly SIMD does not validate: the probe says so, default, auto and workspaces fall back to ts (also beside a BLAS), explicit wasm and blas are refused", async () => {
  const got = await withoutSimd();
  assert.equal(got.probe, "false");
  assert.equal(got.default, "ts");
  assert.equal(got.auto, "ts");
  assert.equal(got.workspace, "ts");
  assert.match(got.wasm, /WebAssembly SIMD: expected the runtime to support it/);
  assert.match(got.blas, /BLAS backend unavailable: .*WebAssembly SIMD/);
});

Deno.test("modelBackward() on the wasm backend takes dlogits from outside the kernels' memory", () => {
  const config = resolveConfig("tiny", { vocabSize: 9 });
  const model = createModel(config, { seed: 2 });
  const B = 2, T = 4, N = B * T, V = 9;
  const rng = new Rng(5);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const dlogits = Float32Array.from({ length: N * V }, () => rng.uniform() - 0.5);
  const grads = {
    wasm: new Float32Array(model.params.length),
    ts: new Float32Array(model.params.length),
  };
  for (const backend of ["wasm", "ts"] as const) {
    const ws = createWorkspace(config, B, T, { backend });
    modelForward(model, ws, input, B, T);
    modelBackward(model, ws, dlogits, grads[backend]);
  }
  const rel = maxRelErr(grads.wasm, grads.ts);
  assert.ok(rel < 1e-5, `max relative error ${rel}`);
  assert.ok(grads.ts.some((g) => g !== 0));
});

Deno.test("lossAndGrad() on the wasm and blas backends skips zero-weight rows in the head and still equals the ts backend", () => {
  const config = resolveConfig("small", { vocabSize: 30, context: 16 });
  const model = createModel(config, { seed: 11 });
  const B = 5, T = 16, N = B * T, V = 30; // N >= 64: the compacting path
  const rng = new Rng(6);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  for (const keep of [0, 0.3, 0.6, 1]) {
    // keep = 0: no row counts (zero loss, zero gradient); 1: every row (no compaction)
    const weight = Float32Array.from({ length: N }, () => (rng.uniform() < keep ? 1 : 0));
    const run = (backend: "blas" | "wasm" | "ts") =>
      lossAndGrad(model, { input, target, weight }, {
        batch: B,
        workspace: createWorkspace(config, B, T, { backend }),
      });
    const ts = run("ts");
    for (const backend of ignoreBlas ? ["wasm"] as const : ["wasm", "blas"] as const) {
      const fast = run(backend);
      assert.ok(Math.abs(fast.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss), backend);
      if (weight.some((w) => w !== 0)) {
        const rel = maxRelErr(fast.grads, ts.grads);
        assert.ok(rel < 1e-4, `${backend}, keep ${keep}: max relative error ${rel}`);
      } else {
        assert.ok(fast.grads.every((g) => g === 0) && ts.grads.every((g) => g === 0), backend);
      }
    }
  }
});

Deno.test("lossAndGrad() on the wasm backend computes the head on the weighted rows only, and equals the ts backend", () => {
  const config = resolveConfig("small", { vocabSize: 30, context: 16 });
  const model = createModel(config, { seed: 12 });
  const B = 5, T = 16, N = B * T, V = 30;
  const rng = new Rng(8);
  const input = Int32Array.from({ length: N }, () => rng.int(V));
  const target = Int32Array.from({ length: N }, () => rng.int(V));
  const weight = Float32Array.from({ length: N }, () => (rng.uniform() < 0.5 ? 0.02 : 0));
  const kept = weight.filter((w) => w !== 0).length;
  const ws = createWorkspace(config, B, T, { backend: "wasm" });
  const fast = lossAndGrad(model, { input, target, weight }, { batch: B, workspace: ws });
  assert.equal(ws.lastHeadRows, kept); // the compact path ran
  const ts = lossAndGrad(model, { input, target, weight }, {
    batch: B,
    workspace: createWorkspace(config, B, T, { backend: "ts" }),
  });
  assert.ok(Math.abs(fast.loss - ts.loss) <= 1e-5 * Math.abs(ts.loss));
  assert.ok(maxRelErr(fast.grads, ts.grads) < 1e-4);
  // Its logits are not the full (B,T,V) a public backward pass differentiates.
  assert.throws(
    () => modelBackward(model, ws, new Float32Array(N * V), new Float32Array(model.params.length)),
    /expected modelForward first, got lossAndGrad's/,
  );
  modelForward(model, ws, input, B, T); // a full pass again
  assert.equal(ws.lastHeadRows, -1);
});
