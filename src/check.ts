/**
 * Argument checks shared by the library's entry points: each throws a one-line error that
 * names the argument, what was expected and what was got.
 *
 * @module
 */

/**
 * Returns `v` when it is an integer `>= min`, else throws.
 *
 * @param name The argument's name, for the message.
 * @param v The value.
 * @param min The least value allowed.
 * @returns `v`, typed as a number.
 * @throws RangeError `Invalid <name>: expected an integer >= <min>, got <v>`.
 *
 * @example
 * ```ts
 * import { checkInt } from "./check.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkInt("steps", 3, 1), 3);
 * assert.throws(() => checkInt("steps", 0.5, 1), /Invalid steps: expected an integer >= 1, got 0.5/);
 * ```
 */
export function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new RangeError(`Invalid ${name}: expected an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

/**
 * Returns `v` when it is one of `allowed`; `dflt` when `v` is undefined and a default is given;
 * else throws.
 *
 * @param name The argument's name, for the message.
 * @param v The value.
 * @param allowed The names accepted.
 * @param dflt What `undefined` stands for; without it, `undefined` is an error.
 * @returns The name.
 * @throws RangeError `Invalid <name>: expected one of ..., got ...` (`Missing <name>` for
 *   `undefined` without a default).
 *
 * @example
 * ```ts
 * import { oneOf } from "./check.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(oneOf("graph", undefined, ["absorb", "uniform"], "absorb"), "absorb");
 * assert.throws(() => oneOf("graph", "ring", ["absorb", "uniform"]), /got "ring"/);
 * ```
 */
export function oneOf<T extends string>(
  name: string,
  v: unknown,
  allowed: readonly T[],
  dflt?: T,
): T {
  if (v === undefined && dflt !== undefined) return dflt;
  if (!allowed.includes(v as T)) {
    throw new RangeError(
      `${v === undefined ? "Missing" : "Invalid"} ${name}: expected one of ${
        allowed.map((a) => JSON.stringify(a)).join(", ")
      }, got ${JSON.stringify(v)}`,
    );
  }
  return v as T;
}
