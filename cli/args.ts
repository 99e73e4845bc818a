/**
 * Flags: parsing, the checks of their values, and the lines every help text shares.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BACKEND_CHOICES,
  type BackendChoice,
  resolveBackend,
  type ResolvedBackend,
  type TrainBackend,
} from "../mod.ts";
import type { AnyResolvedBackend } from "../src/kernels/webgpu/select.ts";
import { openTrainBackend } from "../src/train/setup.ts";
import { InputError, UsageError } from "./errors.ts";

/** The options of a subcommand, as `node:util`'s `parseArgs` takes them. */
export type Options = Record<string, { type: "string" | "boolean" }>;

/** The flags every subcommand takes besides its own. */
const COMMON: Options = { help: { type: "boolean" }, verbose: { type: "boolean" } };

/**
 * Parses a subcommand's flags. A value that is a negative number may follow its flag with a
 * space (`--lr -1`), so that it is reported as a bad value rather than as a missing one.
 *
 * @param args The flags.
 * @param options The subcommand's options.
 * @returns The values, by name; `help` and `verbose` among them.
 */
export function parse<T extends Options>(
  args: string[],
  options: T,
): Partial<Record<keyof T | "help" | "verbose", string | boolean>> {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : undefined;
    const next = args[i + 1];
    if (
      name !== undefined && options[name]?.type === "string" && next !== undefined &&
      /^-(\d|\.\d)/.test(next)
    ) {
      joined.push(`${args[i]}=${next}`);
      i++;
    } else {
      joined.push(args[i]);
    }
  }
  try {
    return parseArgs({
      args: joined,
      options: { ...COMMON, ...options },
      strict: true,
      allowPositionals: false,
    }).values as Partial<Record<keyof T | "help" | "verbose", string | boolean>>;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * A flag's integer value.
 *
 * @param name The flag, without `--`.
 * @param v Its value, if given.
 * @param min The least value allowed.
 * @returns The integer, or `undefined` when the flag is absent.
 */
export function int(
  name: string,
  v: string | boolean | undefined,
  min: number,
): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  const n = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new InputError(`Invalid --${name}: expected an integer >= ${min}, got "${s}"`);
  }
  return n;
}

/**
 * A flag's positive number.
 *
 * @param name The flag, without `--`.
 * @param v Its value, if given.
 * @returns The number, or `undefined` when the flag is absent.
 */
export function num(name: string, v: string | boolean | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  const n = Number(s);
  if (s.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new InputError(`Invalid --${name}: expected a number > 0, got "${s}"`);
  }
  return n;
}

/**
 * A flag's value from a fixed list.
 *
 * @param name The flag, without `--`.
 * @param v Its value, if given.
 * @param allowed The values it may take.
 * @returns The value, or `undefined` when the flag is absent.
 */
export function choice<T extends string>(
  name: string,
  v: string | boolean | undefined,
  allowed: readonly T[],
): T | undefined {
  if (v === undefined) return undefined;
  if (!allowed.includes(v as T)) {
    throw new InputError(`Invalid --${name}: expected one of ${allowed.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/**
 * A flag's text value (`parseArgs` gives strings for string options; this narrows the type).
 *
 * @param v The value, if given.
 * @returns The string, or `undefined`.
 */
export function str(v: string | boolean | undefined): string | undefined {
  return v === undefined ? undefined : String(v);
}

/**
 * `--backend`: resolved once here, so that the run can say which backend it uses, and why.
 *
 * @param v The flag's value, if given (default `auto`).
 * @returns The backend.
 */
export function backendOf(v: string | boolean | undefined): ResolvedBackend {
  const c = choice<BackendChoice>("backend", v, BACKEND_CHOICES) ?? "auto";
  if (c === "webgpu") {
    throw new InputError(
      "Invalid --backend: expected auto, blas, wasm or ts here (webgpu is for train, eval and sample), got webgpu",
    );
  }
  const r = resolveBackend(c);
  console.error(`Backend: ${r.note}`);
  return r;
}

/**
 * `--backend` of `train`, which also takes `webgpu`; `auto` prefers a real GPU (see
 * `resolveTrainBackend`).
 *
 * @param v The flag's value, if given (default `auto`).
 * @param workers `--workers`, if given (it keeps `auto` on the CPU).
 * @returns The backend.
 */
export async function trainBackendOf(
  v: string | boolean | undefined,
  workers?: number,
): Promise<TrainBackend> {
  const r = await openBackendOf(v, workers);
  if (r.gpu) await r.gpu.destroy().catch(() => {});
  return { backend: r.backend, note: r.note };
}

/**
 * {@linkcode trainBackendOf}'s choice with the WebGPU context kept open (`openTrainBackend`),
 * for `sample` and `eval`, which hand it to `sampleAsync` or `evaluateAsync`: the GPU is
 * acquired and self-checked once per command. The caller destroys the context.
 *
 * @param v The flag's value, if given (default `auto`).
 * @param workers `--workers`, if given (it keeps `auto` on the CPU).
 * @returns The backend, and for `webgpu` its context.
 */
export async function openBackendOf(
  v: string | boolean | undefined,
  workers?: number,
): Promise<AnyResolvedBackend> {
  const r = await openTrainBackend(
    choice<BackendChoice>("backend", v, BACKEND_CHOICES) ?? "auto",
    { workers },
  );
  console.error(`Backend: ${r.note}`);
  return r;
}

/**
 * `--backend` of `eval` and `sample`: for a transformer checkpoint, {@linkcode openBackendOf}'s
 * choice (`auto` takes a real GPU through WebGPU first, never a software adapter; `webgpu` any
 * adapter), its context kept open for `evaluateAsync` or `sampleAsync` (the caller destroys
 * it); for a DiT, {@linkcode backendOf}'s CPU choices.
 *
 * @param v The flag's value, if given (default `auto`).
 * @param dit Whether the checkpoint is a DiT (CPU backends only).
 * @returns The backend, and for `webgpu` its context.
 */
export async function evalBackendOf(
  v: string | boolean | undefined,
  dit = false,
): Promise<AnyResolvedBackend> {
  return dit ? backendOf(v) : await openBackendOf(v);
}

/**
 * The lines every help text ends with (`--backend`, `--verbose`, `--help`), their descriptions
 * starting at column `col`.
 *
 * @param col The column of the descriptions.
 * @returns The lines.
 */
export function commonHelp(col: number): string {
  const pad = " ".repeat(col);
  const flag = (f: string) => `  ${f}`.padEnd(col);
  return [
    `${flag("--backend <name>")}${BACKEND_CHOICES.join(" | ")} (default: auto: the system's BLAS`,
    `${pad}where it loads and passes its self-check, else wasm; before those, a real GPU`,
    `${pad}through WebGPU; webgpu: any adapter, everything on the GPU; eval of a DiT: CPU)`,
    `${flag("--verbose")}print the stack trace of an error as well`,
    `${flag("--help")}this text`,
  ].join("\n");
}
