import assert from "node:assert/strict";
import {
  parseSafetensors,
  serializeSafetensors,
  swapBytes,
  type TensorInput,
} from "../../src/checkpoint/safetensors.ts";

/** A file from header text and data bytes, with the given (or the true) header length. */
function file(header: string, data: number[] = [], length?: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(length ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const F32_1 = [0, 0, 0x80, 0x3f]; // 1.0f little-endian

Deno.test("serializeSafetensors() writes the expected bytes for a hand-built file", () => {
  const bytes = serializeSafetensors({
    b: { dtype: "I32", shape: [], data: new Int32Array([7]) },
    a: { shape: [2], data: new Float32Array([1, -2]) },
    z: { shape: [1], data: new Float64Array([1]) },
  }, { k: "v" });
  // Metadata first; tensors by decreasing alignment (F64, F32, I32), then by name; 187 bytes of
  // JSON padded with 5 spaces to 192.
  const header = '{"__metadata__":{"k":"v"},' +
    '"z":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
    '"b":{"dtype":"I32","shape":[],"data_offsets":[16,20]}}' + "     ";
  const expected = [
    ...[192, 0, 0, 0, 0, 0, 0, 0],
    ...new TextEncoder().encode(header),
    ...[0, 0, 0, 0, 0, 0, 0xf0, 0x3f], // z = 1.0 (F64)
    ...[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0], // a = [1, -2] (F32)
    ...[7, 0, 0, 0], // b = 7 (I32)
  ];
  assert.equal(header.length, 192);
  assert.deepEqual(Array.from(bytes), expected);
});

Deno.test("parseSafetensors() reads a hand-built file", () => {
  const bytes = file(
    '{"x":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"__metadata__":{"a":"b"}}',
    F32_1,
  );
  const { tensors, metadata } = parseSafetensors(bytes);
  assert.deepEqual(metadata, { a: "b" });
  assert.equal(tensors.x.dtype, "F32");
  assert.deepEqual(tensors.x.shape, [1, 1]);
  assert.deepEqual(tensors.x.data, new Float32Array([1]));
});

Deno.test("parseSafetensors() round trips F32, I32, F64, I64, U8, scalars, zero-size tensors", () => {
  const inputs: Record<string, TensorInput> = {
    "embed.weight": { shape: [2, 3], data: new Float32Array([1, -2.5, 3e-20, NaN, Infinity, -0]) },
    ids: { shape: [4], data: new Int32Array([0, -1, 2147483647, -2147483648]) },
    f64: { shape: [2], data: new Float64Array([Math.PI, -1e300]) },
    i64: { shape: [2], data: new BigInt64Array([-(2n ** 63n), 2n ** 62n + 1n]) },
    bytes: { dtype: "BOOL", shape: [3], data: new Uint8Array([1, 0, 1]) },
    scalar: { shape: [], data: new Float32Array([0.25]) },
    empty: { shape: [0, 5], data: new Float32Array(0) },
    empty2: { shape: [0], data: new Int32Array(0) },
  };
  const { tensors, metadata } = parseSafetensors(serializeSafetensors(inputs));
  assert.deepEqual(metadata, {});
  assert.deepEqual(Object.keys(tensors).sort(), Object.keys(inputs).sort());
  for (const [name, t] of Object.entries(inputs)) {
    assert.deepEqual(tensors[name].shape, t.shape, name);
    assert.deepEqual(tensors[name].data, t.data, name); // NaN and -0 compare as Object.is
  }
  assert.equal(tensors.bytes.dtype, "BOOL");
  assert.equal(tensors.i64.dtype, "I64");
});

Deno.test("parseSafetensors() round trips metadata, including empty strings and unicode", () => {
  const metadata = { config: '{"a":1}', empty: "", text: "Call me Ishmael. 鲸 🐋" };
  const bytes = serializeSafetensors({}, metadata);
  assert.deepEqual(parseSafetensors(bytes), { tensors: {}, metadata });
});

Deno.test("parseSafetensors() reads unaligned input and returns data it owns", () => {
  const bytes = serializeSafetensors({ w: { shape: [3], data: new Float32Array([1, 2, 3]) } });
  const big = new Uint8Array(bytes.length + 3);
  big.set(bytes, 1); // byteOffset 1: a Float32Array view on it would throw
  const { tensors } = parseSafetensors(big.subarray(1, 1 + bytes.length));
  assert.deepEqual(tensors.w.data, new Float32Array([1, 2, 3]));
  big.fill(0);
  assert.deepEqual(tensors.w.data, new Float32Array([1, 2, 3]));
});

Deno.test("parseSafetensors() keeps a tensor named __proto__ as an ordinary entry", () => {
  const bytes = file('{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', F32_1);
  const { tensors } = parseSafetensors(bytes);
  assert.deepEqual(Object.keys(tensors), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(tensors), Object.prototype);
});

Deno.test("swapBytes() reverses each element, for big-endian hosts", () => {
  const b = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  swapBytes(b, 4);
  assert.deepEqual(Array.from(b), [4, 3, 2, 1, 8, 7, 6, 5]);
  swapBytes(b, 2);
  assert.deepEqual(Array.from(b), [3, 4, 1, 2, 7, 8, 5, 6]);
  swapBytes(b, 8);
  assert.deepEqual(Array.from(b), [6, 5, 8, 7, 2, 1, 4, 3]);
});

const T1 = (offsets: string, dtype = "F32", shape = "[1]") =>
  `{"dtype":"${dtype}","shape":${shape},"data_offsets":${offsets}}`;

const MALFORMED: [string, () => Uint8Array, ErrorConstructor, RegExp][] = [
  ["short file", () => new Uint8Array(5), RangeError, /at least 8 bytes.*got 5/],
  [
    "header length past the end",
    () => file("{}", [], 100),
    RangeError,
    /header length 100 runs past/,
  ],
  [
    "header length of 2^64 - 1",
    () => {
      const b = file("{}");
      new DataView(b.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
      return b;
    },
    RangeError,
    /runs past the end/,
  ],
  [
    "invalid UTF-8",
    () => {
      const b = file("{ }");
      b[9] = 0xff;
      return b;
    },
    TypeError,
    /UTF-8/,
  ],
  ["bad JSON", () => file('{"a":'), TypeError, /expected JSON/],
  ["non-object header", () => file("[1,2]"), TypeError, /JSON object/],
  ["trailing text after the header object", () => file("{} {}"), TypeError, /expected JSON/],
  ["tensor entry not an object", () => file('{"a":3}'), TypeError, /tensor "a".*got number 3/],
  [
    "unknown dtype",
    () => file(`{"a":${T1("[0,4]", "F33")}}`, F32_1),
    TypeError,
    /Unknown dtype.*"F33"/,
  ],
  [
    "shape not an array",
    () => file(`{"a":${T1("[0,4]", "F32", '"1"')}}`, F32_1),
    TypeError,
    /shape/,
  ],
  [
    "negative dimension",
    () => file(`{"a":${T1("[0,4]", "F32", "[-1]")}}`, F32_1),
    RangeError,
    /non-negative/,
  ],
  [
    "offsets not a pair",
    () => file(`{"a":${T1("[0]")}}`, F32_1),
    TypeError,
    /data_offsets.*\[begin, end\]/,
  ],
  ["fractional offsets", () => file(`{"a":${T1("[0.5,4.5]")}}`, F32_1), TypeError, /data_offsets/],
  ["end before begin", () => file(`{"a":${T1("[4,0]")}}`, F32_1), RangeError, /begin <= end/],
  [
    "size not matching shape and dtype",
    () => file(`{"a":${T1("[0,8]")}}`, [...F32_1, ...F32_1]),
    RangeError,
    /needs 4 bytes, got \[0, 8\]/,
  ],
  [
    "offsets out of range",
    () => file(`{"a":${T1("[4,8]")}}`, F32_1),
    RangeError,
    /"a".*runs past the end of the data section \(4 bytes\)/,
  ],
  [
    "overlapping tensors",
    () => file(`{"a":${T1("[0,4]")},"b":${T1("[2,6]", "I16", "[2]")}}`, [...F32_1, 0, 0]),
    RangeError,
    /"b".*overlaps.*"a"/,
  ],
  [
    "a hole between tensors",
    () => file(`{"a":${T1("[0,4]")},"b":${T1("[8,12]")}}`, [...F32_1, ...F32_1, ...F32_1]),
    RangeError,
    /hole of 4 bytes at \[4, 8\)/,
  ],
  [
    "a hole at the start",
    () => file(`{"a":${T1("[4,8]")}}`, [...F32_1, ...F32_1]),
    RangeError,
    /hole of 4 bytes at \[0, 4\)/,
  ],
  [
    "unused trailing bytes",
    () => file(`{"a":${T1("[0,4]")}}`, [...F32_1, 9]),
    RangeError,
    /1 unused bytes/,
  ],
  ["metadata not an object", () => file('{"__metadata__":"x"}'), TypeError, /__metadata__.*object/],
  [
    "non-string metadata value",
    () => file('{"__metadata__":{"step":3}}'),
    TypeError,
    /"step".*expected a string, got number 3/,
  ],
  [
    "duplicate tensor names",
    () => file(`{"a":${T1("[0,4]")},"a":${T1("[0,4]")}}`, F32_1),
    TypeError,
    /duplicate tensor name "a"/,
  ],
  [
    "duplicate metadata keys",
    () => file('{"__metadata__":{"k":"1","k":"2"}}'),
    TypeError,
    /duplicate key "k"/,
  ],
];

for (const [what, make, type, message] of MALFORMED) {
  Deno.test(`parseSafetensors() rejects ${what}`, () => {
    assert.throws(() => parseSafetensors(make()), (e: unknown) => {
      assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
      assert.match((e as Error).message, message);
      return true;
    });
  });
}

Deno.test("parseSafetensors() does not mistake keys inside strings for duplicates", () => {
  const bytes = file('{"__metadata__":{"k":"{\\"k\\":1,\\"k\\":2}","j":"\\"k\\""}}');
  assert.deepEqual(parseSafetensors(bytes).metadata, { k: '{"k":1,"k":2}', j: '"k"' });
});

Deno.test("serializeSafetensors() rejects bad tensors and metadata", () => {
  const f = new Float32Array(2);
  assert.throws(
    () => serializeSafetensors({ a: { shape: [3], data: f } }),
    /shape \[3\] needs 3 elements, got 2/,
  );
  assert.throws(
    () => serializeSafetensors({ a: { dtype: "I32", shape: [2], data: f } }),
    (e: unknown) =>
      e instanceof TypeError && /I32 expects a Int32Array, got a Float32Array/.test(e.message),
  );
  assert.throws(() => serializeSafetensors({ __metadata__: { shape: [2], data: f } }), /reserved/);
  assert.throws(
    () => serializeSafetensors({ a: { shape: [-2], data: f } }),
    (e: unknown) => e instanceof RangeError && /non-negative/.test(e.message),
  );
  assert.throws(
    () => serializeSafetensors({}, { step: 3 as unknown as string }),
    (e: unknown) =>
      e instanceof TypeError && /"step": expected a string, got number 3/.test(e.message),
  );
  assert.throws(
    () => serializeSafetensors({ a: { shape: [2], data: [1, 2] as unknown as Float32Array } }),
    TypeError,
  );
});

Deno.test("serializeSafetensors() pads the header to 8 bytes with spaces, every length", () => {
  for (let n = 0; n < 9; n++) {
    const bytes = serializeSafetensors({}, { k: "x".repeat(n) });
    const len = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(len % 8, 0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + len));
    assert.equal(text.trimEnd(), JSON.stringify({ __metadata__: { k: "x".repeat(n) } }));
    assert.match(text, /^[^ ]*} *$/);
  }
});
