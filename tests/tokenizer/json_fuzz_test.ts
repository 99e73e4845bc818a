/**
 * Bounded, seeded fuzzing of tokenizer JSON: every mutated text either loads to a tokenizer that
 * passes the full check and round trips, or throws one of the loader's own errors (a TypeError,
 * SyntaxError or RangeError whose message says what was expected), never a crash from inside.
 */
import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import { checkTokenizer } from "../../src/tokenizer/json.ts";
import {
  type Tokenizer,
  tokenizerFromJSON,
  tokenizerToJSON,
  trainTokenizer,
} from "../../src/tokenizer/mod.ts";

const text = "the whale swam in the sea; the sea was deep. Ishmael, café, naïve — 鯨. ".repeat(6);
const tokenizers: [string, Tokenizer][] = [
  ["seed", trainTokenizer([text], { kind: "seed", numMerges: 12 })],
  ["bpe", trainTokenizer([text], { kind: "bpe", vocabSize: 290 })],
];
const CASES = 150; // per tokenizer and mutation kind: a few hundred milliseconds in all

const OWN = /^(Invalid tokenizer|Unsupported tokenizer JSON version)/;

/** The loader's verdict on `json`: a valid tokenizer, or one of its own errors. */
function verdict(json: string, what: string): "loaded" | "refused" {
  let t: Tokenizer;
  try {
    t = tokenizerFromJSON(json);
  } catch (e) {
    const ok = (e instanceof TypeError || e instanceof SyntaxError || e instanceof RangeError) &&
      OWN.test(e.message) && !e.message.includes("\n");
    assert.ok(ok, `${what}: not the loader's own error: ${(e as Error)?.stack ?? e}`);
    return "refused";
  }
  // Never half-loaded: what loads passes the full check and saves back to the same tokenizer.
  assert.deepEqual(checkTokenizer(t), t, what);
  assert.deepEqual(tokenizerFromJSON(tokenizerToJSON(t)), t, what);
  return "loaded";
}

/** A JSON value of another type than `v`. */
function otherType(v: unknown, rng: Rng): unknown {
  const all: unknown[] = [null, true, 0, -1, 1.5, 1e308, "", "x", [], [1, 2], {}, { a: 1 }];
  const candidates = all.filter((c) =>
    typeof c !== typeof v || Array.isArray(c) !== Array.isArray(v)
  );
  return candidates[rng.int(candidates.length)];
}

/** Replaces one random node (found by walking from the root) of a JSON value. */
function mutateNode(root: unknown, rng: Rng): unknown {
  if (typeof root !== "object" || root === null) return otherType(root, rng);
  const keys = Object.keys(root as object);
  if (keys.length === 0 || rng.uniform() < 0.25) return otherType(root, rng);
  const k = keys[rng.int(keys.length)];
  const copy = (Array.isArray(root) ? [...root] : { ...root }) as Record<string, unknown>;
  const r = rng.uniform();
  if (r < 0.2 && !Array.isArray(root)) delete copy[k];
  else if (r < 0.3 && typeof copy[k] === "number") copy[k] = (copy[k] as number) + rng.int(5) - 2;
  else if (r < 0.4 && typeof copy[k] === "string") copy[k] = (copy[k] as string) + "z";
  else if (r < 0.5 && Array.isArray(root)) (copy as unknown as unknown[]).splice(Number(k), 1);
  else copy[k] = mutateNode(copy[k], rng);
  return copy;
}

for (const [kind, tokenizer] of tokenizers) {
  const json = tokenizerToJSON(tokenizer);

  Deno.test(`tokenizerFromJSON() (${kind}) survives mutated characters`, () => {
    const rng = new Rng(11, kind === "seed" ? 0 : 1);
    const pool = ['"', ",", "[", "]", "{", "}", "0", "9", "-", "e", ".", "\\", "n", " ", "é"];
    let refused = 0;
    for (let c = 0; c < CASES; c++) {
      const chars = [...json];
      for (let m = 1 + rng.int(3); m > 0; m--) {
        const at = rng.int(chars.length);
        const r = rng.uniform();
        if (r < 0.4) chars[at] = pool[rng.int(pool.length)];
        else if (r < 0.7) chars.splice(at, 1);
        else chars.splice(at, 0, pool[rng.int(pool.length)]);
      }
      if (verdict(chars.join(""), `case ${c}`) === "refused") refused++;
    }
    assert.ok(
      refused > CASES / 2,
      `only ${refused} of ${CASES} refused: the mutations are too mild`,
    );
  });

  Deno.test(`tokenizerFromJSON() (${kind}) refuses every truncation`, () => {
    const rng = new Rng(12, kind === "seed" ? 0 : 1);
    for (let c = 0; c < CASES; c++) {
      const at = rng.int(json.length);
      assert.equal(verdict(json.slice(0, at), `cut at ${at}`), "refused");
    }
  });

  Deno.test(`tokenizerFromJSON() (${kind}) survives deleted keys, changed types and values`, () => {
    const rng = new Rng(13, kind === "seed" ? 0 : 1);
    const value = JSON.parse(json);
    let refused = 0;
    for (let c = 0; c < CASES; c++) {
      const mutated = JSON.stringify(mutateNode(value, rng));
      if (verdict(mutated, `case ${c}: ${mutated.slice(0, 120)}`) === "refused") refused++;
    }
    assert.ok(refused > CASES / 2, `only ${refused} of ${CASES} refused`);
  });
}
