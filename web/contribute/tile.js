// Draws a mandelbrot tile's escape counts on a canvas. Counts are shown on a log scale (as
// the demo's PNG does) because most pixels escape within a few iterations; points that never
// escape (count == maxIter) are black.

const STOPS = [
  [0.0, [12, 16, 48]],
  [0.25, [31, 79, 160]],
  [0.5, [95, 180, 230]],
  [0.7, [242, 245, 232]],
  [0.85, [245, 165, 36]],
  [1.0, [138, 43, 14]],
];
const LUT_SIZE = 1024;
const LUT = buildLut();

function buildLut() {
  const lut = new Uint8ClampedArray(LUT_SIZE * 3);
  for (let i = 0; i < LUT_SIZE; i++) {
    const t = i / (LUT_SIZE - 1);
    let k = 1;
    while (k < STOPS.length - 1 && STOPS[k][0] < t) k++;
    const [t0, c0] = STOPS[k - 1];
    const [t1, c1] = STOPS[k];
    const f = (t - t0) / (t1 - t0);
    for (let ch = 0; ch < 3; ch++) lut[i * 3 + ch] = c0[ch] + (c1[ch] - c0[ch]) * f;
  }
  return lut;
}

/** The counts as a Uint32Array, whatever typed array or buffer the message carried. */
function counts(iters) {
  if (iters instanceof Uint32Array) return iters;
  if (iters instanceof ArrayBuffer) return new Uint32Array(iters);
  if (ArrayBuffer.isView(iters)) {
    return new Uint32Array(iters.buffer, iters.byteOffset, iters.byteLength >> 2);
  }
  if (Array.isArray(iters)) return Uint32Array.from(iters);
  return null;
}

/**
 * Draws the tile at one canvas pixel per tile pixel (CSS scales it up), row 0 at the top.
 * Returns an error message instead of drawing when the message is malformed.
 */
export function drawTile(canvas, { width, height, maxIter, iters }) {
  const data = counts(iters);
  if (!(width > 0 && height > 0 && Number.isInteger(width) && Number.isInteger(height))) {
    return `tile has no valid size (${width} x ${height})`;
  }
  if (!data || data.length < width * height) {
    return `tile ${width} x ${height} came with ${data ? data.length : 'no'} counts`;
  }
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(width, height);
  const px = image.data;
  const scale = (LUT_SIZE - 1) / Math.log1p(Math.max(1, maxIter));
  for (let i = 0; i < width * height; i++) {
    const n = data[i];
    const o = i * 4;
    if (n >= maxIter) {
      px[o] = px[o + 1] = px[o + 2] = 0;
    } else {
      const l = Math.min(LUT_SIZE - 1, Math.round(Math.log1p(n) * scale)) * 3;
      px[o] = LUT[l];
      px[o + 1] = LUT[l + 1];
      px[o + 2] = LUT[l + 2];
    }
    px[o + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  // Keep the displayed box at the tile's aspect ratio however CSS sizes it.
  canvas.style.aspectRatio = `${width} / ${height}`;
  return null;
}

const coord = (v) => (Number.isFinite(v) ? Number(v.toPrecision(6)).toString() : '?');

/** "64 × 64 px · x −2.2 to −1.8 · y −1.2 to −0.8 · up to 256 iterations · job 3, unit 17" */
export function describeTile({ width, height, maxIter, x0, y0, x1, y1, job, unit }) {
  const parts = [
    `${width} × ${height} px`,
    `x ${coord(x0)} to ${coord(x1)}`,
    `y ${coord(y0)} to ${coord(y1)}`,
    `up to ${Number(maxIter).toLocaleString()} iterations`,
  ];
  if (job != null) parts.push(unit != null ? `job ${job}, unit ${unit}` : `job ${job}`);
  return parts.join(' · ');
}
