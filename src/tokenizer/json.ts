/**
 * Saving and loading tokenizers as versioned JSON, checking a tokenizer object, and hashing it.
 *
 * @module
 */

import { buildBpeTokenizer } from "./bpe.ts";
import { buildGpt2Tokenizer } from "./gpt2.ts";
import { buildSeedTokenizer } from "./seed.ts";
import { sha256Hex } from "./sha256.ts";
import type { Tokenizer } from "./types.ts";

/** The `format` field of tokenizer JSON. */
export const TOKENIZER_JSON_FORMAT = "sedd-tokenizer";
/** The version of tokenizer JSON this module writes and reads. */
export const TOKENIZER_JSON_VERSION = 1;

/** Tokenizers built by this module's builders (or checked once): no need to check again. */
const trusted = new WeakSet<object>();
const hashes = new WeakMap<object, string>();

/** Records that a tokenizer came from a builder and needs no checking. */
export function trust(tokenizer: Tokenizer): Tokenizer {
  trusted.add(tokenizer);
  return tokenizer;
}

function fail(what: string, expected: string, got: unknown): never {
  let shown: string;
  try {
    shown = JSON.stringify(got)?.slice(0, 80) ?? String(got);
  } catch {
    shown = String(got);
  }
  throw new TypeError(`Invalid tokenizer: expected ${what} to be ${expected}, got ${shown}`);
}

function isPair(p: unknown, type: "string" | "number"): boolean {
  return Array.isArray(p) && p.length === 2 && typeof p[0] === type && typeof p[1] === type;
}

/**
 * Checks that an object is a complete, consistent tokenizer (as from a worker message or parsed
 * JSON) by rebuilding it from its defining data (seed: the alphabet and the merge texts; bpe: the
 * merge ids; gpt2: the tokens before `<|mask|>` and the merge texts) and comparing every field.
 *
 * @param value the candidate
 * @returns the tokenizer rebuilt from `value` (frozen)
 * @throws {TypeError} naming the first field that is missing, mistyped or inconsistent
 */
export function checkTokenizer(value: unknown): Tokenizer {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail("the tokenizer", "an object", value);
  }
  const t = value as Record<string, unknown>;
  if (t.kind !== "seed" && t.kind !== "bpe" && t.kind !== "gpt2") {
    fail("kind", '"seed", "bpe" or "gpt2"', t.kind);
  }
  for (const name of ["vocabSize", "eotId", "maskId"]) {
    if (!Number.isInteger(t[name])) fail(name, "an integer", t[name]);
  }
  if (!Array.isArray(t.tokens)) fail("tokens", "an array of strings", t.tokens);
  (t.tokens as unknown[]).forEach((s, i) => {
    if (typeof s !== "string") fail(`tokens[${i}]`, "a string", s);
  });
  if (!Array.isArray(t.merges)) fail("merges", "an array of [string, string]", t.merges);
  (t.merges as unknown[]).forEach((p, i) => {
    if (!isPair(p, "string")) fail(`merges[${i}]`, "a [string, string] pair", p);
  });
  if (!Array.isArray(t.mergeIds)) fail("mergeIds", "an array of [number, number]", t.mergeIds);
  (t.mergeIds as unknown[]).forEach((p, i) => {
    if (!isPair(p, "number")) fail(`mergeIds[${i}]`, "a [number, number] pair", p);
  });
  const tokens = t.tokens as string[];
  let rebuilt: Tokenizer;
  try {
    if (t.kind === "seed") {
      // The alphabet: the leading single code points, in strictly increasing order.
      const alphabet: string[] = [];
      for (const s of tokens) {
        const cp = s.codePointAt(0);
        if (cp === undefined || String.fromCodePoint(cp) !== s) break;
        if (alphabet.length > 0 && cp <= alphabet[alphabet.length - 1].codePointAt(0)!) break;
        alphabet.push(s);
      }
      rebuilt = buildSeedTokenizer(alphabet, t.merges as [string, string][]);
    } else if (t.kind === "gpt2") {
      rebuilt = buildGpt2Tokenizer(tokens.slice(0, -1), t.merges as [string, string][]);
    } else {
      rebuilt = buildBpeTokenizer(t.mergeIds as [number, number][]);
    }
  } catch (e) {
    throw new TypeError(`Invalid tokenizer: ${(e as Error).message}`);
  }
  for (const name of ["vocabSize", "eotId", "maskId"] as const) {
    if (t[name] !== rebuilt[name]) fail(name, String(rebuilt[name]), t[name]);
  }
  if (tokens.length !== rebuilt.tokens.length) {
    fail("tokens.length", String(rebuilt.tokens.length), tokens.length);
  }
  rebuilt.tokens.forEach((s, i) => {
    if (tokens[i] !== s) fail(`tokens[${i}]`, JSON.stringify(s), tokens[i]);
  });
  const merges = t.merges as [string, string][];
  const mergeIds = t.mergeIds as [number, number][];
  for (
    const [name, mine, theirs] of [
      ["merges", rebuilt.merges, merges],
      ["mergeIds", rebuilt.mergeIds, mergeIds],
    ] as const
  ) {
    if (mine.length !== theirs.length) fail(`${name}.length`, String(mine.length), theirs.length);
    mine.forEach((p, i) => {
      if (p[0] !== theirs[i][0] || p[1] !== theirs[i][1]) {
        fail(`${name}[${i}]`, JSON.stringify(p), theirs[i]);
      }
    });
  }
  return trust(rebuilt);
}

/** Returns the tokenizer if it is trusted, else checks it (and trusts it if frozen). */
export function ensureTokenizer(value: Tokenizer): Tokenizer {
  if (trusted.has(value)) return value;
  const checked = checkTokenizer(value);
  if (Object.isFrozen(value)) trusted.add(value);
  return checked;
}

/**
 * Serialises a tokenizer to versioned JSON (fixed key order, so equal tokenizers give equal
 * strings): `{"format":"sedd-tokenizer","version":1,"kind",...,"tokens","merges","mergeIds"}`.
 *
 * @param tokenizer the tokenizer to save
 * @returns the JSON text
 *
 * @example Save and load
 * ```ts
 * import { tokenizerFromJSON, tokenizerToJSON, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["abab abab"], { vocabSize: 260 });
 * const loaded = tokenizerFromJSON(tokenizerToJSON(tokenizer));
 * assert.deepEqual(loaded, tokenizer);
 * ```
 */
export function tokenizerToJSON(tokenizer: Tokenizer): string {
  const t = ensureTokenizer(tokenizer);
  return JSON.stringify({
    format: TOKENIZER_JSON_FORMAT,
    version: TOKENIZER_JSON_VERSION,
    kind: t.kind,
    vocabSize: t.vocabSize,
    eotId: t.eotId,
    maskId: t.maskId,
    tokens: t.tokens,
    merges: t.merges,
    mergeIds: t.mergeIds,
  });
}

/**
 * Loads a tokenizer saved by {@linkcode tokenizerToJSON}. Every field is checked against a
 * rebuild from the merges, so a malformed file fails here, never later.
 *
 * @param json the JSON text
 * @returns the tokenizer
 * @throws {SyntaxError} when the text is not JSON
 * @throws {TypeError} when it is not tokenizer JSON or a field is missing or inconsistent
 * @throws {RangeError} when its version is not {@linkcode TOKENIZER_JSON_VERSION}
 *
 * @example A wrong version is refused
 * ```ts
 * import { tokenizerFromJSON } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => tokenizerFromJSON('{"format":"sedd-tokenizer","version":99}'),
 *   /version: expected 1, got 99/,
 * );
 * ```
 */
export function tokenizerFromJSON(json: string): Tokenizer {
  if (typeof json !== "string") {
    throw new TypeError(`Invalid tokenizer JSON: expected a string, got ${typeof json}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (e) {
    throw new SyntaxError(`Invalid tokenizer JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail("the JSON", "an object", value);
  }
  const v = value as Record<string, unknown>;
  if (v.format !== TOKENIZER_JSON_FORMAT) {
    fail("format", JSON.stringify(TOKENIZER_JSON_FORMAT), v.format);
  }
  if (v.version !== TOKENIZER_JSON_VERSION) {
    throw new RangeError(
      `Unsupported tokenizer JSON version: expected ${TOKENIZER_JSON_VERSION}, got ${
        JSON.stringify(v.version)
      }`,
    );
  }
  return checkTokenizer(v);
}

/**
 * A stable hash of the tokenizer: the SHA-256 (hex) of its {@linkcode tokenizerToJSON} text.
 * Equal tokenizers hash equal in every runtime; use it to key token caches.
 *
 * @param tokenizer the tokenizer
 * @returns 64 lowercase hex digits
 *
 * @example Equal tokenizers, equal hashes
 * ```ts
 * import { tokenizerHash, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const a = trainTokenizer(["the cat"], { kind: "seed", numMerges: 1 });
 * const b = trainTokenizer(["the cat"], { kind: "seed", numMerges: 1 });
 * const c = trainTokenizer(["the cat"], { kind: "seed", numMerges: 2 });
 * assert.equal(tokenizerHash(a), tokenizerHash(b));
 * assert.notEqual(tokenizerHash(a), tokenizerHash(c));
 * assert.match(tokenizerHash(a), /^[0-9a-f]{64}$/);
 * ```
 */
export function tokenizerHash(tokenizer: Tokenizer): string {
  let h = hashes.get(tokenizer);
  if (h === undefined) {
    h = sha256Hex(new TextEncoder().encode(tokenizerToJSON(tokenizer)));
    if (Object.isFrozen(tokenizer)) hashes.set(tokenizer, h);
  }
  return h;
}
