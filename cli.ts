/**
 * The command line of `@sedd/core`: `train`, `sample` and `eval`.
 *
 * ```sh
 * deno task train                                   # small preset on Moby-Dick, about 5 minutes
 * deno task train --steps 200 --preset tiny --out runs/quick
 * deno task sample --checkpoint runs/latest --prompt "Call me Ishmael." --length 64 --steps 64
 * deno task eval --checkpoint runs/latest
 * ```
 *
 * From JSR, without a clone:
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-ffi --allow-env=SEDD_BLAS,XDG_RUNTIME_DIR jsr:@sedd/core/cli train
 * ```
 *
 * Every subcommand takes `--help`. A usage error (an unknown flag, a flag without its value, a
 * missing subcommand) prints a hint to `--help` and exits with code 2; bad input (a missing or
 * malformed file, an empty corpus, a value out of range) prints one line `error: ...` and exits
 * with code 1. `--verbose` adds the stack trace.
 *
 * @module
 */

import { evalCommand } from "./cli/eval.ts";
import { reportError } from "./cli/errors.ts";
import { sampleCommand } from "./cli/sample.ts";
import { trainCommand } from "./cli/train.ts";

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  train: trainCommand,
  sample: sampleCommand,
  eval: evalCommand,
};

const USAGE = `Usage: cli.ts <${Object.keys(COMMANDS).join("|")}> [options]   (--help on each)`;

/**
 * Runs one subcommand and reports its errors (see the module's description).
 *
 * @param argv `[subcommand, ...flags]`.
 * @returns The process exit code.
 */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === "--help" || cmd === "-h") {
    console.log(USAGE);
    return 0;
  }
  const run = cmd === undefined ? undefined : COMMANDS[cmd];
  if (!run) {
    const what = cmd === undefined ? "Missing command" : "Unknown command";
    const got = cmd === undefined ? "none" : `"${cmd}"`;
    console.error(`error: ${what}: expected train, sample or eval, got ${got}\n${USAGE}`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    return reportError(e, rest.includes("--verbose"));
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
