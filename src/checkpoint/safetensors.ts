/**
 * The safetensors file format: read and write, in pure TypeScript (no runtime APIs).
 *
 * A file is an 8-byte little-endian unsigned header length N, then N bytes of UTF-8 JSON, then
 * the raw tensor data. The header maps each tensor name to `{ dtype, shape, data_offsets }`, where
 * `data_offsets` is `[begin, end)` in bytes relative to the start of the data section, plus an
 * optional `"__metadata__"` object of string values. Data is little-endian and row-major. Nothing
 * in a file is executed on load, which is why checkpoints use this format.
 *
 * Like the reference writer (Hugging Face's `safetensors`), {@linkcode serializeSafetensors} pads
 * the header with spaces to a multiple of 8 bytes, lays tensors out by decreasing element
 * alignment and then by name, and lists `__metadata__` first and the tensors in data order.
 * {@linkcode parseSafetensors} accepts exactly the files the reference reader accepts: the tensors
 * must tile the data section with no gap, overlap or trailing byte.
 *
 * @example Round trip
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = serializeSafetensors(
 *   { w: { dtype: "F32", shape: [2], data: new Float32Array([1.5, -2]) } },
 *   { note: "hello" },
 * );
 * const { tensors, metadata } = parseSafetensors(bytes);
 * assert.deepEqual(tensors.w.shape, [2]);
 * assert.deepEqual(tensors.w.data, new Float32Array([1.5, -2]));
 * assert.deepEqual(metadata, { note: "hello" });
 * ```
 *
 * @module
 */

/** The typed array that holds each dtype's elements (16- and 8-bit floats as raw bits). */
export interface DtypeArrays {
  /** booleans, one byte each. */
  BOOL: Uint8Array;
  /** unsigned 8-bit integers. */
  U8: Uint8Array;
  /** signed 8-bit integers. */
  I8: Int8Array;
  /** 8-bit floats (E5M2), raw bits. */
  F8_E5M2: Uint8Array;
  /** 8-bit floats (E4M3), raw bits. */
  F8_E4M3: Uint8Array;
  /** signed 16-bit integers. */
  I16: Int16Array;
  /** unsigned 16-bit integers. */
  U16: Uint16Array;
  /** IEEE half floats, raw bits. */
  F16: Uint16Array;
  /** bfloat16, raw bits. */
  BF16: Uint16Array;
  /** signed 32-bit integers. */
  I32: Int32Array;
  /** unsigned 32-bit integers. */
  U32: Uint32Array;
  /** 32-bit floats. */
  F32: Float32Array;
  /** 64-bit floats. */
  F64: Float64Array;
  /** signed 64-bit integers. */
  I64: BigInt64Array;
  /** unsigned 64-bit integers. */
  U64: BigUint64Array;
}

/** A safetensors element type. */
export type Dtype = keyof DtypeArrays;

/** Any typed array a tensor's data can live in. */
export type TensorData = DtypeArrays[Dtype];

/** One tensor: its element type, its shape (row-major), and its elements. */
export type Tensor = {
  [D in Dtype]: { dtype: D; shape: number[]; data: DtypeArrays[D] };
}[Dtype];

/** A tensor to write; `dtype` may be left out when the typed array implies it. */
export interface TensorInput {
  /** Defaults from the array: Float32Array is F32, Int32Array I32, Uint8Array U8, and so on. */
  dtype?: Dtype;
  /** Row-major shape; its product must equal `data.length`. `[]` is a scalar. */
  shape: readonly number[];
  /** The elements. */
  data: TensorData;
}

/** What {@linkcode parseSafetensors} returns. */
export interface Safetensors {
  /** Tensors by name; each owns a fresh copy of its data. */
  tensors: Record<string, Tensor>;
  /** The `__metadata__` entries (empty when the file has none). */
  metadata: Record<string, string>;
}

type ArrayCtor = { new (buffer: ArrayBuffer, byteOffset?: number, length?: number): TensorData };

/** Element size in bytes and array class of each dtype, in the reference writer's dtype order. */
const DTYPES: Record<Dtype, { size: number; array: ArrayCtor; rank: number }> = {
  BOOL: { size: 1, array: Uint8Array, rank: 0 },
  U8: { size: 1, array: Uint8Array, rank: 1 },
  I8: { size: 1, array: Int8Array, rank: 2 },
  F8_E5M2: { size: 1, array: Uint8Array, rank: 3 },
  F8_E4M3: { size: 1, array: Uint8Array, rank: 4 },
  I16: { size: 2, array: Int16Array, rank: 5 },
  U16: { size: 2, array: Uint16Array, rank: 6 },
  F16: { size: 2, array: Uint16Array, rank: 7 },
  BF16: { size: 2, array: Uint16Array, rank: 8 },
  I32: { size: 4, array: Int32Array, rank: 9 },
  U32: { size: 4, array: Uint32Array, rank: 10 },
  F32: { size: 4, array: Float32Array, rank: 11 },
  F64: { size: 8, array: Float64Array, rank: 12 },
  I64: { size: 8, array: BigInt64Array, rank: 13 },
  U64: { size: 8, array: BigUint64Array, rank: 14 },
};

/** The reference reader's limit on the header size (100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Reverses the bytes of every `size`-byte element in place: converts between little-endian file
 * order and a big-endian host's order. Exported for tests; a no-op for `size` 1.
 *
 * @param bytes The elements' bytes, a whole number of elements.
 * @param size Bytes per element (1, 2, 4 or 8).
 */
export function swapBytes(bytes: Uint8Array, size: number): void {
  for (let o = 0; o + size <= bytes.length; o += size) {
    for (let i = 0, j = size - 1; i < j; i++, j--) {
      const t = bytes[o + i];
      bytes[o + i] = bytes[o + j];
      bytes[o + j] = t;
    }
  }
}

function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.hasOwn(DTYPES, s);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array (${JSON.stringify(v)})`;
  if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  // defineProperty, not assignment: a tensor named "__proto__" must stay an ordinary entry.
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function shapeSize(shape: readonly number[], what: string): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(
        `Invalid shape for ${what}: expected non-negative integers, got ${JSON.stringify(shape)}`,
      );
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`Invalid shape for ${what}: ${JSON.stringify(shape)} is too large`);
  }
  return n;
}

/**
 * Throws if any JSON object in `text` (already known to be valid JSON) repeats a key, which
 * `JSON.parse` would silently resolve to the last value.
 */
function checkDuplicateKeys(text: string): void {
  // One entry per open container: a Set of keys for an object, null for an array.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) {
          const where = stack.length === 1 ? "tensor name" : "key";
          throw new TypeError(
            `Invalid safetensors header: duplicate ${where} ${JSON.stringify(key)}`,
          );
        }
        top.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === "{") {
      stack.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      stack.push(null);
      expectKey = false;
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectKey = false;
    } else if (c === ",") {
      expectKey = stack[stack.length - 1] !== null;
    }
  }
}

/**
 * Reads a safetensors file.
 *
 * Every malformed input throws a `TypeError` (wrong kinds of values: bad JSON, unknown dtype,
 * non-string metadata, duplicate names) or a `RangeError` (wrong sizes: short file, header length
 * past the end, offsets out of range, overlapping, leaving a gap, or disagreeing with the shape).
 * Tensor data is copied, so it is aligned and independent of `bytes`.
 *
 * @param bytes The whole file.
 * @returns The tensors by name and the `__metadata__` entries.
 *
 * @example A file with one 2x2 tensor
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * const data = new Int32Array([1, 2, 3, 4]);
 * const bytes = serializeSafetensors({ ids: { shape: [2, 2], data } });
 * const ids = parseSafetensors(bytes).tensors.ids;
 * assert.equal(ids.dtype, "I32");
 * assert.deepEqual(ids.shape, [2, 2]);
 * assert.deepEqual(ids.data, data);
 * ```
 */
export function parseSafetensors(bytes: Uint8Array): Safetensors {
  const { entries, metadata } = readSafetensorsHeader(bytes);
  const tensors: Record<string, Tensor> = {};
  for (const [name, e] of Object.entries(entries)) {
    const { size, array } = DTYPES[e.dtype];
    const buffer = new ArrayBuffer(e.end - e.begin);
    const own = new Uint8Array(buffer);
    own.set(bytes.subarray(e.begin, e.end));
    if (!HOST_IS_LITTLE_ENDIAN) swapBytes(own, size);
    const data = new array(buffer, 0, (e.end - e.begin) / size);
    setOwn(tensors, name, { dtype: e.dtype, shape: e.shape, data } as Tensor);
  }
  return { tensors, metadata };
}

/** Where one tensor's data lies in a safetensors file: see {@linkcode readSafetensorsHeader}. */
export interface TensorEntry {
  /** Element type. */
  dtype: Dtype;
  /** Row-major shape. */
  shape: number[];
  /** First byte of the data, from the start of the file. */
  begin: number;
  /** End (exclusive) of the data, from the start of the file. */
  end: number;
}

/** What {@linkcode readSafetensorsHeader} returns. */
export interface SafetensorsHeader {
  /** Each tensor's dtype, shape and byte range in the file, by name. */
  entries: Record<string, TensorEntry>;
  /** The `__metadata__` entries (empty when the file has none). */
  metadata: Record<string, string>;
}

/**
 * Reads and checks a safetensors file's header without copying any tensor data: the same checks
 * as {@linkcode parseSafetensors} (which is this plus a copy of each tensor), so that a large
 * file's tensors can be decoded one at a time straight from its bytes (see
 * {@linkcode readFloats}).
 *
 * @param bytes The whole file.
 * @returns Each tensor's entry, with byte offsets from the start of `bytes`, and the metadata.
 *
 * @example
 * ```ts
 * import { readSafetensorsHeader, serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = serializeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * const { entries } = readSafetensorsHeader(bytes);
 * assert.equal(entries.w.dtype, "F32");
 * assert.equal(entries.w.end - entries.w.begin, 8);
 * assert.equal(entries.w.end, bytes.length);
 * ```
 */
export function readSafetensorsHeader(bytes: Uint8Array): SafetensorsHeader {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Invalid safetensors input: expected a Uint8Array, got ${describe(bytes)}`);
  }
  if (bytes.length < 8) {
    throw new RangeError(
      `Invalid safetensors file: expected at least 8 bytes (the header length), got ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > bytes.length - 8) {
    throw new RangeError(
      `Invalid safetensors file: header length ${n} runs past the end ` +
        `(expected at most ${bytes.length - 8} bytes after the length field)`,
    );
  }
  if (n > MAX_HEADER_BYTES) {
    throw new RangeError(
      `Invalid safetensors file: expected a header of at most ${MAX_HEADER_BYTES} bytes, got ${n}`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      bytes.subarray(8, 8 + n),
    );
  } catch {
    throw new TypeError("Invalid safetensors header: expected UTF-8 text, got invalid bytes");
  }
  if (!text.startsWith("{")) {
    throw new TypeError(
      `Invalid safetensors header: expected a JSON object starting with "{", got ` +
        JSON.stringify(text.slice(0, 20)),
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new TypeError(
      `Invalid safetensors header: expected JSON, got a parse error (${(e as Error).message})`,
    );
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new TypeError(
      `Invalid safetensors header: expected a JSON object, got ${describe(header)}`,
    );
  }
  checkDuplicateKeys(text);

  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: Dtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof info !== "object" || info === null || Array.isArray(info)) {
        throw new TypeError(
          `Invalid safetensors __metadata__: expected an object of strings, got ${describe(info)}`,
        );
      }
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== "string") {
          throw new TypeError(
            `Invalid safetensors __metadata__ entry ${JSON.stringify(k)}: expected a string, ` +
              `got ${describe(v)}`,
          );
        }
        setOwn(metadata, k, v);
      }
      continue;
    }
    const what = `tensor ${JSON.stringify(name)}`;
    if (typeof info !== "object" || info === null || Array.isArray(info)) {
      throw new TypeError(
        `Invalid safetensors entry for ${what}: expected { dtype, shape, data_offsets }, ` +
          `got ${describe(info)}`,
      );
    }
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    if (!isDtype(dtype)) {
      throw new TypeError(
        `Unknown dtype for ${what}: expected one of ${Object.keys(DTYPES).join(", ")}, ` +
          `got ${describe(dtype)}`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === "number")) {
      throw new TypeError(
        `Invalid shape for ${what}: expected an array of integers, got ${describe(shape)}`,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new TypeError(
        `Invalid data_offsets for ${what}: expected [begin, end] non-negative integers, ` +
          `got ${describe(offsets)}`,
      );
    }
    const [begin, end] = offsets as number[];
    if (end < begin) {
      throw new RangeError(
        `Invalid data_offsets for ${what}: expected begin <= end, got [${begin}, ${end}]`,
      );
    }
    const expected = shapeSize(shape, what) * DTYPES[dtype].size;
    if (end - begin !== expected) {
      throw new RangeError(
        `Invalid data_offsets for ${what}: shape ${JSON.stringify(shape)} of ${dtype} needs ` +
          `${expected} bytes, got [${begin}, ${end}] (${end - begin} bytes)`,
      );
    }
    entries.push({ name, dtype, shape, begin, end });
  }

  // The tensors must tile the data section exactly, as the reference reader requires.
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const sorted = entries.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let previous = "";
  for (const e of sorted) {
    if (e.end > dataLength) {
      throw new RangeError(
        `Invalid data_offsets for tensor ${JSON.stringify(e.name)}: [${e.begin}, ${e.end}] runs ` +
          `past the end of the data section (${dataLength} bytes)`,
      );
    }
    if (e.begin < at) {
      throw new RangeError(
        `Invalid data_offsets: tensor ${JSON.stringify(e.name)} [${e.begin}, ${e.end}] overlaps ` +
          `tensor ${JSON.stringify(previous)} ending at ${at}`,
      );
    }
    if (e.begin > at) {
      throw new RangeError(
        `Invalid data_offsets: a hole of ${e.begin - at} bytes at [${at}, ${e.begin}) before ` +
          `tensor ${JSON.stringify(e.name)}`,
      );
    }
    at = e.end;
    previous = e.name;
  }
  if (at !== dataLength) {
    throw new RangeError(
      `Invalid safetensors file: expected the tensors to cover the ${dataLength}-byte data ` +
        `section, got ${dataLength - at} unused bytes at the end`,
    );
  }

  const out: Record<string, TensorEntry> = {};
  for (const e of entries) {
    setOwn(out, e.name, {
      dtype: e.dtype,
      shape: e.shape,
      begin: dataStart + e.begin,
      end: dataStart + e.end,
    });
  }
  return { entries: out, metadata };
}

function inferDtype(data: TensorData): Dtype | undefined {
  if (data instanceof Float32Array) return "F32";
  if (data instanceof Float64Array) return "F64";
  if (data instanceof Int32Array) return "I32";
  if (data instanceof Uint32Array) return "U32";
  if (data instanceof Int16Array) return "I16";
  if (data instanceof Uint16Array) return "U16";
  if (data instanceof Int8Array) return "I8";
  if (data instanceof Uint8Array) return "U8";
  if (data instanceof BigInt64Array) return "I64";
  if (data instanceof BigUint64Array) return "U64";
  return undefined;
}

/**
 * Writes tensors and string metadata as a safetensors file.
 *
 * Tensors are laid out by decreasing element alignment, then by name, as the reference writer
 * does; `__metadata__` is written only when it has entries.
 *
 * @param tensors Tensors by name; each `data.length` must equal the product of its `shape`.
 * @param metadata String entries for `__metadata__`.
 * @returns The file's bytes.
 *
 * @example A scalar and a vector
 * ```ts
 * import { serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = serializeSafetensors({
 *   loss: { shape: [], data: new Float32Array([0.5]) },
 *   ids: { shape: [3], data: new Int32Array([1, 2, 3]) },
 * });
 * const n = new DataView(bytes.buffer).getUint32(0, true);
 * assert.equal(n % 8, 0); // the header is padded to 8 bytes
 * assert.equal(bytes.length, 8 + n + 4 + 12);
 * ```
 */
export function serializeSafetensors(
  tensors: Record<string, TensorInput>,
  metadata: Record<string, string> = {},
): Uint8Array {
  if (typeof tensors !== "object" || tensors === null || Array.isArray(tensors)) {
    throw new TypeError(`Invalid tensors: expected an object of tensors, got ${describe(tensors)}`);
  }
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
    throw new TypeError(
      `Invalid metadata: expected an object of strings, got ${describe(metadata)}`,
    );
  }
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") {
      throw new TypeError(
        `Invalid metadata entry ${JSON.stringify(k)}: expected a string, got ${describe(v)}`,
      );
    }
    setOwn(meta, k, v);
  }

  const items: { name: string; dtype: Dtype; shape: number[]; data: TensorData }[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const what = `tensor ${JSON.stringify(name)}`;
    if (name === "__metadata__") {
      throw new RangeError(`Invalid tensor name: "__metadata__" is reserved for metadata`);
    }
    if (typeof t !== "object" || t === null || !ArrayBuffer.isView(t.data)) {
      throw new TypeError(
        `Invalid ${what}: expected { shape, data: TypedArray }, got ${describe(t)}`,
      );
    }
    const dtype = t.dtype ?? inferDtype(t.data);
    if (!isDtype(dtype)) {
      throw new TypeError(
        `Unknown dtype for ${what}: expected one of ${Object.keys(DTYPES).join(", ")}, ` +
          `got ${describe(dtype)}`,
      );
    }
    const { array } = DTYPES[dtype];
    if (!(t.data instanceof array)) {
      throw new TypeError(
        `Invalid data for ${what}: dtype ${dtype} expects a ${array.name}, got a ` +
          (t.data as object).constructor.name,
      );
    }
    if (!Array.isArray(t.shape)) {
      throw new TypeError(`Invalid shape for ${what}: expected an array, got ${describe(t.shape)}`);
    }
    const count = shapeSize(t.shape, what);
    if (count !== t.data.length) {
      throw new RangeError(
        `Invalid data for ${what}: shape ${JSON.stringify(t.shape)} needs ${count} elements, ` +
          `got ${t.data.length}`,
      );
    }
    items.push({ name, dtype, shape: [...t.shape], data: t.data });
  }
  items.sort((a, b) =>
    DTYPES[b.dtype].rank - DTYPES[a.dtype].rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );

  const header: Record<string, unknown> = {};
  if (Object.keys(meta).length > 0) header.__metadata__ = meta;
  let offset = 0;
  for (const it of items) {
    const end = offset + it.data.byteLength;
    setOwn(header, it.name, { dtype: it.dtype, shape: it.shape, data_offsets: [offset, end] });
    offset = end;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20); // spaces, as the reference writer pads
    p.set(json);
    json = p;
  }

  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  let at = 8 + padded;
  for (const it of items) {
    const src = new Uint8Array(it.data.buffer, it.data.byteOffset, it.data.byteLength);
    const dst = out.subarray(at, at + src.length);
    dst.set(src);
    if (!HOST_IS_LITTLE_ENDIAN) swapBytes(dst, DTYPES[it.dtype].size);
    at += src.length;
  }
  return out;
}

/** The float dtypes {@linkcode readFloats} decodes. */
export const FLOAT_DTYPES: readonly Dtype[] = ["F16", "BF16", "F32", "F64"];

/**
 * The value of an IEEE 754 half-precision float (F16) given its 16 bits: 1 sign bit, 5 exponent
 * bits (bias 15), 10 fraction bits; exponent 0 is zero or a subnormal `f 2^-24`, exponent 31
 * infinity (fraction 0) or NaN. Exact: every F16 value is a float32 value.
 *
 * @param bits The 16 bits, `0 <= bits < 65536`.
 * @returns The value.
 *
 * @example
 * ```ts
 * import { f16ToFloat } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(f16ToFloat(0x3c00), 1);
 * assert.equal(f16ToFloat(0xc000), -2);
 * assert.equal(f16ToFloat(0x0001), 2 ** -24); // the smallest subnormal
 * assert.equal(f16ToFloat(0x7c00), Infinity);
 * assert.ok(Number.isNaN(f16ToFloat(0x7e00)));
 * ```
 */
export function f16ToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f, f = bits & 0x3ff;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f === 0 ? sign * Infinity : NaN;
  return sign * (1024 + f) * 2 ** (e - 25);
}

/**
 * The value of a bfloat16 (BF16) given its 16 bits: the top half of a float32's bits (1 sign, 8
 * exponent, 7 fraction), so the conversion is exact, subnormals, infinities and NaNs included.
 *
 * @param bits The 16 bits, `0 <= bits < 65536`.
 * @returns The value.
 *
 * @example
 * ```ts
 * import { bf16ToFloat } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(bf16ToFloat(0x3f80), 1);
 * assert.equal(bf16ToFloat(0xc0a0), -5);
 * assert.equal(bf16ToFloat(0xff80), -Infinity);
 * ```
 */
export function bf16ToFloat(bits: number): number {
  bitsScratch[0] = bits << 16;
  return floatScratch[0];
}

const bitsScratch = new Uint32Array(1);
const floatScratch = new Float32Array(bitsScratch.buffer);

let f16Table: Float32Array | null = null; // every F16 value by its bits, made on first use

/**
 * Decodes a float tensor of a safetensors file (F16, BF16, F32 or F64) straight from the file's
 * bytes into `out` from `offset` on, converting to the element type of `out`, with no copy of the
 * tensor in between: so a model loads from a file of any of these dtypes with the file and the
 * model's own arrays in memory, never a second model. F16 and BF16 convert exactly (their values
 * are all float32 values); F64 into a `Float32Array` rounds to nearest.
 *
 * @param bytes The whole file.
 * @param entry The tensor, from {@linkcode readSafetensorsHeader}.
 * @param out Where the values go.
 * @param offset First index of `out` written. Default 0.
 * @throws TypeError for a dtype that is not one of {@linkcode FLOAT_DTYPES}; RangeError when
 *   `out` is too short or the entry lies outside `bytes`.
 *
 * @example Half floats into a Float32Array
 * ```ts
 * import { readFloats, readSafetensorsHeader, serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * // 1, -2 and 0.5 as F16 bits
 * const bytes = serializeSafetensors({
 *   w: { dtype: "F16", shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x3800]) },
 * });
 * const out = new Float32Array(3);
 * readFloats(bytes, readSafetensorsHeader(bytes).entries.w, out);
 * assert.deepEqual([...out], [1, -2, 0.5]);
 * ```
 */
export function readFloats(
  bytes: Uint8Array,
  entry: TensorEntry,
  out: Float32Array | Float64Array,
  offset = 0,
): void {
  const { dtype, begin, end } = entry;
  if (!FLOAT_DTYPES.includes(dtype)) {
    throw new TypeError(
      `Invalid dtype: expected a float tensor (${FLOAT_DTYPES.join(", ")}), got ${dtype}`,
    );
  }
  if (!(begin >= 0 && end <= bytes.length && begin <= end)) {
    throw new RangeError(
      `Invalid tensor entry: expected bytes [${begin}, ${end}) inside the ${bytes.length}-byte file`,
    );
  }
  const size = DTYPES[dtype].size;
  const n = (end - begin) / size;
  if (!Number.isInteger(offset) || offset < 0 || offset + n > out.length) {
    throw new RangeError(
      `Output too short: expected room for ${n} values from index ${offset}, got ${out.length} values`,
    );
  }
  const at = bytes.byteOffset + begin;
  if (HOST_IS_LITTLE_ENDIAN && at % size === 0) {
    // aligned on a little-endian host: a view of the file's bytes in place
    if (dtype === "F32") out.set(new Float32Array(bytes.buffer, at, n), offset);
    else if (dtype === "F64") out.set(new Float64Array(bytes.buffer, at, n), offset);
    else decode16(new Uint16Array(bytes.buffer, at, n), dtype, out, offset);
    return;
  }
  const view = new DataView(bytes.buffer, at, end - begin);
  if (dtype === "F32") {
    for (let i = 0; i < n; i++) {
      out[offset + i] = view.getFloat32(4 * i, true);
    }
  } else if (dtype === "F64") {
    for (let i = 0; i < n; i++) out[offset + i] = view.getFloat64(8 * i, true);
  } else {
    const bits = new Uint16Array(Math.min(n, 1 << 16));
    for (let i = 0; i < n; i += bits.length) {
      const m = Math.min(bits.length, n - i);
      for (let j = 0; j < m; j++) bits[j] = view.getUint16(2 * (i + j), true);
      decode16(bits.subarray(0, m), dtype, out, offset + i);
    }
  }
}

/** `out[offset + i] = value of bits[i]` for F16 or BF16. */
function decode16(
  bits: Uint16Array,
  dtype: Dtype,
  out: Float32Array | Float64Array,
  offset: number,
): void {
  const n = bits.length;
  if (dtype === "BF16") {
    if (out instanceof Float32Array && (out.byteOffset + 4 * offset) % 4 === 0) {
      // the bits of a float32 are the BF16 bits followed by 16 zero bits
      const u = new Uint32Array(out.buffer, out.byteOffset + 4 * offset, n);
      for (let i = 0; i < n; i++) u[i] = bits[i] << 16;
    } else {
      for (let i = 0; i < n; i++) out[offset + i] = bf16ToFloat(bits[i]);
    }
    return;
  }
  if (f16Table === null) {
    f16Table = new Float32Array(1 << 16);
    for (let b = 0; b < 1 << 16; b++) f16Table[b] = f16ToFloat(b);
  }
  const t = f16Table;
  for (let i = 0; i < n; i++) out[offset + i] = t[bits[i]];
}

/** A float tensor of a file, not yet decoded: see {@linkcode floatTensorReaders}. */
export interface FloatTensorReader {
  /** Its dtype in the file (one of {@linkcode FLOAT_DTYPES}). */
  dtype: Dtype;
  /** Row-major shape. */
  shape: number[];
  /** Decodes its values from the file's bytes into `dst` (at least as long as the tensor). */
  read(dst: Float32Array | Float64Array): void;
}

/**
 * Indexes a file whose tensors are all floats (F16, BF16, F32 or F64) without copying any data:
 * each tensor's `read(dst)` decodes it from `bytes` when called ({@linkcode readFloats}), so a
 * loader fills its own buffers tensor by tensor.
 *
 * @param bytes The whole file.
 * @returns The readers by name and the `__metadata__` entries.
 * @throws TypeError naming the first tensor of another dtype; the errors of
 *   {@linkcode readSafetensorsHeader} for a malformed file.
 *
 * @example
 * ```ts
 * import { floatTensorReaders, serializeSafetensors } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = serializeSafetensors({
 *   b: { dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0x4040]) }, // 1, 3
 * });
 * const { tensors } = floatTensorReaders(bytes);
 * const out = new Float32Array(2);
 * tensors.b.read(out);
 * assert.deepEqual([...out], [1, 3]);
 * ```
 */
export function floatTensorReaders(
  bytes: Uint8Array,
): { tensors: Record<string, FloatTensorReader>; metadata: Record<string, string> } {
  const { entries, metadata } = readSafetensorsHeader(bytes);
  const tensors: Record<string, FloatTensorReader> = {};
  for (const [name, e] of Object.entries(entries)) {
    if (!FLOAT_DTYPES.includes(e.dtype)) {
      throw new TypeError(
        `Invalid tensor ${JSON.stringify(name)}: expected a float dtype (${
          FLOAT_DTYPES.join(", ")
        }), got ${e.dtype}`,
      );
    }
    setOwn(tensors, name, {
      dtype: e.dtype,
      shape: e.shape,
      read: (dst: Float32Array | Float64Array) => readFloats(bytes, e, dst),
    });
  }
  return { tensors, metadata };
}
