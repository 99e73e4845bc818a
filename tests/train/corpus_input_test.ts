import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { makeTempDir, readCorpus, removeDir, writeFileAtomic } from "../../src/io.ts";
import { PRETOKEN_PATTERN } from "../../src/tokenizer/pretokenize.ts";
import { hashText, tokenizerDocuments } from "../../src/train/data.ts";

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await makeTempDir();
  try {
    await fn(dir);
  } finally {
    await removeDir(dir);
  }
}

Deno.test("readCorpus() refuses bytes that are not UTF-8, naming the file, offset and line", () =>
  inTempDir(async (dir) => {
    const file = `${dir}/latin1.txt`;
    // "caf\xe9" is Latin-1 for "café": 0xE9 then a newline is not UTF-8.
    await writeFileAtomic(
      file,
      new Uint8Array([...new TextEncoder().encode("ok\nline two caf"), 0xe9, 0x0a]),
    );
    await assert.rejects(readCorpus(file), (e: unknown) => {
      assert.ok(e instanceof RangeError);
      assert.equal(
        e.message,
        `Invalid UTF-8 in ${file}: expected UTF-8 text, got byte 0x0a at offset 16 (line 2); ` +
          "convert it first (e.g. iconv -f latin1 -t utf-8)",
      );
      return true;
    });
    // Other malformed forms: a lone continuation byte, an overlong "/", an encoded surrogate, a cut.
    for (
      const [bytes, at] of [[[0x61, 0x80], 1], [[0xc0, 0xaf], 0], [[0xed, 0xa0, 0x80], 1], [[
        0x61,
        0xe2,
        0x82,
      ], 3]] as const
    ) {
      await writeFileAtomic(file, new Uint8Array(bytes));
      await assert.rejects(readCorpus(file), new RegExp(`at offset ${at} \\(line 1\\)`));
    }
    // Valid UTF-8 of every length reads back, and a leading byte-order mark is dropped.
    const text = "a é — 鯨 😀\n";
    await writeFileAtomic(
      file,
      new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(text)]),
    );
    assert.deepEqual(await readCorpus(file), [text]);
  }));

Deno.test("readCorpus() of a folder with no .txt file lists what it holds", () =>
  inTempDir(async (dir) => {
    await fs.mkdir(`${dir}/empty`);
    await assert.rejects(
      readCorpus(`${dir}/empty`),
      new RegExp(
        `^RangeError: No \\.txt files: expected at least one in folder "${dir}/empty", got none \\(it is empty; subfolders are not read\\)$`,
      ),
    );
    await fs.mkdir(`${dir}/other/sub.txt`, { recursive: true });
    await writeFileAtomic(`${dir}/other/notes.md`, "# notes");
    await writeFileAtomic(`${dir}/other/sub.txt/inner.txt`, "deep");
    await assert.rejects(readCorpus(`${dir}/other`), (e: unknown) => {
      assert.ok(e instanceof RangeError);
      assert.match(e.message, /got none \(it holds .*notes\.md/);
      assert.match(e.message, /sub\.txt\//); // a folder named *.txt is not read as a file
      return true;
    });
  }));

Deno.test("readCorpus() refuses data without a character", () =>
  inTempDir(async (dir) => {
    await writeFileAtomic(`${dir}/a.txt`, "");
    await assert.rejects(
      readCorpus(`${dir}/a.txt`),
      /^RangeError: Empty corpus: expected some text in ".*a\.txt", got an empty file$/,
    );
    await writeFileAtomic(`${dir}/b.txt`, "");
    await assert.rejects(readCorpus(dir), /got 2 empty \.txt files$/);
    await writeFileAtomic(`${dir}/c.txt`, "x");
    assert.deepEqual(await readCorpus(dir), ["", "", "x"]); // an empty file among others is kept
  }));

Deno.test("readCorpus() re-reads a file that changed while being read, and refuses one that keeps changing", () =>
  inTempDir(async (dir) => {
    const file = `${dir}/growing.txt`;
    await writeFileAtomic(file, "first part");
    let writes = 0;
    // Changed once, after the first read: the second read sees the finished file.
    const docs = await readCorpus(file, {
      afterRead: async () => {
        if (writes++ === 0) await fs.appendFile(file, " and more");
      },
    });
    assert.deepEqual(docs, ["first part and more"]);
    assert.equal(writes, 2);
    // Appended to during every read.
    await assert.rejects(
      readCorpus(file, { afterRead: () => fs.appendFile(file, "!") }),
      (e: unknown) => {
        assert.ok(e instanceof RangeError);
        assert.match(
          e.message,
          new RegExp(
            `^Data changed while being read: expected ${file} to stay the same, got \\d+ bytes, then \\d+ read, then \\d+ \\(twice\\)`,
          ),
        );
        return true;
      },
    );
  }));

Deno.test("readCorpus() and the pre-tokenizer take one 50 MB line", () =>
  inTempDir(async (dir) => {
    const unit = "Call me Ishmael, some years ago; never mind how long precisely 1851. ";
    const line = unit.repeat(Math.ceil(50e6 / unit.length));
    const file = `${dir}/line.txt`;
    await writeFileAtomic(file, line);
    const [doc] = await readCorpus(file);
    assert.equal(doc.length, line.length);
    assert.equal(doc, line);
    assert.notEqual(hashText([doc]), hashText([doc.slice(1)]));
    const [cut] = tokenizerDocuments([doc], 0.02);
    assert.equal(cut.length, Math.floor(line.length * 0.96));
    // The pieces the BPE trainer and encoder scan cover the line exactly, in order.
    const re = new RegExp(PRETOKEN_PATTERN.source, "uy");
    let pieces = 0, end = 0;
    for (; re.test(doc); end = re.lastIndex) pieces++;
    assert.equal(end, doc.length);
    assert.ok(pieces > doc.length / 10, `${pieces}`);
  }));

Deno.test("tokenizerDocuments() never cuts between the halves of a surrogate pair", () => {
  // 100 emoji (200 UTF-16 units): a 0.02 fraction keeps 192 units, an even cut; 0.0225 keeps 191.
  const doc = "😀".repeat(100);
  const [even] = tokenizerDocuments([doc], 0.02);
  assert.equal(even.length, 192);
  const [odd] = tokenizerDocuments([doc], 0.0225);
  assert.equal(odd.length, 190);
  assert.equal(odd, "😀".repeat(95));
});
