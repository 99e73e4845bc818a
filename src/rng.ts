/**
 * Seeded 32-bit pseudo-random numbers: the only source of randomness in the library.
 *
 * The generator is xoshiro128** (Blackman and Vigna): four 32-bit words of state, period
 * 2^128 - 1, fast with 32-bit integer arithmetic in every JavaScript engine. Seeds and keys are
 * expanded into state with the splitmix32 mixer, so `new Rng(seed, step, sequence)` gives an
 * independent stream per (seed, step, sequence) key, which is how the trainer draws noise that
 * does not depend on how a batch is sharded across workers.
 *
 * @example Same seed, same numbers
 * ```ts
 * import { Rng } from "./rng.ts";
 * import assert from "node:assert/strict";
 *
 * const a = new Rng(42);
 * const b = new Rng(42);
 * assert.equal(a.nextU32(), b.nextU32());
 * assert.notEqual(new Rng(42, 1).uniform(), new Rng(42, 2).uniform());
 * ```
 *
 * @module
 */

/** splitmix32 finaliser: a bijective 32-bit mix. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function checkSeedWord(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(
      `Invalid ${name}: expected an integer 0 <= x < 2^32, got ${v}`,
    );
  }
}

/** A seeded xoshiro128** generator. All methods advance the state. */
export class Rng {
  /** The four state words; never all zero. */
  readonly s: Uint32Array = new Uint32Array(4);

  /**
   * Creates a generator from a seed and optional integer keys.
   *
   * @param seed A 32-bit unsigned integer.
   * @param keys Further 32-bit unsigned integers (for example step and sequence index) that select
   *   an independent stream.
   */
  constructor(seed: number, ...keys: number[]) {
    checkSeedWord("seed", seed);
    let h = mix32(seed ^ 0x5eed5eed);
    for (let i = 0; i < keys.length; i++) {
      checkSeedWord(`key ${i}`, keys[i]);
      h = mix32(h ^ mix32(keys[i] + i * 0x632be5ab));
    }
    for (let i = 0; i < 4; i++) {
      h = mix32(h + i);
      this.s[i] = h;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  /** Returns the next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Returns a float in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Returns a float in (0, 1): never exactly 0, so `Math.log(u)` is finite. */
  uniformOpen(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  /**
   * Returns an integer in [0, n) without modulo bias.
   *
   * @param n The exclusive upper bound, 1 <= n <= 2^32.
   */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) {
      throw new RangeError(`Invalid bound: expected an integer 1 <= n <= 2^32, got ${n}`);
    }
    const limit = 4294967296 - (4294967296 % n);
    let x = this.nextU32();
    while (x >= limit) x = this.nextU32();
    return x % n;
  }

  /** Returns a standard normal sample (Box-Muller, one value per call). */
  normal(): number {
    const u1 = this.uniformOpen();
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Returns a standard Gumbel sample, -log(-log(U)). */
  gumbel(): number {
    return -Math.log(-Math.log(this.uniformOpen()));
  }

  /** Returns a copy of the state, for checkpoints. */
  getState(): Uint32Array {
    return this.s.slice();
  }

  /**
   * Restores a state saved with {@linkcode Rng.getState}.
   *
   * @param state Four 32-bit words, not all zero.
   */
  setState(state: ArrayLike<number>): void {
    if (state.length !== 4) {
      throw new RangeError(`Invalid state: expected 4 words, got ${state.length}`);
    }
    for (let i = 0; i < 4; i++) checkSeedWord(`state word ${i}`, state[i]);
    if ((state[0] | state[1] | state[2] | state[3]) === 0) {
      throw new RangeError("Invalid state: expected at least one non-zero word, got all zeros");
    }
    this.s.set(state);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
