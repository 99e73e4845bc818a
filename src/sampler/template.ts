/**
 * Conditioning from text: a prompt (prefix), a suffix, or an infill template such as
 * `"The whale [MASK:20] the sea"`, turned into fixed token positions around free (masked) ones.
 *
 * @module
 */

import { encode, type Tokenizer } from "../tokenizer/mod.ts";
import type { FixedTokens } from "./sample_ids.ts";

/** One piece of an infill template: text to encode, or a run of free positions. */
export type TemplatePart = { text: string } | { masks: number };

const HOLE = /\[MASK(?::(\d+))?\]/g;

/**
 * Splits an infill template into text and holes. `[MASK]` is one free token, `[MASK:n]` is n
 * (n >= 1). Empty text pieces are dropped.
 *
 * @param template The template.
 * @returns The pieces in order.
 *
 * @example
 * ```ts
 * import { parseTemplate } from "./template.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseTemplate("The whale [MASK:20] the sea[MASK]"), [
 *   { text: "The whale " }, { masks: 20 }, { text: " the sea" }, { masks: 1 },
 * ]);
 * ```
 */
export function parseTemplate(template: string): TemplatePart[] {
  if (typeof template !== "string") {
    throw new TypeError(`Invalid infill template: expected a string, got ${typeof template}`);
  }
  const parts: TemplatePart[] = [];
  let last = 0;
  for (const m of template.matchAll(HOLE)) {
    if (m.index > last) parts.push({ text: template.slice(last, m.index) });
    const n = m[1] === undefined ? 1 : Number(m[1]);
    if (!(n >= 1)) {
      throw new RangeError(
        `Invalid hole ${m[0]} at ${m.index}: expected [MASK:n] with n >= 1, got n = ${n}`,
      );
    }
    parts.push({ masks: n });
    last = m.index + m[0].length;
  }
  if (last < template.length) parts.push({ text: template.slice(last) });
  return parts;
}

/** Options of {@linkcode conditioning}. */
export interface ConditioningOptions {
  /** Text at the start. Not with `infill`. */
  prompt?: string;
  /** Text at the end. Not with `infill`. */
  suffix?: string;
  /** An infill template (see {@linkcode parseTemplate}); free positions may follow it. */
  infill?: string;
  /** Total tokens T; default: the template's length, or required for prompt/suffix. */
  length?: number;
}

/**
 * The fixed positions for a prompt and suffix, or for an infill template, in a sequence of
 * `length` tokens. Each text piece is encoded on its own (without `<|endoftext|>`).
 *
 * @param tokenizer The tokenizer.
 * @param options Prompt and suffix, or an infill template, and the length.
 * @returns The length and the fixed tokens.
 *
 * @example Prompt and suffix around free positions
 * ```ts
 * import { conditioning } from "./template.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tok = trainTokenizer(["ab"], { kind: "seed", numMerges: 0 }); // a 0, b 1
 * const c = conditioning(tok, { prompt: "ab", suffix: "a", length: 5 });
 * assert.deepEqual(c, { length: 5, fixed: { positions: [0, 1, 4], ids: [0, 1, 0] } });
 * ```
 */
export function conditioning(
  tokenizer: Tokenizer,
  options: ConditioningOptions,
): { length: number; fixed: FixedTokens } {
  const positions: number[] = [];
  const ids: number[] = [];
  const enc = (text: string) => [...encode(tokenizer, text, { eot: false })];
  if (options.infill !== undefined) {
    if (options.prompt !== undefined || options.suffix !== undefined) {
      throw new TypeError(
        "Conflicting conditioning: expected either infill or prompt/suffix, got both (put the prompt and suffix in the template)",
      );
    }
    let p = 0;
    for (const part of parseTemplate(options.infill)) {
      if ("masks" in part) p += part.masks;
      else {
        for (const id of enc(part.text)) {
          positions.push(p++);
          ids.push(id);
        }
      }
    }
    const length = options.length ?? p;
    if (length < p) {
      throw new RangeError(`Template too long: expected at most ${length} tokens, got ${p}`);
    }
    return { length, fixed: { positions, ids } };
  }
  const pre = options.prompt === undefined ? [] : enc(options.prompt);
  const suf = options.suffix === undefined ? [] : enc(options.suffix);
  const length = options.length;
  if (length === undefined || !Number.isInteger(length) || length < 1) {
    throw new RangeError(`Invalid length: expected an integer >= 1, got ${length}`);
  }
  if (pre.length + suf.length > length) {
    throw new RangeError(
      `Prompt and suffix too long: expected at most ${length} tokens together, got ${pre.length} + ${suf.length}`,
    );
  }
  pre.forEach((id, j) => {
    positions.push(j);
    ids.push(id);
  });
  suf.forEach((id, j) => {
    positions.push(length - suf.length + j);
    ids.push(id);
  });
  return { length, fixed: { positions, ids } };
}
