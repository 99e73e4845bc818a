/**
 * Pearson's chi-square goodness-of-fit test for the sampler distribution tests.
 *
 * The p-value is the regularised upper incomplete gamma function Q(df/2, x/2), computed by its
 * series (x < a + 1) or its continued fraction (Numerical Recipes, `gser` / `gcf`).
 *
 * @module
 */

function logGamma(z: number): number {
  // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for z > 0.
  const c = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  z -= 1;
  let x = c[0];
  for (let i = 1; i < 9; i++) x += c[i] / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(x);
}

/** Q(a, x) = Gamma(a, x) / Gamma(a), the upper regularised incomplete gamma function. */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const lg = logGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let del = sum;
    let ap = a;
    for (let n = 0; n < 1000; n++) {
      ap += 1;
      del *= x / ap;
      sum += del;
      if (Math.abs(del) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(-x + a * Math.log(x) - lg);
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(-x + a * Math.log(x) - lg) * h;
}

/** The result of {@linkcode chiSquare}. */
export interface ChiSquare {
  stat: number;
  df: number;
  p: number;
}

/**
 * Pearson's test of observed counts against probabilities (normalised here). A count in a
 * category of probability 0 gives p = 0.
 */
export function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>): ChiSquare {
  let n = 0;
  let z = 0;
  for (let i = 0; i < counts.length; i++) {
    n += counts[i];
    z += probs[i];
  }
  let stat = 0;
  let df = -1;
  for (let i = 0; i < counts.length; i++) {
    const e = (n * probs[i]) / z;
    if (e === 0) {
      if (counts[i] > 0) return { stat: Infinity, df: Math.max(df, 1), p: 0 };
      continue;
    }
    stat += (counts[i] - e) ** 2 / e;
    df++;
  }
  return { stat, df, p: df < 1 ? 1 : gammaQ(df / 2, stat / 2) };
}
