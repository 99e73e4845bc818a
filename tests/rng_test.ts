import assert from "node:assert/strict";
import { Rng } from "../src/rng.ts";

Deno.test("Rng.nextU32() follows xoshiro128** from state [1, 2, 3, 4]", () => {
  const rng = new Rng(0);
  rng.setState([1, 2, 3, 4]);
  // By hand: s1 = 2, rotl(2 * 5, 7) * 9 = 1280 * 9 = 11520; the state update then gives the rest.
  const got = [rng.nextU32(), rng.nextU32(), rng.nextU32(), rng.nextU32()];
  assert.deepEqual(got, [11520, 0, 5927040, 70819200]);
});

Deno.test("Rng is deterministic per seed and keys, and keys select different streams", () => {
  const draw = (r: Rng) => Array.from({ length: 8 }, () => r.nextU32());
  assert.deepEqual(draw(new Rng(7, 3, 5)), draw(new Rng(7, 3, 5)));
  assert.notDeepEqual(draw(new Rng(7, 3, 5)), draw(new Rng(7, 5, 3)));
  assert.notDeepEqual(draw(new Rng(7)), draw(new Rng(8)));
  assert.notDeepEqual(draw(new Rng(7, 0)), draw(new Rng(7)));
});

Deno.test("Rng.uniform(), int() and normal() have the right ranges and moments", () => {
  const rng = new Rng(123);
  const n = 200_000;
  let sum = 0, sumSq = 0, nsum = 0, nsq = 0;
  const counts = new Array(7).fill(0);
  for (let i = 0; i < n; i++) {
    const u = rng.uniform();
    assert.ok(u >= 0 && u < 1);
    sum += u;
    sumSq += u * u;
    counts[rng.int(7)]++;
    const z = rng.normal();
    nsum += z;
    nsq += z * z;
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.005, `uniform mean ${sum / n}`);
  assert.ok(Math.abs(sumSq / n - 1 / 3) < 0.005, `uniform second moment ${sumSq / n}`);
  for (const c of counts) assert.ok(Math.abs(c / n - 1 / 7) < 0.005, `int(7) counts ${counts}`);
  assert.ok(Math.abs(nsum / n) < 0.01, `normal mean ${nsum / n}`);
  assert.ok(Math.abs(nsq / n - 1) < 0.02, `normal variance ${nsq / n}`);
});

Deno.test("Rng.getState()/setState() resume the same stream", () => {
  const a = new Rng(99);
  a.nextU32();
  const saved = a.getState();
  const next = [a.nextU32(), a.nextU32()];
  const b = new Rng(1);
  b.setState(saved);
  assert.deepEqual([b.nextU32(), b.nextU32()], next);
});

Deno.test("Rng rejects bad seeds, bounds and states with a clear error", () => {
  assert.throws(() => new Rng(-1), /expected an integer 0 <= x < 2\^32, got -1/);
  assert.throws(() => new Rng(1.5), RangeError);
  assert.throws(() => new Rng(1).int(0), /expected an integer 1 <= n <= 2\^32, got 0/);
  assert.throws(() => new Rng(1).setState([0, 0, 0, 0]), /all zeros/);
  assert.throws(() => new Rng(1).setState([1, 2, 3]), /expected 4 words, got 3/);
});
