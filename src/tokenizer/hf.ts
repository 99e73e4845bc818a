/**
 * Loading GPT-2-style byte-level BPE vocabularies: a Hugging Face `tokenizer.json`, or the older
 * `vocab.json` + `merges.txt` pair. Both give a `kind: "gpt2"` tokenizer with the file's own ids
 * and `<|mask|>` appended as the last id. The caller reads the files (this module does no I/O),
 * so it runs in any JavaScript runtime.
 *
 * @module
 */

import { buildGpt2Tokenizer } from "./gpt2.ts";
import { trust } from "./json.ts";
import type { Tokenizer } from "./types.ts";

/** A tokenizer file that cannot be read as what it should be; one line naming the file. */
export class TokenizerFileError extends TypeError {
  /** The file's name, as the caller gave it (default: the conventional name). */
  readonly file: string;
  /**
   * Makes the error.
   *
   * @param file The file's name.
   * @param detail What was expected and what was found.
   */
  constructor(file: string, detail: string) {
    super(`Invalid ${file}: ${detail.split("\n")[0]}`);
    this.name = "TokenizerFileError";
    this.file = file;
  }
}

/** Options of {@linkcode tokenizerFromHuggingFace}. */
export interface HuggingFaceOptions {
  /** The file's name for error messages (default `"tokenizer.json"`). */
  file?: string;
}

/** Options of {@linkcode tokenizerFromVocabMerges}. */
export interface VocabMergesOptions {
  /** The vocabulary file's name for error messages (default `"vocab.json"`). */
  vocabFile?: string;
  /** The merges file's name for error messages (default `"merges.txt"`). */
  mergesFile?: string;
}

function show(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, 80) ?? String(value);
  } catch {
    return String(value);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseJson(text: unknown, file: string): unknown {
  if (typeof text !== "string") {
    throw new TokenizerFileError(file, `expected its text as a string, got ${typeof text}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerFileError(file, `expected JSON, got a parse error: ${(e as Error).message}`);
  }
}

/**
 * Turns a token -> id object into id -> token, plus extra (id, token) entries.
 *
 * @throws {TokenizerFileError} on an id that is not an integer, repeats, or leaves a gap
 */
function vocabArray(
  vocab: Record<string, unknown>,
  where: string,
  file: string,
  extra: readonly { id: number; content: string }[] = [],
): string[] {
  const byId: (string | undefined)[] = [];
  const put = (token: string, id: unknown, what: string) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= 2 ** 21) {
      throw new TokenizerFileError(
        file,
        `expected ${what} ${show(token)} to have an id 0 <= id < 2^21, got ${show(id)}`,
      );
    }
    const other = byId[id];
    if (other !== undefined && other !== token) {
      throw new TokenizerFileError(
        file,
        `expected one token per id, got ${show(other)} and ${show(token)} at id ${id}`,
      );
    }
    byId[id] = token;
  };
  for (const [token, id] of Object.entries(vocab)) put(token, id, `${where} token`);
  for (const { id, content } of extra) put(content, id, "added token");
  for (let id = 0; id < byId.length; id++) {
    if (byId[id] === undefined) {
      throw new TokenizerFileError(
        file,
        `expected ids 0..${byId.length - 1} without gaps, got no token for id ${id}`,
      );
    }
  }
  return byId as string[];
}

/** Fields of a `BPE` model that must keep their default for GPT-2's algorithm. */
const BPE_DEFAULTS: [string, (v: unknown) => boolean, string][] = [
  ["dropout", (v) => v === null || v === undefined, "null"],
  ["unk_token", (v) => v === null || v === undefined, "null"],
  ["continuing_subword_prefix", (v) => v === null || v === undefined || v === "", "null"],
  ["end_of_word_suffix", (v) => v === null || v === undefined || v === "", "null"],
  ["byte_fallback", (v) => v === undefined || v === false, "false"],
  ["ignore_merges", (v) => v === undefined || v === false, "false"],
];

/**
 * Loads a Hugging Face `tokenizer.json` whose model is byte-level BPE in GPT-2's way: `model.type`
 * `"BPE"` with its `vocab` and `merges` (as `"a b"` strings or `["a", "b"]` pairs), no normalizer,
 * the `ByteLevel` pre-tokenizer (GPT-2's regex, no prefix space) and the `ByteLevel` decoder (or
 * none), and no post-processor but `ByteLevel` (none that adds tokens). `added_tokens` are
 * taken into the vocabulary at their ids but not looked for in the text: a literal
 * `<|endoftext|>` in the input encodes as text, not as the special id.
 *
 * @param json the file's text, or the object it parses to
 * @param options `file`: the name used in error messages
 * @returns a `kind: "gpt2"` tokenizer; for GPT-2's file, `vocabSize` 50258, `eotId` 50256 and
 *   `maskId` 50257
 * @throws {TokenizerFileError} (a `TypeError`) naming the file and the first field that is not
 *   what this loader expects
 *
 * @example A tiny byte-level vocabulary
 * ```ts
 * import { byteToUnicode, decode, encode, tokenizerFromHuggingFace } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const vocab: Record<string, number> = {};
 * byteToUnicode().forEach((ch, b) => (vocab[ch] = b));
 * vocab["Ġh"] = 256;
 * vocab["Ġhi"] = 257;
 * vocab["<|endoftext|>"] = 258;
 * const tokenizer = tokenizerFromHuggingFace({
 *   model: { type: "BPE", vocab, merges: ["Ġ h", "Ġh i"] },
 *   pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
 *   decoder: { type: "ByteLevel" },
 * });
 * assert.deepEqual([...encode(tokenizer, "hi hi")], [0x68, 0x69, 257]);
 * assert.equal(decode(tokenizer, [257, 258]), " hi");
 * assert.equal(tokenizer.maskId, 259);
 * assert.throws(() => tokenizerFromHuggingFace("{}"), /^TokenizerFileError: Invalid tokenizer\.json: expected model/);
 * ```
 */
export function tokenizerFromHuggingFace(
  json: string | object,
  options: HuggingFaceOptions = {},
): Tokenizer {
  const file = options.file ?? "tokenizer.json";
  const root = typeof json === "string" ? parseJson(json, file) : json;
  const fail = (what: string, expected: string, got: unknown): never => {
    throw new TokenizerFileError(file, `expected ${what} to be ${expected}, got ${show(got)}`);
  };
  if (!isObject(root)) fail("the file", "a JSON object", root);
  const r = root as Record<string, unknown>;
  const model = r.model;
  if (!isObject(model)) fail("model", "an object", model);
  const m = model as Record<string, unknown>;
  if (m.type !== "BPE") fail("model.type", '"BPE"', m.type);
  for (const [name, ok, expected] of BPE_DEFAULTS) {
    if (!ok(m[name])) fail(`model.${name}`, expected, m[name]);
  }
  if (!isObject(m.vocab)) fail("model.vocab", "an object of token -> id", m.vocab);
  if (!Array.isArray(m.merges)) fail("model.merges", "an array", m.merges);
  const merges = (m.merges as unknown[]).map((item, i): [string, string] => {
    if (typeof item === "string") {
      const parts = item.split(" ");
      if (parts.length === 2 && parts[0] !== "" && parts[1] !== "") return [parts[0], parts[1]];
    } else if (
      Array.isArray(item) && item.length === 2 && typeof item[0] === "string" &&
      typeof item[1] === "string"
    ) {
      return [item[0], item[1]];
    }
    return fail(`model.merges[${i}]`, 'a "left right" string or a [left, right] pair', item);
  });
  if (r.normalizer !== null && r.normalizer !== undefined) {
    fail("normalizer", "null", r.normalizer);
  }
  const pre = r.pre_tokenizer;
  if (!isObject(pre) || pre.type !== "ByteLevel") {
    fail("pre_tokenizer", 'a "ByteLevel" pre-tokenizer', pre);
  }
  const p = pre as Record<string, unknown>;
  if (p.add_prefix_space !== false && p.add_prefix_space !== undefined) {
    fail("pre_tokenizer.add_prefix_space", "false", p.add_prefix_space);
  }
  if (p.use_regex !== true && p.use_regex !== undefined) {
    fail("pre_tokenizer.use_regex", "true", p.use_regex);
  }
  const post = r.post_processor;
  if (post !== null && post !== undefined && (!isObject(post) || post.type !== "ByteLevel")) {
    fail("post_processor", 'null or "ByteLevel" (no tokens added around the text)', post);
  }
  const dec = r.decoder;
  if (dec !== null && dec !== undefined && (!isObject(dec) || dec.type !== "ByteLevel")) {
    fail("decoder", 'null or a "ByteLevel" decoder', dec);
  }
  const added = r.added_tokens ?? [];
  if (!Array.isArray(added)) fail("added_tokens", "an array", added);
  const extra = (added as unknown[]).map((t, i) => {
    if (!isObject(t) || typeof t.content !== "string" || !Number.isInteger(t.id)) {
      fail(`added_tokens[${i}]`, "an object with an integer id and a string content", t);
    }
    return { id: (t as { id: number }).id, content: (t as { content: string }).content };
  });
  const vocab = vocabArray(m.vocab as Record<string, unknown>, "model.vocab", file, extra);
  try {
    return trust(buildGpt2Tokenizer(vocab, merges));
  } catch (e) {
    throw new TokenizerFileError(file, (e as Error).message);
  }
}

/**
 * Loads the older pair of files: `vocab.json` (token -> id, as GPT-2's `encoder.json`) and
 * `merges.txt` (GPT-2's `vocab.bpe`: an optional `#version` first line, then one merge per line
 * as the two token texts separated by one space; a final newline is allowed, and a line ending
 * in `\r` is read without it).
 *
 * @param vocabJson the text of `vocab.json`
 * @param mergesTxt the text of `merges.txt`
 * @param options file names for error messages
 * @returns a `kind: "gpt2"` tokenizer; for GPT-2's files, `vocabSize` 50258, `eotId` 50256 and
 *   `maskId` 50257
 * @throws {TokenizerFileError} (a `TypeError`) naming the file, and for `merges.txt` the line,
 *   with what was expected
 *
 * @example A malformed merges file
 * ```ts
 * import { tokenizerFromVocabMerges } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => tokenizerFromVocabMerges('{"a": 0}', "#version: 0.2\na b c\n"),
 *   { message: 'Invalid merges.txt: line 2: expected two tokens separated by one space, got "a b c"' },
 * );
 * ```
 */
export function tokenizerFromVocabMerges(
  vocabJson: string,
  mergesTxt: string,
  options: VocabMergesOptions = {},
): Tokenizer {
  const vocabFile = options.vocabFile ?? "vocab.json";
  const mergesFile = options.mergesFile ?? "merges.txt";
  const root = parseJson(vocabJson, vocabFile);
  if (!isObject(root)) {
    throw new TokenizerFileError(vocabFile, `expected an object of token -> id, got ${show(root)}`);
  }
  if (typeof mergesTxt !== "string") {
    throw new TokenizerFileError(
      mergesFile,
      `expected its text as a string, got ${typeof mergesTxt}`,
    );
  }
  const lines = mergesTxt.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const merges: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (i === 0 && line.startsWith("#version")) return;
    const parts = line.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      throw new TokenizerFileError(
        mergesFile,
        `line ${i + 1}: expected two tokens separated by one space, got ${show(line)}`,
      );
    }
    merges.push([parts[0], parts[1]]);
  });
  const vocab = vocabArray(root, "vocabulary", vocabFile);
  try {
    return trust(buildGpt2Tokenizer(vocab, merges));
  } catch (e) {
    const message = (e as Error).message;
    // Problems with a merge are the merges file's; the rest are the vocabulary's.
    throw new TokenizerFileError(/\bmerges?\b/.test(message) ? mergesFile : vocabFile, message);
  }
}
