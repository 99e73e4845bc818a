/**
 * The page's development server: builds the bundle, then serves `web/` on localhost with the
 * headers that make the page cross-origin isolated (COOP `same-origin`, COEP `require-corp`), so
 * `SharedArrayBuffer` and the trainer's worker pool run as they do in Deno.
 *
 * ```sh
 * deno task web                # http://localhost:8000/
 * deno task web --port 0       # any free port; the URL printed says which
 * deno task web --no-isolation # without the headers: the page falls back to in-process training
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { buildWeb, DIST } from "./build.ts";

const WEB = new URL("./", import.meta.url);

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  map: "application/json",
  png: "image/png",
  svg: "image/svg+xml",
};

/** The headers of every response: cross-origin isolation unless turned off. */
export function isolationHeaders(isolated: boolean): Record<string, string> {
  return isolated
    ? {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
    }
    : {};
}

/** The file a request path names: `web/index.html`, `web/style.css` or a file of `web/dist/`. */
function fileOf(pathname: string): URL | undefined {
  if (pathname === "/" || pathname === "/index.html") return new URL("index.html", WEB);
  if (pathname === "/style.css") return new URL("style.css", WEB);
  const m = /^\/dist\/([A-Za-z0-9_.-]+)$/.exec(pathname);
  if (m && !m[1].startsWith(".")) return new URL(m[1], `file://${DIST}`);
  return undefined;
}

/**
 * Serves the page.
 *
 * @param options Port (0: a free one), hostname, whether to send the isolation headers.
 * @returns The server and the URL it listens on.
 */
export function servePage(options: { port: number; hostname?: string; isolated?: boolean }): {
  server: Deno.HttpServer;
  url: string;
} {
  const headers = isolationHeaders(options.isolated ?? true);
  const server = Deno.serve({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    onListen: () => {}, // the caller prints the URL
  }, async (req) => {
    const file = fileOf(new URL(req.url).pathname);
    if (!file) return new Response("Not found", { status: 404, headers });
    try {
      const body = await Deno.readFile(file);
      const ext = file.pathname.slice(file.pathname.lastIndexOf(".") + 1);
      return new Response(body, {
        headers: {
          ...headers,
          "Content-Type": TYPES[ext] ?? "application/octet-stream",
          "Cache-Control": "no-store",
        },
      });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return new Response("Not found", { status: 404, headers });
      }
      throw e;
    }
  });
  const { hostname, port } = server.addr;
  return { server, url: `http://${hostname}:${port}/` };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8000" },
      hostname: { type: "string", default: "127.0.0.1" },
      "no-isolation": { type: "boolean", default: false },
      "no-build": { type: "boolean", default: false },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`Invalid --port: expected an integer from 0 to 65535, got "${values.port}"`);
    Deno.exit(2);
  }
  if (!values["no-build"]) await buildWeb();
  const isolated = !values["no-isolation"];
  let url: string;
  try {
    ({ url } = servePage({ port, hostname: values.hostname, isolated }));
  } catch (e) {
    if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    console.error(`Port ${port} is in use: expected a free port, try --port 0 (any free one)`);
    Deno.exit(1);
  }
  console.log(
    `Serving the page at ${url}` +
      (isolated ? " (cross-origin isolated)" : " (not isolated: the page trains in-process)"),
  );
}
