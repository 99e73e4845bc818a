import assert from "node:assert/strict";
import {
  attentionBackward,
  attentionForward,
  ropeBackward,
  ropeForward,
  ropeTables,
} from "../../src/nn/attention.ts";
import { dropoutMask } from "../../src/nn/dropout.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

const B = 2, T = 3, C = 4, NH = 2;

function checkAttention(withMask: boolean) {
  const rng = new Rng(11);
  const inputs = { qkv: randn(rng, B * T * 3 * C) };
  const out = new Float64Array(B * T * C);
  const att = new Float64Array(B * NH * T * T);
  let mask: Float32Array | null = null;
  if (withMask) {
    mask = new Float32Array(B * NH * T * T);
    dropoutMask(mask, new Rng(5), 0.3, mask.length);
    assert.ok(mask.includes(0));
  }
  gradcheck({
    inputs,
    forward: () => {
      attentionForward(f32(out), f32(att), f32(inputs.qkv), mask, B, T, C, NH);
      return out;
    },
    backward: (dout) => {
      const g = { qkv: new Float64Array(inputs.qkv.length) };
      attentionBackward(
        f32(g.qkv),
        f32(dout),
        f32(inputs.qkv),
        f32(att),
        mask,
        new Float32Array(T),
        B,
        T,
        C,
        NH,
      );
      return g;
    },
  });
}

Deno.test("attentionBackward() matches finite differences", () => checkAttention(false));

Deno.test("attentionBackward() matches finite differences with dropout on the weights", () =>
  checkAttention(true));

Deno.test("attentionForward() equals softmax(q k^T / sqrt(HS)) v per head, bidirectional", () => {
  const rng = new Rng(12);
  const qkv = Float32Array.from(randn(rng, B * T * 3 * C));
  const out = new Float32Array(B * T * C);
  const att = new Float32Array(B * NH * T * T);
  attentionForward(out, att, qkv, null, B, T, C, NH);
  const HS = C / NH;
  const at = (b: number, t: number, part: number, h: number, i: number) =>
    qkv[(b * T + t) * 3 * C + part * C + h * HS + i];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const s = Array.from({ length: T }, (_, t2) => {
          let d = 0;
          for (let i = 0; i < HS; i++) d += at(b, t, 0, h, i) * at(b, t2, 1, h, i);
          return Math.exp(d / Math.sqrt(HS));
        });
        const z = s.reduce((x, y) => x + y, 0);
        for (let i = 0; i < HS; i++) {
          let y = 0;
          for (let t2 = 0; t2 < T; t2++) y += (s[t2] / z) * at(b, t2, 2, h, i);
          assert.ok(Math.abs(out[(b * T + t) * C + h * HS + i] - y) < 1e-5);
        }
        // every position attends to later positions too
        assert.ok(att[((b * NH + h) * T + t) * T + T - 1] > 0);
      }
    }
  }
});

Deno.test("ropeBackward() matches finite differences", () => {
  const rng = new Rng(13);
  const inputs = { qkv: randn(rng, B * T * 3 * C) };
  const cos = new Float64Array(T * C / NH / 2), sin = new Float64Array(T * C / NH / 2);
  ropeTables(cos, sin, T, C / NH);
  const out = new Float64Array(inputs.qkv.length);
  gradcheck({
    inputs,
    forward: () => {
      out.set(inputs.qkv);
      ropeForward(f32(out), cos, sin, B, T, C, NH);
      return out;
    },
    backward: (dout) => {
      const g = { qkv: Float64Array.from(dout) };
      ropeBackward(f32(g.qkv), cos, sin, B, T, C, NH);
      return g;
    },
  });
});

Deno.test("ropeForward() rotates q and k only, so scores depend on relative position", () => {
  const Tl = 6, Cl = 8, NHl = 1, HS = 8;
  const cos = new Float64Array(Tl * HS / 2), sin = new Float64Array(Tl * HS / 2);
  ropeTables(cos, sin, Tl, HS);
  const rng = new Rng(14);
  const q = randn(rng, Cl), k = randn(rng, Cl), v = randn(rng, Cl);
  // the same q and k at every position
  const qkv = new Float64Array(Tl * 3 * Cl);
  for (let t = 0; t < Tl; t++) {
    qkv.set(q, t * 3 * Cl);
    qkv.set(k, t * 3 * Cl + Cl);
    qkv.set(v, t * 3 * Cl + 2 * Cl);
  }
  ropeForward(f32(qkv), cos, sin, 1, Tl, Cl, NHl);
  const score = (tq: number, tk: number) => {
    let s = 0;
    for (let i = 0; i < Cl; i++) s += qkv[tq * 3 * Cl + i] * qkv[tk * 3 * Cl + Cl + i];
    return s;
  };
  assert.ok(Math.abs(score(1, 3) - score(2, 4)) < 1e-12);
  assert.ok(Math.abs(score(0, 5) - score(0, 4)) > 1e-6, "different offsets give different scores");
  // position 0 and the values are untouched
  for (let i = 0; i < Cl; i++) {
    assert.equal(qkv[i], q[i]);
    assert.equal(qkv[5 * 3 * Cl + 2 * Cl + i], v[i]);
  }
  // rotate-half at p=1, i=0: angle 1, pairs (0, 4)
  const y0 = qkv[3 * Cl];
  assert.ok(Math.abs(y0 - (q[0] * Math.cos(1) - q[4] * Math.sin(1))) < 1e-12);
});
