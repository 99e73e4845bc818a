/**
 * File input and output: the one module of the library that touches the file system.
 *
 * Everything here goes through `node:fs/promises` and `node:path`, which Deno, Bun and Node all
 * run; the rest of the library works on strings and typed arrays and never imports this module
 * except from the trainer's run-directory code. Writes are atomic: the bytes go to a temporary
 * file beside the target, which is then renamed over it, so a kill at any moment leaves either the
 * old file or the new one, never a torn one.
 *
 * @example Write a file atomically and read it back
 * ```ts
 * import { readText, removeDir, writeFileAtomic } from "./io.ts";
 * import { makeTempDir } from "./io.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await makeTempDir();
 * await writeFileAtomic(`${dir}/a.txt`, "hello");
 * assert.equal(await readText(`${dir}/a.txt`), "hello");
 * await removeDir(dir);
 * ```
 *
 * @module
 */

import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";

let tempCounter = 0;

/** A file that could not be written; any earlier version of it is left as it was. */
export class WriteError extends Error {
  /** The file that was being written. */
  readonly path: string;
  /**
   * Makes the error.
   *
   * @param path The file.
   * @param cause What the file system said.
   */
  constructor(path: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`Could not write ${path}: ${why.split("\n")[0]}`, { cause });
    this.name = "WriteError";
    this.path = path;
  }
}

/**
 * Writes bytes or text to `file` atomically: a temporary file in the same directory, then a rename.
 * When any part fails (a read-only or full directory), the temporary file is removed, `file` keeps
 * its previous content, and a {@linkcode WriteError} naming `file` and the cause is thrown.
 *
 * @param file The destination path; its directory is created if missing.
 * @param data The content (strings are written as UTF-8).
 * @param options `beforeRename`: called once the temporary file is complete (tests make it throw,
 *   as a disk that fills up at the last moment would).
 */
export function writeFileAtomic(
  file: string,
  data: Uint8Array | string,
  options: { beforeRename?: (file: string) => void } = {},
): Promise<void> {
  return writeFilesAtomic([{ path: file, data }], options);
}

/** One file of {@linkcode writeFilesAtomic}: where it goes and what it holds. */
export interface FileContent {
  /** The destination path; its directory is created if missing. */
  path: string;
  /** The content (strings are written as UTF-8). */
  data: Uint8Array | string;
}

/**
 * Writes several files as one: every file to a temporary file beside it first, and only when all
 * of them are complete, the renames, in the order given.
 *
 * - A failure while writing (a read-only or full directory, or `beforeRename` throwing) removes
 *   every temporary file and leaves every destination as it was.
 * - A rename that fails (rare: the temporary files are already written, and a rename within a
 *   directory needs no space) leaves the files before it replaced and the rest as they were; its
 *   message says which were replaced. Put the file that commits the set last.
 *
 * @param files The files, in rename order.
 * @param options `beforeRename`: called with each destination once its temporary file is
 *   complete (tests make it throw, as a disk that fills up at the last moment would).
 * @throws {WriteError} Naming the file that failed and the cause.
 */
export async function writeFilesAtomic(
  files: readonly FileContent[],
  options: { beforeRename?: (file: string) => void } = {},
): Promise<void> {
  const temps: string[] = [];
  const removeTemps = (from: number) =>
    Promise.all(temps.slice(from).map((t) => fs.rm(t, { force: true }).catch(() => {})));
  let current = "";
  try {
    for (const { path: file, data } of files) {
      current = file;
      const dir = path.dirname(file);
      await fs.mkdir(dir, { recursive: true });
      const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${tempCounter++}.tmp`);
      temps.push(tmp);
      await fs.writeFile(tmp, data);
      options.beforeRename?.(file);
    }
  } catch (err) {
    await removeTemps(0);
    throw new WriteError(current, err);
  }
  for (let i = 0; i < files.length; i++) {
    try {
      await fs.rename(temps[i], files[i].path);
    } catch (err) {
      await removeTemps(i);
      const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
      const done = files.slice(0, i).map((f) => f.path);
      throw new WriteError(
        files[i].path,
        i === 0 ? err : new Error(`${why} (${done.join(", ")} already replaced)`, { cause: err }),
      );
    }
  }
}

/**
 * Appends one line of text to `file` (creating it and its directory if needed); a
 * {@linkcode WriteError} naming the file when that fails.
 *
 * @param file The path.
 * @param line The text; a newline is added.
 */
export async function appendLine(file: string, line: string): Promise<void> {
  try {
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.appendFile(file, line + "\n");
  } catch (err) {
    throw new WriteError(file, err);
  }
}

/**
 * Reads a file as UTF-8 text.
 *
 * @param file The path.
 * @returns The text.
 */
export function readText(file: string): Promise<string> {
  return fs.readFile(file, "utf8");
}

/**
 * Reads a file's bytes.
 *
 * @param file The path.
 * @returns The bytes.
 */
export async function readBytes(file: string): Promise<Uint8Array> {
  const buf = await fs.readFile(file);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * Tells whether a path exists.
 *
 * @param p The path.
 * @returns `true` for an existing file or directory.
 */
export async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Tells whether a path is a directory.
 *
 * @param p The path.
 * @returns `true` for an existing directory.
 */
export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The offset of the first byte that is not well-formed UTF-8 (overlong forms, surrogates and
 * code points above U+10FFFF included), or -1.
 */
function invalidUtf8At(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    const n = c >= 0xc2 && c <= 0xdf
      ? 1
      : c >= 0xe0 && c <= 0xef
      ? 2
      : c >= 0xf0 && c <= 0xf4
      ? 3
      : 0;
    if (n === 0) return i;
    // The second byte's range is narrower after E0, ED, F0 and F4 (no overlongs, surrogates, > U+10FFFF).
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return i + k;
    }
    i += n + 1;
  }
  return -1;
}

/** Options of {@linkcode readCorpus}. */
export interface ReadCorpusOptions {
  /** Test seam: called after each file's bytes are read, before it is checked for changes. */
  afterRead?: (file: string) => void | Promise<void>;
}

/** One corpus file as text: see {@linkcode readCorpus} for what is refused. */
async function readCorpusFile(file: string, options: ReadCorpusOptions): Promise<string> {
  let bytes: Uint8Array | undefined;
  let sizes = "";
  for (let attempt = 0; attempt < 2 && bytes === undefined; attempt++) {
    try {
      const before = await fs.stat(file);
      const b = await readBytes(file);
      await options.afterRead?.(file);
      const after = await fs.stat(file);
      if (
        before.size === b.length && after.size === b.length && after.mtimeMs === before.mtimeMs
      ) {
        bytes = b;
      } else sizes = `${before.size} bytes, then ${b.length} read, then ${after.size}`;
    } catch (e) {
      throw new RangeError(
        `Cannot read data: expected ${file} to be readable, got ${
          (e as Error).message.split("\n")[0]
        }`,
      );
    }
  }
  if (bytes === undefined) {
    throw new RangeError(
      `Data changed while being read: expected ${file} to stay the same, got ${sizes} ` +
        `(twice); stop whatever writes it, or train on a copy`,
    );
  }
  // A leading byte-order mark is not text.
  const body = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf
    ? bytes.subarray(3)
    : bytes;
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    const at = invalidUtf8At(body) + (body === bytes ? 0 : 3);
    let line = 1;
    for (let i = 0; i < at; i++) if (bytes[i] === 0x0a) line++;
    throw new RangeError(
      `Invalid UTF-8 in ${file}: expected UTF-8 text, got byte 0x${
        bytes[at]?.toString(16).padStart(2, "0") ?? "(end)"
      } at offset ${at} (line ${line}); convert it first (e.g. iconv -f latin1 -t utf-8)`,
    );
  }
}

/**
 * Reads a corpus from a path: one document for a file, one per `.txt` file (sorted by name, with
 * numbers in names compared as numbers) for a directory.
 *
 * What it does with awkward input:
 * - Files must be UTF-8: an invalid byte is a RangeError naming the file, the offset and the line
 *   (a Latin-1 file is refused rather than silently read as replacement characters). A leading
 *   byte-order mark is dropped.
 * - Size is no problem by itself: a file is one string however long its lines (a single 50 MB
 *   line reads like any other text).
 * - A folder is read one level deep: only its `.txt` files (exact, lower-case suffix), not its
 *   subfolders. A folder without any is a RangeError that lists what it holds instead.
 * - Data with no characters at all (an empty file, or only empty `.txt` files) is a RangeError.
 * - A file that changes while being read (its size or modification time differs before and
 *   after, or from the bytes read) is read once more; if it changes again, a RangeError.
 *
 * @param p A file or a directory of `.txt` files.
 * @param options `afterRead`: a test seam.
 * @returns The documents in order.
 */
export async function readCorpus(p: string, options: ReadCorpusOptions = {}): Promise<string[]> {
  if (!(await exists(p))) {
    throw new RangeError(`Data not found: expected a file or folder, got "${p}"`);
  }
  let docs: string[];
  if (!(await isDirectory(p))) docs = [await readCorpusFile(p, options)];
  else {
    const entries = await fs.readdir(p, { withFileTypes: true });
    const names = entries.filter((e) => !e.isDirectory() && e.name.endsWith(".txt")).map((e) =>
      e.name
    );
    names.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    if (names.length === 0) {
      const shown = entries.slice(0, 5).map((e) => e.name + (e.isDirectory() ? "/" : ""));
      const holds = entries.length === 0
        ? "it is empty"
        : `it holds ${shown.join(", ")}${entries.length > 5 ? `, ... (${entries.length})` : ""}`;
      throw new RangeError(
        `No .txt files: expected at least one in folder "${p}", got none (${holds}; ` +
          `subfolders are not read)`,
      );
    }
    docs = [];
    for (const n of names) docs.push(await readCorpusFile(path.join(p, n), options));
  }
  if (docs.every((d) => d.length === 0)) {
    throw new RangeError(
      `Empty corpus: expected some text in "${p}", got ${
        docs.length === 1 ? "an empty file" : `${docs.length} empty .txt files`
      }`,
    );
  }
  return docs;
}

/**
 * Creates a directory and its parents.
 *
 * @param dir The path.
 */
export async function makeDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
}

/**
 * Creates a fresh temporary directory.
 *
 * @returns Its path.
 */
export function makeTempDir(): Promise<string> {
  // Deno's own call needs only write access; node:os's tmpdir() also asks for env access there.
  const deno = (globalThis as { Deno?: { makeTempDir(o: { prefix: string }): Promise<string> } })
    .Deno;
  if (deno) return deno.makeTempDir({ prefix: "sedd-" });
  return fs.mkdtemp(path.join(os.tmpdir(), "sedd-"));
}

/**
 * Removes a directory and everything in it.
 *
 * @param dir The path.
 */
export async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
}

/**
 * Points `link` at `target` with a relative symbolic link, replacing an older link atomically.
 *
 * @param target The directory the link names.
 * @param link The link's path, e.g. `runs/latest`.
 * @returns `false` when the platform refused symbolic links.
 */
export async function linkLatest(target: string, link: string): Promise<boolean> {
  // Through the real path, so `runs/latest` given as the target never points at itself.
  const real = await fs.realpath(target);
  const rel = path.relative(await fs.realpath(path.dirname(link)), real);
  const tmp = `${link}.${process.pid}.${tempCounter++}.tmp`;
  try {
    await fs.symlink(rel, tmp);
    await fs.rename(tmp, link);
    return true;
  } catch {
    await fs.rm(tmp, { force: true }).catch(() => {});
    return false;
  }
}

/**
 * Joins path segments.
 *
 * @param parts Segments.
 * @returns The joined path.
 */
export function joinPath(...parts: string[]): string {
  return path.join(...parts);
}
