/**
 * F16 and BF16 safetensors: the decoders of src/checkpoint/safetensors.ts against known bit
 * patterns, against encoders written here (round to nearest even), against PyTorch's own
 * conversions (tests/fixtures/dit/make_half_fixtures.py), and a DiT loaded from F16 and BF16
 * files straight into float32.
 */

import assert from "node:assert/strict";
import {
  bf16ToFloat,
  f16ToFloat,
  floatTensorReaders,
  parseSafetensors,
  readFloats,
  readSafetensorsHeader,
  serializeSafetensors,
} from "../../src/checkpoint/safetensors.ts";
import { ditFromSafetensors, modelFromSafetensors } from "../../src/checkpoint/model_io.ts";
import { createDit, ditForward, ditStateDict } from "../../src/model/dit.ts";
import { createDitRunner } from "../../src/model/dit_fast.ts";
import { maxRelErr } from "../rel_err.ts";

const DIR = new URL("../fixtures/dit/", import.meta.url);
const fixture = (name: string) =>
  parseSafetensors(Deno.readFileSync(new URL(`${name}.safetensors`, DIR))).tensors;

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** The F16 bits of a float32 value, rounding to nearest even (NaN to 0x7e00). */
function toF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const e = (b >>> 23) & 0xff, m = b & 0x7fffff;
  if (e === 0xff) return sign | (m === 0 ? 0x7c00 : 0x7e00);
  // the value as an integer number of 2^-24 units (subnormal F16s) or with 11 significant bits
  const exp = e - 127; // unbiased; float32 subnormals are far below F16's range
  if (exp < -25 || e === 0) return sign; // below half the smallest subnormal: zero
  let bits: number, rem: number, half: number;
  if (exp < -14) {
    // subnormal: mantissa (1.m) * 2^exp / 2^-24 = (2^23 + m) * 2^(exp + 1)
    const shift = -exp - 1; // 14 .. 24
    const full = 0x800000 | m;
    bits = full >>> shift;
    rem = full & ((1 << shift) - 1);
    half = 1 << (shift - 1);
  } else {
    bits = ((exp + 15) << 10) | (m >>> 13);
    rem = m & 0x1fff;
    half = 0x1000;
  }
  if (rem > half || (rem === half && (bits & 1) === 1)) bits++; // may carry into inf: right
  return sign | Math.min(bits, 0x7c00);
}

/** The BF16 bits of a float32 value, rounding to nearest even (NaN kept quiet). */
function toBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return (b >>> 16) | 0x40;
  const rem = b & 0xffff;
  let top = b >>> 16;
  if (rem > 0x8000 || (rem === 0x8000 && (top & 1) === 1)) top++;
  return top & 0xffff;
}

/** Per format: its decoder, our encoder, known (bits, value) pairs, NaN patterns. */
const FORMATS = {
  F16: {
    decode: f16ToFloat,
    encode: toF16Bits,
    known: [
      [0x0000, 0],
      [0x3c00, 1],
      [0xbc00, -1],
      [0x3800, 0.5],
      [0x3555, 0.333251953125],
      [0x4248, 3.140625],
      [0x7bff, 65504], // the largest finite
      [0x0400, 2 ** -14], // the smallest normal
      [0x03ff, 1023 * 2 ** -24], // the largest subnormal
      [0x0001, 2 ** -24], // the smallest subnormal
      [0x8001, -(2 ** -24)],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ],
    nans: [0x7e00, 0x7c01, 0xfe00, 0x7fff],
    // the encoder's rounding: halfway cases to even, overflow to inf, underflow to zero, NaN
    rounding: [
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [65519, 0x7bff],
      [65520, 0x7c00],
      [2 ** -25, 0x0000],
      [3 * 2 ** -25, 0x0002],
      [NaN, 0x7e00],
    ],
  },
  BF16: {
    decode: bf16ToFloat,
    encode: toBf16Bits,
    known: [
      [0x0000, 0],
      [0x3f80, 1],
      [0xc0a0, -5],
      [0x4049, 3.140625],
      [0x7f7f, 3.3895313892515355e38], // the largest finite
      [0x0080, 2 ** -126], // the smallest normal
      [0x0001, 2 ** -133], // the smallest subnormal
      [0x7f80, Infinity],
      [0xff80, -Infinity],
    ],
    nans: [0x7fc0, 0xff81, 0x7f81],
    rounding: [
      [1 + 2 ** -8, 0x3f80],
      [1 + 3 * 2 ** -8, 0x3f82],
      [3.4028234663852886e38, 0x7f80], // rounds up to inf
      [NaN, 0x7fc0],
    ],
  },
} as const;

for (const [fmt, { decode, encode, known, nans, rounding }] of Object.entries(FORMATS)) {
  Deno.test(`half floats: known ${fmt} bit patterns, subnormals, inf and nan included`, () => {
    for (const [bits, value] of known) {
      assert.equal(decode(bits), value, `0x${bits.toString(16)}`);
      assert.equal(encode(value), bits, `encode ${value}`);
    }
    assert.ok(Object.is(decode(0x8000), -0));
    for (const nan of nans) assert.ok(Number.isNaN(decode(nan)), `0x${nan.toString(16)}`);
    for (const [value, bits] of rounding) assert.equal(encode(value), bits, `encode ${value}`);
  });
}

Deno.test("half floats: every one of the 65536 bit patterns decodes and encodes back", () => {
  for (let b = 0; b < 1 << 16; b++) {
    const h = f16ToFloat(b), r = bf16ToFloat(b);
    if (Number.isNaN(h)) assert.equal(toF16Bits(h) & 0x7e00, 0x7e00);
    else assert.equal(toF16Bits(h), b, `F16 0x${b.toString(16)}`);
    if (Number.isNaN(r)) assert.ok(((b >> 7) & 0xff) === 0xff && (b & 0x7f) !== 0);
    else assert.equal(toBf16Bits(r), b, `BF16 0x${b.toString(16)}`);
  }
});

Deno.test("half floats: PyTorch's F16 and BF16 bits decode to PyTorch's float values", () => {
  const t = fixture("half_values");
  const n = t.f32.data.length;
  assert.ok(n > 1000);
  for (const [dtype, want] of [["f16", "f16.f32"], ["bf16", "bf16.f32"]] as const) {
    assert.equal(t[dtype].dtype, dtype === "f16" ? "F16" : "BF16");
    const bits = t[dtype].data as Uint16Array;
    const ref = t[want].data as Float32Array;
    const enc = dtype === "f16" ? toF16Bits : toBf16Bits;
    const dec = dtype === "f16" ? f16ToFloat : bf16ToFloat;
    const src = t.f32.data as Float32Array;
    for (let i = 0; i < n; i++) {
      if (Number.isNaN(ref[i])) {
        assert.ok(Number.isNaN(dec(bits[i])), `${dtype}[${i}] nan`);
        continue;
      }
      assert.ok(Object.is(dec(bits[i]), ref[i]), `${dtype}[${i}]: ${dec(bits[i])} vs ${ref[i]}`);
      assert.equal(enc(src[i]), bits[i], `${dtype}[${i}]: our encoder vs PyTorch on ${src[i]}`);
    }
  }
});

Deno.test("half floats: readFloats decodes F16, BF16, F32 and F64, aligned or not", () => {
  const values = [0, -1.5, 2 ** -24, 65504, -Infinity, 0.1];
  const f16 = new Uint16Array(values.map(toF16Bits));
  const bf16 = new Uint16Array(values.map(toBf16Bits));
  const file = serializeSafetensors({
    a: { dtype: "F16", shape: [2, 3], data: f16 },
    b: { dtype: "BF16", shape: [6], data: bf16 },
    c: { shape: [6], data: Float32Array.from(values) },
    d: { shape: [6], data: Float64Array.from(values) },
    i: { shape: [1], data: new Int32Array([7]) },
  });
  const wants: Record<string, number[]> = {
    a: [...f16].map(f16ToFloat),
    b: [...bf16].map(bf16ToFloat),
    c: [...Float32Array.from(values)],
    d: values,
  };
  // the same file at an odd byte offset of a larger buffer: every read goes through DataView
  const shifted = new Uint8Array(file.length + 3).subarray(1, file.length + 1);
  shifted.set(file);
  for (const bytes of [file, shifted]) {
    const { entries } = readSafetensorsHeader(bytes);
    for (const [name, want] of Object.entries(wants)) {
      const out32 = new Float32Array(8).fill(9);
      readFloats(bytes, entries[name], out32, 1);
      assert.deepEqual([...out32], [9, ...Float32Array.from(want), 9], `${name} into f32`);
      const out64 = new Float64Array(6);
      readFloats(bytes, entries[name], out64);
      if (name === "d") assert.deepEqual([...out64], values);
      else assert.deepEqual([...out64], [...Float32Array.from(want)], `${name} into f64`);
    }
    assert.throws(
      () => readFloats(bytes, entries.i, new Float32Array(1)),
      /expected a float tensor \(F16, BF16, F32, F64\), got I32/,
    );
    assert.throws(
      () => readFloats(bytes, entries.a, new Float32Array(6), 1),
      /expected room for 6 values from index 1, got 6 values/,
    );
  }
  assert.throws(() => floatTensorReaders(file), /Invalid tensor "i": expected a float dtype/);
});

Deno.test("half floats: PyTorch's F16 and BF16 DiT load into float32 and run to 1e-4", () => {
  const io = fixture("half_out");
  const tokens = io["in.tokens"].data as Int32Array;
  const sigma = io["in.sigma"].data as Float32Array;
  const f32Weights = fixture("sedd");
  for (const tag of ["f16", "bf16"] as const) {
    const bytes = Deno.readFileSync(new URL(`sedd_${tag}.safetensors`, DIR));
    assert.equal(
      readSafetensorsHeader(bytes).entries["vocab_embed.embedding"].dtype,
      {
        f16: "F16",
        bf16: "BF16",
      }[tag],
    );
    const { model } = modelFromSafetensors(bytes, { config: { kind: "dit", nHeads: 2 } });
    // every value is the half-float rounding of the float32 weight
    const tol = tag === "f16" ? 2 ** -11 : 2 ** -8;
    for (const [name, { offset, shape }] of Object.entries(model.layout)) {
      const w = f32Weights[name].data as Float32Array;
      const n = shape.reduce((a, b) => a * b, 1);
      for (let i = 0; i < n; i++) {
        const got = model.params[offset + i];
        const enc = tag === "f16" ? toF16Bits : toBf16Bits;
        const dec = tag === "f16" ? f16ToFloat : bf16ToFloat;
        assert.equal(got, dec(enc(w[i])), `${name}[${i}]`);
        assert.ok(Math.abs(got - w[i]) <= tol * Math.abs(w[i]) + 2 ** -24, `${name}[${i}]`);
      }
    }
    const want = io[`out.${tag}`].data as Float32Array;
    const e64 = maxRelErr(ditForward(model, tokens, { batch: 2, sigma }), want);
    assert.ok(e64 <= 1e-4, `${tag}: float64 pass rel err ${e64}`);
    const fast = createDitRunner(model, { batch: 2, length: 8, backend: "wasm" });
    const e32 = maxRelErr(fast.forward(tokens, { batch: 2, sigma }), want);
    assert.ok(e32 <= 1e-4, `${tag}: float32 pass rel err ${e32}`);
  }
});

Deno.test("half floats: a DiT written here in F16 and BF16 loads back exactly", () => {
  const dit = createDit({
    vocabSize: 23,
    context: 8,
    dModel: 8,
    nHeads: 2,
    nLayers: 2,
    condDim: 4,
  });
  for (let i = 0; i < dit.params.length; i++) dit.params[i] += Math.sin(i) * 0.3;
  for (
    const [dtype, enc, dec] of [["F16", toF16Bits, f16ToFloat], [
      "BF16",
      toBf16Bits,
      bf16ToFloat,
    ]] as const
  ) {
    const tensors = Object.fromEntries(
      Object.entries(ditStateDict(dit)).map(([n, t]) => [
        n,
        { dtype, shape: t.shape, data: new Uint16Array([...t.data].map(enc)) },
      ]),
    );
    const { model } = ditFromSafetensors(serializeSafetensors(tensors), { config: { nHeads: 2 } });
    assert.deepEqual(model.config, { ...dit.config, context: 1024 }); // context is not in a state dict
    assert.deepEqual([...model.params], [...dit.params].map((v) => dec(enc(v))), dtype);
  }
  // a non-float tensor is named
  const bad = {
    ...ditStateDict(dit),
    "blocks.0.norm1.weight": { shape: [8], data: new Int32Array(8) },
  };
  assert.throws(
    () => ditFromSafetensors(serializeSafetensors(bad), { config: { nHeads: 2 } }),
    /Invalid tensor "blocks.0.norm1.weight": expected a float dtype \(F16, BF16, F32, F64\), got I32/,
  );
});
