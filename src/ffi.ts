/**
 * Foreign function calls: the one module of the library that opens native libraries.
 *
 * Deno (`Deno.dlopen`, needs `--allow-ffi`) and Bun (`bun:ffi`) each have their own API; this
 * module puts both behind {@linkcode openNative}, which returns plain JavaScript functions. A
 * browser, Node, or a Deno process without the FFI permission gets a reason instead of a
 * library, and nothing else in `src/` ever touches `Deno` or `Bun` for this.
 *
 * Only the types the BLAS backend needs are mapped: 32-bit integers, 32-bit floats, pointers to
 * typed-array memory (a `Float32Array` is passed as the address of its first element, its byte
 * offset included, with no copy) and C strings returned by the library.
 *
 * @module
 */

/** A native argument or result type. */
export type NativeType = "i32" | "f32" | "buffer" | "void" | "cstring";

/** A symbol to bind: its C signature and whether the library may lack it. */
export interface NativeSymbol {
  /** Argument types, in order. */
  args: readonly NativeType[];
  /** Result type. */
  result: NativeType;
  /** A library without this symbol still opens; the function is then absent. */
  optional?: boolean;
}

/** What {@linkcode openNative} gives back. */
export type NativeOpen<S extends Record<string, NativeSymbol>> =
  | {
    ok: true;
    /** The bound functions; optional symbols the library lacks are missing. */
    fns: { [K in keyof S]?: (...args: unknown[]) => unknown };
    /** `"deno"` or `"bun"`. */
    runtime: "deno" | "bun";
  }
  | { ok: false; reason: string };

interface DenoFfi {
  dlopen(
    path: string,
    symbols: Record<string, { parameters: string[]; result: string; optional?: boolean }>,
  ): { symbols: Record<string, ((...a: unknown[]) => unknown) | null> };
  permissions?: { querySync?(d: { name: string }): { state: string } };
  UnsafePointerView?: { getCString(p: unknown): string };
}

interface BunFfi {
  dlopen(
    path: string,
    symbols: Record<string, { args: string[]; returns: string }>,
  ): { symbols: Record<string, (...a: unknown[]) => unknown> };
  CString: new (p: unknown) => { toString(): string };
}

function denoType(t: NativeType): string {
  return t === "cstring" ? "pointer" : t;
}

function bunType(t: NativeType): string {
  return t === "buffer" ? "ptr" : t === "cstring" ? "ptr" : t;
}

/** Whether this runtime can call native code, and how; a reason when it cannot. */
export function ffiRuntime(): { runtime: "deno" | "bun" } | { reason: string } {
  const g = globalThis as { Deno?: DenoFfi; Bun?: unknown };
  if (g.Bun !== undefined) return { runtime: "bun" };
  if (g.Deno !== undefined && typeof g.Deno.dlopen === "function") {
    const state = g.Deno.permissions?.querySync?.({ name: "ffi" }).state;
    if (state !== undefined && state !== "granted") {
      return { reason: "FFI is not allowed in this Deno process (run with --allow-ffi)" };
    }
    return { runtime: "deno" };
  }
  return { reason: "this runtime has no FFI (Deno with --allow-ffi or Bun needed)" };
}

/**
 * Opens the native library `path` and binds `symbols`.
 *
 * @param path A library name the dynamic loader finds (`libopenblas.so.0`) or a path.
 * @param symbols The functions to bind.
 * @returns The functions, or `{ ok: false, reason }` with one line saying why not (no FFI, no
 *   permission, library not found, a required symbol missing).
 *
 * @example Without FFI (a browser, or Deno without --allow-ffi) there is a reason, not a throw
 * ```ts
 * import { openNative } from "./ffi.ts";
 * import assert from "node:assert/strict";
 *
 * const r = openNative("libnothing-at-all.so", { f: { args: [], result: "void" } });
 * assert.equal(r.ok, false);
 * ```
 */
export function openNative<S extends Record<string, NativeSymbol>>(
  path: string,
  symbols: S,
): NativeOpen<S> {
  const rt = ffiRuntime();
  if ("reason" in rt) return { ok: false, reason: rt.reason };
  try {
    return rt.runtime === "deno" ? openDeno(path, symbols) : openBun(path, symbols);
  } catch (e) {
    const msg = String((e as Error)?.message ?? e).split("\n")[0];
    return { ok: false, reason: `cannot open ${path}: ${msg}` };
  }
}

function openDeno<S extends Record<string, NativeSymbol>>(path: string, symbols: S): NativeOpen<S> {
  const D = (globalThis as unknown as { Deno: DenoFfi }).Deno;
  const defs: Record<string, { parameters: string[]; result: string; optional?: boolean }> = {};
  for (const [name, s] of Object.entries(symbols)) {
    defs[name] = {
      parameters: s.args.map(denoType),
      result: denoType(s.result),
      optional: s.optional === true,
    };
  }
  const lib = D.dlopen(path, defs);
  const fns: Record<string, (...args: unknown[]) => unknown> = {};
  for (const [name, s] of Object.entries(symbols)) {
    const f = lib.symbols[name];
    if (typeof f !== "function") continue;
    fns[name] = s.result === "cstring"
      ? (...a: unknown[]) => {
        const p = f(...a);
        return p === null || D.UnsafePointerView === undefined
          ? ""
          : D.UnsafePointerView.getCString(p);
      }
      : f;
  }
  return {
    ok: true,
    fns: fns as { [K in keyof S]?: (...args: unknown[]) => unknown },
    runtime: "deno",
  };
}

function openBun<S extends Record<string, NativeSymbol>>(path: string, symbols: S): NativeOpen<S> {
  const req = (import.meta as unknown as { require?: (m: string) => unknown }).require;
  if (typeof req !== "function") throw new Error("bun:ffi is not reachable from this module");
  const ffi = req("bun:ffi") as BunFfi;
  const fns: Record<string, (...args: unknown[]) => unknown> = {};
  // bun:ffi refuses a whole library for one missing symbol: bind the required ones together,
  // then each optional one on its own.
  const def = (s: NativeSymbol) => ({ args: s.args.map(bunType), returns: bunType(s.result) });
  const required = Object.entries(symbols).filter(([, s]) => !s.optional);
  const lib = ffi.dlopen(path, Object.fromEntries(required.map(([n, s]) => [n, def(s)])));
  for (const [name] of required) fns[name] = lib.symbols[name];
  for (const [name, s] of Object.entries(symbols)) {
    if (!s.optional) continue;
    try {
      fns[name] = ffi.dlopen(path, { [name]: def(s) }).symbols[name];
    } catch { /* absent: the function stays missing */ }
  }
  for (const [name, s] of Object.entries(symbols)) {
    const f = fns[name];
    if (f === undefined || s.result !== "cstring") continue;
    fns[name] = (...a: unknown[]) => {
      const p = f(...a);
      return p === null || p === 0 ? "" : new ffi.CString(p).toString();
    };
  }
  return {
    ok: true,
    fns: fns as { [K in keyof S]?: (...args: unknown[]) => unknown },
    runtime: "bun",
  };
}

/**
 * An environment variable, or `undefined` where it is unset or cannot be read (a browser, or
 * Deno without `--allow-env` for it).
 *
 * @param name The variable.
 * @returns Its value.
 */
export function envVar(name: string): string | undefined {
  const g = globalThis as {
    Deno?: {
      env?: { get(n: string): string | undefined };
      permissions?: { querySync?(d: { name: string; variable: string }): { state: string } };
    };
    process?: { env?: Record<string, string | undefined> };
  };
  try {
    if (g.Deno?.env) {
      // Never prompt: an ungranted variable reads as unset.
      const state = g.Deno.permissions?.querySync?.({ name: "env", variable: name }).state;
      return state === undefined || state === "granted" ? g.Deno.env.get(name) : undefined;
    }
    return g.process?.env?.[name];
  } catch {
    return undefined;
  }
}

/**
 * Keeps a headless Linux process quiet when WebGPU looks for adapters. Mesa's Vulkan drivers
 * (lavapipe among them) load libwayland, which prints `error: XDG_RUNTIME_DIR is invalid or not
 * set in the environment.` on stderr when that variable is unset, although nothing here opens a
 * display. Where the variable is unset and Deno may set it (`--allow-env=XDG_RUNTIME_DIR` or
 * wider), this sets it to `/nonexistent`, so the display connection fails without a word; it
 * changes nothing where the variable is set, elsewhere than Linux, without the permission, or
 * outside Deno.
 *
 * @returns Whether the variable was set.
 */
export function quietHeadlessDisplay(): boolean {
  const g = globalThis as {
    Deno?: {
      env?: { get(n: string): string | undefined; set(n: string, v: string): void };
      permissions?: { querySync?(d: { name: string; variable: string }): { state: string } };
    };
  };
  const name = "XDG_RUNTIME_DIR";
  try {
    if (!g.Deno?.env || osName() !== "linux") return false;
    if (g.Deno.permissions?.querySync?.({ name: "env", variable: name }).state !== "granted") {
      return false;
    }
    if (g.Deno.env.get(name) !== undefined) return false;
    g.Deno.env.set(name, "/nonexistent");
    return true;
  } catch {
    return false;
  }
}

/** The operating system, where the runtime says: `"linux"`, `"darwin"`, `"windows"`, ... */
export function osName(): string | undefined {
  const g = globalThis as {
    Deno?: { build?: { os?: string } };
    process?: { platform?: string };
  };
  if (g.Deno?.build?.os) return g.Deno.build.os;
  const p = g.process?.platform;
  return p === "win32" ? "windows" : p;
}
