/**
 * A hand-written SVG chart of a run's loss against step: `loss.svg` in a run directory, a picture
 * that opens in any browser.
 *
 * The raw per-step training loss is drawn faint, with its exponential moving average over it (the
 * trend a noisy loss hides), and each held-out measurement as a point. The left axis is the loss in
 * nats per token; given the data's characters per token, the right axis reads the same heights in
 * bits per character: `bits/char = nats/token / ln 2 / (chars/token)`.
 *
 * @module
 */

/** What {@linkcode lossChartSvg} draws. */
export interface LossChartData {
  /** Training loss per step, `(step, nats/token)`, in step order. */
  train: [number, number][];
  /** Held-out loss measurements, `(step, nats/token)`. */
  heldOut: [number, number][];
}

/** Options of {@linkcode lossChartSvg}. */
export interface LossChartOptions {
  /** The title above the chart. */
  title?: string;
  /** Characters per token of the data: adds the bits/char axis on the right. */
  charsPerToken?: number;
  /** Weight of the past in the moving average, in [0, 1). Default {@linkcode SMOOTHING}. */
  smoothing?: number;
}

/** The default moving-average weight: about the last 20 steps count. */
export const SMOOTHING = 0.95;

const W = 720, H = 420;
const LEFT = 64, RIGHT = 72, TOP = 40, BOTTOM = 48;
const RAW = "#1f77b4", SMOOTH = "#0b3d91", HELD = "#d62728";

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** Round, readable tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
    if (v + step === v) break; // a range below the values' precision: one tick
  }
  return out;
}

/**
 * The exponential moving average of `ys` with weight `beta` on the past, bias-corrected so the
 * first values are not pulled towards 0: `m_i = beta m_{i-1} + (1 - beta) y_i`, reported as
 * `m_i / (1 - beta^(i+1))`.
 *
 * @param ys The values.
 * @param beta The weight of the past, in [0, 1).
 * @returns The smoothed values, one per input.
 *
 * @example A constant stays constant
 * ```ts
 * import { movingAverage } from "./plot.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(movingAverage([2, 2, 2], 0.9).map((v) => v.toFixed(6)), ["2.000000", "2.000000", "2.000000"]);
 * ```
 */
export function movingAverage(ys: number[], beta: number): number[] {
  if (!(beta >= 0 && beta < 1)) {
    throw new RangeError(`Invalid smoothing: expected 0 <= beta < 1, got ${beta}`);
  }
  let m = 0, w = 1;
  return ys.map((y) => {
    m = beta * m + (1 - beta) * y;
    w *= beta;
    return m / (1 - w);
  });
}

const finite = ([x, y]: [number, number]) => Number.isFinite(x) && Number.isFinite(y);

/** The value below which a fraction `q` of `ys` lies (nearest rank). */
function quantile(ys: number[], q: number): number {
  const s = [...ys].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/**
 * Draws the loss chart as an SVG document: a faint raw training curve (`path.raw`), its moving
 * average (`path.smoothed`), held-out points (`circle.held-out`), a nats/token axis on the left
 * and, with `charsPerToken`, a bits/char axis on the right. The vertical range follows the
 * smoothed curve and the held-out points, and the bulk of the raw one (its highest 2% of spikes
 * are clipped at the top), so a few spikes cannot flatten the trend.
 *
 * @param data Training and held-out `(step, loss)` points; non-finite ones are skipped.
 * @param options Title, characters per token, smoothing.
 * @returns The SVG text.
 *
 * @example One raw and one smoothed path, one held-out point
 * ```ts
 * import { lossChartSvg } from "./plot.ts";
 * import assert from "node:assert/strict";
 *
 * const svg = lossChartSvg({ train: [[1, 3], [2, 2], [3, 2.5]], heldOut: [[3, 2.4]] }, {
 *   charsPerToken: 4,
 * });
 * assert.ok(svg.startsWith("<svg"));
 * assert.match(svg, /<path class="raw"[^]*<path class="smoothed"/);
 * assert.equal(svg.match(/<circle class="held-out"/g)?.length, 1);
 * assert.match(svg, /bits\/char/);
 * ```
 */
export function lossChartSvg(data: LossChartData, options: LossChartOptions = {}): string {
  const train = data.train.filter(finite);
  const held = data.heldOut.filter(finite);
  const smooth = movingAverage(train.map(([, y]) => y), options.smoothing ?? SMOOTHING)
    .map((y, i): [number, number] => [train[i][0], y]);
  const cpt = options.charsPerToken;
  const bitsAxis = cpt !== undefined && Number.isFinite(cpt) && cpt > 0;

  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of [...train, ...held]) {
    x0 = Math.min(x0, x), x1 = Math.max(x1, x), y0 = Math.min(y0, y);
  }
  for (const [, y] of [...smooth, ...held]) y1 = Math.max(y1, y);
  if (train.length > 0) y1 = Math.max(y1, quantile(train.map(([, y]) => y), 0.98));
  if (!Number.isFinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y0 -= 0.5, y1 += 0.5;
  const pad = (y1 - y0) * 0.05;
  y0 = Math.max(0, y0 - pad), y1 += pad;
  const px = (x: number) => LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
  const py = (y: number) => H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
  const f = (v: number) => v.toFixed(1);
  const pathD = (pts: [number, number][]) =>
    pts.map(([x, y], i) => `${i === 0 ? "M" : "L"}${f(px(x))},${f(py(y))}`).join(" ");
  const midY = (TOP + H - BOTTOM) / 2;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<clipPath id="plot"><rect x="${LEFT}" y="${TOP}" width="${W - LEFT - RIGHT}" ` +
    `height="${H - TOP - BOTTOM}"/></clipPath>`,
  ];
  if (options.title) {
    out.push(
      `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  for (const v of ticks(y0, y1, 6)) {
    out.push(
      `<line x1="${LEFT}" x2="${W - RIGHT}" y1="${f(py(v))}" y2="${f(py(v))}" stroke="#e5e5e5"/>`,
      `<text class="nats-tick" x="${LEFT - 6}" y="${f(py(v) + 4)}" text-anchor="end">${v}</text>`,
    );
  }
  if (bitsAxis) {
    const toNats = Math.LN2 * cpt;
    for (const b of ticks(y0 / toNats, y1 / toNats, 6)) {
      const y = f(py(b * toNats));
      out.push(
        `<line x1="${W - RIGHT}" x2="${W - RIGHT + 5}" y1="${y}" y2="${y}" stroke="#333"/>`,
        `<text class="bits-tick" x="${W - RIGHT + 8}" y="${f(py(b * toNats) + 4)}">${b}</text>`,
      );
    }
    const rx = W - 14;
    out.push(
      `<line x1="${W - RIGHT}" x2="${W - RIGHT}" y1="${TOP}" y2="${H - BOTTOM}" stroke="#333"/>`,
      `<text x="${rx}" y="${midY}" text-anchor="middle" transform="rotate(90 ${rx} ${midY})">` +
        `bits/char (${cpt.toFixed(2)} chars/token)</text>`,
    );
  }
  for (const v of ticks(x0, x1, 8)) {
    out.push(
      `<line x1="${f(px(v))}" x2="${f(px(v))}" y1="${H - BOTTOM}" y2="${
        H - BOTTOM + 5
      }" stroke="#333"/>`,
      `<text x="${f(px(v))}" y="${H - BOTTOM + 18}" text-anchor="middle">${v}</text>`,
    );
  }
  out.push(
    `<line x1="${LEFT}" x2="${W - RIGHT}" y1="${H - BOTTOM}" y2="${H - BOTTOM}" stroke="#333"/>`,
    `<line x1="${LEFT}" x2="${LEFT}" y1="${TOP}" y2="${H - BOTTOM}" stroke="#333"/>`,
    `<text x="${(LEFT + W - RIGHT) / 2}" y="${H - 10}" text-anchor="middle">step</text>`,
    `<text x="16" y="${midY}" text-anchor="middle" transform="rotate(-90 16 ${midY})">` +
      `loss (nats/token)</text>`,
  );
  if (train.length > 0) {
    out.push(
      `<path class="raw" clip-path="url(#plot)" fill="none" stroke="${RAW}" stroke-opacity="0.3" ` +
        `stroke-width="1" d="${pathD(train)}"/>`,
      `<path class="smoothed" clip-path="url(#plot)" fill="none" stroke="${SMOOTH}" ` +
        `stroke-width="2" d="${pathD(smooth)}"/>`,
    );
  }
  for (const [x, y] of held) {
    out.push(
      `<circle class="held-out" cx="${f(px(x))}" cy="${f(py(y))}" r="3.5" fill="${HELD}"/>`,
    );
  }
  const legend: [string, string][] = [
    [`train, per step`, `stroke="${RAW}" stroke-opacity="0.3" stroke-width="3"`],
    [`train, moving average`, `stroke="${SMOOTH}" stroke-width="3"`],
  ];
  legend.forEach(([label, style], i) => {
    const ly = TOP + 8 + i * 18;
    out.push(
      `<line x1="${W - RIGHT - 170}" x2="${W - RIGHT - 146}" y1="${ly}" y2="${ly}" ${style}/>`,
      `<text x="${W - RIGHT - 140}" y="${ly + 4}">${label}</text>`,
    );
  });
  const hy = TOP + 8 + legend.length * 18;
  out.push(
    `<circle cx="${W - RIGHT - 158}" cy="${hy}" r="3.5" fill="${HELD}"/>`,
    `<text x="${W - RIGHT - 140}" y="${hy + 4}">held-out</text>`,
    "</svg>",
  );
  return out.join("\n") + "\n";
}
