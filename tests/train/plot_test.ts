import assert from "node:assert/strict";
import { makeTempDir, readText, removeDir } from "../../src/io.ts";
import { lossChartSvg, movingAverage, SMOOTHING } from "../../src/train/plot.ts";
import { readMetrics } from "../../src/train/run_dir.ts";
import { train } from "../../src/train/train.ts";
import { tinyRun } from "./fixture.ts";

/** The `attr` values of every element matching `tag` with `class="cls"`. */
function attrs(svg: string, tag: string, cls: string, attr: string): string[] {
  const re = new RegExp(`<${tag} class="${cls}"[^>]*?\\s${attr}="([^"]*)"`, "g");
  return [...svg.matchAll(re)].map((m) => m[1]);
}

/** Tick label value -> its y, for the `nats-tick` or `bits-tick` labels. */
function tickYs(svg: string, cls: string): Map<number, number> {
  const re = new RegExp(`<text class="${cls}" x="[^"]*" y="([^"]*)"[^>]*>([^<]*)</text>`, "g");
  return new Map([...svg.matchAll(re)].map((m) => [Number(m[2]), Number(m[1])]));
}

Deno.test("movingAverage() is the bias-corrected EMA", () => {
  const m = movingAverage([1, 3, 3], 0.5);
  assert.equal(m[0], 1);
  assert.ok(Math.abs(m[1] - 1.75 / 0.75) < 1e-12);
  assert.ok(Math.abs(m[2] - (0.875 + 1.5) / 0.875) < 1e-12);
  assert.throws(() => movingAverage([1], 1), /Invalid smoothing/);
});

Deno.test("lossChartSvg(): raw and smoothed paths, held-out points, and a bits/char axis that agrees", () => {
  const train: [number, number][] = Array.from({ length: 50 }, (_, i) => [i + 1, 5 - i / 25]);
  train[20][1] = 40; // one spike, 10x the loss
  const svg = lossChartSvg({ train, heldOut: [[10, 4.8], [30, 4], [50, 3.2]] }, {
    charsPerToken: 1 / Math.LN2, // then bits/char equals nats/token
    title: "t",
  });
  const raw = attrs(svg, "path", "raw", "d")[0];
  const smooth = attrs(svg, "path", "smoothed", "d")[0];
  assert.equal(raw.split(/[ML]/).filter(Boolean).length, 50);
  assert.equal(smooth.split(/[ML]/).filter(Boolean).length, 50);
  assert.notEqual(raw, smooth);
  assert.match(svg, /<path class="raw"[^>]*stroke-opacity="0.3"/);
  assert.equal(attrs(svg, "circle", "held-out", "cx").length, 3);
  assert.match(svg, /loss \(nats\/token\)/);
  assert.match(svg, /bits\/char \(1\.44 chars\/token\)/);
  // The same value sits at the same height on both axes (the scale is 1 here).
  const nats = tickYs(svg, "nats-tick"), bits = tickYs(svg, "bits-tick");
  assert.ok(bits.size >= 3);
  for (const [v, y] of bits) if (nats.has(v)) assert.equal(y, nats.get(v));
  // The spike is clipped rather than setting the range: the top tick is far below 40.
  assert.ok(Math.max(...nats.keys()) < 10, [...nats.keys()].join(" "));
  // Without chars/token there is no bits/char axis.
  assert.doesNotMatch(lossChartSvg({ train, heldOut: [] }), /bits\/char|bits-tick/);
});

Deno.test("train() writes loss.svg with one held-out point per evaluation and a bits/char axis", async () => {
  const dir = await makeTempDir();
  try {
    await train({
      ...tinyRun,
      steps: 7,
      evalEvery: 3,
      evalBatches: 1,
      out: dir,
    });
    const evaluations = (await readMetrics(dir)).filter((m) => m.heldOutLoss !== undefined);
    assert.deepEqual(evaluations.map((m) => m.step), [3, 6, 7]);
    const svg = await readText(`${dir}/loss.svg`);
    assert.equal(attrs(svg, "circle", "held-out", "cx").length, evaluations.length);
    assert.equal(attrs(svg, "path", "raw", "d").length, 1);
    assert.equal(attrs(svg, "path", "smoothed", "d").length, 1);
    // Seed tokens of this text are about 1.5-3 characters each.
    const cpt = Number(svg.match(/bits\/char \(([\d.]+) chars\/token\)/)?.[1]);
    assert.ok(cpt > 1 && cpt < 4, `${cpt}`);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("lossChartSvg() draws one step whose smoothed value is an ulp off the raw one", () => {
  // the bias-corrected average of one value can round an ulp away from it: a y range below the
  // values' precision, which once made the tick loop run without end
  const y = 3.727670774269348;
  assert.notEqual(movingAverage([y], SMOOTHING)[0], y, "the case needs an average an ulp away");
  const svg = lossChartSvg({ train: [[1, y]], heldOut: [] });
  assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
});
