import assert from "node:assert/strict";
import { createWasmKernels, wasmSupport } from "../../src/kernels/wasm.ts";
import { defaultBackend, tsBackend, wasmBackend } from "../../src/nn/backend.ts";
import { Rng } from "../../src/rng.ts";
import { fillUniform, maxRelErr } from "./compare.ts";

Deno.test("defaultBackend() follows the SIMD probe: wasm where SIMD validates, else ts", () => {
  const s = wasmSupport();
  assert.equal(defaultBackend(), s.simd || s.relaxed ? "wasm" : "ts");
  // Deno, Bun and Chromium all validate WebAssembly SIMD: the wasm side is the one CI runs
  assert.ok(s.simd, "expected WebAssembly SIMD in this runtime");
});

for (const [N, IC, OC] of [[1, 1, 1], [7, 5, 3], [33, 17, 29], [64, 128, 384]]) {
  Deno.test(`wasmBackend() linear forward/backward equals the TS reference (N ${N}, IC ${IC}, OC ${OC})`, () => {
    const k = createWasmKernels();
    const rng = new Rng(N * 1000 + IC * 10 + OC);
    const nn = wasmBackend(k, 4, 2);
    const inp = fillUniform(k.alloc(N * IC), rng), w = fillUniform(k.alloc(OC * IC), rng);
    const b = fillUniform(k.alloc(OC), rng), dout = fillUniform(k.alloc(N * OC), rng);
    const out = k.alloc(N * OC), want = new Float32Array(N * OC);
    nn.linearForward(out, inp, w, b, N, IC, OC);
    tsBackend.linearForward(want, inp, w, b, N, IC, OC);
    assert.ok(maxRelErr(out, want) < 1e-5);
    // backward ADDS: start from the same non-zero values
    const dinp = fillUniform(k.alloc(N * IC), rng), dw = fillUniform(k.alloc(OC * IC), rng);
    const db = fillUniform(k.alloc(OC), rng);
    const [dinp2, dw2, db2] = [dinp.slice(), dw.slice(), db.slice()];
    nn.linearBackward(dinp, dw, db, dout, inp, w, N, IC, OC);
    tsBackend.linearBackward(dinp2, dw2, db2, dout, inp, w, N, IC, OC);
    assert.ok(maxRelErr(dinp, dinp2) < 1e-5, "dinp");
    assert.ok(maxRelErr(dw, dw2) < 1e-5, "dweight");
    assert.ok(maxRelErr(db, db2) < 1e-5, "dbias");
  });
}

for (
  const [B, T, C, NH, drop] of [[1, 1, 2, 1, false], [2, 5, 6, 3, false], [2, 9, 8, 2, true], [
    3,
    32,
    64,
    4,
    true,
  ]] as const
) {
  Deno.test(`wasmBackend() attention forward/backward equals the TS reference (B ${B}, T ${T}, C ${C}, NH ${NH}${drop ? ", dropout" : ""})`, () => {
    const k = createWasmKernels();
    const rng = new Rng(B * 100 + T);
    // capacity larger than the call: the backend must work on shorter sequences
    const nn = wasmBackend(k, T + 3, C / NH);
    const qkv = fillUniform(k.alloc(B * T * 3 * C), rng, -2, 2);
    const mask = drop ? k.alloc(B * NH * T * T) : null;
    if (mask) { for (let i = 0; i < mask.length; i++) mask[i] = rng.uniform() < 0.2 ? 0 : 1.25; }
    const out = k.alloc(B * T * C), att = k.alloc(B * NH * T * T);
    const want = new Float32Array(B * T * C), wantAtt = new Float32Array(B * NH * T * T);
    nn.attentionForward(out, att, qkv, mask, B, T, C, NH);
    tsBackend.attentionForward(want, wantAtt, qkv, mask, B, T, C, NH);
    assert.ok(maxRelErr(att, wantAtt) < 1e-5, "att");
    assert.ok(maxRelErr(out, want) < 1e-5, "out");
    const dout = fillUniform(k.alloc(B * T * C), rng);
    const dqkv = fillUniform(k.alloc(B * T * 3 * C), rng), dqkv2 = dqkv.slice();
    nn.attentionBackward(dqkv, dout, qkv, att, mask, new Float32Array(T), B, T, C, NH);
    tsBackend.attentionBackward(dqkv2, dout, qkv, wantAtt, mask, new Float32Array(T), B, T, C, NH);
    assert.ok(maxRelErr(dqkv, dqkv2) < 1e-5, "dqkv");
    // with saved heads: the backward pass reads what the forward pass gathered
    const heads = k.alloc(3 * B * T * C), out3 = k.alloc(B * T * C), att3 = k.alloc(B * NH * T * T);
    nn.attentionForward(out3, att3, qkv, mask, B, T, C, NH, heads);
    assert.deepEqual(out3, out);
    assert.ok(heads.some((x) => x !== 0));
    const dqkv3 = fillUniform(k.alloc(B * T * 3 * C), new Rng(1)), dqkv4 = dqkv3.slice();
    nn.attentionBackward(dqkv3, dout, qkv, att3, mask, new Float32Array(T), B, T, C, NH, heads);
    tsBackend.attentionBackward(dqkv4, dout, qkv, wantAtt, mask, new Float32Array(T), B, T, C, NH);
    assert.ok(maxRelErr(dqkv3, dqkv4) < 1e-5, "dqkv with saved heads");
  });
}
