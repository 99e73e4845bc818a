/**
 * A hand-written SVG line chart of training and held-out loss against step: `loss.svg` in a run
 * directory, a picture that opens in any browser.
 *
 * @module
 */

/** One series of (step, value) points. */
export interface Series {
  /** Legend text. */
  label: string;
  /** Stroke colour. */
  color: string;
  /** Points in step order. */
  points: [number, number][];
}

const W = 720, H = 420;
const LEFT = 64, RIGHT = 24, TOP = 40, BOTTOM = 48;

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
  }
  return out;
}

/**
 * Draws the series as an SVG document (axes, ticks, grid, legend).
 *
 * @param series The lines; non-finite values are skipped.
 * @param options `title` above the chart.
 * @returns The SVG text.
 *
 * @example Two points make a line
 * ```ts
 * import { lossChartSvg } from "./plot.ts";
 * import assert from "node:assert/strict";
 *
 * const svg = lossChartSvg([{ label: "train", color: "#1f77b4", points: [[1, 3], [2, 2]] }]);
 * assert.ok(svg.startsWith("<svg"));
 * assert.match(svg, /<polyline/);
 * ```
 */
export function lossChartSvg(series: Series[], options: { title?: string } = {}): string {
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => isFinite(x) && isFinite(y));
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of pts) {
    x0 = Math.min(x0, x), x1 = Math.max(x1, x), y0 = Math.min(y0, y), y1 = Math.max(y1, y);
  }
  if (pts.length === 0) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y0 -= 0.5, y1 += 0.5;
  const pad = (y1 - y0) * 0.05;
  y0 = Math.max(0, y0 - pad), y1 += pad;
  const px = (x: number) => LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
  const py = (y: number) => H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  );
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
      `<text x="${LEFT - 6}" y="${f(py(v) + 4)}" text-anchor="end">${v}</text>`,
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
    `<text x="16" y="${(TOP + H - BOTTOM) / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 16 ${(TOP + H - BOTTOM) / 2})">loss (nats)</text>`,
  );
  series.forEach((s, i) => {
    const line = s.points.filter(([x, y]) => isFinite(x) && isFinite(y))
      .map(([x, y]) => `${f(px(x))},${f(py(y))}`).join(" ");
    if (line) {
      out.push(
        `<polyline fill="none" stroke="${
          escapeXml(s.color)
        }" stroke-width="1.5" points="${line}"/>`,
      );
    }
    const ly = TOP + 8 + i * 18;
    out.push(
      `<line x1="${W - RIGHT - 120}" x2="${W - RIGHT - 96}" y1="${ly}" y2="${ly}" ` +
        `stroke="${escapeXml(s.color)}" stroke-width="3"/>`,
      `<text x="${W - RIGHT - 90}" y="${ly + 4}">${escapeXml(s.label)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
