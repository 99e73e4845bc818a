/**
 * Runs `cli.ts` in a subprocess from the repository root, as a user runs `deno task ...`: the
 * tests of the CLI on converted checkpoints share it.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/**
 * Runs `deno run <permissions> cli.ts <args>` and collects its exit code and output.
 *
 * @param args The command and its flags.
 * @param permissions Deno's permission flags (default: read, FFI, `SEDD_BLAS` and `XDG_RUNTIME_DIR`, as `sample`).
 * @returns The exit code, stdout and stderr (trailing whitespace trimmed).
 */
export async function cli(
  args: string[],
  permissions: string[] = ["--allow-read", "--allow-ffi", "--allow-env=SEDD_BLAS,XDG_RUNTIME_DIR"],
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, "cli.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trimEnd();
  return { code: r.code, out: text(r.stdout), err: text(r.stderr) };
}
