/**
 * How the command line reports a failure: a usage error, an error in what it was given, or a bug.
 *
 * - A usage error (an unknown flag, a flag without its value, a missing subcommand or required
 *   flag) prints `error: <message>` and a hint to `--help`, and exits 2.
 * - An expected error (a file that is missing, unreadable or malformed, an empty corpus, a flag
 *   value out of range, a run that diverged) prints the one line `error: <message>` and exits 1;
 *   with `--verbose` the stack follows.
 * - Anything else is a bug in this package: `error: internal error` and the stack, exit 1.
 *
 * Expected are {@linkcode UsageError} and {@linkcode InputError} (thrown here), the library's
 * `RangeError`s (out-of-range values, missing files, malformed sizes), its `NonFiniteError`, and
 * the operating system's file errors. A `TypeError`, `ReferenceError` and the like come from a
 * mistake in the code, never from input the command line has already checked, so they are
 * reported as bugs; the one place where the library reports malformed input with a `TypeError`,
 * parsing a checkpoint, turns it into an {@linkcode InputError} naming the file (`checkpoint.ts`).
 *
 * @module
 */

import { NonFiniteError } from "../mod.ts";

/** A usage error: exit code 2, with a hint to `--help`. */
export class UsageError extends Error {
  /** @param message What was expected, what was got. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** An error in the input (a flag's value, a file): exit code 1, one line. */
export class InputError extends Error {
  /**
   * @param message What was expected, what was got.
   * @param options The underlying error, shown with `--verbose`.
   */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InputError";
  }
}

/** The `code`s of Node-style file-system errors that describe the file, not the program. */
const FILE_ERROR_CODES = new Set([
  "EACCES",
  "EBUSY",
  "EEXIST",
  "EIO",
  "EISDIR",
  "ELOOP",
  "EMFILE",
  "ENAMETOOLONG",
  "ENOENT",
  "ENOSPC",
  "ENOTDIR",
  "EPERM",
  "EROFS",
]);

/** Whether `e` is the operating system's error about a file (or a refused permission). */
function isFileError(e: unknown): boolean {
  const d = Deno.errors;
  if (
    e instanceof d.NotFound || e instanceof d.PermissionDenied || e instanceof d.NotCapable ||
    e instanceof d.AlreadyExists || e instanceof d.IsADirectory || e instanceof d.NotADirectory
  ) {
    return true;
  }
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === "string" && FILE_ERROR_CODES.has(code);
}

/**
 * Whether `e` describes bad input rather than a bug.
 *
 * @param e The error.
 * @returns `true` for the classes of the module's list.
 */
export function isExpected(e: unknown): boolean {
  return e instanceof UsageError || e instanceof InputError || e instanceof RangeError ||
    e instanceof NonFiniteError || isFileError(e);
}

/** A message on one line (parseArgs' messages, for one, span several). */
function oneLine(message: string): string {
  return message.trim().replace(/\s*\n\s*/g, " ");
}

/** The stack of `e` and of each of its causes. */
function stackOf(e: unknown): string {
  const parts: string[] = [];
  for (let c: unknown = e, depth = 0; c !== undefined && depth < 8; depth++) {
    parts.push(c instanceof Error ? c.stack ?? `${c.name}: ${c.message}` : String(c));
    c = c instanceof Error ? c.cause : undefined;
  }
  return parts.join("\nCaused by: ");
}

/**
 * Prints an error as the module describes and gives the exit code.
 *
 * @param e What was thrown.
 * @param verbose Print the stack of an expected error too.
 * @returns 2 for a usage error, 1 otherwise.
 */
export function reportError(e: unknown, verbose: boolean): number {
  if (e instanceof UsageError) {
    console.error(`error: ${oneLine(e.message)}\nRun with --help for the options.`);
    if (verbose) console.error(stackOf(e));
    return 2;
  }
  if (isExpected(e)) {
    console.error(`error: ${oneLine((e as Error).message)}`);
    if (verbose) console.error(stackOf(e));
    return 1;
  }
  console.error(`error: internal error (a bug in @sedd/core, not in the input):\n${stackOf(e)}`);
  return 1;
}
